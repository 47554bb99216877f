"""Qwen2.5-VL (the paper's model): a Qwen2 language model under a windowed-attention ViT whose
2x2-merged patches (28x28 pixels) become image tokens; multimodal rope (mrope) positions.

Module layout (transformers 5): model.language_model.layers.N.{self_attn,mlp}.*, model.visual
(blocks.N.attn.qkv/proj, blocks.N.mlp.gate/up/down_proj, merger.mlp.0/2), lm_head.
"""

from __future__ import annotations

from lite_cpt.errors import UserError
from lite_cpt.families.base import FAMILIES, QWEN_VL_LAYOUT, Family, ModelShape, decoder_linear_shapes
from lite_cpt.families.qwen_tokenizer import CHAT_TEMPLATE, SPECIAL_TOKENS, build_tokenizer


# --------------------------------------------------------------------------------------------
# Shapes


def shape_from_config(data: dict, name: str | None = None) -> ModelShape:
    """From a `Qwen2_5_VLConfig` dict (config.json, nested `text_config` or flat)."""
    text = data.get("text_config") or data
    vision = data.get("vision_config")
    if not vision:
        raise UserError("model config has no vision_config: it is not a Qwen2.5-VL model (set model.family)")
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        tie = data.get("tie_word_embeddings", text.get("tie_word_embeddings", False))
        return ModelShape(
            name=name or data.get("_name_or_path") or data.get("model_type", "qwen2_5_vl"),
            layers=int(text["num_hidden_layers"]), hidden=hidden, intermediate=int(text["intermediate_size"]),
            heads=heads, kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads), vocab=int(text["vocab_size"]),
            tie_embeddings=bool(tie), vision_layers=int(vision["depth"]),
            vision_hidden=int(vision["hidden_size"]), vision_intermediate=int(vision["intermediate_size"]),
            vision_heads=int(vision["num_heads"]), vision_patch=int(vision.get("patch_size", 14)),
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


def tiny_shape(tiny) -> ModelShape:
    """The shape `build_config` gives for a recipe's `model.tiny` section."""
    return ModelShape(
        name="tiny", layers=tiny.num_layers, hidden=tiny.hidden_size,
        intermediate=tiny.intermediate_size, heads=tiny.num_heads, kv_heads=tiny.num_kv_heads,
        head_dim=tiny.hidden_size // tiny.num_heads, vocab=tiny.vocab_size, tie_embeddings=False,
        vision_layers=tiny.vision_depth, vision_hidden=tiny.vision_hidden_size,
        vision_intermediate=tiny.vision_hidden_size * 2,
        vision_heads=max(1, tiny.vision_hidden_size // 16), vision_out_hidden=tiny.hidden_size,
    )


def vision_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """(in, out) of the linear layers of one vision block."""
    v, vi = shape.vision_hidden, shape.vision_intermediate
    return {"attn.qkv": (v, 3 * v), "attn.proj": (v, v), "mlp.gate_proj": (v, vi),
            "mlp.up_proj": (v, vi), "mlp.down_proj": (vi, v)}


def merger_linear_shapes(shape: ModelShape) -> dict[str, tuple[int, int]]:
    merged = shape.vision_hidden * shape.vision_merge**2
    return {"mlp.0": (merged, merged), "mlp.2": (merged, shape.vision_out_hidden)}


def decoder_linear_names(shape: ModelShape, prefix: str) -> dict[str, tuple[int, int]]:
    """Every decoder linear of the language model as `<prefix>.<layer>.<suffix>`, plus lm_head."""
    names = {}
    for layer in range(shape.layers):
        for suffix, dims in decoder_linear_shapes(shape).items():
            names[f"{prefix}.{layer}.{suffix}"] = dims
    names["lm_head"] = (shape.hidden, shape.vocab)
    return names


def linear_modules(shape: ModelShape) -> dict[str, tuple[int, int]]:
    """Every linear layer of the model by its transformers module name, with (in, out)."""
    names = decoder_linear_names(shape, "model.language_model.layers")
    for block in range(shape.vision_layers):
        for suffix, dims in vision_linear_shapes(shape).items():
            names[f"model.visual.blocks.{block}.{suffix}"] = dims
    for suffix, dims in merger_linear_shapes(shape).items():
        names[f"model.visual.merger.{suffix}"] = dims
    return names


def vision_parameters(shape: ModelShape) -> int:
    """patch_embed (no bias) + blocks (every linear with a bias, two weight-only RMSNorms) + merger."""
    patch_embed = shape.vision_hidden * shape.pixel_values_per_patch
    block = 2 * shape.vision_hidden + sum(i * o + o for i, o in vision_linear_shapes(shape).values())
    merger = shape.vision_hidden + sum(i * o + o for i, o in merger_linear_shapes(shape).values())
    return patch_embed + shape.vision_layers * block + merger


# --------------------------------------------------------------------------------------------
# The offline tiny model


def build_processor(tokenizer, image_size: int):
    """Qwen2.5-VL processor whose images are resized to exactly `image_size`² pixels."""
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    pixels = image_size * image_size
    image_processor = Qwen2VLImageProcessor(min_pixels=pixels, max_pixels=pixels)
    video_processor = Qwen2VLVideoProcessor(min_pixels=pixels, max_pixels=pixels)
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=CHAT_TEMPLATE,
    )


