"""The policy update of a GRPO phase: one batch of rollouts turned into optimizer steps.

The rollout batch is split into mini-batches (one optimizer step each, `mini_batches_per_rollout`
of them, `inner_epochs` passes), each into micro-batches sized by the phase's memory knobs:
one row per rollout, or one packed row per prompt and its answers (`rft.shared_prefix`). The
no-grad log-prob passes (old policy, KL reference) run once, before the first step; then each
mini-batch's clipped GRPO loss is accumulated micro-batch by micro-batch and stepped.
lite_cpt.train.rft samples the rollouts and runs the phase loop around `policy_update`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lite_cpt.kernels import ADVANTAGE_ESTIMATORS, grpo_advantages, grpo_loss
from lite_cpt.train.aggregation import kernel_aggregation, loss_groups, loss_share
from lite_cpt.train.batching import EncodedRow, collate, encode_rows, to_device, tokenizer_of
from lite_cpt.train.logprob import TokenLogprobs, kernel_backend, token_logprobs
from lite_cpt.train.numerics import NonFiniteGuard, backward, step_if_finite
from lite_cpt.train.phase import Example, Knobs, Phase, example_limit
from lite_cpt.train.phase import micro_batches as micro_batches_of
from lite_cpt.train.reference_adapter import reference_policy
from lite_cpt.train.rollout import model_device, model_dtype, vision_token_ids
from lite_cpt.train.rollout_batch import Rollouts
from lite_cpt.train.shared_prefix import (PackedBatch, encode_groups, pack_groups, packed_micro_batches,
                                          packed_token_logprobs)
from lite_cpt.train.tis import tis_advantages

if TYPE_CHECKING:
    from lite_cpt.arms.rl.settings import RFTConfig
    from lite_cpt.recipe_run import ArmConfig


def max_prompt_tokens(examples: list[Example]) -> int | None:
    return example_limit(examples, "max_prompt_tokens")


def compute_advantages(rollouts: Rollouts, rft: RFTConfig) -> torch.Tensor:
    """[B*G] advantages from the recipe's estimator (GRPO's std scaling follows scale_rewards)."""
    if rft.advantage == "grpo":
        return grpo_advantages(rollouts.rewards, rollouts.group_size,
                               scale="std" if rft.scale_rewards else "none")
    return ADVANTAGE_ESTIMATORS[rft.advantage](rollouts.rewards, rollouts.group_size, rollouts.baseline)


@dataclass
class MicroBatch:
    """Encoded rollouts scored together, with what their loss compares against: one row per
    rollout (`batch`, `labels`), or packed rows of prompts shared by their answers (`packed`)."""

    rows: list[int]
    batch: dict | None
    labels: torch.Tensor | None
    advantages: torch.Tensor  # [len(rows)]
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    normaliser: float | None = None  # micro-token-mean: its loss group's tokens x group count
    packed: PackedBatch | None = None
    sampler_logp: list[list[float]] | None = None  # the rollout engine's, per answer token (rft.tis_cap)
    check_reuse: tuple | None = None  # compare old_logp with the first step's forward (see first_step_reuse)

    @property
    def input_tokens(self) -> int:
        """Tokens a pass over the micro-batch runs, padding left out."""
        if self.packed is not None:
            return int((self.packed.segments >= 0).sum())
        return int(self.batch["attention_mask"].sum())

    @property
    def padded_tokens(self) -> int:
        """Tokens a pass over the micro-batch runs, padding included."""
        return int((self.packed.segments if self.packed is not None else self.batch["input_ids"]).numel())

    def score(self, model, *, temperature: float, return_entropy: bool = False,
              logprob_chunk: int | None = None) -> TokenLogprobs:
        """Per-token log-probs of the micro-batch's answers, a row per rollout of `rows`."""
        if self.packed is not None:
            return packed_token_logprobs(model, self.packed, temperature=temperature,
                                         return_entropy=return_entropy, logprob_chunk=logprob_chunk)
        return token_logprobs(model, self.batch, self.labels, temperature=temperature,
                              return_entropy=return_entropy, logprob_chunk=logprob_chunk)


