"""Qwen3-VL: a Qwen3 language model (q/k RMSNorms, no q/k/v biases, interleaved multimodal rope)
under a SigLIP-2-style ViT (patch 16, learned position table + 2-D rope, LayerNorms, GELU MLP)
whose 2x2-merged patches (32x32 pixels) become image tokens; DeepStack adds the features of a few
intermediate vision layers to the first decoder layers' hidden states.

Module layout (transformers 5): model.language_model.layers.N.{self_attn,mlp}.*, model.visual
(blocks.N.attn.qkv/proj, blocks.N.mlp.linear_fc1/2, merger.linear_fc1/2,
deepstack_merger_list.K.linear_fc1/2), lm_head. Same special tokens and chat markers as
Qwen2.5-VL, so the batching of prompts and images is shared.
"""

from __future__ import annotations

import math

from lite_cpt.errors import UserError
from lite_cpt.families.base import FAMILIES, QWEN_VL_LAYOUT, Family, ModelShape
from lite_cpt.families.qwen2_5_vl import (
    decoder_linear_names,
    mrope_sections,
    seeded_model,
    tiny_text_config,
    vision_token_ids,
)
from lite_cpt.families.qwen_tokenizer import QWEN3_VL_CHAT_TEMPLATE, build_tokenizer


def shape_from_config(data: dict, name: str | None = None) -> ModelShape:
    """From a `Qwen3VLConfig` dict (config.json: nested `text_config` and `vision_config`)."""
    text, vision = data.get("text_config"), data.get("vision_config")
    if not text or not vision:
        raise UserError("a Qwen3-VL config.json has text_config and vision_config; this one lacks one")
    try:
        hidden, heads = int(text["hidden_size"]), int(text["num_attention_heads"])
        return ModelShape(
            name=name or data.get("_name_or_path") or "qwen3_vl",
            layers=int(text["num_hidden_layers"]), hidden=hidden, intermediate=int(text["intermediate_size"]),
            heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads), vocab=int(text["vocab_size"]),
            tie_embeddings=bool(data.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            vision_layers=int(vision["depth"]), vision_hidden=int(vision["hidden_size"]),
            vision_intermediate=int(vision["intermediate_size"]), vision_heads=int(vision["num_heads"]),
            vision_patch=int(vision.get("patch_size", 16)),
            vision_temporal_patch=int(vision.get("temporal_patch_size", 2)),
            vision_merge=int(vision.get("spatial_merge_size", 2)),
            vision_out_hidden=int(vision.get("out_hidden_size") or hidden),
            vision_in_channels=int(vision.get("in_channels", 3)), family="qwen3_vl",
            qkv_bias=bool(text.get("attention_bias", False)),
            vision_position_embeddings=int(vision.get("num_position_embeddings", 2304)),
            deepstack_layers=len(vision.get("deepstack_visual_indexes") or ()),
        )
    except KeyError as missing:
        raise UserError(f"model config lacks {missing}: cannot plan memory for it") from None


#: Qwen/Qwen3-VL-8B-Instruct, from its public config.json on the Hugging Face Hub
#: (huggingface.co/Qwen/Qwen3-VL-8B-Instruct/blob/main/config.json): text_config hidden_size 4096,
#: intermediate_size 12288, num_hidden_layers 36, num_attention_heads 32, num_key_value_heads 8,
#: head_dim 128, vocab_size 151936, attention_bias false; vision_config depth 27, hidden_size
#: 1152, intermediate_size 4304, num_heads 16, patch_size 16, spatial_merge_size 2,
#: temporal_patch_size 2, out_hidden_size 4096, num_position_embeddings 2304,
#: deepstack_visual_indexes [8, 16, 24]; tie_word_embeddings false. 8.77 B parameters.
QWEN3_VL_8B_CONFIG = {
    "model_type": "qwen3_vl",
    "tie_word_embeddings": False,
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "text_config": {
        "model_type": "qwen3_vl_text", "hidden_size": 4096, "intermediate_size": 12288,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
        "vocab_size": 151936, "attention_bias": False, "rms_norm_eps": 1e-6,
        "max_position_embeddings": 262144, "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 5000000, "mrope_section": [24, 20, 20],
                            "mrope_interleaved": True},
    },
    "vision_config": {
        "model_type": "qwen3_vl", "depth": 27, "hidden_size": 1152, "intermediate_size": 4304,
        "num_heads": 16, "in_channels": 3, "patch_size": 16, "spatial_merge_size": 2,
        "temporal_patch_size": 2, "out_hidden_size": 4096, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [8, 16, 24], "hidden_act": "gelu_pytorch_tanh",
    },
}
QWEN3_VL_8B = shape_from_config(QWEN3_VL_8B_CONFIG, "Qwen/Qwen3-VL-8B-Instruct")


