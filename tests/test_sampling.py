"""Every sampling setting is explicit: the checkpoint's generation_config changes nothing."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from lite_cpt.train.batching import Prompt
from lite_cpt.recipe_model import TinyModelConfig
from lite_cpt.train.rollout import Sampling, StopTokens, generate_completions, sampling_settings
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    with torch.no_grad():
        model.lm_head.weight.mul_(4.0)  # peakier logits: a penalty or a top-k cut shows in the samples
    return model, processor


PROMPTS = [Prompt("Say something about the red square."), Prompt("Count the blue dots.")]


@pytest.mark.parametrize("temperature", [1.0, 0.0], ids=["sampled", "greedy"])
def test_shipped_generation_config_does_not_leak_into_generation(tiny, temperature):
    model, processor = tiny
    sampling = Sampling(group_size=4 if temperature > 0 else 1, max_new_tokens=12, temperature=temperature, top_p=1.0)
    clean = generate_completions(model, processor, PROMPTS, sampling, generator_seed=7).token_ids
    shipped = copy.deepcopy(model.generation_config)
    try:
        # what a Qwen2.5-VL checkpoint ships in generation_config.json
        model.generation_config.repetition_penalty = 1.05
        model.generation_config.top_k = 1
        model.generation_config.do_sample = True
        assert generate_completions(model, processor, PROMPTS, sampling, generator_seed=7).token_ids == clean
        # the same settings passed on purpose do change the samples (the check can fail)
        penalised = generate_completions(model, processor, PROMPTS, replace(sampling, repetition_penalty=3.0),
                                         generator_seed=7).token_ids
        assert penalised != clean
        if temperature > 0:
            top_1 = generate_completions(model, processor, PROMPTS, replace(sampling, top_k=1),
                                         generator_seed=7).token_ids
            assert top_1 != clean and all(row == top_1[0] for row in top_1[:4])  # top-1 sampling is greedy
        assert model.generation_config.repetition_penalty == 1.05  # the model's own config is left as it was
    finally:
        model.generation_config = shipped


def test_a_generated_row_ends_at_its_first_end_token_or_loses_its_trailing_padding():
    stop = StopTokens(frozenset({2, 3}), pad_id=0)
    assert stop.cut([5, 6, 2, 7, 3, 0]) == [5, 6, 2]  # the first end of turn, kept
    assert stop.cut([5, 6, 7, 0, 0, 0]) == [5, 6, 7]  # ran to the length limit: padding dropped
    assert stop.cut([0, 5, 0, 0]) == [0, 5]  # only the trailing padding
    assert stop.cut([0, 0]) == [] and stop.cut([]) == []


def test_stop_tokens_of_a_qwen_tokenizer_are_its_end_of_turn_and_eos(tiny):
    tokenizer = tiny[1].tokenizer
    stop = StopTokens.of(tokenizer)
    assert stop.end_ids == {tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id}
    assert stop.pad_id == tokenizer.convert_tokens_to_ids("<|endoftext|>")


def test_sampling_settings_pass_every_knob_to_generate():
    assert sampling_settings(0.7, 0.9, 5, 1.1) == dict(do_sample=True, temperature=0.7, top_p=0.9, top_k=5,
                                                       repetition_penalty=1.1)
    # Greedy: no sampling knob reaches generate (they would only draw warnings), the penalty does.
    assert sampling_settings(0.0, 0.9, 5, 1.1) == dict(do_sample=False, repetition_penalty=1.1)
