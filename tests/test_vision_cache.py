"""Vision features once per image: with the cache on, log-probs and LoRA gradients are those
computed without it (both Qwen-VL families, expanded and shared-prefix rows), an RFT phase runs
each distinct image through the tower once, the byte bound evicts and offloads the least
recently used entries, and a tower with adapters is never cached."""

import pytest
import torch
from PIL import Image

from lite_cpt.train.batching import Prompt, collate, encode_rows, tokenizer_of
from lite_cpt.train.logprob import token_logprobs
from lite_cpt.models import add_lora
from lite_cpt.train.phase import Example, Knobs, Phase
from lite_cpt.planner.shapes import lora_layout, resolve_shape
from lite_cpt.recipe import arm_config, recipe_from_dict
from lite_cpt.recipe_model import LoraConfig, TinyModelConfig
from lite_cpt.train.rft import train_rft
from lite_cpt.train.shared_prefix import encode_groups, pack_groups, packed_token_logprobs
from lite_cpt.tasks.base import Sample, Task
from lite_cpt.tiny.model import build_tiny_model, tiny_corpus
from lite_cpt.train.vision_cache import VisionFeatureCache, vision_feature_cache
from tests.helpers import tiny_recipe

SIZES = [(56, 56), (84, 56), (56, 112)]


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen3_vl"])
def lora_model(request):
    torch.manual_seed(0)
    model, processor = build_tiny_model(TinyModelConfig(), tiny_corpus(0, request.param), request.param)
    model = add_lora(model.float(), LoraConfig(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA B starts at zero: give it values so the gradients are not all zero
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)
    model.eval()
    return model, processor


def _image(i: int) -> Image.Image:
    return Image.new("RGB", SIZES[i % len(SIZES)], (40 * i % 256, 90, 200 - 30 * i % 200))


def _rows(answers_per_prompt=(3, 1, 2)):
    """Prompt-major rollout rows: prompts with images of different sizes, answers of uneven length."""
    generator = torch.Generator().manual_seed(1)
    prompts, completions = [], []
    for i, count in enumerate(answers_per_prompt):
        prompt = Prompt(f"question {i}: what is it" + " and why" * i, (_image(i),), f"s{i}")
        for _ in range(count):
            length = int(torch.randint(1, 9, (1,), generator=generator))
            prompts.append(prompt)
            completions.append(torch.randint(10, 200, (length,), generator=generator).tolist())
    return prompts, completions


def _score_and_grads(model, processor, prompts, completions):
    """Answer-token log-probs and LoRA gradients of an expanded pass and of a shared-prefix pass."""
    rows = encode_rows(processor, prompts, completions, None)
    batch, labels = collate(rows, tokenizer_of(processor).pad_token_id)
    groups = encode_groups(processor, prompts, completions, list(range(len(prompts))), None)
    packed = pack_groups(model, processor, groups)
    out = {}
    for name, score in (("expanded", lambda: token_logprobs(model, batch, labels)),
                        ("packed", lambda: packed_token_logprobs(model, packed))):
        model.zero_grad()
        scored = score()
        weights = torch.linspace(-1, 1, scored.logp.numel()).reshape(scored.logp.shape)
        (weights * scored.logp * scored.mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        out[name] = (scored.logp.detach(), grads)
    return out


def test_cached_features_give_the_same_logprobs_and_lora_gradients(lora_model):
    model, processor = lora_model
    prompts, completions = _rows()
    reference = _score_and_grads(model, processor, prompts, completions)
    with vision_feature_cache(model, 1.0) as cache:
        # one image known beforehand, so the first pass below mixes hits and misses
        _score_and_grads(model, processor, prompts[3:4], completions[3:4])
        cached = _score_and_grads(model, processor, prompts, completions)
        rows = encode_rows(processor, prompts[:1], completions[:1], None)
        batch, _ = collate(rows, tokenizer_of(processor).pad_token_id)
        with torch.enable_grad():  # served from the cache: detached, the tower gets no gradient
            served = model.get_base_model().model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])
        assert not any(t.requires_grad for t in served.pooler_output)
    # misses: each distinct image once; hits: the warm-up's second pass, 1 then 3 distinct images, 1
    assert cache.counts.misses == 3 and cache.counts.hits == 1 + 1 + 3 + 1
    for name in ("expanded", "packed"):
        logp, grads = cached[name]
        assert torch.allclose(logp, reference[name][0], atol=1e-5, rtol=0)
        assert grads.keys() == reference[name][1].keys() and any(g.abs().sum() > 0 for g in grads.values())
        for key, grad in grads.items():
            assert torch.allclose(grad, reference[name][1][key], atol=1e-5, rtol=1e-5), key
    assert "get_image_features" not in vars(model.get_base_model().model)  # the wrapper is gone


class VowelTask(Task):
    answer_instruction = ""

    def reward(self, prediction: str, sample: Sample) -> float:
        return 1.0 if prediction[:1] in ("a", "e", "i", "o", "u") else 0.0


