"""The arm method names and kinds, read from the arm modules' source without importing them.

Validating a recipe needs only the names of the arm methods (an arm without `method` must be
named after one) and their kinds (only SFT arms take an lr schedule), while importing the arm
registry (lite_cpt.arms) loads torch and transformers for several seconds. So a recipe is
checked against what the modules of lite_cpt/arms/ declare: each class decorated with
`@register_arm`, its `name = "..."` class attribute and its `kind = "..."` (its own or a base
class's). An arm registered from elsewhere is told to this module by `register_arm`
(`note_registered`), so the recipe schema never imports the registry and the registry's import of
the schema (its type hints) forms no circle. tests/test_first_minute.py checks that these names
and kinds are the registry's.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

ARMS_DIR = Path(__file__).with_name("arms")

#: Arms registered at run time (`register_arm`), by method name: their kind.
REGISTERED: dict[str, str] = {}


def note_registered(name: str, kind: str) -> None:
    """Record an arm `register_arm` added to the registry (its kind checked there)."""
    REGISTERED[name] = kind


def _string_attribute(cls: ast.ClassDef, attribute: str) -> str | None:
    for statement in cls.body:
        if (isinstance(statement, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == attribute for t in statement.targets)
                and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
            return statement.value.value
    return None


def _is_registered(cls: ast.ClassDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "register_arm" for d in cls.decorator_list)


def _classes() -> dict[str, ast.ClassDef]:
    """Every top-level class of lite_cpt/arms/, by class name."""
    classes = {}
    for path in sorted(ARMS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        classes.update({node.name: node for node in tree.body if isinstance(node, ast.ClassDef)})
    return classes


def _kind(cls: ast.ClassDef, classes: dict[str, ast.ClassDef]) -> str | None:
    """The class's `kind`, or else the first base class's that declares one (Python's lookup
    for the single inheritance the arms use)."""
    kind = _string_attribute(cls, "kind")
    for base in cls.bases:
        if kind is None and isinstance(base, ast.Name) and base.id in classes:
            kind = _kind(classes[base.id], classes)
    return kind


@lru_cache(maxsize=1)
def declared_kinds() -> dict[str, str | None]:
    """Method name -> kind of every arm the modules of lite_cpt/arms/ register."""
    classes = _classes()
    return {name: _kind(cls, classes) for cls in classes.values()
            if _is_registered(cls) and (name := _string_attribute(cls, "name")) is not None}


def _declared() -> tuple[str, ...]:
    return tuple(sorted(declared_kinds()))


def arm_method_names() -> tuple[str, ...]:
    """Every arm method name: those lite_cpt/arms/ declares and any registered from elsewhere."""
    return tuple(sorted({*declared_kinds(), *REGISTERED}))


def arm_kind(name: str) -> str | None:
    """The kind (sft, rl) of the arm method `name`."""
    return REGISTERED.get(name) or declared_kinds().get(name)
