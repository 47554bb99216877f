"""The time plan of the vLLM backend: evaluation and RIF's K-rollout estimate on the continuously
batched engine, against hand computations (the static-call figures are in test_timeplan.py)."""

import dataclasses

import pytest

from lite_cpt.planner import Knobs, workload_of
from lite_cpt.planner.calibration import Calibration
from lite_cpt.planner.lengths import AnswerLengths
from lite_cpt.planner.timeplan import arm_time, counts_of, evaluation_seconds, prompt_tokens
from lite_cpt.recipe import recipe_from_dict

CAL = Calibration(device="test", model="tiny", parameters=0, decode_step_s=0.1, decode_s_per_sequence=0.01,
                  prefill_tokens_per_s=100.0, train_tokens_per_s=50.0, optimizer_step_s=0.5, source="test")


def _arm(backend: str, name: str = "rft", offload: bool = False, **arm):
    raw = {
        "name": "timed", "model": {"name": "tiny"}, "rollout": {"backend": backend, "offload_trainer": offload},
        "tasks": [{"name": "a", "type": "mini_scienceqa", "train_size": 12, "test_size": 5, "epochs": 1},
                  {"name": "b", "type": "mini_gqa", "train_size": 8, "test_size": 3, "epochs": 1}],
        "arms": [{"name": name, "rft": {"group_size": 4, "prompts_per_step": 8, "max_new_tokens": 10}, **arm}],
        "evaluation": {"prompt": "cot", "generation": {"max_new_tokens": 7, "batch_size": 4},
                       "general": [{"name": "pope", "type": "mini_pope", "size": 2}]},
    }
    recipe = recipe_from_dict(raw)
    work = workload_of(recipe, recipe.arms[0])
    from lite_cpt.planner import total_parameters

    return work, dataclasses.replace(CAL, parameters=total_parameters(work.shape)), counts_of(recipe, recipe.arms[0])


def test_evaluation_on_the_engine_is_one_call_of_the_rows_prompts_by_hand():
    """10 prompts (5 + 3 + 2). transformers: calls of 4, 4, 2, each to its longest answer; the
    engine: one call of the 10 in its 64 slots, each answer its mean, plus the tail's drain."""
    work, cal, counts = _arm("vllm")
    p = prompt_tokens(work)
    assert counts.continuous and counts.eval_cot
    # the mini tasks have no length defaults: every chain of thought at the cap (7 steps)
    assert evaluation_seconds(work, cal, counts) == pytest.approx(10 * p / 100 + 7 * (0.1 + 10 * 0.01))
    static = 2 * (4 * p / 100 + 7 * (0.1 + 4 * 0.01)) + (2 * p / 100 + 7 * (0.1 + 2 * 0.01))
    assert evaluation_seconds(*_arm("hf")) == pytest.approx(static)
    # with answer lengths (mean 3 tokens, cv 0.5): the mean per slot, then the longest of 10 drains
    answers = AnswerLengths(3.0, 0.5, "test")
    known = dataclasses.replace(counts, tasks=tuple(dataclasses.replace(t, answers=answers) for t in counts.tasks))
    mean, longest = answers.mean_capped(7), answers.expected_longest(10, 7)
    assert 2.5 < mean < longest < 7
    by_hand = 10 * p / 100 + mean * (0.1 + 10 * 0.01) + (longest - mean) * (0.1 + 10 * 0.01)
    assert evaluation_seconds(work, cal, known) == pytest.approx(by_hand)
    # the measured rate of transformers' evaluation does not apply to the engine
    rated = dataclasses.replace(cal, model=work.shape.name, eval_prompts_per_s=1000.0)
    assert evaluation_seconds(work, rated, counts) == pytest.approx(evaluation_seconds(work, cal, counts))


