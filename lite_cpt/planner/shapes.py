"""Model shapes: the sizes of a Qwen2.5-VL model, its parameter counts by group, which linears a
LoRA regex adapts, and the inverse direction (a transformers config built from a shape, for the
random-weight benchmarks). The released 7B/3B numbers are stated here once."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.recipe import LoraConfig

DEFAULT_LORA_TARGETS = LoraConfig.model_fields["target_modules"].default
# Special-token ids of the released Qwen2.5-VL tokenizer.
QWEN_TOKEN_IDS = dict(pad=151643, eos=151645, vision_start=151652, vision_end=151653, image=151655, video=151656)


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a Qwen2.5-VL model that memory depends on."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tie_embeddings: bool
    vision_layers: int
    vision_hidden: int
    vision_intermediate: int
    vision_heads: int
    vision_patch: int = 14
    vision_temporal_patch: int = 2
    vision_merge: int = 2
    vision_out_hidden: int = 0
    vision_in_channels: int = 3

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def pixels_per_image_token(self) -> int:
        """An image token is a merge x merge group of patch x patch pixels (784 for Qwen2.5-VL)."""
        return (self.vision_patch * self.vision_merge) ** 2

    @property
    def patches_per_image_token(self) -> int:
        return self.vision_merge**2

    @classmethod
    def from_hf_config(cls, config: Any, name: str | None = None) -> "ModelShape":
        """From a transformers `Qwen2_5_VLConfig`, or its dict (config.json, nested or flat)."""
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        text = data.get("text_config") or data
        vision = data.get("vision_config")
        if not vision:
            raise UserError("model config has no vision_config: the planner models Qwen2.5-VL models")
        try:
            hidden = int(text["hidden_size"])
            heads = int(text["num_attention_heads"])
            tie = data.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
            return cls(
                name=name or data.get("_name_or_path") or data.get("model_type", "qwen2_5_vl"),
                layers=int(text["num_hidden_layers"]),
                hidden=hidden,
                intermediate=int(text["intermediate_size"]),
                heads=heads,
                kv_heads=int(text.get("num_key_value_heads") or heads),
                head_dim=int(text.get("head_dim") or hidden // heads),
                vocab=int(text["vocab_size"]),
                tie_embeddings=bool(tie),
                vision_layers=int(vision["depth"]),
                vision_hidden=int(vision["hidden_size"]),
                vision_intermediate=int(vision["intermediate_size"]),
                vision_heads=int(vision["num_heads"]),
                vision_patch=int(vision.get("patch_size", 14)),
                vision_temporal_patch=int(vision.get("temporal_patch_size", 2)),
                vision_merge=int(vision.get("spatial_merge_size", 2)),
                vision_out_hidden=int(vision.get("out_hidden_size") or hidden),
                vision_in_channels=int(vision.get("in_channels", 3)),
            )
        except KeyError as missing:
            raise UserError(f"model config lacks {missing}: cannot plan memory for it") from None


# Public config.json numbers of the two released sizes.
QWEN25_VL_7B = ModelShape(
    name="Qwen/Qwen2.5-VL-7B-Instruct", layers=28, hidden=3584, intermediate=18944, heads=28,
    kv_heads=4, head_dim=128, vocab=152064, tie_embeddings=False, vision_layers=32,
    vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_out_hidden=3584,
)
QWEN25_VL_3B = ModelShape(
    name="Qwen/Qwen2.5-VL-3B-Instruct", layers=36, hidden=2048, intermediate=11008, heads=16,
    kv_heads=2, head_dim=128, vocab=151936, tie_embeddings=True, vision_layers=32,
    vision_hidden=1280, vision_intermediate=3420, vision_heads=16, vision_out_hidden=2048,
)
KNOWN_SHAPES = {"7b": QWEN25_VL_7B, "3b": QWEN25_VL_3B}


def tiny_shape(tiny) -> ModelShape:
    """The shape `lite_cpt.tiny.build_config` gives for a recipe's `model.tiny` section."""
    return ModelShape(
        name="tiny", layers=tiny.num_layers, hidden=tiny.hidden_size,
        intermediate=tiny.intermediate_size, heads=tiny.num_heads, kv_heads=tiny.num_kv_heads,
        head_dim=tiny.hidden_size // tiny.num_heads, vocab=tiny.vocab_size, tie_embeddings=False,
        vision_layers=tiny.vision_depth, vision_hidden=tiny.vision_hidden_size,
        vision_intermediate=tiny.vision_hidden_size * 2,
        vision_heads=max(1, tiny.vision_hidden_size // 16), vision_out_hidden=tiny.hidden_size,
    )


def resolve_shape(model_cfg) -> ModelShape:
    """Shape of `model.name`: the built-in 7B/3B numbers, a local config.json, or the tiny model."""
    name = model_cfg.name
    if name == "tiny":
        return tiny_shape(model_cfg.tiny)
    path = Path(name).expanduser()
    if (path / "config.json").is_file():
        return ModelShape.from_hf_config(json.loads((path / "config.json").read_text()), name=name)
    size = re.search(r"qwen2\.5-vl-(\d+)b", name.lower())
    if size and f"{size.group(1)}b" in KNOWN_SHAPES:
        return dataclasses.replace(KNOWN_SHAPES[f"{size.group(1)}b"], name=name)
    try:  # a config already in the local Hugging Face cache
        from transformers import AutoConfig

        return ModelShape.from_hf_config(AutoConfig.from_pretrained(name, local_files_only=True), name=name)
    except (OSError, ValueError):
        raise UserError(
            f"cannot plan memory for model '{name}': give a local directory with a config.json, "
            "a Qwen2.5-VL 7B/3B id, or `tiny`"
        ) from None


def lm_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in_features, out_features) of the linear layers of one decoder layer."""
    h, q, kv, i = shape.hidden, shape.q_dim, shape.kv_dim, shape.intermediate
    return {
        "self_attn.q_proj": (h, q), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (q, h), "mlp.gate_proj": (h, i), "mlp.up_proj": (h, i),
        "mlp.down_proj": (i, h),
    }


def vision_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of one vision block."""
    v, vi = shape.vision_hidden, shape.vision_intermediate
    return {"attn.qkv": (v, 3 * v), "attn.proj": (v, v), "mlp.gate_proj": (v, vi),
            "mlp.up_proj": (v, vi), "mlp.down_proj": (vi, v)}


