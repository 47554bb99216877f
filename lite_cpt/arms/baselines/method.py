"""Classic continual-learning baselines as arms: experience replay and EWC.

Both are sequential SFT with one addition, and both keep their cross-task state reproducible so
that a resumed run equals an uninterrupted one.

Replay (`replay`). After each task, `buffer_per_task` of its training examples are kept; while
training a later task every batch of size B has

    n = round(fraction * B)          (Python's round: ties go to the even number)

of its (already shuffled) items replaced by examples drawn, without replacement when the buffer
is large enough, from the buffer of all earlier tasks. The first task trains without replay.
Which examples a task keeps depends only on its training examples and the recipe seed, so on
resume the buffer is rebuilt from the finished tasks' examples (a small manifest of the kept
sample ids, written next to each adapter, checks that the rebuild matches). Replay costs no
extra optimizer steps or tokens per step; it costs the buffer's storage.

EWC (`ewc`). After task t the diagonal empirical Fisher of the trainable (LoRA) parameters is
estimated on `fisher_samples` of the task's training examples,

    F_t,i = (1/N) Σ_n ( ∂/∂θ_i  −log p(y_n | x_n) )²,

with log p(y_n | x_n) the summed log-likelihood of sample n's answer tokens (one backward per
sample, so the squares are per-sample squares). It is accumulated as online EWC without decay
(Schwarz et al., 2018, γ = 1): F ← F + F_t, and the anchor θ* is reset to the parameters after
task t. Later tasks add

    penalty(θ) = (λ / 2) Σ_i F_i (θ_i − θ*_i)²

to every step's loss. One summed Fisher and one anchor keep the state at twice the adapter's
size (fp32) however many tasks have passed; the original EWC's one anchor per task would grow
linearly.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from lite_cpt.arms.sft.method import SequentialSFT
from lite_cpt.data.images import held_image_bytes
from lite_cpt.errors import UserError
from lite_cpt.io import atomic_write_bytes, atomic_write_json
from lite_cpt.train.phase import Example, Phase, PhaseStats, trainable_parameters
from lite_cpt.train.sft import SFTHooks, sft_loss_sum

# ---------------------------------------------------------------------------------------------
# Replay


REPLAY_MANIFEST = "replay_buffer.json"


def replay_count(batch_size: int, fraction: float) -> int:
    """Items of a batch of `batch_size` that come from the buffer: round(fraction * batch_size)."""
    return min(batch_size, round(fraction * batch_size))


def buffer_selection(examples: list[Example], buffer_per_task: int) -> list[Example]:
    """The examples a finished task keeps: a seeded draw of `buffer_per_task` of them, in order.

    The draw is seeded by the recipe seed (every Example's task carries it) and the task name,
    not by the arm, so replay arms that differ in `fraction` replay the same examples.
    """
    if not examples:
        return []
    task = examples[0].task
    key = f"{task.seed}/replay_buffer/{task.name}".encode()
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    keep = sorted(random.Random(seed).sample(range(len(examples)), min(buffer_per_task, len(examples))))
    return [examples[i] for i in keep]


def _example_bytes(example: Example) -> int:
    """Raw size of what the buffer holds for one example: UTF-8 text plus decoded pixels
    (an image reference holds none)."""
    sample = example.sample
    size = len(sample.question.encode()) + len(sample.answer.encode())
    return size + sum(held_image_bytes(ref) for ref in sample.images)


class Replay(SequentialSFT):
    """Sequential SFT whose batches mix in examples of earlier tasks."""

    def __init__(self, arm, model, processor, reference_examples):
        super().__init__(arm, model, processor, reference_examples)
        self.buffer: dict[str, list[Example]] = {}  # task name -> kept examples, in task order
        self._replayed = 0

    def buffered_examples(self) -> list[Example]:
        return [e for kept in self.buffer.values() for e in kept]

    def mix_in_replay(self, rng: random.Random, batch: list[Example]) -> list[Example]:
        """Replace the last round(fraction * len(batch)) items by draws from the buffer."""
        pool = self.buffered_examples()
        n = replay_count(len(batch), self.arm.replay.fraction)
        if not pool or n == 0:
            return batch
        drawn = rng.sample(pool, n) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]
        self._replayed += n
        return batch[: len(batch) - n] + drawn

    def sft_hooks(self, phase: Phase) -> SFTHooks:
        if not self.buffer or replay_count(self.arm.batch_size, self.arm.replay.fraction) == 0:
            return SFTHooks()
        return SFTHooks(batch_sampler=self.mix_in_replay)

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        self._replayed = 0
        stats = super().train(examples, phase)
        pool = self.buffered_examples()
        stats.extra.update(
            replay_buffer_tasks=len(self.buffer),
            replay_buffer_samples=len(pool),
            replay_buffer_bytes=sum(_example_bytes(e) for e in pool),
            replayed_samples=self._replayed,
        )
        return stats

    def after_task(self, examples: list[Example], phase: Phase) -> None:
        self.buffer[phase.name] = buffer_selection(examples, self.arm.replay.buffer_per_task)

    def save_state(self, directory: Path) -> None:
        atomic_write_json(Path(directory) / REPLAY_MANIFEST, self._manifest())

    def load_state(self, directory: Path, finished_tasks: list[str]) -> None:
        self.buffer = {
            name: buffer_selection(self.reference_examples(name), self.arm.replay.buffer_per_task)
            for name in finished_tasks
        }
        path = Path(directory) / REPLAY_MANIFEST
        if path.exists() and json.loads(path.read_text(encoding="utf-8")) != self._manifest():
            raise UserError(
                f"arm '{self.arm.name}': the replay buffer rebuilt from the training data differs from "
                f"the one saved in {path}, so the data of a finished task changed since the run was "
                f"saved; restore that data, or remove {Path(directory).parent} to start the arm over"
            )

    def _manifest(self) -> dict:
        return {"buffer_per_task": self.arm.replay.buffer_per_task,
                "tasks": {name: [e.sample.id for e in kept] for name, kept in self.buffer.items()}}


# ---------------------------------------------------------------------------------------------
# EWC


EWC_STATE = "ewc_state.safetensors"


def diagonal_fisher(model, processor, examples: list[Example],
                    logprob_chunk: int | None = None) -> dict[str, torch.Tensor]:
    """F_i = (1/N) Σ_n (∂/∂θ_i −log p(y_n | x_n))² over the trainable parameters (fp32).

    One backward per example, in eval mode (no dropout); parameter .grad fields are untouched,
    so nothing leaks into the next task's optimizer.
    """
    params = trainable_parameters(model)
    fisher = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in params.items()}
    was_training = model.training
    model.eval()
    used = 0
    try:
        for example in examples:
            nll, n_tokens = sft_loss_sum(model, processor, [example], logprob_chunk=logprob_chunk)
            if n_tokens == 0:
                continue
            grads = torch.autograd.grad(nll, list(params.values()), allow_unused=True)
            for (name, _), grad in zip(params.items(), grads):
                if grad is not None:
                    fisher[name] += grad.detach().float().pow(2)
            used += 1
    finally:
        model.train(was_training)
    if used:
        for value in fisher.values():
            value /= used
    return fisher


def ewc_penalty(params: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor],
                anchor: dict[str, torch.Tensor], weight: float) -> torch.Tensor:
    """(weight / 2) Σ_i F_i (θ_i − θ*_i)², computed in fp32."""
    total = sum((fisher[name] * (p.float() - anchor[name]).pow(2)).sum() for name, p in params.items())
    return 0.5 * weight * total


class EWC(SequentialSFT):
    """Sequential SFT plus a Fisher-weighted pull towards the parameters after the last task."""

    def __init__(self, arm, model, processor, reference_examples):
        super().__init__(arm, model, processor, reference_examples)
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.tasks_in_fisher = 0
        self._last_stats: PhaseStats | None = None

    def penalty(self) -> torch.Tensor:
        return ewc_penalty(trainable_parameters(self.model), self.fisher, self.anchor, self.arm.ewc.weight)

    def sft_hooks(self, phase: Phase) -> SFTHooks:
        if not self.fisher or self.arm.ewc.weight == 0:
            return SFTHooks()
        return SFTHooks(extra_loss=self.penalty)

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        stats = super().train(examples, phase)
        # after_task adds the Fisher's cost to these stats; the loop writes them into the
        # task_end record only after after_task and save_state have run.
        self._last_stats = stats
        return stats

    def after_task(self, examples: list[Example], phase: Phase) -> None:
        start = time.perf_counter()
        k = min(self.arm.ewc.fisher_samples, len(examples))
        chosen = random.Random(phase.seed).sample(examples, k)
        task_fisher = diagonal_fisher(self.model, self.processor, chosen, logprob_chunk=phase.knobs.logprob_chunk)
        for name, value in task_fisher.items():
            self.fisher[name] = self.fisher[name] + value if name in self.fisher else value
        self.anchor = {name: p.detach().float().clone() for name, p in trainable_parameters(self.model).items()}
        self.tasks_in_fisher += 1
        if self._last_stats is not None:
            self._last_stats.extra.update(
                fisher_seconds=round(time.perf_counter() - start, 3),
                fisher_samples=k,
                ewc_state_bytes=self.state_bytes(),
            )
            self._last_stats = None

    def state_bytes(self) -> int:
        """Extra storage of the arm: the fp32 Fisher and anchor."""
        return sum(t.numel() * t.element_size() for t in (*self.fisher.values(), *self.anchor.values()))

    def save_state(self, directory: Path) -> None:
        if not self.fisher:
            return
        tensors = {f"fisher/{name}": t.detach().cpu().contiguous() for name, t in self.fisher.items()}
        tensors.update({f"anchor/{name}": t.detach().cpu().contiguous() for name, t in self.anchor.items()})
        data = safetensors_bytes(tensors, metadata={"tasks_in_fisher": str(self.tasks_in_fisher),
                                                    "accumulation": "online EWC, gamma = 1 (summed Fisher)"})
        atomic_write_bytes(Path(directory) / EWC_STATE, data)

    def load_state(self, directory: Path, finished_tasks: list[str]) -> None:
        self.fisher, self.anchor, self.tasks_in_fisher = {}, {}, 0
        if not finished_tasks:
            return
        path = Path(directory) / EWC_STATE
        if not path.exists():
            raise UserError(
                f"arm '{self.arm.name}': {path} is missing; EWC needs the Fisher and anchor of the "
                f"finished tasks to resume; remove {Path(directory).parent} to start the arm over"
            )
        params = trainable_parameters(self.model)
        with safe_open(str(path), framework="pt") as handle:
            keys = set(handle.keys())
            expected = {f"{kind}/{name}" for kind in ("fisher", "anchor") for name in params}
            if keys != expected:
                raise UserError(
                    f"arm '{self.arm.name}': {path} does not match the adapter's parameters "
                    f"(was it saved with another LoRA setting?); remove {Path(directory).parent} "
                    f"to start the arm over"
                )
            for name, p in params.items():
                self.fisher[name] = handle.get_tensor(f"fisher/{name}").to(p.device)
                self.anchor[name] = handle.get_tensor(f"anchor/{name}").to(p.device)
            self.tasks_in_fisher = int((handle.metadata() or {}).get("tasks_in_fisher", len(finished_tasks)))

