"""The rollout backend switch without vLLM: the recipe picks it, a missing vLLM is one message
with the install command, the engine context routes generation, vLLM's settings come from the
trainer's (LoRA rank bucket, pixel budget, room for prompt and answer)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from lite_cpt.errors import UserError
from lite_cpt.recipe import load_recipe
from lite_cpt.train.rollout import Completions, Sampling, generate_completions, rollout_engine
from lite_cpt.run.unit_plan import longest_sequence, rollout_plan
from lite_cpt.train.vllm_backend import engine_for, import_vllm, lora_rank_bucket, pixel_budget


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_a_missing_vllm_names_the_install_command():
    with pytest.raises(UserError, match=r"pip install 'lite-cpt\[vllm\]'.*rollout\.backend: hf"):
        import_vllm()


def test_only_a_grpo_arm_of_a_vllm_recipe_gets_an_engine():
    hf = load_recipe("recipes/tiny.yaml", [], check_data=False)
    vllm = load_recipe("recipes/tiny.yaml", ["rollout.backend=vllm"], check_data=False)
    sft, rft = (next(a for a in hf.arms if a.method == m) for m in ("sft", "rft"))
    assert rollout_plan(hf, rft) is None and rollout_plan(vllm, sft) is None
    plan = rollout_plan(vllm, rft)
    assert plan.settings.backend == "vllm" and plan.model == vllm.model and plan.max_model_len == longest_sequence(vllm)
    built = object()
    ws = SimpleNamespace(rollout_engine=SimpleNamespace(scratch_dir=None, built=built))
    assert engine_for(SimpleNamespace(rollout_engine=None), None, Path("runs/x")) is None
    engine = engine_for(ws, plan, Path("runs/x/rft"))
    assert engine.built is built and engine.scratch_dir == Path("runs/x/rft/vllm_adapters")  # one per process


def test_generation_inside_an_engine_context_goes_to_the_engine_and_back_after():
    calls = []

    class Recorder:
        def generate_completions(self, model, processor, prompts, sampling, *, generator_seed=None):
            calls.append((prompts, sampling, generator_seed))
            return Completions(prompts, sampling.group_size, [[1]] * len(prompts), ["x"] * len(prompts), len(prompts),
                               logprobs=[[-0.5]] * len(prompts))

    sampling = Sampling(group_size=1, max_new_tokens=3)
    with rollout_engine(Recorder()):
        out = generate_completions("model", "processor", ["p"], sampling, prompts_per_call=4, generator_seed=7)
    assert calls == [(["p"], sampling, 7)] and out.logprobs == [[-0.5]]
    with pytest.raises(AttributeError):  # outside the context transformers runs again (and rejects a str model)
        generate_completions("model", "processor", ["p"], sampling)
    assert len(calls) == 1


def test_vllm_settings_follow_the_trainers():
    assert [lora_rank_bucket(r) for r in (1, 4, 8, 9, 64, 100)] == [1, 8, 8, 16, 64, 128]
    with pytest.raises(UserError, match="model.lora.r=600"):
        lora_rank_bucket(600)
    processor = SimpleNamespace(image_processor=SimpleNamespace(size={"shortest_edge": 3136, "longest_edge": 401408}))
    assert pixel_budget(processor) == {"min_pixels": 3136, "max_pixels": 401408}
    assert pixel_budget(SimpleNamespace()) == {}  # a text-only tokenizer
    seven = load_recipe("recipes/seven_tasks.yaml", [], check_data=False)
    longest_prompt = max(t.max_prompt_tokens for t in seven.tasks)
    longest_answer = max([a.rft.max_new_tokens for a in seven.arms if hasattr(a, "rft")]
                         + [seven.evaluation.generation.max_new_tokens])
    assert longest_sequence(seven) == longest_prompt + longest_answer


def test_tis_without_a_separate_sampler_is_refused():
    with pytest.raises(UserError, match=r"rft\.tis_cap.*rollout\.backend: hf.*set rollout\.backend: vllm"):
        load_recipe("recipes/tiny.yaml", ["arms.4.rft.tis_cap=2.0"], check_data=False)
    vllm = load_recipe("recipes/tiny.yaml", ["arms.4.rft.tis_cap=2.0", "rollout.backend=vllm"], check_data=False)
    assert vllm.arms[4].rft.tis_cap == 2.0


def test_a_missing_vllm_is_said_before_any_data_or_model_loads(tmp_path, monkeypatch):
    """rollout.backend vllm where vLLM is not installed stops the run at once with the install
    command, not when the first GRPO phase starts."""
    import importlib.util

    import lite_cpt.run.continual as continual
    from lite_cpt.run.continual import run_recipe

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    monkeypatch.setattr(continual, "build_workspace", lambda *a, **k: pytest.fail("the model loaded"))
    recipe = load_recipe("recipes/tiny.yaml", ["rollout.backend=vllm", f"output_dir={tmp_path}"], check_data=False)
    with pytest.raises(UserError, match=r"rollout.backend: vllm needs vLLM: pip install 'lite-cpt\[vllm\]'.*"
                                        r"rollout.backend: hf \(vllm is not installed\)"):
        run_recipe(recipe)


def test_a_vllm_without_bitsandbytes_is_refused_for_an_nf4_base():
    """vLLM 0.28 removed bitsandbytes (its in-flight 4-bit loader): an NF4 trainer's engine on
    such a vLLM is one message naming the bound, an unquantized base runs on any release, and
    the `vllm` extra stays below that release."""
    import tomllib

    from lite_cpt.train.vllm_backend import VLLM_WITHOUT_BNB, check_loads_nf4

    check_loads_nf4(True, "0.27.0+cu129")
    check_loads_nf4(True, "0.10.1")
    check_loads_nf4(False, "0.34.0")
    for version in ("0.28.0", "0.32.0+cpu", "1.0.0"):
        with pytest.raises(UserError, match=rf"removed; vLLM {re.escape(version)} is installed: pip install "
                                            r"'lite-cpt\[vllm\]' \(vllm<0\.28\), or set rollout\.backend: hf"):
            check_loads_nf4(True, version)
    extra = tomllib.loads(Path("pyproject.toml").read_text())["project"]["optional-dependencies"]["vllm"]
    assert extra == [f"vllm>=0.10,<{'.'.join(map(str, VLLM_WITHOUT_BNB))}"]
