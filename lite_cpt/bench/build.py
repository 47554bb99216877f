"""The random-weight model, processor and synthetic prompts of `lite-cpt bench step`.

The model is Qwen2.5-VL at a released (or the tiny) shape, built on the meta device and
materialised part by part; the language model's linears are quantised to NF4 one decoder layer
at a time (so building never holds the whole model in bf16), which leaves the vision tower and
lm_head in 16 bits as the family's `keep_unquantized` does for a real load. The prompts carry a
random image of a chosen number of tokens and random text of a chosen length, encoded by the
tiny model's offline tokenizer (whose special tokens the random model's config is given).
"""

from __future__ import annotations

import math
import zlib

from lite_cpt.errors import UserError
from lite_cpt.planner import DEFAULT_LORA_TARGETS, ModelShape, hf_config_from_shape
from lite_cpt.tasks.base import Sample, Task

BENCH_LORA_R = 64
BENCH_LORA_ALPHA = 128
BENCH_SEED = 0
LM_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: The tokenizer's vocabulary: the tiny model's (its special tokens are what the config names).
BENCH_TOKENIZER_VOCAB = 1024

def _quantize_linears(layer, compute_dtype) -> None:
    """Replace the LM linears of one decoder layer by NF4 (double-quantised) bitsandbytes layers."""
    import bitsandbytes as bnb
    import torch

    for name, child in list(layer.named_modules()):
        if not (isinstance(child, torch.nn.Linear) and name.rsplit(".", 1)[-1] in LM_LINEARS):
            continue
        parent_name, attr = name.rsplit(".", 1)
        quantized = bnb.nn.Linear4bit(
            child.in_features, child.out_features, bias=child.bias is not None,
            compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4", device="meta",
        )
        weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                   quant_type="nf4", module=quantized)
        quantized.weight = weight.to(child.weight.device)  # quantises on the way
        if child.bias is not None:
            quantized.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
        setattr(layer.get_submodule(parent_name), attr, quantized)


def build_random_model(config, *, device, quantize: bool = True, lora_r: int = BENCH_LORA_R,
                       lora_alpha: int = BENCH_LORA_ALPHA, gradient_checkpointing: bool = True, seed: int = BENCH_SEED,
                       dtype=None):
    """A peft-wrapped random Qwen2.5-VL on `device`: bf16 weights (or `dtype`), NF4 LM linears (`quantize`),
    LoRA on the recipe's default targets, non-reentrant gradient checkpointing.

    Built on the meta device, then materialised part by part: everything but the decoder layers
    first, then each decoder layer on its own, quantised before the next one is made.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    dtype = dtype or torch.bfloat16
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    for param in model.parameters():  # parameters only: rope buffers stay fp32, as when loading
        param.data = param.data.to(dtype)
    language_model = model.model.language_model
    layers = list(language_model.layers)
    language_model.layers = torch.nn.ModuleList()
    model.to_empty(device=device)
    model.initialize_weights()
    for layer in layers:
        layer.to_empty(device=device)
        for module in layer.modules():
            model._init_weights(module)
        if quantize:
            _quantize_linears(layer, dtype)
        language_model.layers.append(layer)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.requires_grad_(False)
    if quantize:
        model.is_loaded_in_4bit = True  # peft picks its bitsandbytes LoRA layers by this flag
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    peft_model = get_peft_model(model, LoraConfig(
        r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=DEFAULT_LORA_TARGETS,
        bias="none", task_type="CAUSAL_LM",
    ))
    if gradient_checkpointing:
        from lite_cpt.models import enable_checkpointing

        enable_checkpointing(peft_model, True)  # as a run does: no gradient into the vision tower
    return peft_model


def bench_processor(image_tokens: int):
    """The tiny model's offline tokenizer in a Qwen2.5-VL processor whose images become exactly
    `image_tokens` merged tokens (a square of 28-pixel cells)."""
    from lite_cpt.families.qwen2_5_vl import build_processor
    from lite_cpt.families.qwen_tokenizer import build_tokenizer
    from lite_cpt.tiny.model import tiny_corpus

    side = math.isqrt(image_tokens)
    if side * side != image_tokens:
        raise UserError(f"--image-tokens must be a square number (a square image), got {image_tokens}")
    return build_processor(build_tokenizer(tiny_corpus(BENCH_SEED), BENCH_TOKENIZER_VOCAB), side * 28)


def bench_config(shape: ModelShape, processor):
    """The transformers config of `shape` whose special token ids are the processor's."""
    from lite_cpt.families.qwen2_5_vl import vision_token_ids

    tokenizer = processor.tokenizer
    if shape.vocab < len(tokenizer):
        raise UserError(f"the bench needs a vocabulary of at least {len(tokenizer)} tokens, {shape.name} has {shape.vocab}")
    config = hf_config_from_shape(shape)
    for name, value in vision_token_ids(tokenizer).items():
        setattr(config, name, value)
    end_of_text = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config.text_config.update({"bos_token_id": end_of_text, "pad_token_id": end_of_text,
                               "eos_token_id": tokenizer.convert_tokens_to_ids("<|im_end|>")})
    return config


