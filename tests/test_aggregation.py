"""Several optimizer steps per rollout batch: each step's gradient, loss, KL and clip fraction
are those of its own mini-batch's loss under the recipe's aggregation (EasyR1's micro-batch
token mean of the paper's period, or the whole mini-batch's token mean)."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.train.aggregation import loss_groups
from lite_cpt.train.batching import collate, tokenizer_of
from lite_cpt.kernels.grpo_loss import reference_grpo_loss
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.train.phase import Phase
from lite_cpt.recipe import arm_config
from lite_cpt.train.policy_update import compute_advantages, encode_rollouts, mini_batch_rows, policy_update
from lite_cpt.train.rollout_batch import Rollouts
from tests.test_rft import KNOBS, lora_params, policy, tiny, vowel_examples  # noqa: F401

LENGTHS = [1, 5, 2, 7, 3, 1, 6, 2, 4, 1, 8, 2, 3, 5, 1, 2]  # response tokens (the last one is the end of turn)
REWARDS = [1, 0, 1, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 1, 0, 1]


def _rollouts(processor) -> Rollouts:
    tokenizer = tokenizer_of(processor)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    a, b = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("a", "b"))
    ids = [[a if r else b] * (n - 1) + [end] for n, r in zip(LENGTHS, REWARDS)]
    return Rollouts(examples=vowel_examples(4), group_size=4, token_ids=ids, texts=["a"] * 16,
                    rewards=torch.tensor(REWARDS, dtype=torch.float32))


def _reference(model, groups, advantages, rft):
    """EasyR1's loss of one mini-batch, written out: each loss group's token mean of the
    reference per-token loss, divided by the number of groups (one group = the token mean)."""
    loss, kl, clip = 0.0, 0.0, 0.0
    for group in groups:
        scored = token_logprobs(model, group["batch"], group["labels"], temperature=rft.temperature)
        part, stats = reference_grpo_loss(scored.logp, group["old"], advantages[group["rows"]], group["mask"],
                                          ref_logp=group["ref"], beta=rft.kl_beta, eps_low=rft.eps_low,
                                          eps_high=rft.eps_high, dual_clip=rft.dual_clip, aggregation="token-mean")
        loss = loss + part / len(groups)
        kl += float(stats["kl_mean"]) / len(groups)
        clip += float(stats["clip_fraction"]) / len(groups)
    return loss, kl, clip


def _groups(model, processor, rollouts, rows, rft, aggregation):
    """Each loss group of a mini-batch, collated, with the rollout-time and reference log-probs."""
    pad = tokenizer_of(processor).pad_token_id
    lengths = [len(ids) for ids in rollouts.token_ids]
    out = []
    for group, _ in loss_groups(rows, lengths, aggregation, rft.loss_micro_batch):
        batch, labels = collate(encode_rollouts(processor, rollouts, group, cot=False), pad)
        with torch.no_grad():
            old = token_logprobs(model, batch, labels)
            with model.disable_adapter():
                ref = token_logprobs(model, batch, labels)
        out.append({"rows": group, "batch": batch, "labels": labels, "mask": old.mask,
                    "old": old.logp.detach(), "ref": ref.logp.detach()})
    return out


@pytest.mark.parametrize("aggregation", ["micro-token-mean", "token-mean"])
def test_each_step_is_the_gradient_of_its_own_mini_batchs_loss(policy, aggregation):
    model, processor = policy
    arm = arm_config(name="rft", lr=0.05, grad_clip=1e9, rft={
        "group_size": 4, "prompts_per_step": 4, "mini_batches_per_rollout": 2, "cot": False, "kl": True,
        "kl_beta": 0.1, "kl_reference": "base", "aggregation": aggregation, "loss_micro_batch": 3})
    rft = arm.rft
    rollouts = _rollouts(processor)
    advantages = compute_advantages(rollouts, rft)
    parts = mini_batch_rows(rollouts, 2)
    assert [len(p) for p in parts] == [8, 8]
    # the rollout-time policy's and the reference's log-probs, for both aggregations' groupings
    groups = {agg: [_groups(model, processor, rollouts, rows, rft, agg) for rows in parts]
              for agg in ("micro-token-mean", "token-mean")}
    assert [len(g) for g in groups["micro-token-mean"][0]] != [1]  # groups of 3, 3, 2 rollouts
    params = dict(lora_params(model))
    optimizer = torch.optim.AdamW(list(params.values()), lr=arm.lr)
    seen = []
    step = optimizer.step

    def checked_step(*args, **kwargs):
        k = len(seen)
        loss, kl, clip = _reference(model, groups[aggregation][k], advantages, rft)
        expected = torch.autograd.grad(loss, list(params.values()))
        for (name, param), grad in zip(params.items(), expected):
            torch.testing.assert_close(param.grad, grad, rtol=1e-4, atol=1e-6, msg=f"step {k + 1}: {name}")
        other = _reference(model, groups["token-mean" if aggregation != "token-mean" else "micro-token-mean"][k],
                           advantages, rft)[0]
        assert abs(float(other) - float(loss)) > 1e-4, "the two aggregations weigh the tokens differently"
        seen.append((float(loss), kl, clip))
        return step(*args, **kwargs)

    optimizer.step = checked_step
    result = policy_update(model, processor, optimizer, rollouts, arm, Phase(KNOBS))
    assert result["optimizer_steps"] == len(seen) == 2
    # the record's loss, KL and clip fraction: the mean of the two steps' own values
    for key, index in (("loss", 0), ("kl", 1), ("clip_fraction", 2)):
        assert result[key] == pytest.approx(sum(s[index] for s in seen) / 2, rel=1e-4, abs=1e-7), key
    # the first step is on-policy (ratio 1: nothing clipped); the second sees a moved policy
    assert seen[0][2] == 0.0 and seen[1][2] > 0.0
