"""The KL reference policy of an RL phase as a frozen second LoRA adapter on the same base.

Apart from `lite_cpt.models` (which loads the base and the policy adapter) because the GRPO
phase needs only this, and the model loader depends on the recipe schema.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager


#: Name of the frozen second adapter that holds the KL reference policy.
REFERENCE_ADAPTER = "reference"


def hold_reference(model) -> None:
    """Copy the policy adapter's weights into the frozen `reference` adapter (created on first use).

    Called when an RL phase starts, it makes the reference of task t the policy after task t-1,
    as in the paper (each task's EasyR1 run loads its reference from the previous checkpoint).
    A fresh adapter has B = 0, so the first task's reference is the base. The cost is one more
    set of LoRA weights, never a second base.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    policy = model.active_adapter
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    if REFERENCE_ADAPTER not in model.peft_config:
        config = copy.deepcopy(model.peft_config[policy])
        config.inference_mode = True
        model.add_adapter(REFERENCE_ADAPTER, config)
    weights = get_peft_model_state_dict(model, adapter_name=policy)
    set_peft_model_state_dict(model, weights, adapter_name=REFERENCE_ADAPTER)
    _restore_trainable(model, trainable)


@contextmanager
def reference_policy(model, kind: str):
    """Forward passes inside run as the KL reference: `previous_task` = the `reference` adapter
    (see `hold_reference`), `base` = every adapter off. Trainable flags are left as they were."""
    if kind == "base":
        with model.disable_adapter():
            yield
        return
    if kind != "previous_task":
        raise ValueError(f"unknown KL reference {kind!r}; use 'previous_task' or 'base'")
    if REFERENCE_ADAPTER not in model.peft_config:
        raise RuntimeError("the reference adapter is not set; call hold_reference(model) when the phase starts")
    policy = model.active_adapter
    trainable = {name for name, param in model.named_parameters() if param.requires_grad}
    model.set_adapter(REFERENCE_ADAPTER)
    try:
        yield
    finally:
        model.set_adapter(policy)
        _restore_trainable(model, trainable)


def _restore_trainable(model, trainable: set[str]) -> None:
    # peft's add_adapter / set_adapter mark the active adapter trainable; only the policy is.
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
