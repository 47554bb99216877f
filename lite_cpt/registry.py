"""The one way plugins join lite-cpt: a `Registry` they register with, and the discovery that
imports every module of their package.

Arms, task types and model families are plugins. Each plugin package's `__init__` calls
`discover(__name__)`, which imports every module (and subpackage) directly inside it, so adding
a plugin is adding a module there, with no list to edit. Each plugin module registers what it
declares with `REGISTRY.register(entry)` (a call, or a class decorator); the entry names itself
through an attribute (`name` for arms and families, `type_name` for task types).

A registry reads like a mapping (`name in ARMS`, `ARMS[name]`, `ARMS.items()`); `get(name)`
answers an unknown name with a message that names the allowed values.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Callable, Generic, Iterator, Mapping, TypeVar

from lite_cpt.errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries by name. `what` names them in messages ("arm method", "task type")."""

    def __init__(self, what: str, *, key: str = "name", check: Callable[[T], None] | None = None):
        self.what = what
        self.key = key
        self._check = check
        self._entries: dict[str, T] = {}

    def register(self, entry: T) -> T:
        """Add `entry` under its own name (its `key` attribute); returns it, so that this works
        as a class decorator. A second, different entry under one name is an error."""
        name = getattr(entry, self.key, None)
        if not isinstance(name, str) or not name:
            label = getattr(entry, "__name__", type(entry).__name__)
            article = "an" if self.what[0] in "aeiou" else "a"
            raise TypeError(f"{label} needs a `{self.key}` to be registered as {article} {self.what}")
        if name in self._entries and self._entries[name] is not entry:
            raise ValueError(f"{self.what} '{name}' is registered twice")
        if self._check is not None:
            self._check(entry)
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a plugin of their own clean up with it)."""
        self._entries.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def lookup(self, name: str) -> T:
        """The entry `name`; a UserError that lists the allowed values otherwise."""
        if name not in self._entries:
            raise UserError(self.unknown(name))
        return self._entries[name]

    def unknown(self, name: object) -> str:
        return f"unknown {self.what} '{name}'; allowed values: {', '.join(self.names())}"

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def discover(package: str) -> list[str]:
    """Import every module and subpackage directly inside `package` (its plugins register as
    they are imported); the names imported, sorted. Call it from the package's `__init__`."""
    path = sys.modules[package].__path__
    names = sorted(module.name for module in pkgutil.iter_modules(path))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
