"""Batched generation: G sampled answers per prompt (rollouts) or one greedy answer (evaluation).

`generate_completions` is the single place text is generated; a faster backend (vLLM) can
replace it without touching its callers.

Every sampling setting is explicit: `generate` runs against a generation config that holds only
the model's special-token ids, so nothing the checkpoint ships in its generation_config.json
(Qwen2.5-VL's: repetition_penalty 1.05, top_k 1, top_p 0.001, temperature 0.1) changes the
distribution the rollouts are drawn from — the one the GRPO loss scores.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from lite_cpt.batching import Prompt, encode_prompts, to_device, tokenizer_of


@dataclass
class Completions:
    """`group_size` completions per prompt, prompt-major: rows [i*G, (i+1)*G) belong to prompt i."""

    prompts: list[Prompt]
    group_size: int
    token_ids: list[list[int]]  # completion ids, cut after the first end-of-turn token (kept)
    texts: list[str]  # decoded completions without special tokens
    num_generated_tokens: int


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn: `group_size` per prompt, at most `max_new_tokens` each, greedy
    when `temperature` == 0 (else sampling with nucleus `top_p` and `top_k`, 0 = off); the
    repetition penalty (1.0 = off) applies to both."""

    group_size: int = 1
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def model_dtype(model) -> torch.dtype:
    for param in model.parameters():
        if param.is_floating_point():
            return param.dtype
    return torch.float32


@torch.no_grad()
def generate_completions(
    model,
    processor,
    prompts: list[Prompt],
    sampling: Sampling,
    *,
    prompts_per_call: int = 16,
    max_prompt_tokens: int | None = None,
    generator_seed: int | None = None,
) -> Completions:
    """`sampling.group_size` answers for each prompt, generated for `prompts_per_call` prompts
    (x group_size sequences) at a time.

    `generator_seed` makes sampling reproducible: the torch RNG is seeded per batch from it.
    """
    tokenizer = tokenizer_of(processor)
    end_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    end_ids.discard(None)
    pad_id = tokenizer.pad_token_id
    device, dtype = model_device(model), model_dtype(model)
    was_training = model.training
    model.eval()
    token_ids: list[list[int]] = []
    settings = sampling_settings(sampling.temperature, sampling.top_p, sampling.top_k, sampling.repetition_penalty)
    try:
        with neutral_generation_config(model):
            for start in range(0, len(prompts), prompts_per_call):
                chunk = prompts[start : start + prompts_per_call]
                batch = to_device(encode_prompts(processor, chunk, max_prompt_tokens), device, dtype)
                if generator_seed is not None:
                    torch.manual_seed(generator_seed * 1_000_003 + start)
                output = model.generate(
                    **batch,
                    **settings,
                    num_return_sequences=sampling.group_size,
                    max_new_tokens=sampling.max_new_tokens,
                    pad_token_id=pad_id,
                    eos_token_id=sorted(end_ids),
                    suppress_tokens=vision_token_ids(tokenizer) or None,
                )
                new_tokens = output[:, batch["input_ids"].shape[1] :].tolist()
                token_ids.extend(_cut_at_end(row, end_ids, pad_id) for row in new_tokens)
    finally:
        model.train(was_training)
    texts = decode_completions(tokenizer, token_ids)
    return Completions(
        prompts=prompts,
        group_size=sampling.group_size,
        token_ids=token_ids,
        texts=[t.strip() for t in texts],
        num_generated_tokens=sum(len(t) for t in token_ids),
    )


def sampling_settings(temperature: float, top_p: float, top_k: int, repetition_penalty: float) -> dict:
    """`generate` keyword arguments: greedy when temperature == 0, else sampling with nucleus
    `top_p` and `top_k` (0 = off); the repetition penalty (1.0 = off) applies to both."""
    if temperature > 0:
        return dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                    repetition_penalty=repetition_penalty)
    return dict(do_sample=False, repetition_penalty=repetition_penalty)


@contextmanager
def neutral_generation_config(model):
    """Inside, the model's generation config holds only its special-token ids, so `generate`
    fills every setting not passed with the library default rather than the checkpoint's."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    shipped = inner.generation_config
    inner.generation_config = GenerationConfig(bos_token_id=shipped.bos_token_id, eos_token_id=shipped.eos_token_id,
                                               pad_token_id=shipped.pad_token_id)
    try:
        yield
    finally:
        inner.generation_config = shipped


VISION_TOKENS = ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")


def vision_token_ids(tokenizer) -> list[int]:
    """Ids of the image/video markers: a generated one could not be re-encoded for scoring
    (the processor would look for an image to put there), so generation never emits them."""
    vocab = tokenizer.get_vocab()
    return [vocab[token] for token in VISION_TOKENS if token in vocab]


#: Chain-of-thought tags stay in decoded text even where a tokenizer registers them as special
#: tokens (the tiny tokenizer does, so each is one token): the format reward and the answer
#: extraction read them.
COT_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def decode_completions(tokenizer, token_ids: list[list[int]]) -> list[str]:
    """Text of each completion without control tokens (end of turn, padding, vision markers)."""
    kept = {tokenizer.convert_tokens_to_ids(tag) for tag in COT_TAGS if tag in tokenizer.get_vocab()}
    control = set(tokenizer.all_special_ids) - kept
    return tokenizer.batch_decode([[t for t in row if t not in control] for row in token_ids],
                                  skip_special_tokens=False)


def _cut_at_end(row: list[int], end_ids: set[int], pad_id: int) -> list[int]:
    """Tokens up to and including the first end-of-turn token; padding after it dropped."""
    for index, token in enumerate(row):
        if token in end_ids:
            return row[: index + 1]
    while row and row[-1] == pad_id:
        row = row[:-1]
    return row
