"""The paper recipe's task list and general benchmarks, end to end on fixtures in the published
layouts (a Hugging Face hub cache under data.root/hub, the official VizWiz and GQA releases),
with the tiny model on CPU: `lite-cpt run recipes/seven_tasks.yaml model=tiny data.root=FIXTURES`
plus size overrides, so it takes seconds. The recipe file itself is not modified."""

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
    "arm_defaults.rft.mini_batches_per_rollout=1", "model.min_pixels=3136", "model.max_pixels=3136",
    "evaluation.generation.max_new_tokens=4",
    "arms=[{name: sft, lr: 1.0e-3}, {name: rft, lr: 1.0e-3}, {name: multitask_sft, lr: 1.0e-3}]",
    "tasks.*.train_size=4", "tasks.*.test_size=2", "evaluation.general.*.size=4",
    "rollout.backend=hf",  # vLLM runs in its own environment (tests/test_vllm_backend.py)
]


def test_seven_tasks_recipe_runs_on_fixtures_with_tiny_model(tmp_path, private_hf_home):
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


def test_run_stops_before_the_model_when_data_is_missing(tmp_path, private_hf_home):
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", "recipes/seven_tasks.yaml", "model=tiny",
                                      f"data.root={tmp_path / 'nothing'}", f"output_dir={runs}", "rollout.backend=hf"])
    assert result.exit_code == 1
    output = " ".join(result.output.split())  # the console wraps long lines
    assert "nothing was trained" in output
    for key in ("tasks.0 (scienceqa)", "tasks.2 (vizwiz)", "tasks.3 (gqa)", "evaluation.general.2 (pope)"):
        assert key in output
    assert not (runs / "seven_tasks" / "sft").exists()  # no arm started


def test_data_check_on_fixtures_and_on_missing_root(tmp_path, private_hf_home):
    written = CliRunner().invoke(app, ["data", "fixtures", str(tmp_path / "data"), "--n", "4"])
    assert written.exit_code == 0, written.output
    fixtures = tmp_path / "data"
    # the recipe's own budgets (1,000 rows) exceed the fixtures' 4: the preflight's verdict
    short = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", "--set", f"data.root={fixtures}"])
    assert short.exit_code == 1, short.output
    assert "fewer than tasks.0.train_size=1000" in " ".join(short.output.split())
    shrunk = ["tasks.*.train_size=4", "evaluation.general.*.size=4"]
    ok = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", *shrunk, "--set",
                                  f"data.root={fixtures}", "--set", "tasks.*.test_size=1"])
    assert ok.exit_code == 0, ok.output
    positional = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", f"data.root={fixtures}",
                                          *shrunk, "--set", "tasks.*.test_size=2"])  # both override forms
    assert positional.exit_code == 0, positional.output
    assert "2 of 4" in positional.output  # CLEVR's 20 % test slice of 8 rows has 2
    missing = CliRunner().invoke(app, ["data", "check", "recipes/seven_tasks.yaml", "--set",
                                       f"data.root={tmp_path / 'nothing'}"])
    assert missing.exit_code == 1
    assert "nothing" in missing.output
