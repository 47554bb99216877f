"""Model shapes: the sizes of a model (read by its family adapter from a config, or a family's
built-in released numbers), its parameter counts by group, which linears a LoRA regex adapts, and
the inverse direction for Qwen2.5-VL (a transformers config built from a shape, for the
random-weight benchmarks)."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.families import DEFAULT_FAMILY, get_family, resolve_family
from lite_cpt.families.base import ModelShape, decoder_linear_shapes

QWEN25_VL = get_family(DEFAULT_FAMILY)
QWEN25_VL_7B, QWEN25_VL_3B = QWEN25_VL.known_shapes["7b"], QWEN25_VL.known_shapes["3b"]

#: The Qwen2.5-VL language model's linears, what `model.lora.target_modules: auto` gives it.
DEFAULT_LORA_TARGETS = QWEN25_VL.lora_targets
# Special-token ids of the released Qwen2.5-VL tokenizer.
QWEN_TOKEN_IDS = dict(pad=151643, eos=151645, vision_start=151652, vision_end=151653, image=151655, video=151656)
KNOWN_SHAPES = QWEN25_VL.known_shapes

__all__ = ["ModelShape", "QWEN25_VL_3B", "QWEN25_VL_7B"]


def shape_from_hf_config(config: Any, name: str | None = None, family: str | None = None) -> ModelShape:
    """From a transformers config, or its dict (config.json, nested or flat); the family is
    `family` or the one whose model_type the config names (Qwen2.5-VL for a flat dict without one)."""
    from lite_cpt.families import family_of_model_type

    data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    if family is not None:
        adapter = get_family(family)
    elif "model_type" in data:
        adapter = family_of_model_type(data["model_type"], name or "the model config")
    else:
        adapter = QWEN25_VL
    return adapter.shape_from_config(data, name)


def tiny_shape(tiny, family: str = "qwen2_5_vl") -> ModelShape:
    """The shape the tiny model of `family` has for a recipe's `model.tiny` section."""
    return get_family(family).tiny_shape(tiny)


def resolve_shape(model_cfg) -> ModelShape:
    """Shape of `model.name`: a family's built-in numbers, a local config.json, or the tiny model."""
    name = model_cfg.name
    try:
        family = resolve_family(model_cfg)
    except UserError as error:
        raise UserError(f"cannot plan memory for model '{name}': {error}") from None
    if name == "tiny":
        return family.tiny_shape(model_cfg.tiny)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return shape_from_hf_config(json.loads((path / "config.json").read_text()), name=name, family=family.name)
    for key, shape in family.known_shapes.items():
        if _names_size(name, key):
            return dataclasses.replace(shape, name=name)
    try:  # a config already in the local Hugging Face cache
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        raise UserError(
            f"cannot plan memory for model '{name}': give a local directory with a config.json, "
            f"a {family.summary.split(' (')[0]} id of a known size ({', '.join(family.known_shapes)}), or `tiny`"
        ) from None
    return shape_from_hf_config(config, name=name, family=family.name)


def _names_size(name: str, size: str) -> bool:
    """Whether a model id names a size: `Qwen/Qwen2.5-VL-7B-Instruct` names 7b."""
    return re.search(rf"(^|[-_/]){re.escape(size)}([-_]|$)", name.lower()) is not None


def lm_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of the linear layers of one decoder layer."""
    return decoder_linear_shapes(shape)


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by group. Formulas (H hidden, V vocab, L layers, d head_dim):

    embed_tokens = V·H; lm_head = V·H unless tied
    lm_linear_weights = L · Σ in·out over q,k,v,o,gate,up,down
    lm_biases = L · (q_dim + 2·kv_dim) when q, k, v carry biases (Qwen2), else 0 (Qwen3)
    lm_norms = L · 2H + H, + L · 2d for Qwen3's q/k RMSNorms
    vision = the family's vision tower and projector (0 for a text-only model)
    """
    return dict(_count_parameters(shape))


@functools.lru_cache(maxsize=64)
def _count_parameters(shape: ModelShape) -> tuple[tuple[str, int], ...]:
    L = shape.layers
    lm_linear = L * sum(i * o for i, o in lm_linear_shapes(shape).values())
    embed = shape.vocab * shape.hidden
    qk_norms = 0 if shape.qkv_bias else 2 * shape.head_dim
    return tuple({
        "embed_tokens": embed,
        "lm_head": 0 if shape.tie_embeddings else embed,
        "lm_linear_weights": lm_linear,
        "lm_biases": L * (shape.q_dim + 2 * shape.kv_dim) if shape.qkv_bias else 0,
        "lm_norms": L * (2 * shape.hidden + qk_norms) + shape.hidden,
        "vision": get_family(shape.family).vision_parameters(shape) if shape.has_vision else 0,
    }.items())


