"""One supervised fine-tuning phase: cross-entropy on answer tokens through the fused log-prob."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from lite_cpt.batching import Prompt, answer_ids, encode_sft, to_device
from lite_cpt.logprob import token_logprobs
from lite_cpt.rollout import model_device, model_dtype
from lite_cpt.tasks.base import Sample, Task


@dataclass
class Example:
    """A sample with the task that owns it (its prompt, target and limits)."""

    task: Task
    sample: Sample

    def prompt(self, cot: bool = False) -> Prompt:
        return Prompt(self.task.prompt(self.sample, cot), self.sample.images, self.sample.id)


def examples_of(task: Task, samples: list[Sample]) -> list[Example]:
    return [Example(task, s) for s in samples]


@dataclass
class PhaseStats:
    steps: int = 0
    trained_tokens: int = 0
    seconds: float = 0.0
    last_loss: float = float("nan")
    generated_tokens: int = 0
    extra: dict = field(default_factory=dict)  # method-specific totals for the task_end record


def example_limit(examples: list[Example], attr: str, default: int | None = None) -> int | None:
    """The largest of the examples' task limits `attr` (e.g. max_prompt_tokens), or `default`."""
    values = [getattr(e.task.config, attr, None) for e in examples]
    values = [v for v in values if v]
    return max(values) if values else default


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
    scored = token_logprobs(model, batch, labels.to(model_device(model)), chunk_size=logprob_chunk)
    n_tokens = int(scored.mask.sum().item())
    return -(scored.logp * scored.mask).sum(), n_tokens


def train_sft(
    model,
    processor,
    examples: list[Example],
    *,
    lr: float,
    batch_size: int,
    micro_batch_size: int,
    logprob_chunk: int | None = None,
    epochs: float = 1.0,
    max_steps: int | None = None,
    grad_clip: float = 1.0,
    weight_decay: float = 0.0,
    seed: int = 0,
    cot: bool = False,
    extra_loss: Callable[[], torch.Tensor] | None = None,
    batch_sampler: Callable[[random.Random, list[Example]], list[Example]] | None = None,
    on_step: Callable[[dict], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> PhaseStats:
    """AdamW over the trainable parameters for `epochs` passes of shuffled `examples`.

    The loss is the token-mean NLL of each batch (summed over micro-batches, divided by the
    batch's answer tokens), plus `extra_loss()` when given (e.g. an EWC penalty).
    `batch_sampler(rng, batch)` may rewrite each batch (replay mixes in earlier tasks).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train_sft: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    rng = random.Random(seed)
    steps_per_epoch = math.ceil(len(examples) / batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * epochs))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    order: list[Example] = []
    stats = PhaseStats()
    start = time.perf_counter()
    model.train()
    for step in range(total_steps):
        if len(order) < batch_size:
            shuffled = examples[:]
            rng.shuffle(shuffled)
            order.extend(shuffled)
        batch, order = order[:batch_size], order[batch_size:]
        if batch_sampler is not None:
            batch = batch_sampler(rng, batch)
        loss_value, n_tokens = _accumulate(model, processor, batch, micro_batch_size, cot, extra_loss,
                                           logprob_chunk)
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        stats.steps += 1
        stats.trained_tokens += n_tokens
        stats.last_loss = loss_value
        if on_step is not None:
            on_step({"step": step + 1, "loss": loss_value, "tokens": n_tokens,
                     "seconds": time.perf_counter() - start})
        if progress is not None:
            progress(step + 1, total_steps)
    model.eval()
    stats.seconds = time.perf_counter() - start
    return stats


def _accumulate(model, processor, batch, micro_batch_size, cot, extra_loss,
                logprob_chunk: int | None = None) -> tuple[float, int]:
    """Backward over micro-batches so that gradients equal those of one token-mean batch loss.

    The batch's answer-token count is known before any forward pass (answers are tokenised
    on their own), so each micro-batch's graph is freed right after its backward.
    """
    max_answer = example_limit(batch, "max_answer_tokens", 64)
    n_tokens = sum(len(answer_ids(processor, e.task.target(e.sample, cot), max_answer)) for e in batch)
    loss_total = 0.0
    for i in range(0, len(batch), micro_batch_size):
        nll, _ = sft_loss_sum(model, processor, batch[i : i + micro_batch_size], cot, logprob_chunk)
        (nll / n_tokens).backward()
        loss_total += nll.item()
    loss = loss_total / n_tokens
    if extra_loss is not None:
        penalty = extra_loss()
        penalty.backward()
        loss += float(penalty.item())
    return loss, n_tokens
