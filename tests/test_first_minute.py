"""The first minute of a run tells the truth: a bad recipe is refused before torch and
transformers are imported, what this machine cannot run is said before anything about data,
a second run on the same unit is refused before the model loads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lite_cpt.cli import app
from lite_cpt.errors import UserError
from lite_cpt.locks import UnitLocked, unit_lock
from lite_cpt.recipe import load_recipe

REPO = Path(__file__).resolve().parents[1]


def test_a_bad_recipe_is_refused_before_torch_or_transformers_is_imported(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmodel: {quantization: nf5}\ntasks: []\narms: [{name: sft}]\n")
    code = textwrap.dedent(f"""
        import json, sys
        from lite_cpt.cli import app
        codes = []
        for args in (["validate", {str(bad)!r}], ["run", {str(bad)!r}], ["plan", {str(bad)!r}],
                     ["sweep", {str(bad)!r}]):
            try:
                app(args)
            except SystemExit as stop:
                codes.append(stop.code)
        print(json.dumps({{"codes": codes, "heavy": [m for m in ("torch", "transformers", "peft")
                                                   if m in sys.modules]}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["codes"] == [1, 1, 1, 1], done.stderr
    assert done.stderr.count("model.quantization: got 'nf5'") == 4
    assert result["heavy"] == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_nf4_without_cuda_is_said_before_anything_about_data(tmp_path):
    result = CliRunner().invoke(app, ["run", str(REPO / "recipes" / "seven_tasks.yaml"),
                                      f"data.root={tmp_path / 'empty'}", f"output_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 1
    assert "nf4 needs a CUDA GPU" in result.output
    assert "data" not in result.output.split("nf4 needs a CUDA GPU")[0].lower().replace("lite-cpt run", "")
    assert "not ready" not in result.output and "hub cache" not in result.output


def test_a_second_run_on_a_locked_unit_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from lite_cpt import continual

    def load_base(*args, **kwargs):
        raise AssertionError("the model was loaded before the lock was taken")

    monkeypatch.setattr(continual, "load_base", load_base)
    recipe = load_recipe(REPO / "recipes" / "tiny.yaml", [f"output_dir={tmp_path}", "tasks.*.train_size=4",
                                                          "tasks.*.test_size=2"])
    first_arm = recipe.arms[0].name
    with unit_lock(continual.seed_dir(recipe.run_dir, recipe.seed) / first_arm):
        with pytest.raises(UnitLocked, match=f"seed_0/{first_arm} is being trained"):
            continual.run_recipe(recipe)
        with pytest.raises(UnitLocked):
            continual.run_seed_arms(recipe, [first_arm])
    # released: the next attempt gets past the lock and reaches the model
    with pytest.raises(AssertionError, match="model was loaded"):
        continual.run_seed_arms(recipe, [first_arm])


def test_the_lock_taken_ahead_is_adopted_by_the_unit_and_released(tmp_path):
    from lite_cpt.locks import units_locked_ahead

    unit = tmp_path / "run" / "sft"
    with units_locked_ahead([unit]):
        with unit_lock(unit):  # adopted, not refused
            pass
        with unit_lock(unit):  # adopted once: the adopter's block released it
            pass
    with units_locked_ahead([unit]):
        pass
    with unit_lock(unit):  # an unadopted lock is released when its block ends
        pass
    with pytest.raises(UserError):
        with unit_lock(unit):
            with units_locked_ahead([unit]):
                pass


def test_the_arm_names_read_from_source_are_the_registrys():
    from lite_cpt.arms import arm_names
    from lite_cpt.arms_declared import _declared

    assert _declared() == arm_names()
