"""The arm registry: every training method a recipe can name, with what it declares about itself.

Each module in this folder defines arm classes (`lite_cpt.arms.base.ArmMethod`) and registers
them with `@register_arm`; importing this package imports every one of them, so adding an arm
is adding one module here (or one class to an existing one). The recipe schema, the memory
planner, the out-of-memory explainer and the CLI all read the list from here.

    sft.py         sft, multitask_sft
    rl.py          rft, multitask_rft (GRPO)
    rif.py         rif_rft (GRPO on the instances rollout-based filtering keeps)
    baselines.py   replay, ewc (classic continual-learning baselines over SFT)
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Callable

from lite_cpt.arms.base import ARMS, KINDS, ArmMethod, register_arm
from lite_cpt.errors import UserError
from lite_cpt.train.phase import Example

if TYPE_CHECKING:
    from lite_cpt.recipe import ArmConfig

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")


def arm_names() -> tuple[str, ...]:
    """Every registered method name, sorted."""
    return tuple(sorted(ARMS))


def arm_class(method: str) -> type[ArmMethod]:
    """The arm class registered under `method`; a UserError that lists the methods otherwise."""
    if method not in ARMS:
        raise UserError(f"unknown arm method '{method}'; allowed values: {', '.join(arm_names())}")
    return ARMS[method]


def build_arm(arm: ArmConfig, model, processor, reference_examples: Callable[[str], list[Example]]) -> ArmMethod:
    """The arm object that trains `arm` (its recipe section) on `model`."""
    return arm_class(arm.method)(arm, model, processor, reference_examples)


__all__ = ["ARMS", "KINDS", "ArmMethod", "arm_class", "arm_names", "build_arm", "register_arm"]