def test_rif_estimate_on_the_engine_by_hand():
    """K = 4 answers for each of 12 + 8 rows, at the 10-token cap. transformers: calls of 2
    prompts (8 answers) each to its longest; the engine: each task's 48 and 32 answers in one call
    of 64 slots."""
    knobs = Knobs(4, 1024, 2)
    rif = {"method": "rif_rft", "rif": {"rollouts": 4, "mode": "offline"}}
    work, cal, counts = _arm("vllm", "rif_rft_x", **rif)
    p = prompt_tokens(work)
    engine = 12 * p / 100 + 10 * (0.1 + 48 * 0.01) + 8 * p / 100 + 10 * (0.1 + 32 * 0.01)
    assert arm_time(work, knobs, cal, counts).seconds["rif_rollout"] == pytest.approx(engine)
    assert engine == pytest.approx(20 * p / 100 + 10.0)
    work, cal, counts = _arm("hf", "rif_rft_x", **rif)
    assert arm_time(work, knobs, cal, counts).seconds["rif_rollout"] == pytest.approx(10 * (2 * p / 100 + 10 * 0.18))


ENGINE = {"engine_decode_step_s": 0.02, "engine_decode_s_per_sequence": 0.001,
          "engine_decode_measured": {"steps": 128, "step_s": {"16": 0.036, "32": 0.052, "64": 0.084}}}


def test_the_engines_phases_decode_at_its_own_figures_when_measured_on_this_model():
    """Rollouts, RIF's estimate and evaluation on the engine: each decode step at the engine's fit
    (0.02 s + 0.001 s per sequence) instead of transformers' (0.1 + 0.01), prefill unchanged;
    transformers' figures for a calibration of another model, and on the static path."""
    knobs = Knobs(4, 1024, 2)
    rif = {"method": "rif_rft", "rif": {"rollouts": 4, "mode": "offline"}}
    work, cal, counts = _arm("vllm", "rif_rft_x", **rif)
    engine = dataclasses.replace(cal, **ENGINE)
    p = prompt_tokens(work)
    seconds = arm_time(work, knobs, engine, counts).seconds
    # 12 and 8 rows, K = 4 at the 10-token cap: one call of 48 and one of 32
    assert seconds["rif_rollout"] == pytest.approx(20 * p / 100 + 10 * (0.02 + 0.048) + 10 * (0.02 + 0.032))
    # rif_rft_x filters nothing here (budget filtered): 2 updates of 8 prompts (a) and 1 (b), G = 4
    assert seconds["rollout"] == pytest.approx(24 * p / 100 + 10 * (0.02 + 0.064) + 10 * (0.02 + 0.032))
    assert evaluation_seconds(work, engine, counts) == pytest.approx(10 * p / 100 + 7 * (0.02 + 10 * 0.001))
    other = dataclasses.replace(engine, model="another")
    assert evaluation_seconds(work, other, counts) == pytest.approx(10 * p / 100 + 7 * (0.1 + 10 * 0.01))
    assert arm_time(work, knobs, other, counts).seconds["rollout"] == pytest.approx(
        24 * p / 100 + 10 * (0.1 + 0.64) + 10 * (0.1 + 0.32))
    hf_work, hf_cal, hf_counts = _arm("hf", "rif_rft_x", **rif)
    hf = dataclasses.replace(hf_cal, **ENGINE)
    assert arm_time(hf_work, knobs, hf, hf_counts).seconds == pytest.approx(arm_time(hf_work, knobs, hf_cal,
                                                                                     hf_counts).seconds)
    # transformers' measured rollout rate is a static call's: not the engine's
    rated = dataclasses.replace(engine, rollout_s_per_sequence=5.0, rl_measured_at=[4, 10, 2])
    assert arm_time(work, knobs, rated, counts).seconds["rollout"] == pytest.approx(seconds["rollout"])
    assert arm_time(hf_work, knobs, dataclasses.replace(hf, rollout_s_per_sequence=5.0, rl_measured_at=[4, 10, 2]),
                    hf_counts).seconds["rollout"] == pytest.approx(96 * 5.0)


