"""Training arms: how one task (or, for joint arms, all tasks) is trained into the adapter.

An arm method is a class with `train(examples, phase)`; the continual loop calls it once per
task. Methods that carry state across tasks (replay's buffer, EWC's Fisher) save and restore
it through `save_state` / `load_state` in the task's directory, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lite_cpt.planner import Knobs
from lite_cpt.recipe import ArmConfig
from lite_cpt.sft import Example, PhaseStats, train_sft


@dataclass
class Phase:
    """What one training phase gets from the loop."""

    index: int  # 1-based task index (the joint arms use 1)
    name: str  # task name, or "joint"
    seed: int
    epochs: float
    knobs: Knobs  # micro-batch, log-prob chunk and rollout batch (planned for the GPU)
    on_step: Callable[[dict], None]
    progress: Callable[[int, int], None]
    extra: dict = field(default_factory=dict)

    @property
    def micro_batch_size(self) -> int:
        return self.knobs.micro_batch_size

    @property
    def logprob_chunk(self) -> int:
        return self.knobs.logprob_chunk

    @property
    def rollout_batch_size(self) -> int:
        return self.knobs.rollout_batch_size


class ArmMethod:
    """Base: plain sequential SFT. Subclasses override `train` or the hooks."""

    #: Joint arms train once on every task together (the multi-task upper bound).
    joint = False

    def __init__(self, arm: ArmConfig, model, processor, reference_examples: Callable[[str], list[Example]]):
        self.arm = arm
        self.model = model
        self.processor = processor
        # train examples of an earlier task by name (replay, EWC's Fisher)
        self.reference_examples = reference_examples

    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        return train_sft(
            self.model,
            self.processor,
            examples,
            lr=self.arm.lr,
            batch_size=self.arm.batch_size,
            micro_batch_size=phase.micro_batch_size,
            logprob_chunk=phase.logprob_chunk,
            epochs=phase.epochs,
            max_steps=self.arm.max_steps_per_task,
            grad_clip=self.arm.grad_clip,
            weight_decay=0.0 if self.arm.weight_decay is None else self.arm.weight_decay,
            seed=phase.seed,
            on_step=phase.on_step,
            progress=phase.progress,
            **self.sft_hooks(phase),
        )

    def sft_hooks(self, phase: Phase) -> dict:
        """Extra keyword arguments for `train_sft` (replay's sampler, EWC's penalty)."""
        return {}

    def after_task(self, examples: list[Example], phase: Phase) -> None:
        """Called once the task is trained, before its adapter is saved."""

    def save_state(self, directory: Path) -> None:
        """Persist cross-task state next to the task's adapter."""

    def load_state(self, directory: Path, finished_tasks: list[str]) -> None:
        """Restore cross-task state when resuming after `finished_tasks`."""


class JointSFT(ArmMethod):
    joint = True


ARM_METHODS: dict[str, Callable[[], type[ArmMethod]]] = {
    "sft": lambda: ArmMethod,
    "multitask_sft": lambda: JointSFT,
}


def register_arm(name: str, loader: Callable[[], type[ArmMethod]]) -> None:
    ARM_METHODS[name] = loader


def arm_method(arm: ArmConfig, model, processor, reference_examples) -> ArmMethod:
    _register_optional_methods()
    if arm.method not in ARM_METHODS:
        from lite_cpt.errors import UserError

        raise UserError(f"arm '{arm.name}': method '{arm.method}' is not available in this build; "
                        f"available: {', '.join(sorted(ARM_METHODS))}")
    return ARM_METHODS[arm.method]()(arm, model, processor, reference_examples)


def _register_optional_methods() -> None:
    """Arms defined in their own modules register themselves on import."""
    import importlib

    for module in ("lite_cpt.rft", "lite_cpt.baselines"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise


def shuffled(examples: list[Example], seed: int) -> list[Example]:
    out = examples[:]
    random.Random(seed).shuffle(out)
    return out
