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
from lite_cpt.run.locks import UnitLocked, unit_lock
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
    # nothing about data: the preflight never ran
    assert not any(said in result.output for said in ("not ready", "no data at", "hub cache", "to fix"))


def test_a_second_run_on_a_locked_unit_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    from lite_cpt.run import continual

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
    from lite_cpt.run.locks import units_locked_ahead

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


def test_the_arm_registry_and_every_arm_entry_are_read_without_torch(tmp_path):
    """The recipe learns each method's name, kind and settings from the arm plugins' declarations,
    which import no training code: a recipe with every arm validates, and is refused for a key of
    another method, with torch, transformers and peft still unimported."""
    code = textwrap.dedent("""
        import json, sys
        from lite_cpt.arms import ARMS
        from lite_cpt.errors import UserError
        from lite_cpt.recipe import recipe_from_dict
        raw = {"name": "r", "tasks": [{"name": "c", "type": "mini_clevr"}],
               "arms": [{"name": name} for name in ARMS]}
        kinds = {arm.name: type(arm).__name__ for arm in recipe_from_dict(raw).arms}
        raw["arms"] = [{"name": "rft", "replay": {"fraction": 0.5}}]
        try:
            recipe_from_dict(raw)
        except UserError as error:
            refused = str(error)
        print(json.dumps({"entries": kinds, "refused": refused,
                          "heavy": [m for m in ("torch", "transformers", "peft") if m in sys.modules]}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], done.stderr
    assert result["entries"]["rft"] == "ArmConfigWithRL" and result["entries"]["sft"] == "ArmConfig"
    assert result["entries"]["rif_rft"] == "ArmConfigWithRIF" and result["entries"]["ewc"] == "ArmConfigWithEWC"
    assert ("arms.0.replay: unknown key for an arm of method 'rft' (it is a setting of replay; "
            "`arm_defaults.replay.…` sets it on every entry that takes it); allowed keys: " in result["refused"])


def test_an_arm_registered_elsewhere_is_known_to_the_recipe_by_name_kind_and_settings():
    """An arm plugin registered outside lite_cpt/arms/ (ARMS.register, as the shipped ones do):
    its name is a method, its settings are its entry's, its kind decides whether an lr schedule fits."""
    from pydantic import BaseModel, Field

    from lite_cpt.arms import ARMS, ArmDeclaration
    from lite_cpt.errors import UserError
    from lite_cpt.recipe import recipe_from_dict
    from tests.helpers import tiny_recipe

    class OutsideFields(BaseModel):
        outside: int = Field(3, ge=1, description="An outside setting.")

    ARMS.register(ArmDeclaration(name="outside_rl", kind="rl", phases=("rollout", "evaluation"),
                                 implementation="tests.nowhere:Outside", summary="outside", settings=OutsideFields))
    try:
        raw = tiny_recipe(Path("/nonexistent"), arms=[{"name": "outside_rl", "outside": 5}])
        arm = recipe_from_dict(raw).arms[0]
        assert (arm.method, arm.outside) == ("outside_rl", 5)
        raw["arms"][0]["outside"] = 0
        with pytest.raises(UserError, match="arms.0.outside: Input should be greater than or equal to 1"):
            recipe_from_dict(raw)
        raw["arms"][0] = {"name": "outside_rl", "lr_scheduler": "cosine"}
        with pytest.raises(UserError, match="apply to SFT arms"):
            recipe_from_dict(raw)
        with pytest.raises(UserError, match=r"arms.0.outside: unknown key for an arm of method 'sft' \(it is a "
                                            r"setting of outside_rl;"):
            recipe_from_dict(tiny_recipe(Path("/nonexistent"), arms=[{"name": "sft", "outside": 2}]))
    finally:
        ARMS.unregister("outside_rl")
    assert "outside_rl" not in ARMS


def _plan_lines(calibration):
    from lite_cpt.recipe import recipe_from_dict
    from lite_cpt.run.run_time_plan import prediction_record, say_time_plan
    from lite_cpt.run.unit_plan import plan_unit
    from tests.helpers import tiny_recipe

    recipe = recipe_from_dict(tiny_recipe(Path("/nonexistent")))
    unit = plan_unit(recipe, recipe.arms[0], torch.nn.Linear(2, 2), calibration)
    said = []
    say_time_plan(unit.time, unit.name, said.append)
    return said, prediction_record(unit.time, 1)


def test_a_cpu_run_prints_a_time_plan_only_from_a_calibration_of_a_cpu():
    from dataclasses import replace

    from lite_cpt.planner.calibration import REFERENCE_24GB

    said, record = _plan_lines(None)  # no calibration: one line, no reference-card hours, nothing logged
    assert said == ["[dim]sft: no time plan: no calibration for this device (cpu); measure it with "
                    "`lite-cpt bench gpu --json F` and pass --calibration F[/]"]
    assert record == {"device": "cpu"}
    said, record = _plan_lines(REFERENCE_24GB)  # another device's figures
    assert said == [f"[dim]sft: no time plan: the calibration describes {REFERENCE_24GB.device}, this run is on "
                    "cpu; measure this device with `lite-cpt bench gpu --json F` and pass --calibration F[/]"]
    assert record == {"device": "cpu"}
    cpu = replace(REFERENCE_24GB, device="cpu (2 threads)")  # what `bench gpu --tiny` names a CPU
    said, record = _plan_lines(cpu)
    assert len(said) == 1 and said[0].startswith("[dim]sft: time plan on cpu (2 threads): ")
    assert record["predicted_on"] == "cpu (2 threads)" and record["device"] == "cpu"
    assert record["predicted_seconds"]["sft_step"] > 0


def test_the_tiny_base_build_says_what_it_is_doing_in_a_log(tmp_path):
    """A log (a console that is not a terminal) gets plain lines, where a progress bar leaves nothing."""
    import io

    from rich.console import Console

    from lite_cpt.recipe import recipe_from_dict
    from lite_cpt.tiny.base import _build_tiny_base
    from tests.helpers import tiny_recipe

    raw = tiny_recipe(tmp_path)
    raw["model"]["base_training"] = {"samples_per_task": 2, "epochs": 1, "batch_size": 4}
    log = Console(file=io.StringIO(), width=200, force_terminal=False)
    _build_tiny_base(recipe_from_dict(raw), tmp_path / "base", log)
    lines = log.file.getvalue().splitlines()
    assert lines[0].startswith(f"building the tiny base (once; cached in {tmp_path / 'base'})")
    assert lines[1].startswith("tiny base: tokenizer and random qwen2_5_vl model built (")
    assert lines[2].startswith("tiny base: training on ")
    steps = [line for line in lines if line.startswith("tiny base: step ")]
    assert steps and steps[-1].split(" (")[0].split()[-1].split("/")[0] == steps[-1].split(" (")[0].split("/")[-1]
    assert lines[-1].startswith(f"tiny base: saved to {tmp_path / 'base'} (")


def test_an_unknown_model_family_is_refused_without_torch(tmp_path):
    """`model.family` is checked against the family registry, whose modules import torch only
    inside the functions that build models: the refusal names the allowed families at once."""
    code = textwrap.dedent("""
        import json, sys
        from lite_cpt.errors import UserError
        from lite_cpt.recipe import recipe_from_dict
        raw = {"name": "r", "model": {"name": "tiny", "family": "nope"},
               "tasks": [{"name": "c", "type": "mini_clevr"}], "arms": [{"name": "sft"}]}
        try:
            recipe_from_dict(raw)
        except UserError as error:
            refused = str(error)
        print(json.dumps({"refused": refused,
                          "heavy": [m for m in ("torch", "transformers", "peft") if m in sys.modules]}))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == [], done.stderr
    assert "unknown model family 'nope'; allowed: auto, " in result["refused"] and "qwen2_5_vl" in result["refused"]
