"""Each arm is evaluated with the prompt format it trained with; an ablation shares one prompt."""

import json

import pytest

from lite_cpt.run import continual, evaluate
from lite_cpt.run import rows as rows_module
from lite_cpt.run.continual import run_recipe
from lite_cpt.run.eval_prompt import arm_eval_cot, base_files
from lite_cpt.recipe import load_recipe, recipe_from_dict
from lite_cpt.tasks.base import COT_INSTRUCTION
from tests.helpers import tiny_recipe


def _cots(recipe) -> dict[str, bool]:
    return {arm.name: arm_eval_cot(recipe, arm) for arm in recipe.arms}


def test_shipped_recipes_evaluate_sft_directly_and_rl_with_cot_unless_the_ablation_shares_one():
    faithful = load_recipe("recipes/seven_tasks.yaml", check_data=False)
    assert _cots(faithful) == {"sft": False, "rft": True, "rif_rft": True, "rif_rft_compute": True,
                               "multitask_sft": False, "multitask_rft": True}
    shared = load_recipe("recipes/ablations/shared_eval_prompt.yaml", check_data=False)
    assert set(_cots(shared).values()) == {True}
    direct = load_recipe("recipes/seven_tasks.yaml", ["evaluation.prompt=direct"], check_data=False)
    assert set(_cots(direct).values()) == {False}
    # an arm's own setting wins over the recipe's
    own = load_recipe("recipes/seven_tasks.yaml", ["arms.sft.eval_prompt=cot", "arms.rft.eval_prompt=direct"],
                      check_data=False)
    assert (_cots(own)["sft"], _cots(own)["rft"]) == (True, False)
    # an RL arm trained without a chain of thought is evaluated without one
    no_cot = load_recipe("recipes/ablations/no_cot.yaml", check_data=False)
    assert _cots(no_cot)["rft"] is False


@pytest.mark.slow
@pytest.mark.parametrize("shared", [None, "cot"])
def test_sft_is_evaluated_without_the_cot_instruction_by_default_and_with_it_when_shared(
        tmp_path, monkeypatch, shared):
    arms = [{"name": "sft", "lr": 5e-3, "batch_size": 4, "max_steps_per_task": 1},
            {"name": "rft", "lr": 1e-3, "max_steps_per_task": 1,
             "rft": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 2, "cot": True}}]
    raw = tiny_recipe(tmp_path, arms=arms, tasks=("mini_clevr",))
    raw["tasks"][0].update(train_size=4, test_size=2)
    raw["evaluation"]["general"] = []
    if shared:
        raw["evaluation"]["prompt"] = shared
    seen: dict[str, list[str]] = {}
    label = {"now": ""}
    evaluate_row, score_items = rows_module.evaluate_row, evaluate.score_items

    def row(ws, name, path, cot):
        label["now"] = name
        return evaluate_row(ws, name, path, cot)

    def items(model, processor, evalset, generation, *, cot=False):
        seen.setdefault(label["now"], []).extend(evalset.task.prompt(s, cot) for s in evalset.samples)
        return score_items(model, processor, evalset, generation, cot=cot)

    monkeypatch.setattr(continual, "evaluate_row", row)  # the rows after each task
    monkeypatch.setattr(rows_module, "evaluate_row", row)  # row 0, from rows.base_row
    monkeypatch.setattr(evaluate, "score_items", items)
    run_dir = run_recipe(recipe_from_dict(raw)) / "seed_0"

    sft_prompts, rft_prompts = seen["sft after clevr"], seen["rft after clevr"]
    assert sft_prompts and rft_prompts
    assert all(COT_INSTRUCTION in p for p in rft_prompts)
    assert all((COT_INSTRUCTION in p) == (shared == "cot") for p in sft_prompts)
    # each arm's row 0 is the base model in its own format, from that format's files
    for arm, cot in (("sft", shared == "cot"), ("rft", True)):
        matrix = json.loads((run_dir / arm / "matrix.json").read_text())
        base = json.loads((run_dir / base_files(cot)[0]).read_text())
        assert matrix["R"][0] == base["R0"]
        assert matrix.get("eval_prompt") == ("cot" if cot else None)
    assert (run_dir / base_files(False)[0]).exists() == (shared is None)
    # the share of answers cut at the cap is logged per task, for rollouts and evaluation
    ends = [json.loads(line) for line in (run_dir / "rft" / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["event"] == "task_end"]
    assert set(ends[0]["truncated_answers"]) == {"clevr"} and set(ends[0]["truncated_rollouts"]) == {"clevr"}
    assert 0 <= ends[0]["truncated_rollouts"]["clevr"] <= 1