class BenchTask(Task):
    """The synthetic task of the bench: the question is the whole prompt text, the reward a
    hash of the answer (in [0, 1), so the G answers of a prompt differ in reward)."""

    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return (zlib.crc32(prediction.encode()) % 1000) / 1000


def _text_of(tokenizer, tokens: int, generator) -> str:
    """Random tokens of the tokenizer's own vocabulary (past the special tokens and single
    bytes), decoded: text that encodes to about `tokens` tokens."""
    import torch

    first = len(tokenizer.all_special_tokens) + 256
    return tokenizer.decode(torch.randint(first, len(tokenizer), (max(1, tokens),), generator=generator).tolist())


def _prompt_tokens(processor, question: str, image) -> int:
    from lite_cpt.train.batching import Prompt, encode_prompts

    return int(encode_prompts(processor, [Prompt(question, (image,), "bench")])["attention_mask"].sum())


def _question_of(processor, task: Task, image, prompt_tokens: int, generator) -> str:
    """A random question whose longest prompt (chat scaffolding, image, text and the
    chain-of-thought instruction) is at most `prompt_tokens` tokens, and close to it: drawn
    long, then cut until it fits."""
    tokenizer = processor.tokenizer

    def length(question: str) -> int:
        return _prompt_tokens(processor, task.prompt(Sample("bench", question, ""), cot=True), image)

    room = prompt_tokens - length("")
    if room < 1:
        raise UserError(f"--prompt-tokens ({prompt_tokens}) leaves no room for text after the image and the "
                        "chat scaffolding")
    question = _text_of(tokenizer, room, generator)
    while (excess := length(question) - prompt_tokens) > 0:
        ids = tokenizer(question, add_special_tokens=False)["input_ids"]
        question = tokenizer.decode(ids[: max(0, len(ids) - excess)])
    return question


def bench_examples(recipe, processor, count: int, *, prompt_tokens: int, image_tokens: int, answer_tokens: int):
    """`count` examples of the bench task: a random image of `image_tokens` tokens, a question
    that makes the prompt about `prompt_tokens` tokens, an answer of `answer_tokens` tokens
    (longer text, cut by the task's `max_answer_tokens`)."""
    import numpy as np
    import torch
    from PIL import Image

    from lite_cpt.train.phase import examples_of

    task = BenchTask("bench", config=recipe.tasks[0])
    side = math.isqrt(image_tokens) * 28
    generator = torch.Generator().manual_seed(BENCH_SEED)
    image = Image.fromarray(np.random.default_rng(BENCH_SEED).integers(0, 256, (side, side, 3), dtype=np.uint8))
    tokenizer = processor.tokenizer
    samples = [Sample(id=f"bench-{i}", question=_question_of(processor, task, image, prompt_tokens, generator),
                      answer=_text_of(tokenizer, answer_tokens, generator), images=(image,)) for i in range(count)]
    return task, examples_of(task, samples)



__all__ = [
    "BENCH_LORA_ALPHA", "BENCH_LORA_R", "BENCH_SEED", "BenchTask", "bench_config", "bench_examples",
    "bench_processor", "build_random_model",
]
