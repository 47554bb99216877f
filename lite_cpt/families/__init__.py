"""Model families: one adapter module per architecture, and the registry that picks one.

Each module in this folder that adapts an architecture registers its `Family` value with
`FAMILIES.register(Family(...))` (lite_cpt/families/base.py); importing this package discovers every
module (lite_cpt/registry.py), so adding a family is adding one module here.

`resolve_family(model_cfg)` gives the family of a recipe's `model` section: `model.family` when
set, else the family whose `model_type` the checkpoint's config.json names (a local directory or
the Hugging Face cache), else the one whose id pattern the model id matches; the tiny model is
Qwen2.5-VL unless `model.family` says otherwise.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lite_cpt.errors import UserError
from lite_cpt.families.base import FAMILIES, Family, ModelShape
from lite_cpt.registry import discover

discover(__name__)

#: The family of `model.name: tiny` when `model.family` is auto.
DEFAULT_FAMILY = "qwen2_5_vl"

__all__ = ["DEFAULT_FAMILY", "FAMILIES", "Family", "ModelShape", "family_for_processor", "family_of_model",
           "family_of_model_type", "get_family", "resolve_family"]


def allowed_families() -> str:
    return ", ".join(["auto", *FAMILIES])


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise UserError(f"model.family '{name}' is not a known model family; allowed: {allowed_families()}")
    return FAMILIES[name]


def family_of_model_type(model_type: str, source: str) -> Family:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise UserError(
        f"{source} has model_type '{model_type}', which no model family handles; set model.family to one "
        f"of: {', '.join(FAMILIES)} (if the architecture matches), or add a family adapter in lite_cpt/families/"
    )


def family_of_model(model) -> Family:
    """The family of a loaded (possibly peft-wrapped) transformers model, from its config."""
    return family_of_model_type(model.config.model_type, f"the loaded {type(model).__name__}")


def _cached_model_type(name: str) -> str | None:
    """model_type of a config already in the local Hugging Face cache (no download), if any."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(name, local_files_only=True).model_type
    except (OSError, ValueError):
        return None


def resolve_family(model_cfg) -> Family:
    """The family of a recipe's `model` section (see the module docstring for the order)."""
    chosen = getattr(model_cfg, "family", "auto")
    if chosen != "auto":
        return get_family(chosen)
    name = model_cfg.name
    if name == "tiny":
        return FAMILIES[DEFAULT_FAMILY]
    config = Path(name).expanduser() / "config.json"
    if config.is_file():
        return family_of_model_type(json.loads(config.read_text()).get("model_type", "?"), str(config))
    for family in FAMILIES.values():
        if re.search(family.id_pattern, name.lower()):
            return family
    model_type = _cached_model_type(name)
    if model_type is not None:
        return family_of_model_type(model_type, f"model '{name}'")
    raise UserError(
        f"cannot tell the model family of '{name}': give a local directory with a config.json, or set "
        f"model.family to one of: {', '.join(FAMILIES)}"
    )


def family_for_processor(processor) -> Family:
    """The family whose processor this is; a bare tokenizer means a text-only model."""
    class_name = type(processor).__name__
    for family in FAMILIES.values():
        if family.processor_class == class_name:
            return family
    if hasattr(processor, "image_processor"):
        # Every vision family turns prompts into inputs the same way (the processor's own call).
        return FAMILIES[DEFAULT_FAMILY]
    text = [family for family in FAMILIES.values() if not family.vision]
    if not text:
        raise UserError(f"no model family takes the processor {class_name}; allowed: {', '.join(FAMILIES)}")
    return text[0]
