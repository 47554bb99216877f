"""A compute-matched RIF arm: its K-rollout estimate counts against plain RFT's rollouts."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.arms import build_arm
from lite_cpt.train.rif_budget import compute_matched_updates
from lite_cpt.recipe import arm_config, load_recipe
from lite_cpt.recipe_run import ArmConfig
from tests.test_rif import phase, scripted_examples, scripted_policy, trained_batches  # noqa: F401

RATES = [0.0, 0.25, 0.5, 0.75, 1.0, 0.5, 0.0, 1.0, 0.25, 0.75]
P, G = 2, 4


def _arm(name: str, **rif) -> ArmConfig:
    return arm_config(name=name, method="rif_rft" if rif else "rft",
                      rft={"group_size": G, "prompts_per_step": P, "cot": False, "kl": False}, **({"rif": rif} if rif else {}))


def _spent(arm: ArmConfig, scripted_policy, trained_batches) -> tuple[int, int]:
    """(answers generated, policy updates) of one phase of `arm` on the scripted instances."""
    scripted_policy.calls.clear()
    trained_batches.clear()
    examples = scripted_policy.register(scripted_examples(RATES))
    build_arm(arm, torch.nn.Linear(2, 2), None, lambda _: []).train(examples, phase())
    return sum(len(prompts) * group for prompts, group in scripted_policy.calls), len(trained_batches)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_rollouts_of_the_compute_matched_arm_equal_rfts_within_one_update(scripted_policy, trained_batches, k):
    rft_answers, rft_updates = _spent(_arm("rft"), scripted_policy, trained_batches)
    assert rft_updates == 5 and rft_answers == 5 * P * G
    answers, updates = _spent(_arm("rif_rft_compute", rollouts=k, budget="compute"), scripted_policy,
                              trained_batches)
    assert answers == len(RATES) * k + updates * P * G  # the estimate, then the updates
    assert rft_answers - P * G < answers <= rft_answers, "within one update's rollouts of RFT's"
    assert updates == compute_matched_updates(len(RATES), k, 1.0, P, G)
    matched_answers, matched_updates = _spent(_arm("rif_rft", rollouts=k, budget="matched"), scripted_policy,
                                              trained_batches)
    assert matched_updates == rft_updates and matched_answers == answers + (rft_updates - updates) * P * G


def test_an_estimate_dearer_than_rfts_rollouts_leaves_no_update(scripted_policy, trained_batches):
    answers, updates = _spent(_arm("rif_rft_compute", rollouts=5, budget="compute"), scripted_policy,
                              trained_batches)
    assert (answers, updates) == (len(RATES) * 5, 0)


def test_online_compute_matched_rolls_out_no_more_prompts_than_rft(scripted_policy, trained_batches):
    answers, updates = _spent(_arm("rif_online", rollouts=G, budget="compute", mode="online"), scripted_policy,
                              trained_batches)
    assert answers <= 5 * P * G and updates <= 5


def test_compute_matched_updates_by_hand():
    assert compute_matched_updates(1000, 5, 1.0, 16, 5) == 0  # K = G: the estimate is one RFT epoch
    assert compute_matched_updates(1000, 2, 1.0, 16, 5) == (63 * 80 - 2000) // 80 == 38
    assert compute_matched_updates(1000, 5, 3.0, 16, 5) == (188 * 80 - 5000) // 80 == 125


def test_the_faithful_recipe_runs_a_compute_matched_rif_arm_beside_the_update_matched_one():
    arms = {a.name: a for a in load_recipe("recipes/seven_tasks.yaml", check_data=False).arms}
    assert arms["rif_rft_compute"].method == "rif_rft" and arms["rif_rft_compute"].rif.budget == "compute"
    assert arms["rif_rft"].rif.budget in ("filtered", "matched")
