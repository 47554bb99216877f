"""The first mini-batch of a rollout batch takes its old-policy log-probs from its own update
forward (the policy has not moved yet) once the device has shown that forward to equal the
no-grad pass bit for bit: the gradients, weights and logged metrics are those of the full pass."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.recipe import arm_config
from lite_cpt.run.continual import reset_adapter
from lite_cpt.train import policy_update as pu
from lite_cpt.train.phase import Phase
from tests.test_aggregation import _rollouts  # the scripted batch: uneven lengths, mixed rewards
from tests.test_rft import KNOBS, lora_params, tiny  # noqa: F401


def _update(model, processor, arm, calls: list) -> tuple[dict, dict]:
    """One policy update from the same start; each scoring pass recorded as (grad on, steps so far)."""
    reset_adapter(model, seed=0)
    model.zero_grad(set_to_none=True)
    params = dict(lora_params(model))
    optimizer = torch.optim.AdamW(list(params.values()), lr=arm.lr)
    steps = []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    score = pu.MicroBatch.score

    def counted(self, *args, **kwargs):
        calls.append((torch.is_grad_enabled(), len(steps)))
        return score(self, *args, **kwargs)

    pu.MicroBatch.score = counted
    try:
        result = pu.policy_update(model, processor, optimizer, _rollouts(processor), arm, Phase(KNOBS))
    finally:
        pu.MicroBatch.score = score
    result.pop("logprob_seconds")
    return result, {n: p.detach().clone() for n, p in params.items()}


@pytest.mark.parametrize("shared_prefix", [False, True])
def test_the_first_mini_batch_reuses_its_update_forward_with_the_same_gradients_and_metrics(tiny, monkeypatch,
                                                                                          shared_prefix):
    model, processor = tiny
    monkeypatch.setattr(pu, "FIRST_STEP_REUSE", {})
    arm = arm_config(name="rft", lr=0.05, rft={
        "group_size": 4, "prompts_per_step": 4, "mini_batches_per_rollout": 2, "cot": False, "kl": True,
        "kl_beta": 0.1, "kl_reference": "base", "shared_prefix": shared_prefix})
    key = pu.reuse_key(model, arm.rft)

    full_calls: list = []
    full, full_weights = _update(model, processor, arm, full_calls)  # both passes run, compared
    assert pu.FIRST_STEP_REUSE == {key: True}  # no-grad eval pass == gradient pass, bit for bit
    reused_calls: list = []
    reused, reused_weights = _update(model, processor, arm, reused_calls)

    assert reused == full and full["optimizer_steps"] == 2  # loss, KL, clip fraction, entropy, tokens
    for name, weight in full_weights.items():
        assert torch.equal(reused_weights[name], weight), name
    first = sum(1 for grad, steps in full_calls if grad and steps == 0)  # the first mini-batch's passes
    old_pass = [c for c in full_calls if not c[0]]
    assert first >= 1 and len([c for c in reused_calls if not c[0]]) == len(old_pass) - first
    assert [c for c in reused_calls if c[0]] == [c for c in full_calls if c[0]]


def test_a_mismatch_keeps_the_old_policy_pass(tiny, monkeypatch):
    model, processor = tiny
    arm = arm_config(name="rft", rft={"group_size": 4, "prompts_per_step": 4, "mini_batches_per_rollout": 2,
                                     "cot": False, "kl": False})
    key = pu.reuse_key(model, arm.rft)
    monkeypatch.setattr(pu, "FIRST_STEP_REUSE", {})
    pu.record_reuse(key, True)
    pu.record_reuse(key, False)
    assert pu.FIRST_STEP_REUSE[key] is False
    rollouts = _rollouts(processor)
    advantages = pu.compute_advantages(rollouts, arm.rft)
    parts = pu.prepare_mini_batches(model, processor, rollouts, list(range(16)), advantages, arm.rft, KNOBS)
    assert all(mb.old_logp is not None and mb.check_reuse is None for part in parts for mb in part.micro_batches)
    pu.FIRST_STEP_REUSE[key] = True
    parts = pu.prepare_mini_batches(model, processor, rollouts, list(range(16)), advantages, arm.rft, KNOBS)
    assert [all(mb.old_logp is None for mb in part.micro_batches) for part in parts] == [True, False]
