import io
import json
import logging
import re

import pytest
import torch
import yaml
from peft import PeftModel
from rich.console import Console
from transformers import AutoModelForImageTextToText

from lite_cpt.run import continual
from lite_cpt.run import rows as rows_module
from lite_cpt.arms.sft.method import SequentialSFT
from lite_cpt.train.batching import encode_sft, IGNORE_INDEX
from lite_cpt.run.continual import run_recipe
from lite_cpt.errors import UserError
from lite_cpt.results.predictions import BASE_PREDICTIONS, read_predictions, row_predictions_path
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.train.phase import examples_of
from lite_cpt.train.sft import sft_loss_sum
from lite_cpt.tiny.base import ensure_tiny_base
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.slow
ARMS = [{"name": "sft", "lr": 5e-3, "batch_size": 8}, {"name": "multitask_sft", "lr": 5e-3, "batch_size": 8}]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict(tiny_recipe(tmp, arms=ARMS, seeds=[0, 1], logging={"tensorboard": True}))
    return recipe, run_recipe(recipe)


def test_run_writes_matrix_logs_adapters_and_report(finished_run):
    recipe, run_dir = finished_run
    assert sorted(p.name for p in run_dir.glob("seed_*")) == ["seed_0", "seed_1"], "each seed its own directory"
    seed_dir = run_dir / "seed_0"
    matrix = json.loads((seed_dir / "sft" / "matrix.json").read_text())
    assert matrix["tasks"] == ["clevr", "geometry", "pathvqa"]
    assert len(matrix["R"]) == 4 and all(len(row) == 3 for row in matrix["R"])
    assert all(0.0 <= x <= 1.0 for row in matrix["R"] for x in row)
    general = json.loads((seed_dir / "sft" / "general.json").read_text())
    assert general["benchmarks"] == ["pope"] and len(general["G"]) == 4
    joint = json.loads((seed_dir / "multitask_sft" / "matrix.json").read_text())
    assert joint["joint"] is True and len(joint["R"]) == 2
    assert joint["R"][0] == matrix["R"][0], "row 0 (the base) is shared by every arm"
    events = [json.loads(l) for l in (seed_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    ends = [e for e in events if e["event"] == "task_end"]
    assert [e["task_index"] for e in ends] == [1, 2, 3]
    assert {(e["task_index"], e["task"]) for e in events if e["event"] == "step"} == {
        (1, "clevr"), (2, "geometry"), (3, "pathvqa")}
    for e in ends:
        saved = json.loads((seed_dir / "sft" / f"task_{e['task_index']}" / continual.PHASE_STATS).read_text())
        assert e["train_seconds"] == round(saved["train_seconds"], 3) and e["policy_updates"] == saved["steps"]
        assert 0 < e["eval_seconds"] < 600, "seconds the evaluation took"
        assert row_predictions_path(seed_dir / "sft", e["task_index"]).is_file()
    assert all(e["policy_updates"] == 2 and e["trained_tokens"] > 0 for e in ends)
    # Without a calibration of this device no prediction is logged beside the measured seconds
    # (tests/test_first_minute.py: with one, it is).
    assert all("predicted_seconds" not in e and e["device"] == "cpu" for e in ends)
    assert any(e["event"] == "step" and "loss" in e for e in events)
    for t in (1, 2, 3):
        assert (seed_dir / "sft" / f"task_{t}" / "adapter_model.safetensors").exists()
    for name in ("report.md", "summary.json", "heatmap_sft.png", "seen_task_average.png"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["arms"]) == {"sft", "multitask_sft"}
    joint_acc = summary["arms"]["multitask_sft"]["metrics"]["ACC"]
    assert joint_acc["per_seed"]["0"] == pytest.approx(sum(joint["R"][1]) / 3)
    assert summary["arms"]["multitask_sft"]["metrics"]["BWT"]["value"] is None
    assert summary["arms"]["sft"]["metrics"]["BWT"]["value"] is not None
    assert "after joint training" in (run_dir / "report.md").read_text()
    assert "time plan (s)" in (run_dir / "report.md").read_text()


def test_each_seed_runs_into_its_own_directory_and_the_report_spans_seeds(finished_run):
    recipe, run_dir = finished_run
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["seeds"] == [0, 1]
    first, second = (json.loads((run_dir / f"seed_{k}" / "sft" / "matrix.json").read_text()) for k in (0, 1))
    assert len(second["R"]) == 4
    assert all((run_dir / f"seed_{k}" / BASE_PREDICTIONS).is_file() for k in (0, 1)), "row 0 per seed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    bwt = summary["arms"]["sft"]["metrics"]["BWT"]
    assert bwt["interval"] == "t, 2 seeds" and set(bwt["per_seed"]) == {"0", "1"}
    assert bwt["value"] == pytest.approx((bwt["per_seed"]["0"] + bwt["per_seed"]["1"]) / 2)
    assert bwt["ci95"][0] <= bwt["value"] <= bwt["ci95"][1]
    difference = summary["differences"][0]
    assert (difference["arm"], difference["reference"]) == ("multitask_sft", "sft")
    assert difference["metrics"]["ACC"]["interval"] == "paired t, 2 seeds"
    text = (run_dir / "report.md").read_text()
    assert "## Paired differences against sft" in text and "### Every seed's value" in text


def test_evaluation_saves_every_rows_items(finished_run):
    recipe, run_dir = finished_run
    seed_dir = run_dir / "seed_1"
    matrix = json.loads((seed_dir / "sft" / "matrix.json").read_text())
    general = json.loads((seed_dir / "sft" / "general.json").read_text())
    rows = [read_predictions(seed_dir / BASE_PREDICTIONS)]
    rows += [read_predictions(row_predictions_path(seed_dir / "sft", i)) for i in (1, 2, 3)]
    for row, scores, bench in zip(rows, matrix["R"], general["G"]):
        assert list(row) == ["clevr", "geometry", "pathvqa", "pope"]
        assert all(len(items) == 8 and {"id", "answer", "score"} <= set(items[0]) for items in row.values())
        means = [sum(i["score"] for i in row[name]) / 8 for name in ("clevr", "geometry", "pathvqa", "pope")]
        assert means == pytest.approx(scores + bench)


def test_tensorboard_events_are_written_and_read_back(finished_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe, run_dir = finished_run
    events = EventAccumulator(str(run_dir / "tensorboard" / "seed_1" / "sft"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "train/loss" in tags and "task_end/policy_updates" in tags
    logged = [json.loads(line) for line in (run_dir / "seed_1" / "sft" / "metrics.jsonl").read_text().splitlines()]
    losses = [record["loss"] for record in logged if record["event"] == "step"]
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, len(losses) + 1))
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)
    ends = [sum(r["event"] == "step" for r in logged[:i]) for i, r in enumerate(logged) if r["event"] == "task_end"]
    assert len(ends) == 3 and [e.step for e in events.Scalars("task_end/policy_updates")] == ends  # train step at task end


def test_saved_adapter_loads_with_plain_peft(finished_run):
    recipe, run_dir = finished_run
    base = AutoModelForImageTextToText.from_pretrained(ensure_tiny_base(recipe))
    model = PeftModel.from_pretrained(base, str(run_dir / "seed_0" / "sft" / "task_3"))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values()), "trained LoRA B is non-zero"


def test_resume_after_second_task_matches_uninterrupted_run(finished_run, tmp_path, monkeypatch):
    reference = json.loads((finished_run[1] / "seed_0" / "sft" / "matrix.json").read_text())
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS[:1]))
    original_train = SequentialSFT.train

    def killed_on_task_3(self, examples, phase):
        if phase.index == 3:
            phase.on_step({"step": 1, "loss": 99.0})  # logged by the attempt the kill cuts short
            raise KeyboardInterrupt("killed")
        return original_train(self, examples, phase)

    monkeypatch.setattr(SequentialSFT, "train", killed_on_task_3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    partial = json.loads((recipe.run_dir / "seed_0" / "sft" / "matrix.json").read_text())
    assert len(partial["R"]) == 3, "base row + two finished tasks"
    monkeypatch.setattr(SequentialSFT, "train", original_train)
    console = Console(file=io.StringIO(), width=300, force_terminal=True)
    run_recipe(recipe, console=console)
    resumed = json.loads((recipe.run_dir / "seed_0" / "sft" / "matrix.json").read_text())
    assert resumed == reference, "seed 0 alone gives the numbers of seed 0 in a two-seed run"
    logged = [json.loads(line) for line in (recipe.run_dir / "seed_0" / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert not [r for r in logged if r.get("loss") == 99.0], "the killed attempt's records are cut"
    said = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())
    assert "sft · task 3/3 pathvqa" in said, "the training bar"
    assert "sft: resuming after task 2 (geometry)" in said
    scores = " ".join(f"{t}={s:.2f}" for t, s in zip(resumed["tasks"], resumed["R"][3]))
    assert f"sft · pathvqa: {scores}" in said
    assert "sft: no time plan: no calibration for this device (cpu)" in said
    assert "reference 24 GB card" not in said
    console = Console(file=io.StringIO(), width=300)
    run_recipe(recipe, console=console)
    assert "sft: finished earlier, skipping" in console.file.getvalue()


def test_rerun_with_a_different_recipe_is_refused_but_seeds_can_be_added(finished_run):
    recipe, run_dir = finished_run
    changed = recipe.model_copy(update={"tasks": recipe.tasks[:2]})
    with pytest.raises(UserError, match="different recipe"):
        continual.prepare_run_dir(changed)
    continual.prepare_run_dir(recipe.model_copy(update={"seeds": None, "seed": 5}))
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["seeds"] == [0, 1, 5]
    continual.prepare_run_dir(recipe)  # the saved recipe keeps every seed asked for so far
    assert yaml.safe_load((run_dir / "recipe.yaml").read_text())["seeds"] == [0, 1, 5]


def test_sft_loss_never_calls_lm_head_and_matches_full_logits(finished_run):
    recipe, _ = finished_run
    ws = continual.build_workspace(recipe.model_copy(update={"name": "loss-check"}))
    model, processor = ws.model, ws.processor
    examples = examples_of(ws.tasks[0], ws.tasks[0].load("train", 4))
    head = model.get_base_model().lm_head
    calls = []
    hook = head.register_forward_hook(lambda *args: calls.append(1))
    try:
        nll, n_tokens = sft_loss_sum(model, processor, examples)
        nll.backward()
    finally:
        hook.remove()
    assert calls == [], "the loss must not run the lm_head (full logits)"
    # Reference: full logits from the model's own forward, shifted cross-entropy.
    batch, labels = encode_sft(processor, [e.prompt() for e in examples], [e.sample.answer for e in examples],
                               max_prompt_tokens=1024, max_answer_tokens=64)
    with torch.no_grad():
        logits = model(**batch).logits
    reference = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    assert n_tokens == int((labels != IGNORE_INDEX).sum())
    assert torch.allclose(nll.detach(), reference, rtol=1e-5)


def test_eval_command_scores_a_saved_adapter(finished_run, tmp_path):
    from typer.testing import CliRunner

    from lite_cpt.cli import app
    from tests.helpers import write_recipe

    recipe, run_dir = finished_run
    path = write_recipe(tmp_path / "r.yaml", recipe.model_dump(mode="json"))
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(app, ["eval", str(path), "--adapter", str(run_dir / "seed_0" / "sft" / "task_3"),
                                      "--task", "clevr", "--task", "pope", "--json", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    matrix = json.loads((run_dir / "seed_0" / "sft" / "matrix.json").read_text())
    general = json.loads((run_dir / "seed_0" / "sft" / "general.json").read_text())
    # The same adapter and greedy decoding give the numbers the run recorded after task 3.
    assert scores == {"clevr": matrix["R"][3][0], "pope": general["G"][3][0]}
    missing = CliRunner().invoke(app, ["eval", str(path), "--adapter", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no PEFT adapter" in missing.output
    names = sorted([t.name for t in recipe.tasks] + [b.name for b in recipe.evaluation.general])
    unknown = CliRunner().invoke(app, ["eval", str(path), "--task", "nope", "--task", "clevr"])
    assert unknown.exit_code == 1
    assert f"unknown task nope; allowed values: {', '.join(names)}" in " ".join(unknown.output.split())


def test_a_worker_writes_the_base_row_once_and_trains_only_its_own_arm(tmp_path, caplog):
    """What a worker of a parallel sweep runs: row 0 of its seed, then one arm of that seed."""
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS, tasks=("mini_clevr",)))
    screen = Console(file=io.StringIO(), width=200, force_terminal=True)
    seed_dir = continual.ensure_base_row(recipe, console=screen)
    assert seed_dir == recipe.run_dir / "seed_0"
    assert "evaluating the base model" in screen.file.getvalue()
    # the bar counts the evaluation sets done (a task, a benchmark)
    assert re.search(r"evaluating the base model[^\n]*2/2", screen.file.getvalue())
    written = (seed_dir / continual.BASE_SCORES).stat().st_mtime_ns
    assert continual.ensure_base_row(recipe) == seed_dir
    assert (seed_dir / continual.BASE_SCORES).stat().st_mtime_ns == written, "row 0 is computed once"
    assert continual.run_seed_arms(recipe, ["multitask_sft"], console=screen) == seed_dir
    assert continual.arm_finished(recipe, "multitask_sft") and not (seed_dir / "sft").exists()
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.file.getvalue())  # rich's colours and cursor moves
    assert "multitask_sft: no time plan: no calibration for this device (cpu" in shown
    # killed while rewriting its matrix and mid-append of a log line: the same command repairs both
    arm_dir = seed_dir / "multitask_sft"
    matrix = json.loads((arm_dir / "matrix.json").read_text())
    (arm_dir / "matrix.json").write_text((arm_dir / "matrix.json").read_text()[:20])
    with open(arm_dir / "metrics.jsonl", "a") as log_file:
        log_file.write('{"event": "st')
    with caplog.at_level(logging.WARNING):
        continual.run_seed_arms(recipe, ["multitask_sft"])
    assert json.loads((arm_dir / "matrix.json").read_text()) == matrix
    assert f"{arm_dir / 'metrics.jsonl'}: dropped 1 unreadable line(s)" in caplog.text
    assert all(json.loads(line) for line in (arm_dir / "metrics.jsonl").read_text().splitlines())


def test_resetting_the_adapter_gives_the_base_model_back_with_the_seeds_initialisation():
    """Each arm (and each seed reusing the loaded model) starts from a fresh adapter, never from
    the weights the previous arm trained."""
    from lite_cpt.models import add_lora
    from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
    from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

    model = add_lora(build_tiny_model(TinyModelConfig(), tiny_corpus(0))[0], LoraConfig(r=4, alpha=8))

    def adapter() -> dict:
        return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}

    continual.reset_adapter(model, seed=7)
    fresh = adapter()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(1.0)  # what training an arm leaves behind
    continual.reset_adapter(model, seed=7)
    after = adapter()
    assert fresh and all(torch.equal(after[n], fresh[n]) for n in fresh)
    assert all(not p.any() for n, p in after.items() if "lora_B" in n), "B = 0: the adapted model is the base"
    continual.reset_adapter(model, seed=8)
    assert any(not torch.equal(p, fresh[n]) for n, p in adapter().items() if "lora_A" in n)


def test_a_run_killed_mid_phase_and_while_evaluating_resumes_each_with_the_arms_state(tmp_path, monkeypatch):
    """Killed after a mid-phase checkpoint, the phase resumes from it; killed while evaluating a saved
    phase, the replay arm's buffer of the finished tasks is rebuilt and the phase is evaluated."""
    recipe = recipe_from_dict(tiny_recipe(tmp_path, tasks=("mini_clevr", "mini_geometry"),
                                          arms=[{"name": "replay", "lr": 5e-3, "batch_size": 8}],
                                          checkpoint={"every_updates": 1, "every_minutes": None}))
    log_event, evaluate = continual.log_event, rows_module.evaluate_sets_items

    def killed_after_logging_step_2(ws, arm_dir, record):
        log_event(ws, arm_dir, record)
        if record["event"] == "step" and record["step"] == 2:  # update 1 is checkpointed
            raise KeyboardInterrupt("killed mid-phase")

    monkeypatch.setattr(continual, "log_event", killed_after_logging_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    monkeypatch.setattr(continual, "log_event", log_event)
    calls = []

    def killed_evaluating_task_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # (row 0 was saved before) task 1, then task 2
            raise KeyboardInterrupt("killed")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(rows_module, "evaluate_sets_items", killed_evaluating_task_2)
    screen = Console(file=io.StringIO(), width=400)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, console=screen)
    arm_dir = recipe.run_dir / "seed_0" / "replay"
    checkpoint = arm_dir / "checkpoints" / "phase_1_update_1"
    assert f"replay: resuming task 1 (clevr) from its checkpoint after update 1: {checkpoint}" in re.sub(
        r"\s*\n\s*", "", screen.file.getvalue())
    assert (arm_dir / "task_2" / continual.PHASE_STATS).exists()
    monkeypatch.setattr(rows_module, "evaluate_sets_items", evaluate)
    screen = Console(file=io.StringIO(), width=300)
    run_recipe(recipe, console=screen)
    assert "replay: task 2 (geometry) was trained and saved earlier; evaluating it" in screen.file.getvalue()
    assert len(json.loads((arm_dir / "matrix.json").read_text())["R"]) == 3
    logged = [json.loads(line) for line in (arm_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["task_index"], r["step"]) for r in logged if r["event"] == "step"]
    assert steps == [(1, 1), (1, 2), (2, 1), (2, 2)], "the step logged after the checkpoint is redone once"


def test_general_benchmarks_read_their_data_under_the_data_root(tmp_path, monkeypatch, private_hf_home):
    from lite_cpt.data.fixtures import write_fixtures

    root = write_fixtures(tmp_path / "data", n=4, seed=0)
    raw = tiny_recipe(tmp_path, tasks=("mini_clevr",), data={"root": str(root)})
    raw["evaluation"]["general"] = [{"name": "pope", "type": "pope", "size": 4}]
    monkeypatch.chdir(tmp_path)  # nothing is found relative to the working directory
    ws = continual.build_workspace(recipe_from_dict(raw))
    assert [s.task.name for s in ws.general] == ["pope"] and len(ws.general[0].samples) == 4


def test_evaluation_sets_of_a_recipe_read_under_its_data_root_at_its_sizes_or_fewer(tmp_path, monkeypatch,
                                                                                    private_hf_home):
    """What `lite-cpt eval` and the calibration evaluate: each task's and benchmark's test split
    at the recipe's size, or at most `most` items, read under data.root wherever the command runs."""
    from lite_cpt.data.fixtures import write_fixtures
    from lite_cpt.run.evaluate import recipe_eval_sets

    root = write_fixtures(tmp_path / "data", n=6, seed=0)
    raw = tiny_recipe(tmp_path, tasks=("mini_clevr",), data={"root": str(root)})
    raw["tasks"][0]["test_size"] = 5
    raw["evaluation"]["general"] = [{"name": "pope", "type": "pope", "size": 4}]
    monkeypatch.chdir(tmp_path)
    recipe = recipe_from_dict(raw)
    assert [(s.task.name, len(s.samples)) for s in recipe_eval_sets(recipe)] == [("clevr", 5), ("pope", 4)]
    assert [len(s.samples) for s in recipe_eval_sets(recipe, most=3)] == [3, 3]
    assert [len(s.samples) for s in recipe_eval_sets(recipe, most=10)] == [5, 4]


def test_evaluation_prompts_keep_the_tasks_last_prompt_tokens(monkeypatch):
    from types import SimpleNamespace

    from lite_cpt.run import evaluate
    from lite_cpt.recipe_run import GenerationConfig
    from lite_cpt.recipe_tasks import TaskConfig
    from lite_cpt.tasks import build_task

    seen = {}

    def fake_generate(model, processor, prompts, sampling, **settings):
        seen.update(settings)
        return SimpleNamespace(texts=["x"] * len(prompts))

    monkeypatch.setattr(evaluate, "generate_completions", fake_generate)
    task = build_task(TaskConfig(name="clevr", type="mini_clevr", max_prompt_tokens=77), None, 0)
    evalset = evaluate.EvalSet(task, task.load("test", 2))
    items = evaluate.score_items(None, None, evalset, GenerationConfig(batch_size=2))
    assert seen["max_prompt_tokens"] == 77 and seen["prompts_per_call"] == 2 and len(items) == 2