def test_the_engine_figures_round_trip_and_scale_with_the_model(tmp_path):
    import json

    from lite_cpt.planner.calibration import load_calibration

    cal = dataclasses.replace(CAL, parameters=1000, **ENGINE)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"calibration": cal.to_json()}))
    assert load_calibration(path) == cal
    doubled = cal.scaled_to(2000)
    assert (doubled.engine_decode_step_s, doubled.engine_decode_s_per_sequence) == pytest.approx((0.04, 0.002))
    bare = dataclasses.replace(CAL, parameters=1000)
    assert bare.with_engine_decode() is bare and bare.scaled_to(5).engine_decode_step_s is None
    assert (cal.with_engine_decode().decode_step_s, cal.with_engine_decode().decode_s_per_sequence) == (0.02, 0.001)


def test_the_plan_says_which_figures_priced_vllms_decode():
    """The faithful recipe on vLLM: the reference card's derived engine figures (transformers'
    4-bit weight path, 30 ms, with a CUDA graph's step instead of its per-layer launches), said
    so; a GPU calibration without the engine's fit falls back to transformers' figures, said so;
    one with the engine's fit prices the engine's phases with it."""
    from lite_cpt.planner import plan
    from lite_cpt.planner.calibration import REFERENCE_24GB
    from lite_cpt.recipe import load_recipe

    recipe = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=vllm"], check_data=False)
    derived = plan(recipe, 24.0, arm="rft")
    [note] = [n for n in derived.notes if n.startswith("vLLM's decode")]
    assert "engine's own figures, derived for the reference card" in note and "36.00 ms per step + 0.500 ms" in note
    assert "lite-cpt bench gpu --recipe" in note
    assert REFERENCE_24GB.engine_decode_step_s < REFERENCE_24GB.decode_step_s
    assert REFERENCE_24GB.engine_decode_s_per_sequence == REFERENCE_24GB.decode_s_per_sequence
    no_fit = dataclasses.replace(REFERENCE_24GB, device="NVIDIA H100 80GB HBM3", source="test",
                                 engine_decode_step_s=None, engine_decode_s_per_sequence=None)
    fallback = plan(recipe, 24.0, arm="rft", calibration=no_fit)
    [note] = [n for n in fallback.notes if n.startswith("vLLM's decode")]
    assert "transformers generate's figures (measured on NVIDIA H100 80GB HBM3: 60.00 ms per step" in note
    measured = dataclasses.replace(REFERENCE_24GB, device="NVIDIA H100 80GB HBM3", source="test", **ENGINE)
    engine = plan(recipe, 24.0, arm="rft", calibration=measured)
    [note] = [n for n in engine.notes if n.startswith("vLLM's decode")]
    assert note.endswith("engine's own figures, measured on NVIDIA H100 80GB HBM3: 20.00 ms per step + 1.000 ms "
                         "per sequence")
    hours = {name: p.arms["rft"].time.seconds for name, p in
             (("derived", derived), ("fallback", fallback), ("engine", engine))}
    assert hours["derived"]["rollout"] < hours["fallback"]["rollout"]
    assert hours["engine"]["rollout"] != hours["fallback"]["rollout"]
    assert hours["engine"]["grpo_step"] == pytest.approx(hours["derived"]["grpo_step"])
    hf = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=hf"], check_data=False)
    assert not [n for n in plan(hf, 24.0, arm="rft").notes if n.startswith("vLLM's decode")]


