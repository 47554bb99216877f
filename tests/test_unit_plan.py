"""The recipe is resolved once: per (seed, arm) one unit plan, per seed one evaluation plan,
and what lies below the run loop reads those (tests/test_structure.py checks that statically)."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
import torch

from lite_cpt.planner import plan as planner_plan
from lite_cpt.planner.plan import resolve_eval_batch, resolve_knobs
from lite_cpt.recipe import recipe_from_dict
from lite_cpt.run.continual import run_recipe
from lite_cpt.run.unit_plan import plan_evaluation, plan_unit
from tests.helpers import tiny_recipe


def _count_calls(monkeypatch, original, calls: Counter, key) -> None:
    """Replace `original` in every lite_cpt module that holds it by name with a counting twin."""

    def counted(recipe, *args, **kwargs):
        calls[key(recipe, *args)] += 1
        return original(recipe, *args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("lite_cpt") and getattr(module, original.__name__, None) is original:
            monkeypatch.setattr(module, original.__name__, counted)


def _small_recipe(tmp_path, **extra) -> dict:
    arms = [{"name": "sft", "lr": 5e-3, "batch_size": 4, "max_steps_per_task": 1},
            {"name": "rft", "lr": 1e-3, "max_steps_per_task": 1,
             "rft": {"group_size": 2, "prompts_per_step": 2, "max_new_tokens": 2, "cot": False}}]
    raw = tiny_recipe(tmp_path, arms=arms, tasks=("mini_clevr",), **extra)
    raw["tasks"][0].update(train_size=4, test_size=2)
    raw["evaluation"]["general"][0]["size"] = 2
    return raw


@pytest.mark.slow
def test_a_run_resolves_the_knobs_once_per_seed_and_arm_and_the_evaluation_once_per_seed(tmp_path, monkeypatch):
    knobs, batches = Counter(), Counter()
    _count_calls(monkeypatch, resolve_knobs, knobs, lambda recipe, arm, *_: (recipe.seed, arm))
    _count_calls(monkeypatch, resolve_eval_batch, batches, lambda recipe, *_: recipe.seed)
    run_dir = run_recipe(recipe_from_dict(_small_recipe(tmp_path, seeds=[0, 1])))
    assert knobs == {(0, "sft"): 1, (0, "rft"): 1, (1, "sft"): 1, (1, "rft"): 1}
    assert batches == {0: 1, 1: 1}
    assert all((run_dir / f"seed_{s}" / arm / "matrix.json").exists() for s in (0, 1) for arm in ("sft", "rft"))


def test_a_unit_plan_holds_the_recipe_values_its_arm_reads(tmp_path):
    raw = _small_recipe(tmp_path, checkpoint={"every_updates": 7, "every_minutes": None, "keep": 3},
                        faults={"max_consecutive_nonfinite": 5, "max_adapter_weight": 12.5})
    raw["seed"] = 4
    raw["model"]["vision_cache_gb"] = 0.5
    recipe = recipe_from_dict(raw)
    sft, rft = recipe.arms
    unit = plan_unit(recipe, rft, model=torch.nn.Linear(2, 2), calibration=None)
    assert unit.arm is rft and unit.seed == 4 and unit.knobs == resolve_knobs(recipe, "rft")
    assert (unit.checkpoint.every_updates, unit.checkpoint.every_minutes, unit.checkpoint.keep) == (7, None, 3)
    assert (unit.max_nonfinite, unit.max_weight, unit.vision_cache_gb) == (5, 12.5, 0.5)
    assert unit.eval_cot is False and unit.rollout is None  # rollout.backend hf: no engine
    assert unit.time.predictions is None and unit.time.running == "cpu"
    # The OOM explainer's memory plan is the planner's for this arm of this recipe, made on demand.
    assert unit.plan_for(24).to_json() == planner_plan(recipe, 24, arm="rft").to_json()
    # The evaluation plan spells `auto` out: a number of prompts per call, never the word.
    auto = recipe.model_copy(update={"evaluation": recipe.evaluation.model_copy(
        update={"generation": recipe.evaluation.generation.model_copy(update={"batch_size": "auto"})})})
    assert isinstance(plan_evaluation(auto).generation.batch_size, int)
    assert plan_evaluation(recipe).generation.batch_size == 16


def test_the_token_budget_keeps_the_recipes_words_in_the_workload_and_none_in_the_knobs_means_off(tmp_path):
    """`micro_batch_tokens` is auto, off or a number in the recipe and in the planner's Workload
    alike; only the resolved Knobs use None, and there it means one thing: no budget (off)."""
    from lite_cpt.planner.workload import workload_of

    def arm_with(budget):
        raw = _small_recipe(tmp_path)
        raw["arms"][0]["micro_batch_tokens"] = budget
        recipe = recipe_from_dict(raw)
        return recipe, recipe.arms[0]

    for budget, packs in (("auto", True), ("off", False), (512, True)):
        recipe, arm = arm_with(budget)
        work = workload_of(recipe, arm)
        assert (work.micro_batch_tokens, work.pack_by_tokens) == (budget, packs)
        chosen = planner_plan(recipe, 24, arm="sft").knobs_for("sft").micro_batch_tokens  # a GPU's plan
        assert chosen is None if budget == "off" else chosen == 512 if budget == 512 else chosen > 0