def mrope_sections(head_dim: int) -> list[int]:
    """Multimodal rope splits head_dim/2 frequency pairs into time, height and width sections."""
    if head_dim % 4:
        raise ValueError("tiny model: hidden_size / num_heads must be a multiple of 4")
    half = head_dim // 2
    return [half - 2 * (half // 4), half // 4, half // 4]


def tiny_text_config(tokenizer, cfg, rope: dict) -> dict:
    """The language model's config dict of a tiny Qwen-lineage model (ids from `tokenizer`)."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters=rope,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )


def vision_token_ids(tokenizer) -> dict:
    """The config's image/video/vision-marker ids, from the tokenizer."""
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def build_config(tokenizer, cfg):
    """A Qwen2_5_VLConfig with the tiny sizes of `cfg` (a `TinyModelConfig`)."""
    from transformers import Qwen2_5_VLConfig

    mrope = mrope_sections(cfg.hidden_size // cfg.num_heads)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope}
    vision_config = dict(
        depth=cfg.vision_depth,
        hidden_size=cfg.vision_hidden_size,
        intermediate_size=cfg.vision_hidden_size * 2,
        num_heads=max(1, cfg.vision_hidden_size // 16),
        out_hidden_size=cfg.hidden_size,
        window_size=112,
        fullatt_block_indexes=[cfg.vision_depth - 1],
    )
    return Qwen2_5_VLConfig(
        text_config=tiny_text_config(tokenizer, cfg, rope),
        vision_config=vision_config,
        tie_word_embeddings=False,
        **vision_token_ids(tokenizer),
    )


def seeded_model(model_class, config, tokenizer, seed: int):
    """`model_class(config)` initialised from `seed`, with a generation config of token ids only."""
    import torch  # here, not at the top: the registry is read when a recipe is validated, without torch
    from transformers import GenerationConfig

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = model_class(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=False,
    )
    return model.eval()


def build_tiny(cfg, corpus: list[str]):
    """(model, processor) of a random tiny Qwen2.5-VL, deterministic from `cfg.seed`."""
    from transformers import Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(corpus, cfg.vocab_size)
    processor = build_processor(tokenizer, cfg.image_size)
    model = seeded_model(Qwen2_5_VLForConditionalGeneration, build_config(tokenizer, cfg), tokenizer, cfg.seed)
    return model, processor


FAMILIES.register(Family(
    name="qwen2_5_vl",
    summary="Qwen2.5-VL (Qwen2 LM + windowed ViT, patch 14, 2x2 merge)",
    model_types=("qwen2_5_vl",),
    id_pattern=r"qwen2\.5-vl",
    **QWEN_VL_LAYOUT,
    build_tiny=build_tiny,
    shape_from_config=shape_from_config,
    tiny_shape=tiny_shape,
    linear_modules=linear_modules,
    vision_parameters=vision_parameters,
    known_shapes={"7b": QWEN25_VL_7B, "3b": QWEN25_VL_3B},
    default_max_pixels=12845056,
    processor_class="Qwen2_5_VLProcessor",
))
