"""Every sampling setting is explicit: the checkpoint's generation_config changes nothing."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from lite_cpt.batching import Prompt
from lite_cpt.recipe import TinyModelConfig
from lite_cpt.rollout import Sampling, generate_completions
from lite_cpt.tiny import build_tiny_model, tiny_corpus


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
