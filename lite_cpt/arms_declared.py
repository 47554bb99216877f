"""The arm method names, read from the arm modules' source without importing them.

Validating a recipe needs only the names of the arm methods (an arm without `method` must be
named after one), while importing the arm registry (lite_cpt.arms) loads torch and transformers
for several seconds. So a recipe is checked against the names the modules of lite_cpt/arms/
declare: each class decorated with `@register_arm` and its `name = "..."` class attribute.
tests/test_first_minute.py checks that this list is the registry's.
"""

from __future__ import annotations

import ast
import sys
from functools import lru_cache
from pathlib import Path

ARMS_DIR = Path(__file__).with_name("arms")


def _registered_names(tree: ast.Module) -> list[str]:
    names = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        if not any(isinstance(d, ast.Name) and d.id == "register_arm" for d in node.decorator_list):
            continue
        for statement in node.body:
            if (isinstance(statement, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "name"
                                                          for t in statement.targets)
                    and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
                names.append(statement.value.value)
    return names


@lru_cache(maxsize=1)
def _declared() -> tuple[str, ...]:
    names = set()
    for path in sorted(ARMS_DIR.glob("*.py")):
        names.update(_registered_names(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))))
    return tuple(sorted(names))


def arm_method_names() -> tuple[str, ...]:
    """Every arm method name: the registry's once it is imported (it may hold arms registered
    from elsewhere), else the names lite_cpt/arms/ declares."""
    if "lite_cpt.arms" in sys.modules:
        from lite_cpt.arms import arm_names

        return arm_names()
    return _declared()
