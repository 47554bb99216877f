"""Recipe: the one configuration surface of lite-cpt. This module loads a recipe's YAML, applies
command-line overrides and validates it into `Recipe`.

Every field is typed, defaulted and documented (the `description` of each field is the reference
docs/recipes.md prints). Unknown keys are errors. Command-line overrides use dotted paths, `a.b=c`,
parsed as YAML scalars; list items are addressed by index, by name for tasks and arms, or all at
once: `arms.sft.lr=1e-4`, `tasks.0.train_size=64`, `tasks.*.test_size=100`.

The sections are defined beside it (lite_cpt/recipe_model.py: model, LoRA, tiny model;
recipe_tasks.py: tasks, data sources, benchmarks; recipe_run.py: the fields every arm shares,
evaluation, logging, checkpoints, faults, rollouts). An arm entry is its method's model, a task
entry its type's: the shared fields plus the settings the plugin declares beside its code
(lite_cpt/arms/<plugin>/settings.py, lite_cpt/tasks/custom_settings.py), looked up in the
registries when the entry is validated. Import each section from the module that defines it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, SerializeAsAny, ValidationError, WrapValidator, field_validator, model_validator

from lite_cpt.errors import UserError
from lite_cpt.recipe_model import ModelConfig
from lite_cpt.recipe_run import (ArmConfig, CheckpointConfig, EvaluationConfig, FaultsConfig, LoggingConfig,
                                 RolloutConfig)
from lite_cpt.recipe_section import ENTRY_ERROR, Section, entry_error, entry_model, refuse_foreign_keys
from lite_cpt.recipe_tasks import BenchmarkConfig, DataConfig, TaskConfig, TaskEntry
from lite_cpt.unsloth_backend import import_unsloth_first, recipe_backend


def _arm_entry(value: Any, handler) -> Any:
    """An arm entry validated as its method's model (`method`, or the arm's name when that is a
    method): the fields every arm has plus those its plugin declares, refusing another method's."""
    if isinstance(value, ArmConfig) or not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return handler(value)
    from lite_cpt.arms import ARMS

    method = value.get("method")
    if method is None:
        method = value["name"]
        if method not in ARMS:
            raise ValueError(f"arm '{method}' needs a `method` (one of: {', '.join(ARMS.names())})")
    elif method not in ARMS:
        raise entry_error("ArmConfig", [(("method",), ARMS.unknown(method), method)])
    declaration = ARMS[method]
    model = entry_model(ArmConfig, declaration.settings)
    refuse_foreign_keys(value, model, f"an arm of method '{method}'",
                        {name: arm.settings for name, arm in ARMS.items()})
    arm = model.model_validate({**value, "method": method})
    if declaration.kind != "sft" and (arm.lr_scheduler != "constant" or arm.warmup_ratio):
        raise ValueError(f"arm '{arm.name}': lr_scheduler and warmup_ratio apply to SFT arms "
                         "(RL arms keep EasyR1's constant rate)")
    return arm


#: An `arms[]` entry: ArmConfig plus the settings of its method (lite_cpt/arms/).
ArmEntry = Annotated[SerializeAsAny[ArmConfig], WrapValidator(_arm_entry)]


def arm_config(**fields: Any) -> ArmConfig:
    """One arm entry, validated as a recipe's is (`arm_config(name="rft", rft={...})`)."""
    from pydantic import TypeAdapter

    return TypeAdapter(ArmEntry).validate_python(fields)