def _tower_images(model, run) -> int:
    """Images the vision tower's forward received while `run()` ran."""
    seen = []
    visual = model.get_base_model().model.visual
    handle = visual.register_forward_hook(lambda _m, args, kwargs, _o: seen.append(len(kwargs["grid_thw"])),
                                          with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return sum(seen)


def test_an_rft_phase_runs_each_distinct_image_through_the_tower_once(lora_model):
    model, processor = lora_model
    task = VowelTask("vowel")
    examples = [Example(task, Sample(id=str(i), question=f"Name item {i}.", answer="a", images=(_image(i),)))
                for i in range(3)]
    arm = arm_config(name="rft", lr=1e-3, rft={"group_size": 2, "prompts_per_step": 3, "max_new_tokens": 2,
                                              "cot": False, "kl": True, "kl_reference": "base"})
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def phase():
        train_rft(model, processor, examples, arm, Phase(Knobs(2, None, 2), seed=3), updates=1)

    uncached = _tower_images(model, phase)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in saved:
                param.copy_(saved[name])
    with vision_feature_cache(model, 1.0) as cache:
        cached = _tower_images(model, phase)
    # rollouts (two generate calls), the reference pass and the update each saw the images
    assert uncached >= 3 * len(examples)
    assert cached == len(examples) == cache.counts.misses
    model.train(False)


def test_the_byte_bound_evicts_and_offloads_the_least_recently_used():
    entry_bytes = 4 * 8 * 4  # one [4, 8] fp32 tensor
    cache = VisionFeatureCache(max_bytes=3 * entry_bytes, device_bytes=entry_bytes)
    cpu = torch.device("cpu")
    for i, key in enumerate("abc"):
        cache.put(key, (torch.full((4, 8), float(i)),))
    assert list(cache.entries) == ["a", "b", "c"] and cache.offloaded == {"a", "b"}
    assert torch.equal(cache.get("a", cpu)[0], torch.zeros(4, 8))  # a hit: a is now the most recent
    assert cache.offloaded == {"b", "c"} and cache.counts.hits == 1
    cache.put("d", (torch.ones(4, 8),))  # over the bound: b, the least recently used, goes
    assert list(cache.entries) == ["c", "a", "d"] and cache.counts.evictions == 1
    assert cache.get("b", cpu) is None and cache.bytes == 3 * entry_bytes
    cache.put("huge", (torch.zeros(64, 8),))  # larger than the whole bound: computed, never kept
    assert "huge" not in cache.entries and cache.bytes == 3 * entry_bytes


def test_no_cache_when_the_recipes_lora_targets_the_vision_tower(tmp_path):
    raw = tiny_recipe(tmp_path)
    raw["model"]["lora"]["target_modules"] = r".*\.(qkv|q_proj|v_proj)"  # qkv: the vision blocks'
    recipe = recipe_from_dict(raw)
    model, _ = build_tiny_model(recipe.model.tiny, tiny_corpus(0))
    model = add_lora(model, recipe.model.lora)
    # the planner reads the same regex as adapting the tower
    assert lora_layout(resolve_shape(recipe.model), 4, recipe.model.lora.target_modules).vision_adapted
    with vision_feature_cache(model, recipe.model.vision_cache_gb) as cache:
        assert cache is None
        assert "get_image_features" not in vars(model.get_base_model().model)
    default = add_lora(build_tiny_model(recipe.model.tiny, tiny_corpus(0))[0], LoraConfig(r=4, alpha=8))
    with vision_feature_cache(default, recipe.model.vision_cache_gb) as cache:
        assert cache is not None and recipe.model.vision_cache_gb > 0


def test_the_plan_counts_the_caches_resident_bytes_in_training_phases_only(tmp_path):
    from lite_cpt.train.phase import Knobs as PlanKnobs
    from lite_cpt.planner.bytes import phase_instants
    from lite_cpt.planner.workload import workload_of
    from lite_cpt.train.vision_cache import DEVICE_RESIDENT_BYTES

    raw = tiny_recipe(tmp_path, arms=[{"name": "rft", "rft": {"group_size": 2, "prompts_per_step": 2}}])
    knobs = PlanKnobs(2, 4096, 2)

    def cache_bytes(model_overrides: dict, phase: str) -> set[float]:
        recipe = recipe_from_dict({**raw, "model": {**raw["model"], **model_overrides}})
        work = workload_of(recipe, recipe.arms[0])
        return {i.components.get("vision_cache", 0.0) for i in phase_instants(work, phase, knobs)}

    for phase in ("rollout", "logprob_pass", "grpo_step"):
        assert cache_bytes({}, phase) == {DEVICE_RESIDENT_BYTES}
    assert cache_bytes({"vision_cache_gb": 0.01}, "grpo_step") == {0.01 * 2**30}  # the bound, when smaller
    assert cache_bytes({}, "evaluation") == {0.0}
    assert cache_bytes({"vision_cache_gb": 0}, "grpo_step") == {0.0}
    visual_lora = {**raw["model"]["lora"], "target_modules": r".*\.(qkv|q_proj|v_proj)"}
    assert cache_bytes({"lora": visual_lora}, "grpo_step") == {0.0}


def test_the_continual_loop_caches_each_phase(tmp_path, monkeypatch):
    """A run's phase is trained inside the cache: an SFT task of two epochs shows each image to
    the tower once, its second epoch served from the cache."""
    from contextlib import contextmanager

    from lite_cpt.run import continual

    raw = tiny_recipe(tmp_path, tasks=("mini_clevr",))
    raw["tasks"][0].update(train_size=4, epochs=2)
    raw["arms"] = [{"name": "sft", "lr": 5e-3, "batch_size": 4}]
    recipe = recipe_from_dict(raw)
    entered = []
    real = continual.vision_feature_cache

    @contextmanager
    def spy(model, max_gb, **kwargs):
        with real(model, max_gb, **kwargs) as cache:
            entered.append((max_gb, cache))
            yield cache

    monkeypatch.setattr(continual, "vision_feature_cache", spy)
    continual.run_seed_arms(recipe, ["sft"])
    [(max_gb, cache)] = entered
    assert max_gb == recipe.model.vision_cache_gb and cache is not None
    assert cache.counts.misses == len(cache.entries) <= 4 and cache.counts.hits == cache.counts.misses
