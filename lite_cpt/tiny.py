"""An offline, randomly initialised Qwen2.5-VL with its own tokenizer and processor.

Everything is built from transformers' own classes (vision tower, multimodal rope, processor),
so the tiny model exercises exactly the code paths of the 7B model; only the sizes differ.
No network access at any point. The result is a directory that `from_pretrained` loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lite_cpt.io import atomic_directory

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
# The tags of chain-of-thought answers are single tokens so a tiny model can learn the format.
EXTRA_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

# Qwen2-VL's chat template (system prompt by default, images and videos as pad tokens).
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tokenizer(corpus: list[str], vocab_size: int):
    """A byte-level BPE trained on `corpus`, wrapped as a Qwen-style fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS + EXTRA_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Chat scaffolding repeats in every prompt, so it should become a handful of tokens.
    scaffolding = ["<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
                   "<|im_end|>\n<|im_start|>assistant\n"] * 50
    bpe.train_from_iterator(corpus + scaffolding, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=SPECIAL_TOKENS[1:] + EXTRA_TOKENS,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


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


def build_config(tokenizer, cfg):
    """A Qwen2_5_VLConfig with the tiny sizes of `cfg` (a `TinyModelConfig`)."""
    from transformers import Qwen2_5_VLConfig

    head_dim = cfg.hidden_size // cfg.num_heads
    if head_dim % 4:
        raise ValueError("tiny model: hidden_size / num_heads must be a multiple of 4")
    # Multimodal rope splits head_dim/2 frequency pairs into time, height and width sections.
    half = head_dim // 2
    mrope = [half - 2 * (half // 4), half // 4, half // 4]
    ids = {name: tokenizer.convert_tokens_to_ids(name) for name in SPECIAL_TOKENS}
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        tie_word_embeddings=False,
    )
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
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )


def build_tiny_model(cfg, corpus: list[str]):
    """(model, processor) of a random tiny Qwen2.5-VL, deterministic from `cfg.seed`."""
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = build_tokenizer(corpus, cfg.vocab_size)
    processor = build_processor(tokenizer, cfg.image_size)
    config = build_config(tokenizer, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=False,
    )
    return model.eval(), processor


def save_tiny_model(model, processor, path: str | Path) -> Path:
    """Save model + processor to `path` atomically (a temp directory renamed into place)."""
    with atomic_directory(path) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "lite_cpt_tiny.json").write_text(json.dumps({"tiny": True}))
    return Path(path)


def tiny_corpus(seed: int) -> list[str]:
    from lite_cpt.data.synthetic import tokenizer_corpus

    return tokenizer_corpus(seed=seed)
