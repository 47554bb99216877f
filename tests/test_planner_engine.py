"""The vLLM engine in the plan (rollout.backend: vllm): its share of the GPU, KV cache, slots,
the generation phases' peak and the rollout.gpu_memory_utilization advice, against hand
computations on the faithful recipe's 7B (planner/engine.py)."""

import dataclasses
import math
from pathlib import Path

import pytest

from lite_cpt.planner import plan, plan_workload, workload_of
from lite_cpt.planner.bytes import GIB, frozen_weight_bytes
from lite_cpt.planner.lengths import AnswerLengths
from lite_cpt.planner.timeplan import counts_of, evaluation_seconds, prompt_tokens
from lite_cpt.recipe import load_recipe

# Qwen2.5-VL-7B: LoRA r=64 on the 7 linears of 28 layers, r·(in + out) each:
# q, o 3584->3584; k, v 3584->512; gate, up 3584->18944; down 18944->3584.
LORA_PARAMS = 28 * 64 * (2 * 7168 + 2 * 4096 + 3 * 22528)
KV_PER_TOKEN = 2 * 28 * 4 * 128 * 2  # K and V, 28 layers, 4 KV heads of 128, bf16
OVERHEAD = 2.0


def _seven(*overrides):
    # the schema default share, the trainer's state kept on the GPU beside the engine (the
    # faithful recipe offloads it and states its own 24 GB share)
    return load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=vllm", "rollout.gpu_memory_utilization=0.3",
                                                    "rollout.offload_trainer=false", *overrides], check_data=False)


def _weights_gb(recipe):
    return sum(frozen_weight_bytes(workload_of(recipe, recipe.arms[0])).values()) / GIB


def _vizwiz_tokens(recipe):
    rft = next(a for a in recipe.arms if a.name == "rft")
    prompt = {t.name: t.prompt for t in counts_of(recipe, rft).tasks}["vizwiz"]
    return prompt + AnswerLengths(150.0, 0.8, "").mean_capped(2048)


def _vizwiz_kv(recipe):
    """KV tokens of one VizWiz rollout: its mean answer, the prompt's partial last block (8 tokens
    expected) and a fifth of the rest of the prompt, shared by the group's 5 samples and held
    until their longest answer ends."""
    answers = AnswerLengths(150.0, 0.8, "")
    mean, longest_of_5 = answers.mean_capped(2048), answers.expected_longest(5, 2048)
    prompt = _vizwiz_tokens(recipe) - mean
    return (prompt - 8) * (longest_of_5 / mean) / 5 + 8 + mean


def test_the_engines_kv_cache_and_slots_by_hand():
    """48 GiB at 0.3: a 14.4 GiB share less the 7B's weights, the LoRA slot (r 64, bf16) and the
    overhead; the rest in blocks of 16 tokens of 56 KiB; slots = KV tokens // a rollout's KV: its
    mean answer, the prompt's partial last block (8 tokens expected) and a fifth of the rest of
    the prompt, shared by the group's 5 samples and held until their longest answer ends."""
    recipe = _seven()
    assert LORA_PARAMS == 161_480_704
    engine = plan(recipe, 48).engine
    kv_gb = 0.3 * 48 - _weights_gb(recipe) - LORA_PARAMS * 2 / GIB - OVERHEAD
    assert engine.kv_cache_gb == pytest.approx(kv_gb)
    assert 5.6 < kv_gb < 5.7
    tokens = math.floor(kv_gb * GIB / KV_PER_TOKEN / 16) * 16
    assert engine.kv_tokens == tokens
    vizwiz = _vizwiz_tokens(recipe)
    assert 1900 < vizwiz < 1920  # VizWiz's 1296x968 photos: ~1,600 image tokens + the text, mean answer ~150
    assert tokens // vizwiz == 55  # each sample with its own copy of the prompt
    answers = AnswerLengths(150.0, 0.8, "")
    assert 1.95 < answers.expected_longest(5, 2048) / answers.mean_capped(2048) < 2.0
    shared = _vizwiz_kv(recipe)
    assert 850 < shared < 860
    assert engine.slots()["vizwiz"] == tokens // shared == 124
    assert engine.slots()["evaluation"] == tokens // engine.sequence_tokens["evaluation"]  # one request: no sharing
    assert engine.longest_sequence == 2048 + 2048 and engine.holds_longest
    assert plan(recipe, 48).to_json()["engine"]["slots"]["vizwiz"] == 124


