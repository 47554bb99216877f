"""The arm registry: every training method a recipe can name, with what it declares about itself.

Each package in this folder is one arm plugin: its `__init__` registers its methods
(`ARMS.register(ArmDeclaration(...))`, lite_cpt/arms/base.py), its `settings.py` holds the recipe
fields it adds, and its `method.py` the training code, imported only when a run builds the arm.
Importing this package discovers every plugin (lite_cpt/registry.py), so adding an arm is adding
one package here. The recipe schema, the memory planner, the out-of-memory explainer and the
CLI all read the list from here.

    sft/         sft, multitask_sft
    rl/          rft, multitask_rft (GRPO)
    rif/         rif_rft (GRPO on the instances rollout-based filtering keeps)
    baselines/   replay, ewc (classic continual-learning baselines over SFT)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from lite_cpt.arms.base import ARMS, KINDS, ArmDeclaration, ArmMethod
from lite_cpt.registry import discover

if TYPE_CHECKING:
    from lite_cpt.recipe_run import ArmConfig
    from lite_cpt.train.phase import Example

discover(__name__)


def arm_names() -> tuple[str, ...]:
    """Every registered method name, sorted."""
    return ARMS.names()


def arm_class(method: str) -> ArmDeclaration:
    """The declaration of `method`; a UserError that lists the methods otherwise."""
    return ARMS.lookup(method)


def build_arm(arm: ArmConfig, model, processor, reference_examples: Callable[[str], list[Example]]) -> ArmMethod:
    """The arm object that trains `arm` (its recipe section) on `model`."""
    return arm_class(arm.method).method_class()(arm, model, processor, reference_examples)


__all__ = ["ARMS", "KINDS", "ArmDeclaration", "ArmMethod", "arm_class", "arm_names", "build_arm"]
