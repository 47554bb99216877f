"""Batched generation: G sampled answers per prompt (rollouts) or one greedy answer (evaluation).

`generate_completions` is the single place text is generated; inside `rollout_engine(engine)`
a faster backend (lite_cpt.train.vllm_backend: vLLM, continuous batching) generates instead, without
touching the callers in between.

Every sampling setting is explicit: `generate` runs against a generation config that holds only
the model's special-token ids, so nothing the checkpoint ships in its generation_config.json
(Qwen2.5-VL's: repetition_penalty 1.05, top_k 1, top_p 0.001, temperature 0.1) changes the
distribution the rollouts are drawn from — the one the GRPO loss scores.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import GenerationConfig

from lite_cpt.train.batching import TOKEN_KEYS, Prompt, fixed_calls, length_sorted_calls, to_device, tokenizer_of
from lite_cpt.train.truncation import cut_at_cap


@dataclass
class Completions:
    """`group_size` completions per prompt, prompt-major: rows [i*G, (i+1)*G) belong to prompt i."""

    prompts: list[Prompt]
    group_size: int
    token_ids: list[list[int]]  # completion ids, cut after the first end-of-turn token (kept)
    texts: list[str]  # decoded completions without special tokens
    num_generated_tokens: int
    truncated: list[bool] | None = None  # per row: cut at max_new_tokens before its end of turn
    logprobs: list[list[float]] | None = None  # the sampler's log-prob of each token (an engine that returns them)


@dataclass(frozen=True)
class Sampling:
    """How answers are drawn: `group_size` per prompt, at most `max_new_tokens` each, greedy
    when `temperature` == 0 (else sampling with nucleus `top_p` and `top_k`, 0 = off); the
    repetition penalty (1.0 = off) applies to both. `min_new_tokens` holds the end of turn back
    until that many tokens (a measurement's fixed length; 0 = off)."""

    group_size: int = 1
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0


#: The engine `generate_completions` hands its work to (None: transformers generate).
_ENGINE: ContextVar = ContextVar("rollout_engine", default=None)


@contextmanager
def rollout_engine(engine):
    """Inside, `generate_completions` runs on `engine` (its `generate_completions`, same
    arguments and result, plus the sampled tokens' log-probs); None leaves transformers on."""
    token = _ENGINE.set(engine)
    try:
        yield
    finally:
        _ENGINE.reset(token)


def active_engine():
    """The engine `generate_completions` hands its work to now (None: transformers generate)."""
    return _ENGINE.get()


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
    expand_before_prefill: bool = False,
) -> Completions:
    """`sampling.group_size` answers for each prompt, generated for `prompts_per_call` prompts
    (x group_size sequences) at a time, returned in the order of `prompts`.

    Prompts of similar token length share a call (`length_sorted_calls`), and each prompt is
    prefilled once, its KV cache copied to its G samples (`shared_prefill`).
    `expand_before_prefill` is the earlier path, kept to measure against: calls in the given
    order, each prompt expanded to G copies before the prefill (`num_return_sequences`).
    `generator_seed` makes sampling reproducible: the torch RNG is seeded per call from it.
    Inside `rollout_engine(engine)` the engine generates (all prompts at once) instead.
    """
    if (engine := _ENGINE.get()) is not None:
        return engine.generate_completions(model, processor, prompts, sampling, generator_seed=generator_seed)
    stops = StopTokens.of(tokenizer_of(processor))
    device, dtype = model_device(model), model_dtype(model)
    settings = dict(sampling_settings(sampling.temperature, sampling.top_p, sampling.top_k, sampling.repetition_penalty),
                    max_new_tokens=sampling.max_new_tokens, pad_token_id=stops.pad_id, eos_token_id=sorted(stops.end_ids),
                    suppress_tokens=vision_token_ids(tokenizer_of(processor)) or None)
    if sampling.min_new_tokens:
        settings["min_new_tokens"] = sampling.min_new_tokens
    per_prompt: list[list[list[int]]] = [[] for _ in prompts]
    calls = (fixed_calls if expand_before_prefill else length_sorted_calls)(processor, prompts, prompts_per_call,
                                                                           max_prompt_tokens)
    done = 0
    with eval_mode(model), neutral_generation_config(model):
        for indices, batch in calls:
            if generator_seed is not None:
                torch.manual_seed(generator_seed * 1_000_003 + done)
            rows = _generate_call(model, to_device(batch, device, dtype), sampling.group_size, settings,
                                  share_prefill=not expand_before_prefill)
            for position, index in enumerate(indices):
                group = rows[position * sampling.group_size : (position + 1) * sampling.group_size]
                per_prompt[index] = [stops.cut(row) for row in group]
            done += len(indices)
    token_ids = [row for group in per_prompt for row in group]
    texts = decode_completions(tokenizer_of(processor), token_ids)
    return Completions(prompts=prompts, group_size=sampling.group_size, token_ids=token_ids,
                       texts=[t.strip() for t in texts], num_generated_tokens=sum(len(t) for t in token_ids),
                       truncated=cut_at_cap(token_ids, stops.end_ids, sampling.max_new_tokens))


