"""Text-only causal language models of the Qwen lineage (Qwen2 / Qwen2.5 / Qwen3): the same loop
without a vision tower. The processor is the tokenizer, prompts are plain chat strings, and a
task item that carries an image is refused with a clear error.

Module layout (transformers 5): model.layers.N.{self_attn,mlp}.*, lm_head. Qwen2 has q/k/v
biases; Qwen3 has none but RMSNorms on q and k (`qkv_bias` in the shape).
"""

from __future__ import annotations

import tempfile

from lite_cpt.errors import UserError
from lite_cpt.families.base import FAMILIES, Family, ModelShape
from lite_cpt.families.qwen2_5_vl import decoder_linear_names, seeded_model, tiny_text_config
from lite_cpt.families.qwen_tokenizer import TEXT_CHAT_TEMPLATE, build_tokenizer


def shape_from_config(data: dict, name: str | None = None) -> ModelShape:
    """From a Qwen2/Qwen3 causal-LM config dict (config.json)."""
    try:
        hidden = int(data["hidden_size"])
        heads = int(data["num_attention_heads"])
        return ModelShape(
            name=name or data.get("_name_or_path") or data.get("model_type", "text"),
            layers=int(data["num_hidden_layers"]), hidden=hidden, intermediate=int(data["intermediate_size"]),
            heads=heads, kv_heads=int(data.get("num_key_value_heads") or heads),
            head_dim=int(data.get("head_dim") or hidden // heads), vocab=int(data["vocab_size"]),
            tie_embeddings=bool(data.get("tie_word_embeddings", False)),
            vision_layers=0, vision_hidden=0, vision_intermediate=0, vision_heads=0,
            family="text", qkv_bias=data.get("model_type", "qwen2") == "qwen2",
        )
    except KeyError as missing:
        raise UserError(f"model config lacks {missing}: cannot plan memory for it") from None


#: Qwen/Qwen2.5-7B-Instruct, from its public config.json (hidden_size 3584, intermediate_size
#: 18944, num_hidden_layers 28, num_attention_heads 28, num_key_value_heads 4, vocab_size 152064,
#: tie_word_embeddings false): the language model of Qwen2.5-VL-7B on its own, 7.62 B parameters.
QWEN25_7B = ModelShape(
    name="Qwen/Qwen2.5-7B-Instruct", layers=28, hidden=3584, intermediate=18944, heads=28, kv_heads=4,
    head_dim=128, vocab=152064, tie_embeddings=False, vision_layers=0, vision_hidden=0,
    vision_intermediate=0, vision_heads=0, family="text",
)


def tiny_shape(tiny) -> ModelShape:
    """The shape `build_tiny` gives for a recipe's `model.tiny` section (its vision fields unused)."""
    return ModelShape(
        name="tiny", layers=tiny.num_layers, hidden=tiny.hidden_size, intermediate=tiny.intermediate_size,
        heads=tiny.num_heads, kv_heads=tiny.num_kv_heads, head_dim=tiny.hidden_size // tiny.num_heads,
        vocab=tiny.vocab_size, tie_embeddings=False, vision_layers=0, vision_hidden=0,
        vision_intermediate=0, vision_heads=0, family="text",
    )


def linear_modules(shape: ModelShape) -> dict[str, tuple[int, int]]:
    return decoder_linear_names(shape, "model.layers")


def as_qwen2_tokenizer(tokenizer):
    """The tokenizer as the `Qwen2Tokenizer` that `AutoTokenizer` gives a saved qwen2 checkpoint
    (it picks the class from config.json's model_type and applies Qwen's own pre-tokenizer, which
    splits digits): the tiny model then trains with exactly the tokenizer it is reloaded with."""
    from transformers import Qwen2Tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return Qwen2Tokenizer.from_pretrained(tmp, padding_side="left")


def build_tiny(cfg, corpus: list[str]):
    """(model, tokenizer) of a random tiny Qwen2ForCausalLM, deterministic from `cfg.seed`."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = as_qwen2_tokenizer(build_tokenizer(corpus, cfg.vocab_size, TEXT_CHAT_TEMPLATE))
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    config = Qwen2Config(**tiny_text_config(tokenizer, cfg, rope))
    return seeded_model(Qwen2ForCausalLM, config, tokenizer, cfg.seed), tokenizer


FAMILIES.register(Family(
    name="text",
    summary="text-only Qwen2/Qwen2.5/Qwen3 causal LM (no vision tower)",
    model_types=("qwen2", "qwen3"),
    id_pattern=r"qwen(2|2\.5|3)-\d+(\.\d+)?b",
    vision=False,
    auto_class="AutoModelForCausalLM",
    lm_layers="model.layers",
    keep_unquantized=("lm_head",),
    build_tiny=build_tiny,
    shape_from_config=shape_from_config,
    tiny_shape=tiny_shape,
    linear_modules=linear_modules,
    vision_parameters=lambda shape: 0,
    known_shapes={"7b": QWEN25_7B},
    tiny_build=2,  # 2: Qwen2.5-Instruct's own default system prompt
))
