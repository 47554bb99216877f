"""Prompt batches: length-sorted calls, and training rows encoded one at a time, hold exactly the
tensors the processor gives for them together; a prompt over its token budget keeps its last
tokens, never cutting an image; an image that cannot be decoded names its sample."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from lite_cpt.train.batching import (IGNORE_INDEX, Prompt, append_tokens, balanced_bounds, collate, encode_prompts,
                                     encode_rows, fixed_calls, length_sorted_calls, tokenizer_of)
from lite_cpt.data.images import FileImage, ImageDecodeError
from lite_cpt.recipe_model import TinyModelConfig
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus


@pytest.fixture(scope="module")
def processor():
    """The tiny processor with a pad token other than id 0 (the tiny tokenizer's <|endoftext|>
    is 0, and Qwen's is 151643): padding filled with zeros instead would show."""
    processor = copy.deepcopy(build_tiny_model(TinyModelConfig(), tiny_corpus(0))[1])
    processor.tokenizer.pad_token = "<think>"  # a token no prompt holds
    assert processor.tokenizer.pad_token_id != 0
    return processor


def _image(shade: int) -> Image.Image:
    return Image.new("RGB", (56, 56), (shade, 255 - shade, 128))


#: Prompts of many lengths, some with an image, in an order no call keeps.
PROMPTS = [Prompt("Count the objects. " * n, (_image(20 * n),) if n % 2 else (), f"s{n}")
           for n in (5, 1, 9, 3, 12, 2, 7, 4, 11)]


def test_length_sorted_calls_hold_the_processors_own_batches_of_their_prompts(processor):
    calls = list(length_sorted_calls(processor, PROMPTS, per_call=3, window_calls=2))
    assert sorted(i for indices, _ in calls for i in indices) == list(range(len(PROMPTS)))
    pad_id = tokenizer_of(processor).pad_token_id
    for indices, batch in calls:
        together = encode_prompts(processor, [PROMPTS[i] for i in indices])
        assert batch.keys() == together.keys()
        for key in together:
            assert torch.equal(batch[key], together[key]), key
        first = batch["attention_mask"][:, 0] == 0
        assert (batch["input_ids"][first, 0] == pad_id).all()  # left padding is the pad token
    # Within a window, calls go from short prompts to long ones.
    widths = [batch["input_ids"].shape[1] for _, batch in calls[:2]]
    assert widths == sorted(widths)


def test_an_update_is_cut_into_calls_of_balanced_size():
    # 16 prompts at 12 a call: two calls of 8 (each static call decodes to its longest row).
    assert balanced_bounds(16, 12) == [(0, 8), (8, 16)]
    assert balanced_bounds(25, 12) == [(0, 9), (9, 17), (17, 25)]
    assert balanced_bounds(12, 12) == [(0, 12)]
    assert balanced_bounds(0, 12) == []


def test_calls_of_an_update_have_balanced_sizes(processor):
    sorted_sizes = [len(indices) for indices, _ in length_sorted_calls(processor, PROMPTS, per_call=6)]
    fixed_sizes = [len(indices) for indices, _ in fixed_calls(processor, PROMPTS, per_call=6)]
    assert sorted_sizes == fixed_sizes == [5, 4]  # not 6 + 3


def test_a_prompt_over_its_budget_keeps_its_last_tokens(processor):
    prompt = Prompt("one two three four five six seven eight nine ten " * 4)
    whole = encode_prompts(processor, [prompt])
    cut = encode_prompts(processor, [prompt], max_prompt_tokens=12)
    assert cut["input_ids"].shape == (1, 12)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(cut[key], whole[key][:, -12:]), key
    assert torch.equal(encode_prompts(processor, [prompt], max_prompt_tokens=10_000)["input_ids"], whole["input_ids"])


def test_a_cut_through_the_image_is_refused_with_the_knobs(processor):
    prompt = Prompt("What is in the picture? " * 6, (_image(40),))
    with pytest.raises(ValueError, match=r"^prompt longer than max_prompt_tokens=20 and the cut would drop image "
                                         r"tokens; raise tasks\.\*\.max_prompt_tokens or lower model\.max_pixels$"):
        encode_prompts(processor, [prompt], max_prompt_tokens=20)


def test_an_image_that_cannot_be_found_names_its_sample(processor, tmp_path):
    missing = FileImage("gone.jpg", (tmp_path,))
    with pytest.raises(ImageDecodeError, match="image of sample clevr-17 not found: gone.jpg"):
        encode_prompts(processor, [Prompt("How many?", (missing,), "clevr-17")])


def test_training_rows_encoded_one_at_a_time_collate_to_the_batch_encoded_together(processor):
    prompts = PROMPTS[:5]
    completions = [[40, 41, 42], [43], [44, 45, 46, 47, 48], [49, 50], [51]]
    pad_id = tokenizer_of(processor).pad_token_id
    batch, labels = collate(encode_rows(processor, prompts, completions, None), pad_id)
    together, expected_labels = append_tokens(encode_prompts(processor, prompts), completions, pad_id)
    assert batch.keys() == together.keys()
    for key in together:
        assert torch.equal(batch[key], together[key]), key
    assert torch.equal(labels, expected_labels)
    # Each row's labels are its completion, at the end; everything before is ignored.
    for row, completion in zip(labels.tolist(), completions):
        assert row[-len(completion):] == completion and set(row[: -len(completion)]) == {IGNORE_INDEX}


def test_a_corrupt_embedded_image_is_named_by_sample_and_file_or_cell():
    import pyarrow as pa

    from lite_cpt.data.images import TableImage, decode_image

    table = pa.table({"image": [{"bytes": b"not a jpeg", "path": "cat_17.jpg"}, {"bytes": b"not a png", "path": None}]})
    with pytest.raises(ImageDecodeError, match=r"^image of sample s1 cannot be opened: embedded bytes \(cat_17\.jpg\) "):
        decode_image(TableImage(table, 0, "image"), "s1")
    with pytest.raises(ImageDecodeError, match=r"^image of sample s2 cannot be opened: embedded bytes \(row 1, column image\) "):
        decode_image(TableImage(table, 1, "image"), "s2")