@dataclass(frozen=True)
class StopTokens:
    """Where a generated row ends: the first end-of-turn (or end-of-text) token; padding after it."""

    end_ids: frozenset[int]
    pad_id: int

    @staticmethod
    def of(tokenizer) -> "StopTokens":
        end_ids = {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id} - {None}
        return StopTokens(frozenset(end_ids), tokenizer.pad_token_id)

    def cut(self, row: list[int]) -> list[int]:
        """Tokens up to and including the first end-of-turn token; padding after it dropped."""
        for index, token in enumerate(row):
            if token in self.end_ids:
                return row[: index + 1]
        while row and row[-1] == self.pad_id:
            row = row[:-1]
        return row


@contextmanager
def eval_mode(model):
    """Dropout off while generating (and unsloth's inference mode for an unsloth model); the
    model's own mode comes back afterwards."""
    from lite_cpt.unsloth_backend import generation_mode

    was_training = model.training
    try:
        with generation_mode(model):  # unsloth's training switch sets train mode: restore after it
            model.eval()
            yield
    finally:
        model.train(was_training)


def _generate_call(model, batch: dict, group_size: int, settings: dict, *, share_prefill: bool) -> list[list[int]]:
    """New token ids of one generate call, `group_size` rows per prompt, prompt-major."""
    width = batch["input_ids"].shape[1]
    if share_prefill and group_size > 1:
        output = model.generate(**shared_prefill(model, batch, group_size), **settings)
    else:
        output = model.generate(**batch, **settings, num_return_sequences=group_size)
    return output[:, width:].tolist()


def shared_prefill(model, batch: dict, copies: int) -> dict:
    """`generate` inputs for `copies` samples of each prompt of `batch` that share one prefill.

    The prompts (all but their last token, images included) run through the model once; the
    KV cache is then repeated `copies` times per prompt (Cache.batch_repeat_interleave, what
    transformers uses to widen a cache) and `generate` continues from it over the full token
    rows: its first step feeds only the last prompt token, so the first sampled token comes
    from the same logits as a full prefill's, and decoding proceeds as usual. A vision-language
    model's multimodal rotary positions come from the model's own `get_rope_index`, the function
    `generate` uses for a fresh prompt; their per-row offsets (`rope_deltas`, which decoding
    adds to the text positions) are repeated like the cache. A text-only model takes the 1-D
    positions counted over the attention mask.
    """
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    multimodal_rope = hasattr(inner.model, "get_rope_index")  # a text-only LM counts 1-D positions itself
    positions, deltas = prompt_positions(inner, batch)
    if not multimodal_rope:
        positions = positions[0]
    prefix = {key: value[:, :-1] for key, value in batch.items() if key in TOKEN_KEYS}
    images = {key: value for key, value in batch.items() if key not in TOKEN_KEYS}
    out = model(**prefix, **images, position_ids=positions[..., :-1], use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(copies)
    if multimodal_rope:
        inner.model.rope_deltas = deltas.repeat_interleave(copies, dim=0)
    return {"input_ids": batch["input_ids"].repeat_interleave(copies, dim=0),
            "attention_mask": batch["attention_mask"].repeat_interleave(copies, dim=0),
            "past_key_values": cache}


def prompt_positions(inner, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """([3, B, L] rotary positions of the prompt tokens, [B, 1] offset of the next text position
    from the token count) as `generate` computes them: the model's `get_rope_index` when the batch
    has images, else positions counted over the attention mask (left padding skipped), offset 0."""
    mask = batch["attention_mask"]
    if batch.get("image_grid_thw") is not None:
        return inner.model.get_rope_index(batch["input_ids"], mm_token_type_ids=batch.get("mm_token_type_ids"),
                                          image_grid_thw=batch["image_grid_thw"], attention_mask=mask)
    text = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    return text[None].expand(3, -1, -1), torch.zeros(mask.shape[0], 1, dtype=torch.long, device=mask.device)


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
