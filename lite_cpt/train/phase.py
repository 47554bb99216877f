"""What every training phase shares: its examples, its inputs (`Phase`, `Knobs`), its result
(`PhaseStats`) and its optimiser.

A phase is one arm's training on one task (or on all tasks, for joint arms). `train_sft` and
`train_rft` both take `(model, processor, examples, arm, phase)`: the arm's recipe section says
*what* to train, the phase says *which* task, seed and memory knobs, and how to report.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Callable

import torch

from lite_cpt.train.batching import Prompt
from lite_cpt.train.numerics import GRAD_SCALER, loss_scaler
from lite_cpt.train.phase_steps import PHASES  # noqa: F401  (re-exported)
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


def example_limit(examples: list[Example], attr: str, default: int | None = None) -> int | None:
    """The largest of the examples' task limits `attr` (e.g. max_prompt_tokens), or `default`."""
    values = [getattr(e.task.config, attr, None) for e in examples]
    values = [v for v in values if v]
    return max(values) if values else default


@dataclass
class PhaseStats:
    steps: int = 0
    trained_tokens: int = 0
    seconds: float = 0.0
    last_loss: float = float("nan")
    generated_tokens: int = 0
    extra: dict = field(default_factory=dict)  # method-specific totals for the task_end record


@dataclass(frozen=True)
class Knobs:
    """micro_batch_size: sequences per forward/backward (SFT samples; GRPO rollouts) at the
    longest length.
    logprob_chunk: vocab rows per chunk of the fused log-prob (None = the kernel's default).
    rollout_batch_size: prompts per `generate` call (each expanded to G sequences).
    micro_batch_tokens: token budget of one micro-batch (sequences x padded length), filled with
    sequences of their real length (`pack_by_tokens`); None = a fixed count of micro_batch_size.
    packed_sequences: the most sequences a packed micro-batch holds (None = as the budget allows)."""

    micro_batch_size: int
    logprob_chunk: int | None
    rollout_batch_size: int
    micro_batch_tokens: int | None = None
    packed_sequences: int | None = None

    @property
    def prompts_per_call(self) -> int:
        """Prompts per generate call, at least one (a knob of 0 means one)."""
        return max(1, self.rollout_batch_size)

    def to_json(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)


def micro_batches(lengths: list[int], knobs: Knobs) -> list[list[int]]:
    """Indices of the sequences of `lengths` in micro-batches: with a token budget, packed by
    `pack_by_tokens`; else consecutive groups of `knobs.micro_batch_size`."""
    if knobs.micro_batch_tokens is None:
        size = max(1, knobs.micro_batch_size)
        return [list(range(i, min(i + size, len(lengths)))) for i in range(0, len(lengths), size)]
    return pack_by_tokens(lengths, knobs.micro_batch_tokens, knobs.packed_sequences or max(1, len(lengths)))


def pack_by_tokens(lengths: list[int], budget: int, max_sequences: int) -> list[list[int]]:
    """Sequence indices in micro-batches of at most `budget` padded tokens (sequences x the
    longest one) and `max_sequences` sequences.

    Longest first, so each micro-batch holds sequences of similar length and little padding;
    a sequence longer than the budget gets a micro-batch of its own. Every index appears once,
    so losses summed over the micro-batches are those of the whole batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    packed: list[list[int]] = []
    for index in order:
        current = packed[-1] if packed else None
        # Sorted longest first: the micro-batch's padded length is that of its first sequence.
        if current and len(current) < max_sequences and (len(current) + 1) * lengths[current[0]] <= budget:
            current.append(index)
        else:
            packed.append([index])
    return packed


#: `guard(step_name)`: a context manager around each step of a phase (one of PHASES).
StepGuard = Callable[[str], AbstractContextManager]


def no_guard(step_name: str) -> AbstractContextManager:
    return nullcontext()


@dataclass
class Phase:
    """What one training phase gets from the loop besides the arm's settings."""

    knobs: Knobs  # micro-batch, log-prob chunk and rollout batch (planned for the GPU)
    seed: int = 0
    epochs: float = 1.0
    index: int = 1  # 1-based task index (the joint arms use 1)
    name: str = "task"  # task name, or "joint"
    on_step: Callable[[dict], None] | None = None
    progress: Callable[[int, int], None] | None = None
    # The loop passes a guard that turns an out-of-memory error into advice for that step.
    guard: StepGuard = no_guard
    # Mid-phase save and restore (lite_cpt.run.checkpoint.PhaseCheckpointer); None: no checkpoints.
    checkpoint: object | None = None
    # Consecutive non-finite updates (each skipped) that stop the phase.
    max_nonfinite: int = 3
    # Largest |adapter weight| after an update before the phase stops as diverged.
    max_weight: float = 1e4
    # The rollout engine (lite_cpt.train.vllm_backend.VllmRollouts); None: transformers generate.
    rollout_engine: object | None = None

    def log_step(self, record: dict) -> None:
        if self.on_step is not None:
            self.on_step(record)

    def advance(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)


def trainable_parameters(model) -> dict[str, torch.nn.Parameter]:
    """The parameters a phase trains (the LoRA adapter), by name, in the model's order."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def adamw(model, lr: float, weight_decay: float, who: str) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """AdamW over the trainable parameters, and those parameters (for gradient clipping)."""
    params = list(trainable_parameters(model).values())
    if not params:
        raise ValueError(f"{who}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    # An fp16 model's loss scaler, shared by its backward passes and this optimizer's steps.
    setattr(optimizer, GRAD_SCALER, loss_scaler(model))
    return optimizer, params