def merger_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    merged = shape.vision_hidden * shape.vision_merge**2
    return {"mlp.0": (merged, merged), "mlp.2": (merged, shape.vision_out_hidden)}


def parameter_counts(shape: ModelShape) -> dict[str, int]:
    """Parameters by group. Formulas (H hidden, V vocab, L layers, v vision hidden):

    embed_tokens = V·H; lm_head = V·H unless tied
    lm_linear_weights = L · Σ in·out over q,k,v,o,gate,up,down
    lm_biases = L · (q_dim + 2·kv_dim)          (q, k, v carry biases in Qwen2)
    lm_norms = L · 2H + H                        (two RMSNorms per layer + the final one)
    vision = patch_embed + blocks + merger, every vision linear with a bias, RMSNorms weight-only
    """
    return dict(_count_parameters(shape))


@functools.lru_cache(maxsize=64)
def _count_parameters(shape: ModelShape) -> tuple[tuple[str, int], ...]:
    L = shape.layers
    lm_linear = L * sum(i * o for i, o in lm_linear_shapes(shape).values())
    patch_embed = shape.vision_hidden * shape.vision_in_channels * shape.vision_temporal_patch * shape.vision_patch**2
    block = 2 * shape.vision_hidden + sum(i * o + o for i, o in vision_linear_shapes(shape).values())
    merger = shape.vision_hidden + sum(i * o + o for i, o in merger_linear_shapes(shape).values())
    embed = shape.vocab * shape.hidden
    return tuple({
        "embed_tokens": embed,
        "lm_head": 0 if shape.tie_embeddings else embed,
        "lm_linear_weights": lm_linear,
        "lm_biases": L * (shape.q_dim + 2 * shape.kv_dim),
        "lm_norms": L * 2 * shape.hidden + shape.hidden,
        "vision": patch_embed + shape.vision_layers * block + merger,
    }.items())


def total_parameters(shape: ModelShape) -> int:
    return sum(parameter_counts(shape).values())


def linear_module_names(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model by its transformers module name, with (in, out)."""
    names = {}
    for layer in range(shape.layers):
        for suffix, dims in lm_linear_shapes(shape).items():
            names[f"model.language_model.layers.{layer}.{suffix}"] = dims
    for block in range(shape.vision_layers):
        for suffix, dims in vision_linear_shapes(shape).items():
            names[f"model.visual.blocks.{block}.{suffix}"] = dims
    for suffix, dims in merger_linear_shapes(shape).items():
        names[f"model.visual.merger.{suffix}"] = dims
    names["lm_head"] = (shape.hidden, shape.vocab)
    return names


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
    regex = re.compile(target_modules)
    total, per_layer, vision, head = 0, {}, False, False
    for name, (fan_in, fan_out) in linear_module_names(shape).items():
        if not regex.fullmatch(name):
            continue
        total += r * (fan_in + fan_out)
        if name.startswith("model.language_model.layers."):
            layer, suffix = name.split(".", 4)[3:]
            per_layer.setdefault(int(layer), []).append(suffix)
        elif name.startswith("model.visual."):
            vision = True
        else:
            head = True
    return LoraLayout(total, {k: tuple(v) for k, v in per_layer.items()}, vision, head)


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
