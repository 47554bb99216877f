"""What an arm declares, the registry it declares itself in, and the interface of its training code.

An arm plugin is a small package in lite_cpt/arms/. Its `__init__` registers one
`ArmDeclaration` per method (`ARMS.register(...)`), which says without importing any training code:

    name            the recipe's `method` value
    kind            "sft" or "rl"
    phases          the steps it runs, as the memory planner and the out-of-memory explainer name them
    settings        the fields it adds to its recipe entry (a pydantic model of its own, e.g.
                    `rft:`), or None; a recipe refuses them on an arm of another method
    implementation  "module:Class" of its `ArmMethod`, imported only when a run builds the arm
    joint           trains once on every task together (the multi-task reference) instead of in turn

so that a recipe is validated (and refused) before torch is imported. The training code is an
`ArmMethod` with `train(examples, phase)`; the continual loop calls it once per task (or once
for all tasks, when the arm is joint). Methods that carry state across tasks (replay's buffer,
EWC's Fisher) save and restore it through `save_state` / `load_state` in the task's directory,
so a resumed run matches an uninterrupted one.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel

from lite_cpt.registry import Registry
from lite_cpt.train.phase_steps import PHASES

if TYPE_CHECKING:
    from lite_cpt.recipe_run import ArmConfig
    from lite_cpt.train.phase import Example, Phase, PhaseStats

KINDS = ("sft", "rl")
SFT_PHASES = ("sft_step", "evaluation")
RL_PHASES = ("rollout", "logprob_pass", "grpo_step", "evaluation")


@dataclass(frozen=True)
class ArmDeclaration:
    """What the rest of lite-cpt knows about an arm method without running it (module docstring)."""

    name: str
    kind: str
    phases: tuple[str, ...]
    implementation: str
    summary: str
    settings: type[BaseModel] | None = None
    joint: bool = False

    def method_class(self) -> type[ArmMethod]:
        """The `ArmMethod` class that trains this arm (imports its training code)."""
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


def _check_declaration(arm: ArmDeclaration) -> None:
    if arm.kind not in KINDS:
        raise ValueError(f"arm '{arm.name}': kind must be one of {KINDS}, got {arm.kind!r}")
    unknown = [p for p in arm.phases if p not in PHASES]
    if unknown or not arm.phases:
        raise ValueError(f"arm '{arm.name}': phases must be a non-empty subset of {PHASES}, got {arm.phases!r}")
    if ":" not in arm.implementation:
        raise ValueError(f"arm '{arm.name}': implementation must be 'module:Class', got {arm.implementation!r}")


#: Every arm method, by name; filled as `lite_cpt.arms` discovers its plugin packages.
ARMS: Registry[ArmDeclaration] = Registry("arm method", check=_check_declaration)


class ArmMethod(ABC):
    """How one arm trains a task into the adapter (see the module docstring)."""

    def __init__(self, arm: ArmConfig, model, processor, reference_examples: Callable[[str], list[Example]]):
        self.arm = arm
        self.declaration = ARMS[arm.method]
        self.model = model
        self.processor = processor
        # train examples of an earlier task by name (replay, EWC's Fisher)
        self.reference_examples = reference_examples

    @property
    def joint(self) -> bool:
        return self.declaration.joint

    @property
    def kind(self) -> str:
        return self.declaration.kind

    @abstractmethod
    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        """Train the adapter on `examples` (one task's, or every task's for a joint arm)."""

    def after_task(self, examples: list[Example], phase: Phase) -> None:
        """Called once the task is trained, before its adapter is saved."""

    def save_state(self, directory: Path) -> None:
        """Persist cross-task state next to the task's adapter."""

    def load_state(self, directory: Path, finished_tasks: list[str]) -> None:
        """Restore cross-task state when resuming after `finished_tasks`."""
