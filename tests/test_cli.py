import pytest
from typer.testing import CliRunner

from lite_cpt.cli import app
from tests.helpers import tiny_recipe, write_recipe

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("run", "validate", "eval", "report", "compare", "plan", "bench", "data", "arms"):
        assert command in result.output


def test_arms_lists_the_registry(monkeypatch):
    from lite_cpt import cli
    from lite_cpt.arms import ARMS

    monkeypatch.setattr(cli.console, "width", 200)  # one line per arm
    result = runner.invoke(app, ["arms"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, cls in ARMS.items():
        row = next(line for line in lines if line.strip("│ ").startswith(name + " "))
        assert cls.kind in row and ", ".join(cls.phases) in row and cls.summary in row


def test_validate_ok(tmp_path):
    path = write_recipe(tmp_path / "ok.yaml", tiny_recipe(tmp_path))
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda r: r["model"].update(colour="red"), "model.colour: unknown key"),
        (lambda r: r["tasks"][0].update(train_size="lots"), "tasks.0.train_size"),
        (lambda r: r["tasks"].append({"name": "sq", "type": "scienceqa", "source": {"path": "/nonexistent/sq"}}),
         "/nonexistent/sq"),
    ],
    ids=["unknown-key", "wrong-type", "missing-data"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_broken_recipe_fails_cleanly(tmp_path, mutate, expected, command):
    raw = tiny_recipe(tmp_path)
    mutate(raw)
    path = write_recipe(tmp_path / "bad.yaml", raw)
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 1
    assert expected in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists(), "nothing is written for an invalid recipe"


def test_run_missing_recipe_file(tmp_path):
    result = runner.invoke(app, ["run", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "recipe file not found" in result.output


def test_override_error_names_key(tmp_path):
    path = write_recipe(tmp_path / "ok.yaml", tiny_recipe(tmp_path))
    result = runner.invoke(app, ["run", str(path), "arms.nosuch.lr=1"])
    assert result.exit_code == 1
    assert "no item named 'nosuch'" in result.output


def test_validate_every_shipped_recipe_schema_only():
    from pathlib import Path

    recipes = sorted(str(p) for p in (Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))
    result = runner.invoke(app, ["validate", *recipes, "--skip-data"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok") >= len(recipes)


def test_seeds_option_and_recipe_key():
    from lite_cpt.cli import seed_overrides
    from lite_cpt.errors import UserError
    from lite_cpt.recipe import load_recipe

    assert seed_overrides("0,1, 2") == ["seeds=[0, 1, 2]"]
    assert seed_overrides(None) == []
    with pytest.raises(UserError, match="--seeds takes comma-separated integers"):
        seed_overrides("0,x")
    recipe = load_recipe("recipes/tiny.yaml", seed_overrides("3,4"), check_data=False)
    assert recipe.run_seeds == [3, 4]
    assert load_recipe("recipes/tiny.yaml", ["seed=2"], check_data=False).run_seeds == [2]
    for bad, message in (("seeds=[]", "at least one seed"), ("seeds=[1, 1]", "appears twice")):
        with pytest.raises(UserError, match=message):
            load_recipe("recipes/tiny.yaml", [bad], check_data=False)