def test_the_time_plan_decodes_in_the_engines_slots_by_hand():
    """A tiny arm whose engine holds 3 sequences of the evaluation's prompt + 7 answer steps: the
    10 evaluation prompts go in calls of 3, 3, 3, 1 (each its prefill and 7 steps), not 64 slots."""
    from test_timeplan_vllm import _arm

    work, cal, counts = _arm("vllm")
    p = prompt_tokens(work)
    engine = dataclasses.replace(counts, engine_kv_tokens=3 * (p + 7) + 5)
    by_hand = sum(b * p / 100 + 7 * (0.1 + b * 0.01) for b in (3, 3, 3, 1))
    assert evaluation_seconds(work, cal, engine) == pytest.approx(by_hand)
    # no engine figure (no GPU size): CONTINUOUS_SLOTS, the 10 prompts in one call
    assert evaluation_seconds(work, cal, counts) == pytest.approx(10 * p / 100 + 7 * (0.1 + 10 * 0.01))


def test_generation_phases_peak_at_the_trainers_resident_state_plus_the_engines_share():
    """rft at 48 GiB: rollout = (frozen base + LoRA + KL reference + AdamW m, v + vision cache)
    x 1.05 + 0.5 GiB CUDA context + 0.3 x 48; evaluation without the optimizer state or the
    cache; the training phases (engine asleep) as with transformers generate."""
    recipe, hf = _seven(), load_recipe("recipes/seven_tasks.yaml", [], check_data=False)
    vllm_plan, hf_plan = plan(recipe, 48), plan(hf, 48)
    rft = vllm_plan.arms["rft"]
    frozen = _weights_gb(recipe) * GIB
    lora = LORA_PARAMS * 4
    cache = rft.workload.vision_cache_bytes
    rollout = (frozen + lora + lora + 8 * LORA_PARAMS + cache) * 1.05 / GIB + 0.5 + 14.4
    evaluation = (frozen + lora + lora) * 1.05 / GIB + 0.5 + 14.4
    assert rft.phases["rollout"].peak_gb == pytest.approx(rollout)
    assert rft.phases["evaluation"].peak_gb == pytest.approx(evaluation)
    for phase in ("rollout", "evaluation"):
        assert sum(rft.phases[phase].components.values()) == pytest.approx(rft.phases[phase].peak_gb)
    for phase in ("logprob_pass", "grpo_step"):
        assert rft.phases[phase].to_json() == hf_plan.arms["rft"].phases[phase].to_json()
    assert vllm_plan.arms["sft"].phases["sft_step"].to_json() == hf_plan.arms["sft"].phases["sft_step"].to_json()
    assert vllm_plan.fits


def test_a_share_without_room_for_the_weights_is_refused_with_the_utilization_that_fits():
    """24 GiB at 0.3: 7.2 GiB do not hold the 6.4 GiB weights + LoRA slot + 2 GiB overhead. The
    advice: the largest share the trainer leaves room for (21.6 GiB usable less its 9.8 GiB during
    rollouts), since holding 64 VizWiz sequences would need more."""
    recipe = _seven()
    result = plan(recipe, 24)
    assert not result.fits and not result.engine.holds_longest and result.engine.kv_tokens == 0
    rft = result.arms["rft"]
    assert not rft.phases["rollout"].fits and rft.phases["grpo_step"].fits
    trainer = rft.phases["rollout"].peak_gb - max(7.2, result.engine.fixed_gb)
    largest = math.floor(100 * (21.6 - trainer) / 24) / 100
    fixed = _weights_gb(recipe) + LORA_PARAMS * 2 / GIB + OVERHEAD
    # the longest sequence is now an evaluation request's (its own prompt): rollouts share theirs
    evaluation = result.engine.sequence_tokens["evaluation"]
    assert evaluation == max(result.engine.sequence_tokens.values()) > _vizwiz_kv(recipe)
    useful = math.ceil(100 * (fixed + (64 * evaluation + 16) * KV_PER_TOKEN / GIB) / 24) / 100
    assert (largest, useful) == (0.49, 0.51)
    [line] = [a for a in result.advice if "gpu_memory_utilization" in a]
    assert "--set rollout.gpu_memory_utilization=0.49" in line and "0.51 holds 64 of every task's" in line
    assert "decodes 58-161 sequences at once" in line
    assert result.advice == [line]  # the transformers generation phases' advice is gone
    advised = plan(_seven("rollout.gpu_memory_utilization=0.49"), 24)
    assert advised.fits and advised.arms["rft"].phases["rollout"].peak_gb <= 21.6
    assert advised.engine.slots()["vizwiz"] == advised.engine.kv_tokens // _vizwiz_kv(recipe) == 66
    transformers = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=hf"], check_data=False)
    assert advised.arms["rft"].time.hours < plan(transformers, 24).arms["rft"].time.hours
    # the recipe offloads the trainer and states 0.7: more slots, fewer hours
    shipped = plan(load_recipe("recipes/seven_tasks.yaml", [], check_data=False), 24)
    assert shipped.fits and shipped.engine.utilization == 0.7
    assert shipped.arms["rft"].time.hours < advised.arms["rft"].time.hours