def test_the_engines_decode_fit_takes_the_one_token_call_out_and_fits_as_transformers(monkeypatch):
    """On a GPU: calls at the widths the plan gives the engine (an eighth, a quarter, half and all
    of rollout.max_num_seqs) at 128 and at 1 token each (after a warm-up), the difference over 127
    decode steps, fitted a + b·n; a recipe on transformers, or a machine without vLLM, measures no
    engine."""
    import importlib.util

    import torch

    import lite_cpt.bench.calibrate as calibrate

    class Engine:
        def __init__(self):
            self.calls = []

        def timed_decode(self, model, processor, prompts, sequences, steps):
            self.calls.append((sequences, steps))
            warm = 0.0 if self.calls.count((sequences, steps)) > 1 else 5.0  # a slow first call
            return warm + 0.3 + 0.002 * sequences + (steps - 1) * (0.01 + 0.0005 * sequences)

    assert calibrate.engine_decode_widths(256) == (32, 64, 128, 256)
    assert calibrate.engine_decode_widths(64) == (8, 16, 32, 64) and calibrate.engine_decode_widths(2) == (1, 2)
    hf = recipe_from_dict({"name": "hf", "model": {"name": "tiny"}, "tasks": [{"name": "a", "type": "mini_gqa"}],
                           "arms": [{"name": "rft"}]})
    vllm = recipe_from_dict({**hf.model_dump(), "rollout": {"backend": "vllm", "max_num_seqs": 128}})
    monkeypatch.setattr(calibrate, "model_device", lambda model: torch.device("cuda"))
    engine = Engine()
    figures = calibrate.engine_figures(vllm, torch.nn.Linear(1, 1), None, [], None, engine=engine)
    assert (figures["engine_decode_step_s"], figures["engine_decode_s_per_sequence"]) == pytest.approx((0.01, 0.0005))
    assert figures["engine_decode_measured"] == {"steps": 128, "step_s": {
        "16": pytest.approx(0.018), "32": pytest.approx(0.026), "64": pytest.approx(0.042),
        "128": pytest.approx(0.074)}}
    assert sorted(set(engine.calls)) == [(n, s) for n in (16, 32, 64, 128) for s in (1, 128)]
    assert all(engine.calls.count(call) == 1 + calibrate.REPEATS for call in set(engine.calls))
    assert calibrate.rollout_engine_of(hf, None, None) is None
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    assert calibrate.rollout_engine_of(vllm, None, None) is None
    assert calibrate.engine_figures(vllm, torch.nn.Linear(1, 1), None, [], None) == {}


def test_offloading_the_trainer_costs_two_copies_per_engine_call_by_hand():
    """rollout.offload_trainer: before each engine call the trainer's state (frozen base, adapter,
    optimizer moments in a GRPO phase) goes to host memory and comes back after, at the
    calibration's host_copy_gb_per_s each way: one call per rollout batch (20 prompts at 8 per
    step: 3 updates) and one per evaluation set (2 tasks + 1 benchmark); nothing else changes."""
    from lite_cpt.planner.bytes import engine_resident_bytes, generation_resident_bytes, offload_bytes

    knobs = Knobs(4, 1024, 2)
    kept, kept_cal, kept_counts = _arm("vllm")
    work, cal, counts = _arm("vllm", offload=True)
    assert work.offload_trainer and not kept.offload_trainer
    rollout_bytes = sum(v for k, v in generation_resident_bytes(work, "rollout").items() if k != "vision_cache")
    assert offload_bytes(work, "rollout") == rollout_bytes > offload_bytes(work, "evaluation") > 0
    assert offload_bytes(kept, "rollout") == 0
    assert set(engine_resident_bytes(work, "rollout")) <= {"vision_cache"}
    assert engine_resident_bytes(kept, "rollout") == generation_resident_bytes(kept, "rollout")
    rate = cal.host_copy_gb_per_s * 1e9
    moved, stayed = arm_time(work, knobs, cal, counts).seconds, arm_time(kept, knobs, kept_cal, kept_counts).seconds
    assert moved["rollout"] - stayed["rollout"] == pytest.approx(3 * 2 * rollout_bytes / rate)
    assert evaluation_seconds(work, cal, counts) - evaluation_seconds(kept, kept_cal, kept_counts) == pytest.approx(
        3 * 2 * offload_bytes(work, "evaluation") / rate)
    for phase in ("logprob_pass", "grpo_step"):
        assert moved[phase] == stayed[phase]
    assert arm_time(*_arm("hf", offload=True)[:1], knobs, *_arm("hf", offload=True)[1:]).seconds == arm_time(
        *_arm("hf")[:1], knobs, *_arm("hf")[1:]).seconds  # transformers generates with the trainer's own model
