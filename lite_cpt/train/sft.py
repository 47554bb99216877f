"""One supervised fine-tuning phase: cross-entropy on answer tokens through the fused log-prob."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch

from lite_cpt.train.batching import (
    IGNORE_INDEX,
    EncodedRow,
    answer_ids,
    collate,
    encode_rows,
    encode_sft,
    to_device,
    tokenizer_of,
)
from lite_cpt.run.checkpoint import end_of_update, load_stream_state, restore_phase, stream_state
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.train.numerics import NonFiniteGuard, backward, step_if_finite
from lite_cpt.train.phase import Example, Knobs, Phase, PhaseStats, adamw, example_limit, micro_batches
from lite_cpt.train.rollout import model_device, model_dtype
from lite_cpt.train.sft_schedule import lr_factor, set_lr

if TYPE_CHECKING:
    from lite_cpt.recipe_run import ArmConfig


def sft_loss_sum(model, processor, examples: list[Example], cot: bool = False,
                 logprob_chunk: int | None = None) -> tuple[torch.Tensor, int]:
    """Summed negative log-likelihood of the target answers and the number of answer tokens."""
    batch, labels = encode_sft(
        processor,
        [e.prompt(cot) for e in examples],
        [e.task.target(e.sample, cot) for e in examples],
        max_prompt_tokens=example_limit(examples, "max_prompt_tokens", 1024),
        max_answer_tokens=example_limit(examples, "max_answer_tokens", 64),
    )
    batch = to_device(batch, model_device(model), model_dtype(model))
    scored = token_logprobs(model, batch, labels.to(model_device(model)), logprob_chunk=logprob_chunk)
    n_tokens = int(scored.mask.sum().item())
    return -(scored.logp * scored.mask).sum(), n_tokens


@dataclass
class SFTHooks:
    """What an SFT-based arm adds to the plain phase."""

    #: A loss added to every step (EWC's penalty), computed after the batch's backward.
    extra_loss: Callable[[], torch.Tensor] | None = None
    #: `batch_sampler(rng, batch)` may rewrite each batch (replay mixes in earlier tasks).
    batch_sampler: Callable[[random.Random, list[Example]], list[Example]] | None = None


def train_sft(model, processor, examples: list[Example], arm: ArmConfig, phase: Phase,
              hooks: SFTHooks | None = None) -> PhaseStats:
    """AdamW (arm.lr, arm.weight_decay) over the trainable parameters for `phase.epochs` passes
    of shuffled `examples`, in batches of `arm.batch_size`, capped by `arm.max_steps_per_task`.

    The loss is the token-mean NLL of each batch (summed over the micro-batches `phase.knobs`
    packs, divided by the batch's answer tokens), plus the hooks'
    `extra_loss()` when given. A step whose loss or gradient is not finite is skipped (no
    optimizer step; `phase.max_nonfinite` in a row stop the phase). With `phase.checkpoint`
    the phase saves its state as it goes and resumes from its last save.
    """
    hooks = hooks or SFTHooks()
    # weight_decay None: the SFT arms' default, none (LLaMA-Factory's)
    optimizer, params = adamw(model, arm.lr, 0.0 if arm.weight_decay is None else arm.weight_decay, "train_sft")
    guard = NonFiniteGuard(phase.max_nonfinite, f"lr={arm.lr}, dtype={model_dtype(model)}", phase.max_weight)
    rng = random.Random(phase.seed)
    total_steps = sft_steps(len(examples), arm, phase.epochs)
    order: list[Example] = []
    stats, first, elapsed = PhaseStats(), 0, 0.0
    if (saved := restore_phase(phase, optimizer)) is not None:
        first, elapsed = saved["step"], saved["elapsed"]
        order = load_stream_state(saved["stream"], rng, examples)
        stats = PhaseStats(**saved["stats"])
        guard.load(saved["guard"])
    start = time.perf_counter()
    model.train()
    for step in range(first, total_steps):
        lr = arm.lr * lr_factor(step, total_steps, arm.lr_scheduler, arm.warmup_ratio)
        set_lr(optimizer, lr)
        batch, order = _next_batch(rng, order, examples, arm.batch_size, hooks)
        with phase.guard("sft_step"):
            loss_value, n_tokens = _accumulate(model, processor, batch, phase.knobs, hooks.extra_loss)
            applied = step_if_finite(optimizer, params, arm.grad_clip, guard, step + 1, {"loss": loss_value})
        stats.steps += int(applied)
        stats.trained_tokens += n_tokens
        stats.last_loss = loss_value
        stats.extra["nonfinite_skipped"] = guard.skipped
        phase.log_step({"step": step + 1, "loss": loss_value, "tokens": n_tokens, "updated": applied, "lr": lr,
                        "seconds": elapsed + time.perf_counter() - start})
        guard.stop_if_diverged()
        phase.advance(step + 1, total_steps)
        end_of_update(phase, step + 1, optimizer, lambda: {
            "step": step + 1, "elapsed": elapsed + time.perf_counter() - start,
            "stream": stream_state(rng, order, examples), "stats": dataclasses.asdict(stats),
            "guard": guard.state()})
    model.eval()
    stats.seconds = elapsed + time.perf_counter() - start
    stats.extra["phase_seconds"] = {"sft_step": round(stats.seconds, 4)}
    return stats


def sft_steps(num_examples: int, arm: ArmConfig, epochs: float) -> int:
    """Optimizer steps of an SFT phase: ceil(batches per pass x epochs), capped by the arm."""
    total = max(1, math.ceil(math.ceil(num_examples / arm.batch_size) * epochs))
    return total if arm.max_steps_per_task is None else min(total, arm.max_steps_per_task)


def _next_batch(rng: random.Random, order: list[Example], examples: list[Example], batch_size: int,
                hooks: SFTHooks) -> tuple[list[Example], list[Example]]:
    """The next batch of the seeded stream (a fresh shuffle per pass) and what stays queued."""
    if len(order) < batch_size:
        shuffled = examples[:]
        rng.shuffle(shuffled)
        order = order + shuffled
    batch, order = order[:batch_size], order[batch_size:]
    if hooks.batch_sampler is not None:
        batch = hooks.batch_sampler(rng, batch)
    return batch, order


def encode_examples(processor, examples: list[Example], cot: bool = False) -> list[EncodedRow]:
    """Each example's prompt + target answer as its own row (for packing by length)."""
    max_answer = example_limit(examples, "max_answer_tokens", 64)
    return encode_rows(processor, [e.prompt(cot) for e in examples],
                       [answer_ids(processor, e.task.target(e.sample, cot), max_answer) for e in examples],
                       example_limit(examples, "max_prompt_tokens", 1024))


def rows_loss_sum(model, inputs: dict, labels: torch.Tensor, logprob_chunk: int | None) -> tuple[torch.Tensor, int]:
    """Summed NLL of the labelled tokens of one collated micro-batch, and their count."""
    scored = token_logprobs(model, inputs, labels, logprob_chunk=logprob_chunk)
    return -(scored.logp * scored.mask).sum(), int(scored.mask.sum().item())


def _accumulate(model, processor, batch: list[Example], knobs: Knobs,
                extra_loss: Callable[[], torch.Tensor] | None) -> tuple[float, int]:
    """Backward over micro-batches so that gradients equal those of one token-mean batch loss.

    Every example is encoded first, so the batch's answer-token count (the loss normaliser) and
    each sequence's real length are known before any forward pass: micro-batches are packed by
    `knobs` (a token budget, or a fixed count) and each one's graph is freed after its backward.
    """
    rows = encode_examples(processor, batch)
    n_tokens = sum(int((row.labels != IGNORE_INDEX).sum()) for row in rows)
    pad_id = tokenizer_of(processor).pad_token_id
    device = model_device(model)
    loss_total = 0.0
    for indices in micro_batches([row.length for row in rows], knobs):
        inputs, labels = collate([rows[i] for i in indices], pad_id)
        nll, _ = rows_loss_sum(model, to_device(inputs, device, model_dtype(model)), labels.to(device),
                               knobs.logprob_chunk)
        backward(nll / n_tokens, model)  # scaled when the model computes in fp16
        loss_total += nll.item()
    loss = loss_total / n_tokens
    if extra_loss is not None:
        penalty = extra_loss()
        backward(penalty, model)
        loss += float(penalty.item())
    return loss, n_tokens
