"""Optional unsloth fast path (`model.backend: unsloth`): load, add LoRA, switch modes.

unsloth patches transformers, peft and trl when it is imported, and warns that it may be slower
or use more memory when they were imported first; so a recipe that names the backend imports it
as soon as the recipe is read (`import_unsloth_first`, from `load_recipe`), before anything
imports transformers. It needs a CUDA GPU: without one (or without the package) nothing is
imported early, and the loader says what is missing.

The base comes from `FastVisionModel.from_pretrained` and stays frozen (`load_base`); the LoRA
adapter comes from `FastVisionModel.get_peft_model` when `add_lora` asks for it, so the
adapter's weights are the model's only trainable parameters. Around generation the model goes
through `FastVisionModel.for_inference` and back through `for_training`.
"""

from __future__ import annotations

import importlib.util
import sys
from contextlib import contextmanager
from typing import Any

from lite_cpt.errors import UserError

UNSLOTH_NEEDS = (
    "the unsloth backend needs a CUDA GPU and `pip install lite-cpt[unsloth]`; "
    "set model.backend: transformers to run without it"
)
#: Attribute set on a model loaded by unsloth (a PeftModel forwards it from its base).
BACKEND_ATTRIBUTE = "lite_cpt_backend"
#: The checkpointing choice of the load, reused when the adapter is added.
CHECKPOINTING_ATTRIBUTE = "lite_cpt_unsloth_checkpointing"


def recipe_backend(raw: dict) -> str | None:
    """`model.backend` of a raw (unvalidated) recipe mapping, or None."""
    model = raw.get("model") if isinstance(raw, dict) else None
    return model.get("backend") if isinstance(model, dict) else None


def import_unsloth_first(backend: str | None) -> bool:
    """Import unsloth now when `backend` is unsloth, a CUDA GPU is visible and the package is
    installed (torch may already be loaded; transformers should not be). True when imported."""
    if backend != "unsloth":
        return False
    if "unsloth" in sys.modules:
        return True
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("unsloth") is None:
        return False
    import unsloth  # noqa: F401  (imported for its patches)

    return True


def _fast_vision_model():
    import torch

    if not torch.cuda.is_available():  # checked first: importing unsloth on CPU prints and falls back
        raise UserError(UNSLOTH_NEEDS)
    try:
        from unsloth import FastVisionModel
    except ImportError:
        raise UserError(UNSLOTH_NEEDS) from None
    return FastVisionModel


def load_with_unsloth(model_name: str, *, max_seq_length: int, load_in_4bit: bool, gradient_checkpointing: bool,
                      dtype=None):
    """(frozen base model, processor) from unsloth's FastVisionModel, without an adapter."""
    fast = _fast_vision_model()
    checkpointing = "unsloth" if gradient_checkpointing else False
    model, processor = fast.from_pretrained(
        model_name,
        max_seq_length=max_seq_length,
        load_in_4bit=load_in_4bit,
        dtype=dtype,
        use_gradient_checkpointing=checkpointing,
    )
    setattr(model, BACKEND_ATTRIBUTE, "unsloth")
    setattr(model, CHECKPOINTING_ATTRIBUTE, checkpointing)
    return model, processor


def is_unsloth_model(model) -> bool:
    return getattr(model, BACKEND_ATTRIBUTE, None) == "unsloth"


def add_unsloth_lora(model, lora_cfg, *, seed: int = 0):
    """A fresh LoRA adapter on an unsloth base, by `FastVisionModel.get_peft_model`.

    `lora_cfg` is the recipe's `model.lora`. The default target regex (the language model's
    q/k/v/o/gate/up/down projections) maps onto unsloth's own switches (language layers,
    attention and MLP modules, no vision layers); any other regex is passed through as is.
    """
    from lite_cpt.families import family_of_model

    fast = _fast_vision_model()
    lora_kwargs: dict[str, Any] = dict(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        bias="none",
        use_gradient_checkpointing=getattr(model, CHECKPOINTING_ATTRIBUTE, False),
        random_state=seed,
    )
    if lora_cfg.target_modules in ("auto", family_of_model(model).lora_targets):
        lora_kwargs.update(
            finetune_vision_layers=False,
            finetune_language_layers=True,
            finetune_attention_modules=True,
            finetune_mlp_modules=True,
        )
    else:
        lora_kwargs["target_modules"] = lora_cfg.target_modules
    peft_model = fast.get_peft_model(model, **lora_kwargs)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise UserError("unsloth returned a model without trainable adapter weights; "
                        "check model.lora.target_modules, or set model.backend: transformers")
    return peft_model


@contextmanager
def generation_mode(model):
    """unsloth's inference mode while generating, its training mode afterwards (a model of
    another backend is left alone)."""
    if not is_unsloth_model(model):
        yield
        return
    from unsloth import FastVisionModel

    FastVisionModel.for_inference(model)
    try:
        yield
    finally:
        FastVisionModel.for_training(model)


__all__ = ["UNSLOTH_NEEDS", "add_unsloth_lora", "generation_mode", "import_unsloth_first", "is_unsloth_model",
           "load_with_unsloth", "recipe_backend"]
