"""The paper recipe's task list and general benchmarks, end to end on fixtures in the real
schemas, with the tiny model on CPU: `lite-cpt run recipes/seven_tasks.yaml model=tiny
data.root=FIXTURES`, shrunk by overrides so it takes seconds."""

import json

import pytest
from typer.testing import CliRunner

from lite_cpt.cli import app
from lite_cpt.data.fixtures import write_fixtures

pytestmark = pytest.mark.slow

SHRINK = [
    "model.base_training.samples_per_task=8", "model.base_training.epochs=1",
    "model.gradient_checkpointing=false", "model.lora.r=4", "model.lora.alpha=8",
    "arm_defaults.batch_size=4", "arm_defaults.max_steps_per_task=1",
    "arm_defaults.rft.group_size=2", "arm_defaults.rft.prompts_per_step=2",
    "arm_defaults.rft.max_new_tokens=4", "arm_defaults.rif.rollouts=2",
    "evaluation.generation.max_new_tokens=4",
    "arms=[{name: sft, lr: 1.0e-3}, {name: rft, lr: 1.0e-3}, {name: multitask_sft, lr: 1.0e-3}]",
] + [f"tasks.{i}.test_size=4" for i in range(7)] + [f"evaluation.general.{i}.size=4" for i in range(3)]


def test_seven_tasks_recipe_runs_on_fixtures_with_tiny_model(tmp_path):
    fixtures = write_fixtures(tmp_path / "data", n=6)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "recipes/seven_tasks.yaml", "model=tiny", f"data.root={fixtures}",
                                      f"output_dir={runs}", *SHRINK])
    assert result.exit_code == 0, result.output
    run_dir = runs / "seven_tasks"  # the recipe's seed is 42
    matrix = json.loads((run_dir / "seed_42" / "sft" / "matrix.json").read_text())
    assert matrix["tasks"] == ["scienceqa", "textvqa", "vizwiz", "gqa", "geometry3k", "pathvqa", "clevr"]
    assert len(matrix["R"]) == 8
    general = json.loads((run_dir / "seed_42" / "rft" / "general.json").read_text())
    assert general["benchmarks"] == ["mmmu", "mmlu_pro", "pope"] and len(general["G"]) == 8
    report = (run_dir / "report.md").read_text()
    for arm in ("sft", "rft", "multitask_sft"):
        assert arm in report


def test_data_check_on_fixtures_and_on_missing_root(tmp_path):
    written = CliRunner().invoke(app, ["data", "fixtures", str(tmp_path / "data"), "--n", "4"])
    assert written.exit_code == 0, written.output
    fixtures = tmp_path / "data"
    ok = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", "--set", f"data.root={fixtures}"])
    assert ok.exit_code == 0, ok.output
    missing = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", "--set",
                                       f"data.root={tmp_path / 'nothing'}"])
    assert missing.exit_code == 1
    assert "nothing" in missing.output
