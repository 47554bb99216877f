"""The arm interface and the registry every arm class adds itself to.

An arm is a class with `train(examples, phase)`; the continual loop calls it once per task (or
once for all tasks, when the arm is joint). It declares what the rest of lite-cpt needs to know
about it without running it:

    name    the recipe's `method` value
    kind    "sft" or "rl"
    joint   trains once on every task together (the multi-task reference) instead of in turn
    phases  the steps it runs, as the memory planner and the out-of-memory explainer name them

Methods that carry state across tasks (replay's buffer, EWC's Fisher) save and restore it
through `save_state` / `load_state` in the task's directory, so a resumed run matches an
uninterrupted one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar

from lite_cpt.arms_declared import note_registered
from lite_cpt.train.phase import PHASES, Example, Phase, PhaseStats

if TYPE_CHECKING:
    from lite_cpt.recipe import ArmConfig

KINDS = ("sft", "rl")
SFT_PHASES = ("sft_step", "evaluation")
RL_PHASES = ("rollout", "logprob_pass", "grpo_step", "evaluation")

#: Every arm class, by method name; filled by `register_arm` as the arm modules are imported
#: (`lite_cpt.arms` imports them all).
ARMS: dict[str, type[ArmMethod]] = {}


class ArmMethod(ABC):
    """How one arm trains a task into the adapter (see the module docstring)."""

    name: ClassVar[str]
    kind: ClassVar[str]
    joint: ClassVar[bool] = False
    phases: ClassVar[tuple[str, ...]]

    def __init__(self, arm: ArmConfig, model, processor, reference_examples: Callable[[str], list[Example]]):
        self.arm = arm
        self.model = model
        self.processor = processor
        # train examples of an earlier task by name (replay, EWC's Fisher)
        self.reference_examples = reference_examples

    @abstractmethod
    def train(self, examples: list[Example], phase: Phase) -> PhaseStats:
        """Train the adapter on `examples` (one task's, or every task's for a joint arm)."""

    def after_task(self, examples: list[Example], phase: Phase) -> None:
        """Called once the task is trained, before its adapter is saved."""

    def save_state(self, directory: Path) -> None:
        """Persist cross-task state next to the task's adapter."""

    def load_state(self, directory: Path, finished_tasks: list[str]) -> None:
        """Restore cross-task state when resuming after `finished_tasks`."""


def register_arm(cls: type[ArmMethod]) -> type[ArmMethod]:
    """Class decorator: add an arm class to `ARMS` under its `name`, checking its declaration."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__} needs a `name` to be registered as an arm")
    if name in ARMS and ARMS[name] is not cls:
        raise ValueError(f"arm method '{name}' is registered twice ({ARMS[name].__name__}, {cls.__name__})")
    if getattr(cls, "kind", None) not in KINDS:
        raise ValueError(f"arm '{name}': kind must be one of {KINDS}, got {getattr(cls, 'kind', None)!r}")
    unknown = [p for p in getattr(cls, "phases", ()) if p not in PHASES]
    if unknown or not getattr(cls, "phases", ()):
        raise ValueError(f"arm '{name}': phases must be a non-empty subset of {PHASES}, got {cls.phases!r}")
    ARMS[name] = cls
    note_registered(name, cls.kind)  # what a recipe is checked against
    return cls
