"""docs/fidelity.md's table and recipes/seven_tasks.yaml say the same: every `key = value` of its
lite-cpt column is the recipe's value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lite_cpt.recipe import load_recipe

DOC = Path(__file__).resolve().parents[1] / "docs" / "fidelity.md"
CLAIM = re.compile(r"`([a-z_][a-z0-9_.]*) = ([^`]+)`")


def claims() -> list[tuple[str, str, str]]:
    """(row setting, key, stated value) of every claim in the tables' lite-cpt column."""
    found = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("setting", "---"):
            continue
        found += [(cells[0], key, value) for key, value in CLAIM.findall(cells[1])]
    return found


def recipe_value(recipe, key: str):
    node = recipe
    for part in key.split("."):
        if isinstance(node, list):
            node = next(item for item in node if item.name == part)
        else:
            node = getattr(node, part)
    return node


def test_the_table_makes_claims_about_every_section():
    keys = {key.split(".")[0] for _, key, _ in claims()}
    assert keys == {"model", "arms", "tasks", "evaluation", "rollout"}
    assert len(claims()) >= 45


@pytest.mark.parametrize("setting, key, stated", claims())
def test_each_row_of_the_fidelity_table_is_the_faithful_recipes_value(setting, key, stated):
    recipe = load_recipe("recipes/seven_tasks.yaml", check_data=False)
    expected = yaml.safe_load(stated)
    value = recipe_value(recipe, key)
    if isinstance(expected, float) or isinstance(value, float):
        assert value == pytest.approx(expected), f"{setting}: {key}"
    else:
        assert value == expected, f"{setting}: {key}"


def test_readme_links_the_table():
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "docs/fidelity.md" in readme and "| KL coefficient |" not in readme
