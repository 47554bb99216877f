"""Training never builds [tokens x vocab] logits: the SFT loss and every GRPO log-prob pass
(policy, old policy, reference) go through the fused kernel from the last hidden state, so the
model's lm_head module is never called outside generation."""

import pytest
import torch

from lite_cpt.train import rft
from lite_cpt.train.batching import encode_prompts
from lite_cpt.models import add_lora
from lite_cpt.recipe import arm_config
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.train.phase import Knobs, Phase, examples_of
from lite_cpt.train.sft import train_sft
from lite_cpt.tasks import TASK_TYPES
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus


@pytest.fixture(scope="module")
def setup():
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    model = add_lora(model, LoraConfig(r=4, alpha=8))
    task = TASK_TYPES["mini_clevr"]("clevr", seed=0)
    return model, processor, examples_of(task, task.load("train", 6))


def count_head_calls(model, monkeypatch):
    """Counts lm_head forwards made outside `generate_completions` (sampling may use it)."""
    calls = {"training": 0}
    generating = {"on": False}
    original = rft.generate_completions

    def generate(*args, **kwargs):
        generating["on"] = True
        try:
            return original(*args, **kwargs)
        finally:
            generating["on"] = False

    monkeypatch.setattr(rft, "generate_completions", generate)

    def hook(*_):
        if not generating["on"]:
            calls["training"] += 1

    return calls, model.get_base_model().lm_head.register_forward_hook(hook)


@pytest.mark.parametrize("kl", [True, False])
def test_grpo_step_never_runs_the_lm_head(setup, monkeypatch, kl):
    model, processor, examples = setup
    arm = arm_config(name="rft", lr=1e-3, rft={"group_size": 2, "prompts_per_step": 3, "max_new_tokens": 3,
                                              "cot": False, "kl": kl, "temperature": 1.0})
    calls, handle = count_head_calls(model, monkeypatch)
    try:
        stats = rft.train_rft(model, processor, examples, arm, Phase(Knobs(8, None, 8)), updates=2)
        assert stats.generated_tokens > 0
        assert calls["training"] == 0
        # The hook does see a plain forward, which computes full logits.
        batch = encode_prompts(processor, [examples[0].prompt()])
        with torch.no_grad():
            model(**batch)
        assert calls["training"] == 1
    finally:
        handle.remove()


def test_sft_phase_never_runs_the_lm_head(setup):
    model, processor, examples = setup
    calls = []
    handle = model.get_base_model().lm_head.register_forward_hook(lambda *_: calls.append(1))
    try:
        arm = arm_config(name="sft", lr=1e-3, batch_size=3)
        stats = train_sft(model, processor, examples, arm, Phase(Knobs(2, None, 1)))
    finally:
        handle.remove()
    assert stats.steps == 2 and stats.trained_tokens > 0
    assert calls == []
