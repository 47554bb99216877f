"""The unsloth backend: a clear error without CUDA or unsloth; with them (a stand-in module on
CPU, since unsloth cannot import without a GPU) the run's own `load_base` / `add_lora` give a
model whose LoRA weights train, unsloth's inference/training modes wrap generation, and a
recipe that names the backend imports unsloth before transformers."""

import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from lite_cpt.errors import UserError
from lite_cpt.recipe import load_recipe
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.unsloth_backend import UNSLOTH_NEEDS, add_unsloth_lora, load_with_unsloth

ARGS = dict(max_seq_length=4096, load_in_4bit=True, gradient_checkpointing=True, dtype=None)
REPO = Path(__file__).resolve().parents[1]


def test_cpu_raises_before_importing_unsloth(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    with pytest.raises(UserError) as caught:
        load_with_unsloth("Qwen/Qwen2.5-VL-7B-Instruct", **ARGS)
    assert str(caught.value) == UNSLOTH_NEEDS
    assert "set model.backend: transformers" in UNSLOTH_NEEDS and "CUDA GPU" in UNSLOTH_NEEDS
    assert "unsloth" not in sys.modules


def test_missing_package_raises_the_same_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "unsloth", None)  # makes `import unsloth` fail
    with pytest.raises(UserError, match="pip install lite-cpt\\[unsloth\\]"):
        load_with_unsloth("Qwen/Qwen2.5-VL-7B-Instruct", **ARGS)


class FakeFastVisionModel:
    """unsloth's FastVisionModel as lite-cpt calls it: a tiny model for `from_pretrained`, peft's
    own LoRA on the language model for `get_peft_model` (what unsloth returns), and the two mode
    switches, each call recorded."""

    calls: list = []

    @classmethod
    def from_pretrained(cls, model_name, **kwargs):
        from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

        cls.calls.append(("from_pretrained", model_name, kwargs))
        return build_tiny_model(TinyModelConfig(), tiny_corpus(0))

    @classmethod
    def get_peft_model(cls, model, **kwargs):
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        from lite_cpt.families import family_of_model

        cls.calls.append(("get_peft_model", kwargs))
        targets = kwargs.get("target_modules") or family_of_model(model).lora_targets
        return get_peft_model(model, PeftLoraConfig(r=kwargs["r"], lora_alpha=kwargs["lora_alpha"],
                                                    target_modules=targets, lora_dropout=kwargs["lora_dropout"]))

    @classmethod
    def for_inference(cls, model):
        cls.calls.append(("for_inference", model.training))

    @classmethod
    def for_training(cls, model, use_gradient_checkpointing=True):
        cls.calls.append(("for_training",))
        model.train()


