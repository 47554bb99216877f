"""The base of every recipe section, and the entries a registry shapes (an arm's fields depend on
its method, a task's on its type): lite_cpt.recipe builds the schema from these."""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError

#: The error type of a refused registry key or entry key (`format_validation_error` shows its message).
ENTRY_ERROR = "registry_entry"


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@lru_cache(maxsize=None)
def entry_model(base: type[Section], settings: type[BaseModel] | None) -> type[Section]:
    """The entry model of a plugin: `base` (every entry's fields) plus the fields its `settings`
    declare; `base` itself for a plugin without settings. One class per pair, so equal entries
    compare equal."""
    if settings is None:
        return base
    name = f"{base.__name__}With{settings.__name__.removesuffix('Fields')}"
    return type(name, (base, settings), {"__module__": base.__module__, "__doc__": settings.__doc__})


def entry_error(title: str, problems: Iterable[tuple[tuple, str, Any]]) -> ValidationError:
    """A ValidationError of (location within the entry, message, input) problems."""
    return ValidationError.from_exception_data(title, [
        {"type": PydanticCustomError(ENTRY_ERROR, message), "loc": loc, "input": value}
        for loc, message, value in problems
    ])


def refuse_foreign_keys(raw: dict, model: type[BaseModel], what: str, owners: dict[str, type[BaseModel] | None]) -> None:
    """Raise for every key of `raw` that `model` (the entry of `what`, e.g. "an arm of method 'rft'")
    lacks, naming the plugins whose settings hold it (`owners`: plugin name -> settings) and the
    keys `model` allows."""
    allowed = list(model.model_fields)
    problems = []
    for key in raw:
        if key in model.model_fields:
            continue
        holders = sorted(name for name, settings in owners.items()
                         if settings is not None and key in settings.model_fields)
        defaults = "arm_defaults" if "arm" in what else "task_defaults"
        belongs = (f" (it is a setting of {', '.join(holders)}; `{defaults}.{key}.…` sets it on every entry "
                   "that takes it)") if holders else ""
        problems.append(((key,), f"unknown key for {what}{belongs}; allowed keys: {', '.join(allowed)}", raw[key]))
    if problems:
        raise entry_error(model.__name__, problems)
