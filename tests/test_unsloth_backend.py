"""The unsloth loader: a clear error without CUDA or unsloth, and the right calls with them."""

import sys
import types

import pytest
import torch

from lite_cpt.errors import UserError
from lite_cpt.recipe import LoraConfig
from lite_cpt.unsloth_backend import UNSLOTH_NEEDS, load_with_unsloth

ARGS = dict(max_seq_length=4096, load_in_4bit=True, gradient_checkpointing=True, dtype=None)


def test_cpu_raises_before_importing_unsloth(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    with pytest.raises(UserError) as caught:
        load_with_unsloth("Qwen/Qwen2.5-VL-7B-Instruct", lora_cfg=LoraConfig(), **ARGS)
    assert str(caught.value) == UNSLOTH_NEEDS
    assert "set model.backend: transformers" in UNSLOTH_NEEDS and "CUDA GPU" in UNSLOTH_NEEDS
    assert "unsloth" not in sys.modules


def test_missing_package_raises_the_same_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # makes `import unsloth` fail
    with pytest.raises(UserError, match="pip install lite-cpt\\[unsloth\\]"):
        load_with_unsloth("Qwen/Qwen2.5-VL-7B-Instruct", lora_cfg=LoraConfig(), **ARGS)


class FakeFastVisionModel:
    calls: list = []

    @classmethod
    def from_pretrained(cls, model_name, **kwargs):
        cls.calls.append(("from_pretrained", model_name, kwargs))
        return "model", "processor"

    @classmethod
    def get_peft_model(cls, model, **kwargs):
        cls.calls.append(("get_peft_model", model, kwargs))
        return "peft-model"


@pytest.fixture
def fake_unsloth(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    FakeFastVisionModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", types.SimpleNamespace(FastVisionModel=FakeFastVisionModel))
    return FakeFastVisionModel


def test_loader_passes_recipe_settings_to_unsloth(fake_unsloth):
    lora = LoraConfig(r=64, alpha=128, dropout=0.05)
    model, processor = load_with_unsloth("Qwen/Qwen2.5-VL-7B-Instruct", lora_cfg=lora, seed=3, **ARGS)
    assert (model, processor) == ("peft-model", "processor")
    (_, name, load_kwargs), (_, base, peft_kwargs) = fake_unsloth.calls
    assert name == "Qwen/Qwen2.5-VL-7B-Instruct" and base == "model"
    assert load_kwargs == dict(max_seq_length=4096, load_in_4bit=True, dtype=None,
                               use_gradient_checkpointing="unsloth")
    assert peft_kwargs["r"] == 64 and peft_kwargs["lora_alpha"] == 128 and peft_kwargs["lora_dropout"] == 0.05
    assert peft_kwargs["random_state"] == 3
    # The default regex (language-model linears) maps onto unsloth's switches.
    assert peft_kwargs["finetune_vision_layers"] is False and peft_kwargs["finetune_language_layers"] is True
    assert "target_modules" not in peft_kwargs


def test_custom_targets_are_passed_through(fake_unsloth):
    lora = LoraConfig(target_modules=r".*language_model.*\.(q_proj|v_proj)")
    load_with_unsloth("local/dir", lora_cfg=lora, **{**ARGS, "gradient_checkpointing": False})
    (_, _, load_kwargs), (_, _, peft_kwargs) = fake_unsloth.calls
    assert load_kwargs["use_gradient_checkpointing"] is False
    assert peft_kwargs["target_modules"] == r".*language_model.*\.(q_proj|v_proj)"
    assert "finetune_vision_layers" not in peft_kwargs