def encode_rollouts(processor, rollouts: Rollouts, rows: list[int], *, cot: bool) -> list[EncodedRow]:
    """Each of `rows` as its own encoded row: its response after its prompt (each prompt is
    encoded once for its group's rows)."""
    prompts = [rollouts.examples[g].prompt(cot) for g in range(rollouts.num_groups)]
    return encode_rows(processor, [prompts[r // rollouts.group_size] for r in rows],
                       [rollouts.token_ids[r] for r in rows], max_prompt_tokens(rollouts.examples))


def prepare_micro_batches(model, processor, rollouts: Rollouts, rows: list[int], advantages: torch.Tensor,
                          rft: RFTConfig, knobs: Knobs, *, old_policy: bool | None = None) -> list[MicroBatch]:
    """Encode `rows` in micro-batches (packed by `knobs`: a token budget over their real
    lengths, or a fixed count) and attach the no-grad log-probs the loss compares against:
    the old policy's (`old_policy`; by default when one rollout batch makes several optimizer
    steps) and the reference's (only with the KL on). Both passes run in eval mode: no dropout."""
    if old_policy is None:
        old_policy = steps_per_rollout(rft) > 1
    use_kl = rft.uses_kl
    make = shared_prefix_micro_batches if rft.shared_prefix else expanded_micro_batches
    micro_batches = make(model, processor, rollouts, rows, advantages, rft, knobs)
    if rft.tis_cap is not None and rollouts.sampler_logp is not None:
        for mb in micro_batches:
            mb.sampler_logp = [rollouts.sampler_logp[r] for r in mb.rows]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for mb in micro_batches:
                if old_policy:
                    # Without it the old policy is the current one: old_logp = logp.detach() of the update.
                    mb.old_logp = mb.score(model, temperature=rft.temperature, logprob_chunk=knobs.logprob_chunk).logp
                if use_kl:
                    with reference_policy(model, rft.kl_reference):
                        mb.ref_logp = mb.score(model, temperature=rft.temperature,
                                               logprob_chunk=knobs.logprob_chunk).logp
    finally:
        model.train(was_training)
    return micro_batches


def expanded_micro_batches(model, processor, rollouts: Rollouts, rows: list[int], advantages: torch.Tensor,
                           rft: RFTConfig, knobs: Knobs) -> list[MicroBatch]:
    """One row per rollout, its prompt repeated: micro-batches of `knobs` over their lengths."""
    device, dtype = model_device(model), model_dtype(model)
    encoded = encode_rollouts(processor, rollouts, rows, cot=rft.cot)
    pad_id = tokenizer_of(processor).pad_token_id
    micro_batches = []
    for indices in micro_batches_of([row.length for row in encoded], knobs):
        chunk = [rows[i] for i in indices]
        batch, labels = collate([encoded[i] for i in indices], pad_id)
        micro_batches.append(MicroBatch(chunk, to_device(batch, device, dtype), labels.to(device),
                                        advantages[chunk].to(device)))
    return micro_batches


def shared_prefix_micro_batches(model, processor, rollouts: Rollouts, rows: list[int], advantages: torch.Tensor,
                                rft: RFTConfig, knobs: Knobs) -> list[MicroBatch]:
    """One packed row per prompt and its answers among `rows`; a token budget counts each
    prompt once (a group too long for it is cut into parts that each repeat the prompt)."""
    device, dtype = model_device(model), model_dtype(model)
    prompts = [rollouts.examples[g].prompt(rft.cot) for g in range(rollouts.num_groups)]
    groups = encode_groups(processor, [prompts[r // rollouts.group_size] for r in rows],
                           [rollouts.token_ids[r] for r in rows], rows, max_prompt_tokens(rollouts.examples))
    micro_batches = []
    for parts in packed_micro_batches(groups, knobs):
        packed = pack_groups(model, processor, parts).to(device, dtype)
        micro_batches.append(MicroBatch(packed.rows, None, None, advantages[packed.rows].to(device),
                                        packed=packed))
    return micro_batches


def steps_per_rollout(rft: RFTConfig) -> int:
    """Optimizer steps one batch of rollouts makes: inner epochs x mini-batches."""
    return rft.inner_epochs * rft.mini_batches_per_rollout


def accumulate_policy_gradient(model, micro_batches: list[MicroBatch], rft: RFTConfig, *, total_tokens: int,
                               total_rows: int, with_entropy: bool = True, logprob_chunk: int | None = None
                               ) -> dict:
    """Backward of the batch's GRPO loss, one micro-batch at a time (grads accumulate in .grad).

    The batch has `total_tokens` response tokens in `total_rows` rollouts (rows not passed here
    count in them with zero loss). Micro-batch losses are weighted by their share of the tokens
    (token-mean) or of the rollouts (seq-mean), so the sum equals the whole-batch loss.
    Returns loss, kl, clip_fraction, dual_clip_fraction (batch means), entropy (mean over scored
    tokens) and tokens.
    """
    use_kl = rft.uses_kl
    out = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "dual_clip_fraction": 0.0, "entropy": None, "tokens": 0}
    entropy_sum, entropy_tokens = 0.0, 0.0
    for mb in micro_batches:
        scored = mb.score(model, temperature=rft.temperature, return_entropy=with_entropy,
                          logprob_chunk=logprob_chunk)
        if mb.old_logp is None:  # the policy has not moved since the rollouts: kept for later epochs
            mb.old_logp = scored.logp.detach()
        elif mb.check_reuse is not None:
            record_reuse(mb.check_reuse, torch.equal(mb.old_logp, scored.logp.detach()))
            mb.check_reuse = None
        old_logp = mb.old_logp
        advantages = mb.advantages
        if mb.sampler_logp is not None:  # truncated importance sampling (lite_cpt.train.tis)
            advantages = tis_advantages(advantages, old_logp, mb.sampler_logp, scored.mask, rft.tis_cap)
        loss, stats = grpo_loss(
            scored.logp, old_logp, advantages, scored.mask, _backend=kernel_backend(scored.logp),
            ref_logp=mb.ref_logp, beta=rft.kl_beta if use_kl else 0.0,
            eps_low=rft.eps_low, eps_high=rft.eps_high, dual_clip=rft.dual_clip,
            aggregation=kernel_aggregation(rft.aggregation),
        )
        tokens = float(scored.mask.sum())
        share = loss_share(rft.aggregation, tokens, len(mb.rows), total_tokens, total_rows, mb.normaliser)
        backward(loss * share, model)  # scaled when the model computes in fp16
        # KL and clip fractions are token means, weighted as the loss weighs the tokens
        weight = share if mb.normaliser is not None else tokens / total_tokens
        out["loss"] += float(loss.detach()) * share
        out["kl"] += float(stats["kl_mean"]) * weight
        out["clip_fraction"] += float(stats["clip_fraction"]) * weight
        out["dual_clip_fraction"] += float(stats["dual_clip_fraction"]) * weight
        out["tokens"] += int(tokens)
        if scored.entropy is not None:
            entropy_sum += float((scored.entropy.detach() * scored.mask).sum())
            entropy_tokens += tokens
    if entropy_tokens:
        out["entropy"] = entropy_sum / entropy_tokens
    return out


def policy_update(model, processor, optimizer: torch.optim.Optimizer, rollouts: Rollouts, arm: ArmConfig,
                  phase: Phase, guard: NonFiniteGuard | None = None, update_index: int = 0) -> dict:
    """`inner_epochs` x `mini_batches_per_rollout` optimizer steps of the clipped GRPO loss on
    one batch of rollouts (each mini-batch's loss normalised over its own rollouts), with
    `phase.knobs` (micro-batch, log-prob chunk) and each pass inside `phase.guard`. With
    `guard`, a step whose loss or gradient is not finite is skipped (counted in
    `nonfinite_skipped`; no optimizer step, no moment update).

    Returns the update's statistics (means over its applied optimizer steps; entropy of the
    first epoch); `updated` is False when no step was applied (no rollout carried a gradient).
    """
    rft = arm.rft
    use_kl = rft.uses_kl
    advantages = compute_advantages(rollouts, rft)
    lengths = [len(ids) for ids in rollouts.token_ids]
    unscorable = set(vision_token_ids(tokenizer_of(processor)))
    # Rows with A = 0 (and no KL term) have exactly zero gradient: skip their passes. A response
    # that contains an image placeholder token cannot be scored (the model would look for an
    # image to put there), so it is left out of the gradient too.
    rows = [i for i, n in enumerate(lengths) if n > 0 and (use_kl or advantages[i] != 0)
            and unscorable.isdisjoint(rollouts.token_ids[i])]
    result = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "dual_clip_fraction": 0.0, "entropy": None,
              "trained_tokens": 0, "optimizer_steps": 0, "nonfinite_skipped": 0,
              "updated": False, "unscorable_rollouts": sum(1 for ids in rollouts.token_ids
                                                           if not unscorable.isdisjoint(ids))}
    if not rows:
        return result
    with phase.guard("logprob_pass"), seconds_into(result, "logprob_seconds"):
        parts = prepare_mini_batches(model, processor, rollouts, rows, advantages, rft, phase.knobs)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    sums = {"loss": 0.0, "kl": 0.0, "clip_fraction": 0.0, "dual_clip_fraction": 0.0}
    steps = 0
    entropy_sum = entropy_tokens = 0.0
    for epoch in range(rft.inner_epochs):
        for part in parts:
            if not part.micro_batches:
                continue  # no rollout of this mini-batch carries a gradient: no step
            with phase.guard("grpo_step"):
                step = accumulate_policy_gradient(model, part.micro_batches, rft, total_tokens=part.tokens,
                                                  total_rows=len(part.rows), with_entropy=epoch == 0,
                                                  logprob_chunk=phase.knobs.logprob_chunk)
                applied = step_if_finite(optimizer, params, arm.grad_clip, guard, update_index,
                                         {"loss": step["loss"], "kl": step["kl"]})
            if not applied:
                result["nonfinite_skipped"] += 1
                result["loss"], result["kl"] = step["loss"], step["kl"]  # what the record shows if none passed
                continue
            steps += 1
            for key in sums:
                sums[key] += step[key]
            result["trained_tokens"] += step["tokens"]
            if epoch == 0 and step["entropy"] is not None:
                entropy_sum += step["entropy"] * step["tokens"]
                entropy_tokens += step["tokens"]
    if steps:
        result.update({key: value / steps for key, value in sums.items()})
    result["entropy"] = entropy_sum / entropy_tokens if entropy_tokens else None
    result["optimizer_steps"] = steps
    result["updated"] = steps > 0
    return result


@dataclass
class MiniBatch:
    """The rollouts of one optimizer step: all of them count in the loss normaliser, the
    `trained` ones (those that carry a gradient) are scored."""

    rows: list[int]
    trained: list[int]
    lengths: list[int]
    micro_batches: list[MicroBatch] | None = None

    @property
    def tokens(self) -> int:
        return max(1, sum(self.lengths[r] for r in self.rows))


def prepare_mini_batches(model, processor, rollouts: Rollouts, rows: list[int], advantages: torch.Tensor,
                         rft: RFTConfig, knobs: Knobs) -> list[MiniBatch]:
    """The rollout batch's mini-batches, each with the micro-batches of its `rows` that carry a
    gradient. Every no-grad pass (old policy, reference) runs here, before the first step: the
    old policy is the one that sampled the rollouts, for all mini-batches and epochs."""
    trained = set(rows)
    parts = [MiniBatch(part, [r for r in part if r in trained], [len(ids) for ids in rollouts.token_ids])
             for part in mini_batch_rows(rollouts, rft.mini_batches_per_rollout)]
    key = reuse_key(model, rft)
    reuse = steps_per_rollout(rft) > 1 and FIRST_STEP_REUSE.get(key) is True
    for index, part in enumerate(parts):
        part.micro_batches = []
        for group, normaliser in loss_groups(part.rows, part.lengths, rft.aggregation, rft.loss_micro_batch):
            scored = [r for r in group if r in trained]
            if not scored:
                continue
            # physical micro-batches never straddle two loss groups
            batches = prepare_micro_batches(model, processor, rollouts, scored, advantages, rft, knobs,
                                            old_policy=steps_per_rollout(rft) > 1 and not (index == 0 and reuse))
            for mb in batches:
                mb.normaliser = normaliser
                if index == 0 and steps_per_rollout(rft) > 1 and key not in FIRST_STEP_REUSE:
                    mb.check_reuse = key
            part.micro_batches += batches
    return parts


#: Whether the first mini-batch's old-policy pass can be skipped, per (device, dtype, layout):
#: at the first optimizer step of a rollout batch the policy is still the one that sampled it,
#: so its old log-probs are the update forward's own, detached (ratio exp(0) = 1, nothing
#: clipped), provided the no-grad eval-mode pass and the gradient pass give the same bits. The
#: first update of a process checks that on the device (both passes run, compared with
#: torch.equal); only an exact match turns the skip on, a mismatch keeps the pass.
FIRST_STEP_REUSE: dict[tuple, bool] = {}


def reuse_key(model, rft: RFTConfig) -> tuple:
    return (model_device(model).type, model_dtype(model), rft.shared_prefix)


def record_reuse(key: tuple, equal: bool) -> None:
    """One micro-batch's verdict: every compared micro-batch must match."""
    FIRST_STEP_REUSE[key] = FIRST_STEP_REUSE.get(key, True) and equal


def mini_batch_rows(rollouts: Rollouts, mini_batches: int) -> list[list[int]]:
    """Rows of each mini-batch: whole groups, split into `mini_batches` contiguous parts of
    (nearly) equal prompt counts, in rollout order (as EasyR1 splits its rollout batch)."""
    groups = rollouts.num_groups
    parts: list[list[int]] = [[] for _ in range(min(mini_batches, groups))]
    for group in range(groups):
        part = group * len(parts) // groups
        parts[part].extend(range(group * rollouts.group_size, (group + 1) * rollouts.group_size))
    return parts


@contextmanager
def seconds_into(record: dict, key: str):
    """Wall seconds of the block, stored as `record[key]`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        record[key] = time.perf_counter() - started
