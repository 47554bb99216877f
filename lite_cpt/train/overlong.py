"""Prompts longer than their task's `max_prompt_tokens`, found without computing their pixels.

EasyR1 of the paper's period (hiyouga/EasyR1 58a2c95, 2025-06-27, `verl/utils/dataset.py`
`_filter_overlong_prompts`, on by default: `data.filter_overlong_prompts: true`) drops, from the
training and the validation set alike, every row whose processor encoding (its images expanded
to their tokens) is longer than `data.max_prompt_length` (2,048). A task with
`overlong_prompts: drop` does the same; `cut` (the default) keeps the prompt's last tokens
instead, which cannot cut through an image.

The length is counted as the processor would give it, without running the image processor: the
chat text's tokens, each image placeholder replaced by the image's token count, which the
processor computes from the image's size alone (`_get_num_multimodal_tokens`, as vLLM asks it).
Only the image's header is read. tests/test_overlong.py checks the count against the processor's
own encoding at several image sizes, for each model family.

A row is dropped when the longer of its two prompt forms (direct answer, chain of thought) is
over, so every arm of a run trains and is evaluated on the same rows.
"""

from __future__ import annotations

import io
from typing import Iterable

from PIL import Image

from lite_cpt.data.images import FileImage, ImageDecodeError, ImageRef
from lite_cpt.data.sample import Sample
from lite_cpt.train.batching import Prompt, chat_text, tokenizer_of


def image_size(ref: ImageRef, sample_id: str = "?") -> tuple[int, int]:
    """(height, width) of a referenced image, from its header only."""
    if isinstance(ref, Image.Image):
        return ref.height, ref.width
    if isinstance(ref, FileImage):
        path = ref.find()
        if path is None:
            raise ImageDecodeError(f"image of sample {sample_id} not found: {ref.name}")
        with Image.open(path) as image:
            return image.height, image.width
    value = ref.read()
    data = value.get("bytes") if isinstance(value, dict) else value
    if not data:
        raise ImageDecodeError(f"image of sample {sample_id} is empty ({ref.describe()})")
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def image_token_counts(processor, sizes: list[tuple[int, int]]) -> list[int]:
    """Tokens each image of (height, width) becomes under the processor's own resizing."""
    if not sizes:
        return []
    return list(processor._get_num_multimodal_tokens(image_sizes=sizes).num_image_tokens)


def prompt_token_count(processor, prompt: Prompt, image_tokens: list[int] | None = None) -> int:
    """The length of the processor's encoding of `prompt` (`encode_prompts`, one prompt, uncut);
    `image_tokens`: its images' token counts when the caller already has them."""
    tokenizer = tokenizer_of(processor)
    ids = tokenizer(chat_text(processor, prompt), add_special_tokens=False)["input_ids"]
    if not prompt.images:
        return len(ids)
    if image_tokens is None:
        image_tokens = image_token_counts(processor, [image_size(ref, prompt.sample_id) for ref in prompt.images])
    placeholder = tokenizer.convert_tokens_to_ids(processor.image_token)
    return len(ids) - ids.count(placeholder) + sum(image_tokens)


def longest_prompt_tokens(task, sample: Sample, processor) -> int:
    """Tokens of the longer of the sample's direct-answer and chain-of-thought prompts (its
    images' headers read once for both)."""
    images = image_token_counts(processor, [image_size(ref, sample.id) for ref in sample.images])
    return max(prompt_token_count(processor, Prompt(task.prompt(sample, cot), sample.images, sample.id), images)
               for cot in (False, True))


def drop_overlong(task, samples: Iterable[Sample], processor) -> tuple[list[Sample], list[str]]:
    """(samples whose prompts fit `task.config.max_prompt_tokens`, ids of those dropped) when the
    task drops over-long prompts; every sample, none dropped, when it cuts them."""
    samples = list(samples)
    config = task.config
    if getattr(config, "overlong_prompts", "cut") != "drop" or processor is None:
        return samples, []
    kept, dropped = [], []
    for sample in samples:
        if longest_prompt_tokens(task, sample, processor) <= config.max_prompt_tokens:
            kept.append(sample)
        else:
            dropped.append(sample.id)
    return kept, dropped
