import json

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText

from lite_cpt import continual
from lite_cpt.arms import ArmMethod
from lite_cpt.batching import encode_sft, IGNORE_INDEX
from lite_cpt.continual import run_recipe
from lite_cpt.errors import UserError
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.sft import examples_of, sft_loss_sum
from lite_cpt.tiny_base import ensure_tiny_base
from tests.helpers import tiny_recipe

pytestmark = pytest.mark.slow
ARMS = [{"name": "sft", "lr": 5e-3, "batch_size": 8}, {"name": "multitask_sft", "lr": 5e-3, "batch_size": 8}]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    recipe = recipe_from_dict(tiny_recipe(tmp, arms=ARMS))
    return recipe, run_recipe(recipe)


def test_run_writes_matrix_logs_adapters_and_report(finished_run):
    recipe, run_dir = finished_run
    matrix = json.loads((run_dir / "sft" / "matrix.json").read_text())
    assert matrix["tasks"] == ["clevr", "geometry", "pathvqa"]
    assert len(matrix["R"]) == 4 and all(len(row) == 3 for row in matrix["R"])
    assert all(0.0 <= x <= 1.0 for row in matrix["R"] for x in row)
    general = json.loads((run_dir / "sft" / "general.json").read_text())
    assert general["benchmarks"] == ["pope"] and len(general["G"]) == 4
    joint = json.loads((run_dir / "multitask_sft" / "matrix.json").read_text())
    assert joint["joint"] is True and len(joint["R"]) == 2
    assert joint["R"][0] == matrix["R"][0], "row 0 (the base) is shared by every arm"
    events = [json.loads(l) for l in (run_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    ends = [e for e in events if e["event"] == "task_end"]
    assert [e["task_index"] for e in ends] == [1, 2, 3]
    assert all(e["policy_updates"] == 2 and e["trained_tokens"] > 0 for e in ends)
    # The time plan's prediction for each task sits beside the measured seconds.
    for e in ends:
        predicted = e["predicted_seconds"]
        assert set(predicted) == {"sft_step", "evaluation", "train"}
        assert predicted["train"] == predicted["sft_step"] > 0 and predicted["evaluation"] > 0
    assert any(e["event"] == "step" and "loss" in e for e in events)
    for t in (1, 2, 3):
        assert (run_dir / "sft" / f"task_{t}" / "adapter_model.safetensors").exists()
    for name in ("report.md", "summary.json", "heatmap_sft.png", "seen_task_average.png"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary) == {"sft", "multitask_sft"}
    assert summary["multitask_sft"]["ACC"] == pytest.approx(sum(joint["R"][1]) / 3)
    assert summary["multitask_sft"]["BWT"] is None and summary["sft"]["BWT"] is not None
    assert "after joint training" in (run_dir / "report.md").read_text()
    assert "time plan (s)" in (run_dir / "report.md").read_text()


def test_saved_adapter_loads_with_plain_peft(finished_run):
    recipe, run_dir = finished_run
    base = AutoModelForImageTextToText.from_pretrained(ensure_tiny_base(recipe))
    model = PeftModel.from_pretrained(base, str(run_dir / "sft" / "task_3"))
    lora = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert lora and any(p.abs().sum() > 0 for p in lora.values()), "trained LoRA B is non-zero"


def test_resume_after_second_task_matches_uninterrupted_run(finished_run, tmp_path, monkeypatch):
    reference = json.loads((finished_run[1] / "sft" / "matrix.json").read_text())
    recipe = recipe_from_dict(tiny_recipe(tmp_path, arms=ARMS[:1]))
    original_train = ArmMethod.train

    def killed_on_task_3(self, examples, phase):
        if phase.index == 3:
            raise KeyboardInterrupt("killed")
        return original_train(self, examples, phase)

    monkeypatch.setattr(ArmMethod, "train", killed_on_task_3)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe)
    partial = json.loads((recipe.run_dir / "sft" / "matrix.json").read_text())
    assert len(partial["R"]) == 3, "base row + two finished tasks"
    monkeypatch.setattr(ArmMethod, "train", original_train)
    run_recipe(recipe)
    resumed = json.loads((recipe.run_dir / "sft" / "matrix.json").read_text())
    assert resumed == reference


def test_rerun_with_a_different_recipe_is_refused(finished_run):
    recipe, _ = finished_run
    changed = recipe.model_copy(update={"seed": 1})
    with pytest.raises(UserError, match="different recipe"):
        continual.prepare_run_dir(changed)


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
    result = CliRunner().invoke(app, ["eval", str(path), "--adapter", str(run_dir / "sft" / "task_3"),
                                      "--task", "clevr", "--task", "pope", "--json", str(out)])
    assert result.exit_code == 0, result.output
    scores = json.loads(out.read_text())
    matrix = json.loads((run_dir / "sft" / "matrix.json").read_text())
    general = json.loads((run_dir / "sft" / "general.json").read_text())
    # The same adapter and greedy decoding give the numbers the run recorded after task 3.
    assert scores == {"clevr": matrix["R"][3][0], "pope": general["G"][3][0]}
    missing = CliRunner().invoke(app, ["eval", str(path), "--adapter", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "no PEFT adapter" in missing.output
