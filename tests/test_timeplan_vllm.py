"""The time plan of the vLLM backend: evaluation and RIF's K-rollout estimate on the continuously
batched engine, against hand computations (the static-call figures are in test_timeplan.py)."""

import dataclasses

import pytest

from lite_cpt.planner import Knobs, workload_of
from lite_cpt.planner.calibration import Calibration
from lite_cpt.planner.lengths import AnswerLengths
from lite_cpt.planner.timeplan import arm_time, counts_of, evaluation_seconds, prompt_tokens
from lite_cpt.recipe import recipe_from_dict

CAL = Calibration(device="test", model="tiny", parameters=0, decode_step_s=0.1, decode_s_per_sequence=0.01,
                  prefill_tokens_per_s=100.0, train_tokens_per_s=50.0, optimizer_step_s=0.5, source="test")


def _arm(backend: str, name: str = "rft", **arm):
    raw = {
        "name": "timed", "model": {"name": "tiny"}, "rollout": {"backend": backend},
        "tasks": [{"name": "a", "type": "mini_scienceqa", "train_size": 12, "test_size": 5, "epochs": 1},
                  {"name": "b", "type": "mini_gqa", "train_size": 8, "test_size": 3, "epochs": 1}],
        "arms": [{"name": name, "rft": {"group_size": 4, "prompts_per_step": 8, "max_new_tokens": 10}, **arm}],
        "evaluation": {"prompt": "cot", "generation": {"max_new_tokens": 7, "batch_size": 4},
                       "general": [{"name": "pope", "type": "mini_pope", "size": 2}]},
    }
    recipe = recipe_from_dict(raw)
    work = workload_of(recipe, recipe.arms[0])
    from lite_cpt.planner import total_parameters

    return work, dataclasses.replace(CAL, parameters=total_parameters(work.shape)), counts_of(recipe, recipe.arms[0])


def test_evaluation_on_the_engine_is_one_call_of_the_rows_prompts_by_hand():
    """10 prompts (5 + 3 + 2). transformers: calls of 4, 4, 2, each to its longest answer; the
    engine: one call of the 10 in its 64 slots, each answer its mean, plus the tail's drain."""
    work, cal, counts = _arm("vllm")
    p = prompt_tokens(work)
    assert counts.continuous and counts.eval_cot
    # the mini tasks have no length defaults: every chain of thought at the cap (7 steps)
    assert evaluation_seconds(work, cal, counts) == pytest.approx(10 * p / 100 + 7 * (0.1 + 10 * 0.01))
    static = 2 * (4 * p / 100 + 7 * (0.1 + 4 * 0.01)) + (2 * p / 100 + 7 * (0.1 + 2 * 0.01))
    assert evaluation_seconds(*_arm("hf")) == pytest.approx(static)
    # with answer lengths (mean 3 tokens, cv 0.5): the mean per slot, then the longest of 10 drains
    answers = AnswerLengths(3.0, 0.5, "test")
    known = dataclasses.replace(counts, tasks=tuple(dataclasses.replace(t, answers=answers) for t in counts.tasks))
    mean, longest = answers.mean_capped(7), answers.expected_longest(10, 7)
    assert 2.5 < mean < longest < 7
    by_hand = 10 * p / 100 + mean * (0.1 + 10 * 0.01) + (longest - mean) * (0.1 + 10 * 0.01)
    assert evaluation_seconds(work, cal, known) == pytest.approx(by_hand)
    # the measured rate of transformers' evaluation does not apply to the engine
    rated = dataclasses.replace(cal, model=work.shape.name, eval_prompts_per_s=1000.0)
    assert evaluation_seconds(work, rated, counts) == pytest.approx(evaluation_seconds(work, cal, counts))


def test_rif_estimate_on_the_engine_by_hand():
    """K = 4 answers for each of 12 + 8 rows, at the 10-token cap. transformers: calls of 2
    prompts (8 answers) each to its longest; the engine: each task's 48 and 32 answers in one call
    of 64 slots."""
    knobs = Knobs(4, 1024, 2)
    rif = {"method": "rif_rft", "rif": {"rollouts": 4, "mode": "offline"}}
    work, cal, counts = _arm("vllm", "rif_rft_x", **rif)
    p = prompt_tokens(work)
    engine = 12 * p / 100 + 10 * (0.1 + 48 * 0.01) + 8 * p / 100 + 10 * (0.1 + 32 * 0.01)
    assert arm_time(work, knobs, cal, counts).seconds["rif_rollout"] == pytest.approx(engine)
    assert engine == pytest.approx(20 * p / 100 + 10.0)
    work, cal, counts = _arm("hf", "rif_rft_x", **rif)
    assert arm_time(work, knobs, cal, counts).seconds["rif_rollout"] == pytest.approx(10 * (2 * p / 100 + 10 * 0.18))
