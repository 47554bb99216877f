"""The model a CUDA run loads is the model the planner counts: each family's released shape is
built on the meta device and put through transformers' own bitsandbytes conversion (the step
`from_pretrained` runs before any weight loads), with the family's skip list; no linear of the
vision tower becomes 4-bit, and the bytes of the converted skeleton equal the planner's."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.families import get_family
from lite_cpt.planner.bytes import NF4_BYTES_PER_PARAM, NF4_CONSTANTS_PER_PARAM_DQ, frozen_weight_bytes
from lite_cpt.planner.workload import workload_of
from lite_cpt.recipe import load_recipe

bnb = pytest.importorskip("bitsandbytes")

MODELS = {
    "qwen2_5_vl": "Qwen/Qwen2.5-VL-7B-Instruct",
    "qwen3_vl": "Qwen/Qwen3-VL-8B-Instruct",
}


def meta_model(family: str):
    """The released architecture on the meta device (no memory, no weights)."""
    import transformers

    from lite_cpt.families.qwen3_vl import QWEN3_VL_8B_CONFIG
    from lite_cpt.planner.shapes import seven_b_config

    if family == "qwen2_5_vl":
        config, model_class = seven_b_config("7b"), transformers.Qwen2_5_VLForConditionalGeneration
    else:
        config = transformers.Qwen3VLConfig(**QWEN3_VL_8B_CONFIG)
        model_class = transformers.Qwen3VLForConditionalGeneration
    with torch.device("meta"):
        return model_class(config)


def converted(family: str):
    """The meta model after transformers' bitsandbytes quantizer has replaced its linears, with
    the NF4 settings and skip list `load_pretrained` gives it."""
    from transformers.quantizers.auto import AutoHfQuantizer

    from lite_cpt.models import quantization_config

    model = meta_model(family)
    config = quantization_config("nf4", torch.bfloat16, get_family(family).keep_unquantized)
    AutoHfQuantizer.from_config(config).preprocess_model(model, device_map={"": "cpu"})
    return model


def skeleton_bytes(model) -> float:
    """Bytes the converted model holds once loaded: NF4 codes and double-quantised constants for
    each 4-bit weight, 16 bits for every other parameter."""
    total = 0.0
    for module in model.modules():
        four_bit = isinstance(module, bnb.nn.Linear4bit)
        for name, param in module.named_parameters(recurse=False):
            per_param = NF4_BYTES_PER_PARAM + NF4_CONSTANTS_PER_PARAM_DQ if four_bit and name == "weight" else 2
            total += param.numel() * per_param
    return total


@pytest.mark.parametrize("family", sorted(MODELS))
def test_the_vision_tower_and_head_stay_16_bit_and_the_plan_counts_what_loads(family):
    model = converted(family)
    four_bit = [name for name, module in model.named_modules() if isinstance(module, bnb.nn.Linear4bit)]
    assert four_bit, "the language model's linears are quantised"
    assert not [name for name in four_bit if name.startswith("model.visual.")]
    assert "lm_head" not in four_bit
    # Every language-model linear is 4-bit: the skip list does not reach past the tower.
    layers = get_family(family).lm_layers
    lm_linears = [name for name, module in model.named_modules()
                  if name.startswith(layers + ".") and isinstance(module, (torch.nn.Linear, bnb.nn.Linear4bit))]
    assert sorted(lm_linears) == sorted(four_bit)

    recipe = load_recipe("recipes/seven_tasks.yaml", [f"model.name={MODELS[family]}", "model.quantization=nf4"],
                         check_data=False)
    work = workload_of(recipe, recipe.arms[0])
    planned = sum(frozen_weight_bytes(work).values())
    assert planned == pytest.approx(skeleton_bytes(model), rel=1e-12)