def test_an_offloaded_trainer_leaves_the_engine_all_but_its_context_and_vision_cache():
    """rollout.offload_trainer: while vLLM generates the trainer keeps only the vision feature
    cache (x 1.05 slack) and its CUDA context on the GPU, so at 24 GiB the share may grow to
    (21.6 - that) / 24; the training phases' peaks do not change."""
    kept, moved = plan(_seven("rollout.gpu_memory_utilization=0.7"), 24), plan(
        _seven("rollout.gpu_memory_utilization=0.7", "rollout.offload_trainer=true"), 24)
    rft = moved.arms["rft"]
    cache = rft.workload.vision_cache_bytes / GIB
    trainer = cache * 1.05 + 0.5
    assert rft.phases["rollout"].peak_gb == pytest.approx(trainer + 0.7 * 24)
    assert moved.fits and not kept.fits
    for phase in ("logprob_pass", "grpo_step"):
        assert rft.phases[phase].peak_gb == kept.arms["rft"].phases[phase].peak_gb
    start, useful, largest = moved.engine.utilization_range(trainer, 21.6)
    assert largest == math.floor(100 * (21.6 - trainer) / 24) / 100 == 0.87
    # 0.7 is what the trainer's state left no room for: it would need 9.8 GiB more
    assert kept.arms["rft"].phases["rollout"].peak_gb > 21.6


def test_a_trainer_that_leaves_no_room_for_the_engine_is_told_to_use_transformers():
    result = plan(_seven(), 16)
    line = next(a for a in result.advice if "vLLM generates" in a)
    assert "set rollout.backend: hf, or use a GPU with more memory" in line


def test_an_engine_that_fits_with_few_slots_gets_a_note():
    """36 GiB at 0.3 fits with 40 evaluation slots; a larger share (within the trainer's room) holds 64."""
    notes = plan(_seven(), 36).notes
    assert any("vLLM decodes as few as 40 sequences at once" in n and "--set rollout.gpu_memory_utilization=" in n
               for n in notes)


def test_the_transformers_backends_plan_has_no_engine():
    """rollout.backend hf: generation phases as transformers generate plans them, no engine."""
    hf = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=hf"], check_data=False)
    result = plan(hf, 24)
    assert result.engine is None and "engine" not in result.to_json()
    work = result.arms["rft"].workload
    alone = plan_workload(work, 24)
    for phase in ("rollout", "evaluation"):
        assert result.arms["rft"].phases[phase].to_json() == alone.phases[phase].to_json()
    assert counts_of(hf, hf.arms[1]).engine_kv_tokens is None


def test_the_plan_table_shows_the_engine(capsys):
    from lite_cpt.cli import plan_recipe_file

    assert plan_recipe_file(Path("recipes/seven_tasks.yaml"), ["rollout.backend=vllm", "rollout.gpu_memory_utilization=0.3"], 48, False, None) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "vLLM engine (rollout.backend: vllm)" in out and "share 0.3 x 48 = 14.40 GiB" in out
    assert "vizwiz 124" in out and "evaluation 110" in out


def test_a_runs_time_plan_sizes_the_engines_slots_on_the_gpu_it_runs_on():
    """The time plan a run prints (per arm, on its own GPU) counts the vLLM engine's slots as
    `lite-cpt plan` does for that card, not the fallback of 64; on a CPU it keeps the fallback."""
    from lite_cpt.planner import resolve_knobs
    from lite_cpt.planner.engine import engine_counts
    from lite_cpt.planner.timeplan import predicted_phases

    recipe = load_recipe("recipes/seven_tasks.yaml", [], check_data=False)  # vllm at 0.49
    rft = next(a for a in recipe.arms if a.name == "rft")
    cal = dataclasses.replace(plan(recipe, 24).calibration)
    counts = engine_counts(recipe, rft, cal, 24)
    assert counts.engine_kv_tokens == plan(recipe, 24).engine.kv_tokens > 0
    assert engine_counts(recipe, rft, cal, None).engine_kv_tokens is None  # a CPU: no GPU size
    knobs = resolve_knobs(recipe, "rft", gpu_gb=24)
    on_card = sum(sum(p[k] for k in p if k != "task") for p in predicted_phases(recipe, rft, knobs, cal, counts))
    assert on_card / 3600 == pytest.approx(plan(recipe, 24).arms["rft"].time.hours, rel=1e-6)