def tiny_vision_config(cfg, out_hidden: int) -> dict:
    """The tiny ViT: `cfg.vision_depth` blocks, a 4x4 learned position table, DeepStack from the
    first block."""
    return dict(
        depth=cfg.vision_depth, hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_hidden_size * 2, num_heads=max(1, cfg.vision_hidden_size // 16),
        out_hidden_size=out_hidden, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
        num_position_embeddings=16, deepstack_visual_indexes=[0],
    )


def tiny_shape(tiny) -> ModelShape:
    """The shape `build_tiny` gives for a recipe's `model.tiny` section."""
    return ModelShape(
        name="tiny", layers=tiny.num_layers, hidden=tiny.hidden_size, intermediate=tiny.intermediate_size,
        heads=tiny.num_heads, kv_heads=tiny.num_kv_heads, head_dim=tiny.hidden_size // tiny.num_heads,
        vocab=tiny.vocab_size, tie_embeddings=False, vision_layers=tiny.vision_depth,
        vision_hidden=tiny.vision_hidden_size, vision_intermediate=tiny.vision_hidden_size * 2,
        vision_heads=max(1, tiny.vision_hidden_size // 16), vision_patch=16,
        vision_out_hidden=tiny.hidden_size, family="qwen3_vl", qkv_bias=False,
        vision_position_embeddings=16, deepstack_layers=1,
    )


def vision_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of one vision block."""
    v, vi = shape.vision_hidden, shape.vision_intermediate
    return {"attn.qkv": (v, 3 * v), "attn.proj": (v, v), "mlp.linear_fc1": (v, vi), "mlp.linear_fc2": (vi, v)}


def merger_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    merged = shape.vision_hidden * shape.vision_merge**2
    return {"linear_fc1": (merged, merged), "linear_fc2": (merged, shape.vision_out_hidden)}


def linear_modules(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model by its transformers module name, with (in, out)."""
    names = decoder_linear_names(shape, "model.language_model.layers")
    for block in range(shape.vision_layers):
        for suffix, dims in vision_linear_shapes(shape).items():
            names[f"model.visual.blocks.{block}.{suffix}"] = dims
    mergers = ["model.visual.merger"] + [f"model.visual.deepstack_merger_list.{k}" for k in range(shape.deepstack_layers)]
    for merger in mergers:
        for suffix, dims in merger_linear_shapes(shape).items():
            names[f"{merger}.{suffix}"] = dims
    return names


def vision_parameters(shape: ModelShape) -> int:
    """patch_embed (Conv3d with bias) + position table + blocks (linears with biases, two
    LayerNorms with biases) + merger (LayerNorm over v) + DeepStack mergers (LayerNorm over 4v)."""
    v = shape.vision_hidden
    patch_embed = v * shape.pixel_values_per_patch + v
    block = 4 * v + sum(i * o + o for i, o in vision_linear_shapes(shape).values())
    merger_linears = sum(i * o + o for i, o in merger_linear_shapes(shape).values())
    merged = v * shape.vision_merge**2
    mergers = (2 * v + merger_linears) + shape.deepstack_layers * (2 * merged + merger_linears)
    return patch_embed + shape.vision_position_embeddings * v + shape.vision_layers * block + mergers


def build_processor(tokenizer, image_size: int):
    """Qwen3-VL processor whose images are resized to the next multiple of 32 pixels square
    (one merged 2x2 group of 16-pixel patches per 32x32 pixels)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    side = math.ceil(image_size / 32) * 32
    pixels = side * side
    sizes = dict(patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels, **sizes)
    video_processor = Qwen3VLVideoProcessor(min_pixels=pixels, max_pixels=pixels, **sizes)
    return Qwen3VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                            video_processor=video_processor, chat_template=QWEN3_VL_CHAT_TEMPLATE)


def build_config(tokenizer, cfg):
    """A Qwen3VLConfig with the tiny sizes of `cfg` (a `TinyModelConfig`)."""
    from transformers import Qwen3VLConfig

    head_dim = cfg.hidden_size // cfg.num_heads
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope_sections(head_dim),
            "mrope_interleaved": True}
    text = {**tiny_text_config(tokenizer, cfg, rope), "head_dim": head_dim, "attention_bias": False}
    return Qwen3VLConfig(text_config=text, vision_config=tiny_vision_config(cfg, cfg.hidden_size),
                         tie_word_embeddings=False, **vision_token_ids(tokenizer))


def build_tiny(cfg, corpus: list[str]):
    """(model, processor) of a random tiny Qwen3-VL, deterministic from `cfg.seed`."""
    from transformers import Qwen3VLForConditionalGeneration

    tokenizer = build_tokenizer(corpus, cfg.vocab_size, QWEN3_VL_CHAT_TEMPLATE)
    processor = build_processor(tokenizer, cfg.image_size)
    model = seeded_model(Qwen3VLForConditionalGeneration, build_config(tokenizer, cfg), tokenizer, cfg.seed)
    return model, processor


FAMILIES.register(Family(
    name="qwen3_vl",
    summary="Qwen3-VL (Qwen3 LM + SigLIP-2-style ViT, patch 16, 2x2 merge, DeepStack)",
    model_types=("qwen3_vl",),
    id_pattern=r"qwen3-vl",
    **QWEN_VL_LAYOUT,
    build_tiny=build_tiny,
    shape_from_config=shape_from_config,
    tiny_shape=tiny_shape,
    linear_modules=linear_modules,
    vision_parameters=vision_parameters,
    known_shapes={"8b": QWEN3_VL_8B},
    default_max_pixels=16777216,  # Qwen3-VL's image processor: longest_edge 16384 * 32 * 32
    processor_class="Qwen3VLProcessor",
    tiny_build=2,  # 2: Qwen3-VL's own chat format (no default system prompt)
))