@pytest.fixture
def fake_unsloth(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    FakeFastVisionModel.calls = []
    module = types.ModuleType("unsloth")
    module.FastVisionModel = FakeFastVisionModel
    monkeypatch.setitem(sys.modules, "unsloth", module)
    return FakeFastVisionModel


def unsloth_recipe(*overrides):
    return load_recipe("recipes/tiny.yaml", ["model.name=Qwen/Qwen2.5-VL-7B-Instruct", "model.backend=unsloth",
                                             "model.quantization=none", *overrides], check_data=False)


def test_the_adapter_unsloth_adds_is_what_the_optimizer_trains(fake_unsloth, monkeypatch):
    from lite_cpt.train.batching import Prompt, encode_sft
    from lite_cpt.train.logprob import token_logprobs
    from lite_cpt.models import add_lora, load_base
    from lite_cpt.train.phase import adamw

    recipe = unsloth_recipe("model.lora.r=4", "model.lora.alpha=8", "model.gradient_checkpointing=true")
    base, processor = load_base(recipe)
    assert not any(p.requires_grad for p in base.parameters())  # the base is frozen
    model = add_lora(base, recipe.model.lora, gradient_checkpointing=True)
    (_, name, load_kwargs), (_, peft_kwargs) = fake_unsloth.calls
    assert name == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert load_kwargs["use_gradient_checkpointing"] == "unsloth" and load_kwargs["load_in_4bit"] is False
    assert load_kwargs["dtype"] == torch.bfloat16  # the device policy's choice on compute capability 8.6
    assert peft_kwargs["r"] == 4 and peft_kwargs["use_gradient_checkpointing"] == "unsloth"
    assert peft_kwargs["finetune_vision_layers"] is False and "target_modules" not in peft_kwargs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the step itself runs on the CPU
    optimizer, params = adamw(model, 1e-2, 0.0, "test")
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert lora and {id(p) for p in params} == {id(p) for p in lora.values()}
    before = {n: p.detach().clone() for n, p in lora.items()}
    batch, labels = encode_sft(processor, [Prompt("what is it", (Image.new("RGB", (56, 56), "red"),), "x")],
                               ["a red square"], max_prompt_tokens=256, max_answer_tokens=16)
    model.train()
    scored = token_logprobs(model, batch, labels)
    (-(scored.logp * scored.mask).sum()).backward()
    optimizer.step()
    changed = [n for n, p in lora.items() if not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in changed)


def test_generation_runs_in_unsloths_inference_mode(fake_unsloth):
    from lite_cpt.train.batching import Prompt
    from lite_cpt.models import add_lora, load_base
    from lite_cpt.train.rollout import Sampling, generate_completions

    recipe = unsloth_recipe("model.lora.r=4")
    base, processor = load_base(recipe)
    model = add_lora(base, recipe.model.lora)
    real_generate = model.generate

    def generate(*args, **kwargs):
        fake_unsloth.calls.append(("generate",))
        return real_generate(*args, **kwargs)

    model.generate = generate
    fake_unsloth.calls = []
    model.train()
    image = Image.new("RGB", (56, 56), "blue")
    out = generate_completions(model, processor, [Prompt("what is it", (image,), "x")], Sampling(max_new_tokens=2))
    assert len(out.token_ids) == 1
    assert [call[0] for call in fake_unsloth.calls] == ["for_inference", "generate", "for_training"]
    assert model.training  # the torch mode it had comes back
    fake_unsloth.calls = []
    model.eval()
    generate_completions(model, processor, [Prompt("what is it", (image,), "x")], Sampling(max_new_tokens=2))
    assert [call[0] for call in fake_unsloth.calls] == ["for_inference", "generate", "for_training"]
    assert not model.training


def test_custom_targets_are_passed_through(fake_unsloth):
    from lite_cpt.tiny.model import build_tiny_model, tiny_corpus

    base, _ = build_tiny_model(TinyModelConfig(), tiny_corpus(0))
    base.requires_grad_(False)
    lora = LoraConfig(r=4, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    model = add_unsloth_lora(base, lora)
    (_, peft_kwargs), = fake_unsloth.calls
    assert peft_kwargs["target_modules"] == r".*language_model.*\.(q_proj|v_proj)"
    assert "finetune_vision_layers" not in peft_kwargs
    assert {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad} == {"q_proj", "v_proj"}


FAKE_UNSLOTH = """
import json, os, sys
seen = [name for name in ("transformers", "peft", "trl") if name in sys.modules]
with open(os.environ["UNSLOTH_RECORD"], "w") as out:
    json.dump(seen, out)
raise SystemExit(7)  # the record is all the test needs
"""


@pytest.mark.parametrize("command", [["run", "recipes/tiny.yaml"], ["validate", "recipes/tiny.yaml"]])
def test_a_recipe_naming_unsloth_imports_it_before_transformers(tmp_path, command):
    """The CLI in a fresh process, a CUDA GPU faked, and a stand-in `unsloth` that records which
    of transformers, peft and trl were already imported when it was."""
    (tmp_path / "unsloth").mkdir()
    (tmp_path / "unsloth" / "__init__.py").write_text(FAKE_UNSLOTH)
    record = tmp_path / "record.json"
    script = textwrap.dedent(f"""
        import sys
        import torch
        torch.cuda.is_available = lambda: True
        from lite_cpt.cli import app
        app({[*command, "model.backend=unsloth"]!r})
    """)
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "UNSLOTH_RECORD": str(record)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 7, done.stderr[-2000:]
    assert record.read_text() == "[]"