def total_parameters(shape: ModelShape) -> int:
    return sum(parameter_counts(shape).values())


def linear_module_names(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model by its transformers module name, with (in, out)."""
    return get_family(shape.family).linear_modules(shape)


@dataclass(frozen=True)
class LoraLayout:
    """Which linear layers a LoRA regex adapts (peft matches it with re.fullmatch on names)."""

    parameters: int
    lm_modules: dict[int, tuple[str, ...]]  # decoder layer -> adapted module suffixes
    vision_adapted: bool
    head_adapted: bool

    @property
    def busiest_layer(self) -> tuple[str, ...]:
        """The adapted suffixes of the layer with the most adapted inputs (worst-case activations)."""
        return max(self.lm_modules.values(), key=len, default=())


@functools.lru_cache(maxsize=256)
def lora_layout(shape: ModelShape, r: int, target_modules: str = DEFAULT_LORA_TARGETS) -> LoraLayout:
    """LoRA parameters = Σ over adapted linears of r·(in + out)."""
    regex = re.compile(resolve_lora_targets(shape, target_modules))
    total, per_layer, vision, head = 0, {}, False, False
    layers = get_family(shape.family).lm_layers + "."
    for name, (fan_in, fan_out) in linear_module_names(shape).items():
        if not regex.fullmatch(name):
            continue
        total += r * (fan_in + fan_out)
        if name.startswith(layers):
            layer, suffix = name[len(layers):].split(".", 1)
            per_layer.setdefault(int(layer), []).append(suffix)
        elif name == "lm_head":
            head = True
        else:
            vision = True
    return LoraLayout(total, {k: tuple(v) for k, v in per_layer.items()}, vision, head)


def resolve_lora_targets(shape: ModelShape, target_modules: str) -> str:
    """The recipe's LoRA regex, or for `auto` the language-model linears of the shape's family."""
    return get_family(shape.family).lora_targets if target_modules == "auto" else target_modules


def lora_parameters(shape: ModelShape, r: int, target_modules: str = DEFAULT_LORA_TARGETS) -> int:
    return lora_layout(shape, r, target_modules).parameters


# --------------------------------------------------------------------------------------------
# Shape -> transformers config (random-weight benchmarks)


def token_ids(vocab: int) -> dict[str, int]:
    """The released special-token ids, or the top of a smaller vocabulary (test shapes)."""
    if vocab > max(QWEN_TOKEN_IDS.values()):
        return dict(QWEN_TOKEN_IDS)
    names = ("pad", "eos", "vision_start", "vision_end", "image", "video")
    return {name: vocab - 1 - i for i, name in enumerate(names)}


def hf_config_from_shape(shape: ModelShape):
    """A transformers `Qwen2_5_VLConfig` with the sizes of `shape` (bf16, rope as released)."""
    from transformers import Qwen2_5_VLConfig

    half = shape.head_dim // 2
    # 2 * sum(mrope_section) == head_dim; the released models use [16, 24, 24] for head_dim 128.
    mrope = [16, 24, 24] if shape.head_dim == 128 else [half - 2 * (half // 4), half // 4, half // 4]
    ids = token_ids(shape.vocab)
    text = dict(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads, max_position_embeddings=128000, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        tie_word_embeddings=shape.tie_embeddings, bos_token_id=ids["pad"], eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )
    full_attention = [i for i in (7, 15, 23, 31) if i < shape.vision_layers] or [shape.vision_layers - 1]
    vision = dict(
        depth=shape.vision_layers, hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate, num_heads=shape.vision_heads,
        out_hidden_size=shape.vision_out_hidden, patch_size=shape.vision_patch,
        spatial_merge_size=shape.vision_merge, temporal_patch_size=shape.vision_temporal_patch,
        in_channels=shape.vision_in_channels, window_size=112, fullatt_block_indexes=full_attention,
        tokens_per_second=2,
    )
    config = Qwen2_5_VLConfig(
        text_config=text, vision_config=vision, image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["vision_start"], vision_end_token_id=ids["vision_end"],
        tie_word_embeddings=shape.tie_embeddings,
    )
    config.dtype = "bfloat16"
    return config


def seven_b_config(model: str = "7b"):
    """The Qwen2.5-VL-7B (or "3b") config, from the public config.json numbers."""
    if model not in KNOWN_SHAPES:
        raise UserError(f"--model must be one of {', '.join(KNOWN_SHAPES)}, got '{model}'")
    return hf_config_from_shape(KNOWN_SHAPES[model])


def meta_parameter_count(config) -> int:
    """Parameters of the transformers model built on the meta device (no memory, no weights)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    return sum(p.numel() for p in model.parameters())
