"""Turning (prompt, image, answer) triples into model inputs.

Prompts go through the model's own processor and chat template (so image tokens are expanded
exactly as the model expects); answers are appended as token ids, which keeps the boundary
between prompt and answer exact for the loss mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch

from lite_cpt.data.images import ImageRef, decode_image
from lite_cpt.families import family_for_processor

IGNORE_INDEX = -100
# Per-token tensors a processor (or a text model's tokenizer) returns; everything else
# (pixel_values, image_grid_thw) describes the images and passes through unchanged.
TOKEN_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids", "token_type_ids")


@dataclass
class Prompt:
    """User text and its images (references, decoded when the batch is encoded), shown first."""

    text: str
    images: tuple[ImageRef, ...] = ()
    sample_id: str = "?"


def chat_text(processor, prompt: Prompt) -> str:
    messages = family_for_processor(processor).chat_messages(prompt.text, len(prompt.images))
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def tokenizer_of(processor):
    return getattr(processor, "tokenizer", processor)


def encode_prompts(processor, prompts: list[Prompt], max_prompt_tokens: int | None = None) -> dict:
    """Left-padded prompt batch, ready for `generate` or a forward pass."""
    texts = [chat_text(processor, p) for p in prompts]
    # The batch's images are decoded here and nowhere earlier: a split holds only references.
    images = [decode_image(ref, p.sample_id) for p in prompts for ref in p.images]
    tokenizer = tokenizer_of(processor)
    tokenizer.padding_side = "left"
    batch = family_for_processor(processor).encode(processor, texts, images)
    if max_prompt_tokens is not None and batch["input_ids"].shape[1] > max_prompt_tokens:
        batch = _truncate_left(batch, max_prompt_tokens, processor)
    return batch


#: Prompts encoded ahead of the calls they are sorted into, in calls' worth: sorting within a
#: window of a few calls groups similar lengths while holding only that window's pixels (4 calls
#: of 64 prompts with 192-token images: 256 x 768 patches x 1176 fp32 values, about 0.9 GB).
LENGTH_WINDOW_CALLS = 4

#: A generate call: the indices of its prompts (in the caller's list) and their encoded batch.
PromptCall = tuple[list[int], dict]


def balanced_bounds(count: int, per_call: int) -> list[tuple[int, int]]:
    """[start, end) of the fewest calls of at most `per_call` items that hold `count` items,
    their sizes differing by at most one: 16 prompts at 12 a call make 8 + 8, not 12 + 4, since
    every call of a static batch decodes until its longest row ends, whatever its width."""
    calls = -(-count // max(1, per_call))
    bounds, start = [], 0
    for call in range(calls):
        size = count // calls + (call < count % calls)
        bounds.append((start, start + size))
        start += size
    return bounds


def fixed_calls(processor, prompts: list[Prompt], per_call: int, max_prompt_tokens: int | None = None
                ) -> Iterator[PromptCall]:
    """Calls of at most `per_call` consecutive prompts, in the given order, of balanced sizes."""
    for start, end in balanced_bounds(len(prompts), per_call):
        indices = list(range(start, end))
        yield indices, encode_prompts(processor, [prompts[i] for i in indices], max_prompt_tokens)


def length_sorted_calls(processor, prompts: list[Prompt], per_call: int, max_prompt_tokens: int | None = None,
                        window_calls: int = LENGTH_WINDOW_CALLS) -> Iterator[PromptCall]:
    """Calls of at most `per_call` prompts of similar token length (images included): each window
    of `window_calls` calls' prompts is encoded one prompt at a time, sorted by length and cut into
    calls of balanced sizes (`balanced_bounds`), so a call pads its rows to a length close to each
    of theirs. Prompts that fit one call are encoded together, as they are."""
    if len(prompts) <= per_call:
        yield from fixed_calls(processor, prompts, per_call, max_prompt_tokens)
        return
    pad_id = tokenizer_of(processor).pad_token_id
    window = per_call * max(1, window_calls)
    for start in range(0, len(prompts), window):
        indices = range(start, min(len(prompts), start + window))
        encoded = {i: encode_prompts(processor, [prompts[i]], max_prompt_tokens) for i in indices}
        order = sorted(indices, key=lambda i: encoded[i]["input_ids"].shape[1])
        for first, last in balanced_bounds(len(order), per_call):
            chunk = order[first:last]
            yield chunk, collate_prompts([encoded[i] for i in chunk], pad_id)


def collate_prompts(encoded: list[dict], pad_id: int) -> dict:
    """One left-padded batch from prompts encoded one at a time: the same tensors the processor
    gives for them together (per-token rows padded on the left; image tensors concatenated)."""
    width = max(e["input_ids"].shape[1] for e in encoded)
    batch = {}
    for key in encoded[0]:
        if key in TOKEN_KEYS:
            fill = pad_id if key == "input_ids" else 0
            batch[key] = torch.cat([torch.nn.functional.pad(e[key], (width - e[key].shape[1], 0), value=fill)
                                    for e in encoded])
    for key in {k for e in encoded for k in e if k not in TOKEN_KEYS}:
        batch[key] = torch.cat([e[key] for e in encoded if key in e])
    return batch


def _truncate_left(batch: dict, max_tokens: int, processor) -> dict:
    """Keep the last `max_tokens` positions; refuses to cut through image tokens."""
    image_id = getattr(processor, "image_token_id", None)
    cut = batch["input_ids"].shape[1] - max_tokens
    if image_id is not None and (batch["input_ids"][:, :cut] == image_id).any():
        raise ValueError(
            f"prompt longer than max_prompt_tokens={max_tokens} and the cut would drop image tokens; "
            "raise tasks.*.max_prompt_tokens or lower model.max_pixels"
        )
    return {k: (v[:, cut:] if k in TOKEN_KEYS else v) for k, v in batch.items()}


def append_tokens(batch: dict, completions: list[list[int]], pad_id: int) -> tuple[dict, torch.Tensor]:
    """Prompt batch + per-row completion ids -> (left-padded batch, labels).

    labels hold the completion ids at their positions and IGNORE_INDEX elsewhere, so a shifted
    log-prob pass scores exactly the completion tokens.
    """
    rows, label_rows = [], []
    mask = batch["attention_mask"].bool()
    for i, completion in enumerate(completions):
        prompt_ids = batch["input_ids"][i][mask[i]].tolist()
        rows.append(prompt_ids + list(completion))
        label_rows.append([IGNORE_INDEX] * len(prompt_ids) + list(completion))
    width = max(len(r) for r in rows)
    out = {k: v for k, v in batch.items() if k not in TOKEN_KEYS}
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=batch["attention_mask"].dtype)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    extra = {k: torch.zeros((len(rows), width), dtype=batch[k].dtype) for k in TOKEN_KEYS[2:] if k in batch}
    for i, (row, label_row) in enumerate(zip(rows, label_rows)):
        start = width - len(row)
        input_ids[i, start:] = torch.tensor(row)
        attention[i, start:] = 1
        labels[i, start:] = torch.tensor(label_row)
        for key, tensor in extra.items():
            # Prompt positions keep their token types (image tokens are marked); answers are text.
            kept = batch[key][i][mask[i]]
            tensor[i, start : start + len(kept)] = kept
    out.update(input_ids=input_ids, attention_mask=attention, **extra)
    return out, labels


def answer_ids(processor, answer: str, max_tokens: int) -> list[int]:
    """Token ids of an assistant answer, closed by the end-of-turn token."""
    tokenizer = tokenizer_of(processor)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"][:max_tokens]
    return ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def encode_sft(processor, prompts: list[Prompt], answers: list[str], *, max_prompt_tokens: int,
               max_answer_tokens: int) -> tuple[dict, torch.Tensor]:
    batch = encode_prompts(processor, prompts, max_prompt_tokens)
    completions = [answer_ids(processor, a, max_answer_tokens) for a in answers]
    return append_tokens(batch, completions, tokenizer_of(processor).pad_token_id)


@dataclass
class EncodedRow:
    """One sequence encoded on its own ([1, T] token tensors, its images), ready to collate."""

    batch: dict
    labels: torch.Tensor  # [1, T]

    @property
    def length(self) -> int:
        return int(self.labels.shape[1])


def encode_rows(processor, prompts: list[Prompt], completions: list[list[int]],
                max_prompt_tokens: int | None) -> list[EncodedRow]:
    """Each prompt + completion as its own row; a prompt listed several times in a row (the G
    answers of one prompt) is encoded once. `collate` of the rows gives the same batch as
    encoding them together (left padding, the same truncation of each prompt)."""
    pad_id = tokenizer_of(processor).pad_token_id
    rows: list[EncodedRow] = []
    encoded, last = None, None
    for prompt, completion in zip(prompts, completions):
        if prompt is not last:
            encoded, last = encode_prompts(processor, [prompt], max_prompt_tokens), prompt
        batch, labels = append_tokens(encoded, [completion], pad_id)
        rows.append(EncodedRow(batch, labels))
    return rows


def collate(rows: list[EncodedRow], pad_id: int) -> tuple[dict, torch.Tensor]:
    """Left-padded batch and labels of `rows`; image tensors are concatenated in row order."""
    width = max(row.length for row in rows)
    fill = {"input_ids": pad_id}
    batch: dict = {}
    # Rows of text-only tasks carry no image tensors (and may lack token-type ids).
    for key in dict.fromkeys(key for row in rows for key in row.batch):
        if key in TOKEN_KEYS:
            parts = [row.batch.get(key, torch.zeros_like(row.batch["input_ids"])) for row in rows]
            parts = [torch.nn.functional.pad(t, (width - t.shape[1], 0), value=fill.get(key, 0)) for t in parts]
        else:
            parts = [row.batch[key] for row in rows if key in row.batch]
        batch[key] = torch.cat(parts)
    labels = torch.cat([torch.nn.functional.pad(row.labels, (width - row.length, 0), value=IGNORE_INDEX)
                        for row in rows])
    return batch, labels


def to_device(batch: dict, device: torch.device, dtype: torch.dtype | None = None) -> dict:
    moved = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device)
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
        moved[key] = value
    return moved