class Recipe(Section):
    name: str = Field(..., description="Run name; outputs go to <output_dir>/<name>/.")
    seed: int = Field(0, description="Seed of data sampling (train and test draws), adapter initialisation, "
                      "training and rollouts; the tiny base follows `model.tiny.seed` instead.")
    seeds: list[int] | None = Field(
        None, description="Seeds to run, each into <run>/seed_<k>/ (`lite-cpt run --seeds 0,1,2`); "
        "None = [seed]. The report gives mean and 95 % t-interval across seeds."
    )
    output_dir: str = Field("runs", description="Parent directory of run directories.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Base model and adapters.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data locations.")
    tasks: list[TaskEntry] = Field(..., min_length=1, description="Tasks, in training order.")
    arms: list[ArmEntry] = Field(..., min_length=1, description="Training arms, each from a fresh adapter.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Evaluation.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Optional experiment trackers.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Mid-phase checkpoints.")
    faults: FaultsConfig = Field(default_factory=FaultsConfig, description="Tolerance of numerical and data faults.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="The engine that generates rollouts.")

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None:
            if not seeds:
                raise ValueError("give at least one seed, e.g. seeds: [0, 1, 2], or leave it out")
            _check_unique([str(s) for s in seeds], "seed")
        return seeds

    @field_validator("tasks")
    @classmethod
    def _unique_tasks(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        _check_unique([t.name for t in tasks], "task")
        return tasks

    @field_validator("arms")
    @classmethod
    def _unique_arms(cls, arms: list[ArmConfig]) -> list[ArmConfig]:
        _check_unique([a.name for a in arms], "arm")
        return arms

    @model_validator(mode="after")
    def _tis_needs_a_sampler(self) -> "Recipe":
        if self.rollout.backend == "hf":
            for arm in self.arms:
                if getattr(arm, "rft", None) is not None and arm.rft.tis_cap is not None:
                    raise ValueError(f"arms[{arm.name}].rft.tis_cap corrects for a rollout engine other than the "
                                     "trainer; with rollout.backend: hf the trainer samples: set rollout.backend: "
                                     "vllm or remove tis_cap")
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def run_seeds(self) -> list[int]:
        """The seeds this recipe runs: `seeds`, or just `seed`."""
        return list(self.seeds) if self.seeds is not None else [self.seed]

    def task(self, name: str) -> TaskConfig:
        return next(t for t in self.tasks if t.name == name)


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{what} name '{name}' appears twice")
        seen.add(name)


# ---------------------------------------------------------------------------------------------
# Loading, overrides, validation messages


def resolve_recipe_path(path: str | Path) -> Path:
    """A recipe path as given, or else the copy shipped inside the package (`recipes/...`)."""
    path = Path(path)
    if path.exists():
        return path
    parts = path.parts
    if parts and parts[0] == "recipes":
        shipped = resources.files("lite_cpt.recipes").joinpath(*parts[1:])
        if shipped.is_file():
            return Path(str(shipped))
    raise UserError(f"recipe file not found: {path}")


def parse_overrides(overrides: list[str]) -> list[tuple[list[str], Any]]:
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override '{item}' is not of the form key.path=value")
        key, value = item.split("=", 1)
        if not key:
            raise UserError(f"override '{item}' has an empty key")
        parsed.append((key.split("."), yaml.safe_load(value) if value != "" else None))
    return parsed


def apply_override(raw: dict, path: list[str], value: Any) -> None:
    """Set `value` at a dotted path in the raw recipe mapping.

    List items are found by index (`tasks.0`), by their `name` (`arms.sft`), or all at once
    (`tasks.*.train_size=4`). Missing mapping keys are created so that pydantic reports unknown
    ones with their full path.
    """
    node: Any = raw
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        if isinstance(node, list) and key == "*":
            for index in range(len(node)):
                apply_override(node, [str(index), *path[depth + 1 :]], copy.deepcopy(value))
            return
        if isinstance(node, list):
            index = _list_index(node, key, where)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last and depth == 0 and key == "model" and isinstance(value, str):
                # `model=tiny` / `model=Qwen/...` is shorthand for model.name, keeping the rest.
                node["model"] = {**(node.get("model") or {}), "name": value}
            elif last:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
        else:
            raise UserError(f"override '{'.'.join(path)}': '{'.'.join(path[:depth])}' is not a section")


def _list_index(items: list, key: str, where: str) -> int:
    if key.lstrip("-").isdigit():
        index = int(key)
        if -len(items) <= index < len(items):
            return index
        raise UserError(f"override '{where}': index out of range (list has {len(items)} items)")
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == key:
            return index
    names = [str(item.get("name")) for item in items if isinstance(item, dict)]
    raise UserError(f"override '{where}': no item named '{key}' (have: {', '.join(names)})")


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str] | None:
    """The field names allowed at `loc` (the location pydantic reports, minus the bad key)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(part) or plugin_fields(current).get(part)
        if field is None:
            return None
        current = _section_type(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def plugin_fields(base: type[BaseModel]) -> dict[str, Any]:
    """The fields the plugins add to the entries built on `base` (ArmConfig, TaskConfig,
    BenchmarkConfig), by name, beside the entries' shared ones."""
    return {name: field for name, (field, _) in plugin_field_owners(base).items()}


def plugin_field_owners(base: type[BaseModel]) -> dict[str, tuple[Any, list[str]]]:
    """Field name -> (field, the methods or types whose entries take it), for the plugin
    fields of the entries built on `base`."""
    from lite_cpt.arms import ARMS
    from lite_cpt.tasks import BENCHMARK_TYPES, TASK_TYPES

    plugins = {ArmConfig: {name: arm.settings for name, arm in ARMS.items()},
               TaskConfig: {name: cls.settings for name, cls in TASK_TYPES.items()},
               BenchmarkConfig: {name: cls.settings for name, cls in BENCHMARK_TYPES.items()}}.get(base, {})
    owners: dict[str, tuple[Any, list[str]]] = {}
    for plugin, settings in sorted(plugins.items()):
        for name, field in (settings.model_fields.items() if settings is not None else ()):
            owners.setdefault(name, (field, []))[1].append(plugin)
    return owners


def _section_type(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args:
        for arg in args:
            found = _section_type(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            allowed = _allowed_keys(Recipe, loc[:-1])
            hint = f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {where}: unknown key{hint}")
        elif item["type"] == "literal_error":
            expected = item.get("ctx", {}).get("expected", "")
            lines.append(f"  {where}: got {item.get('input')!r}; allowed values: {expected}")
        elif item["type"] == "missing":
            lines.append(f"  {where}: required key is missing")
        elif item["type"] == ENTRY_ERROR:
            lines.append(f"  {where}: {item['msg']}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"  {where}: {message} (got {item.get('input')!r})")
    return "\n".join(lines)


def recipe_from_dict(raw: dict, source: str = "<dict>") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        raise UserError(format_validation_error(error, source)) from None


def read_recipe_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict:
    """The raw mapping of a recipe file, with `extends: other.yaml` resolved.

    Top-level keys starting with `x-` are dropped (they hold YAML anchors for the rest to merge).
    An extending recipe is deep-merged over its parent (mappings merge key by key; lists and
    scalars replace), so an ablation states only what it changes.
    """
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"recipe {path} is not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise UserError(f"recipe {path} must be a YAML mapping at the top level")
    # Top-level `x-...` keys only hold YAML anchors (`x-r1v: &r1v {...}`) that tasks merge in.
    raw = {key: value for key, value in raw.items() if not str(key).startswith("x-")}
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    parent_path = (path.parent / str(parent)).resolve()
    if parent_path in _seen:
        raise UserError(f"recipe {path}: `extends` forms a cycle through {parent_path}")
    if not parent_path.exists():
        raise UserError(f"recipe {path}: extends {parent}, but {parent_path} does not exist")
    return deep_merge(read_recipe_yaml(parent_path, _seen + (parent_path,)), raw)


def extended_recipe_path(path: Path) -> Path | None:
    """The recipe file `path` extends (`extends:`), or None."""
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    parent = raw.get("extends") if isinstance(raw, dict) else None
    return None if parent is None else (Path(path).parent / str(parent)).resolve()


def expand_arm_defaults(raw: dict) -> dict:
    """`arm_defaults:` is merged under every arm, and `task_defaults:` under every task, so
    each states only what sets it apart (and a recipe that extends another changes a setting
    of every task or arm in one line). A default that belongs to some methods' (types') settings
    goes to the entries of those only: `arm_defaults: {rft: ...}` sets the RL arms'."""
    for key, items, base in (("arm_defaults", "arms", ArmConfig), ("task_defaults", "tasks", TaskConfig)):
        defaults = raw.pop(key, None)
        if defaults is None:
            continue
        if not isinstance(defaults, dict):
            raise UserError(f"{key} must be a mapping of {items[:-1]} settings")
        if isinstance(raw.get(items), list):
            raw[items] = [deep_merge(_defaults_taken(defaults, base, item), item) if isinstance(item, dict) else item
                          for item in raw[items]]
    return raw


def _defaults_taken(defaults: dict, base: type[Section], item: dict) -> dict:
    """The defaults an entry takes: all but the plugin settings its method (type) lacks."""
    taken = _entry_fields(base, {**defaults, **item})
    if taken is None:  # an unknown method or type: validation names it
        return defaults
    foreign = set(plugin_fields(base)) - taken
    return {key: value for key, value in defaults.items() if key not in foreign}


def _entry_fields(base: type[Section], item: dict) -> set[str] | None:
    from lite_cpt.arms import ARMS
    from lite_cpt.tasks import TASK_TYPES

    if base is ArmConfig:
        plugin = ARMS.get(item.get("method") or item.get("name"))
    else:
        plugin = TASK_TYPES.get(item.get("type"))
    return None if plugin is None else set(entry_model(base, plugin.settings).model_fields)


def deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_recipe(path: str | Path, overrides: list[str] | None = None, *, check_data: bool = True) -> Recipe:
    """Read a YAML recipe, apply `a.b=c` overrides, validate, check task types and data paths."""
    path = resolve_recipe_path(path)
    raw = read_recipe_yaml(path)
    for keys, value in parse_overrides(overrides or []):
        apply_override(raw, keys, value)
    import_unsloth_first(recipe_backend(raw))  # before validation imports transformers
    raw = expand_arm_defaults(raw)
    recipe = recipe_from_dict(raw, str(path))
    check_recipe_references(recipe, check_data=check_data)
    return recipe


def check_recipe_references(recipe: Recipe, check_data: bool = True) -> None:
    """Local data paths must exist (checked here so that `validate` catches them before a run
    starts; task, benchmark and arm types are checked by the schema against the registries)."""
    if not check_data:
        return
    from lite_cpt.data.check import check_sources

    problems = [f"  {problem}" for problem in check_sources(recipe)]
    if problems:
        raise UserError("invalid recipe:\n" + "\n".join(problems))


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def config_hash(obj: Any) -> str:
    """Stable short hash of a pydantic model / JSON-able value (cache keys)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json")
    payload = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(payload).hexdigest()[:16]
