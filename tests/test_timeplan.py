"""The time plan: each phase's seconds against a hand computation, calibration files, and the
prediction for the shipped seven-task recipe."""

import dataclasses
import math
import json
from pathlib import Path

import pytest

from lite_cpt.errors import UserError
from lite_cpt.planner import Knobs, plan, resolve_shape, total_parameters, workload_of
from lite_cpt.planner.calibration import REFERENCE_24GB, Calibration, load_calibration
from lite_cpt.planner.timeplan import (
    ArmTime,
    arm_time,
    counts_of,
    generation_seconds,
    predicted_phases,
    predicted_record,
    prompt_tokens,
)
from lite_cpt.recipe import load_recipe, recipe_from_dict

CAL = Calibration(device="test", model="tiny", parameters=0, decode_step_s=0.1, decode_s_per_sequence=0.01,
                  prefill_tokens_per_s=100.0, train_tokens_per_s=50.0, optimizer_step_s=0.5, source="test")

RECIPE = {
    "name": "timed",
    "model": {"name": "tiny"},
    "tasks": [{"name": "a", "type": "mini_scienceqa", "train_size": 12, "test_size": 5, "epochs": 1,
               "max_answer_tokens": 6},
              {"name": "b", "type": "mini_gqa", "train_size": 8, "test_size": 3, "epochs": 2, "max_answer_tokens": 6}],
    "arms": [{"name": "sft", "batch_size": 4},
             {"name": "rft", "rft": {"group_size": 4, "prompts_per_step": 8, "max_new_tokens": 10, "kl": True}},
             {"name": "multitask_sft", "batch_size": 4}],
    "evaluation": {"generation": {"max_new_tokens": 7, "batch_size": 4},
                   "general": [{"name": "pope", "type": "mini_pope", "size": 2}]},
}


def _setup(arm_name: str, *, lengths: bool = False):
    """The arm's workload, calibration and counts; by default every answer runs to the cap and
    each pass holds a row per answer (the by-hand formulas of the tests below), `lengths`: the
    expected answer lengths and shared-prefix passes a plan uses."""
    recipe = recipe_from_dict(RECIPE)
    arm = next(a for a in recipe.arms if a.name == arm_name)
    work = workload_of(recipe, arm)
    counts = counts_of(recipe, arm)
    return work, dataclasses.replace(CAL, parameters=_params(work)), counts if lengths else _at_cap(counts)


def _params(work) -> int:
    from lite_cpt.planner import total_parameters

    return total_parameters(work.shape)


def test_generation_seconds_by_hand():
    # 10 sequences in calls of 4, 4, 2; 50-token prompts, 10 decode steps per call.
    seconds = generation_seconds(CAL, sequences=10, per_call=4, prompt=50, new_tokens=10)
    by_hand = 2 * (4 * 50 / 100 + 10 * (0.1 + 4 * 0.01)) + (2 * 50 / 100 + 10 * (0.1 + 2 * 0.01))
    assert seconds == pytest.approx(by_hand) and seconds == pytest.approx(9.0)
    assert generation_seconds(CAL, sequences=0, per_call=4, prompt=50, new_tokens=10) == 0.0


def test_rft_arm_phases_by_hand():
    work, cal, counts = _setup("rft")
    p = prompt_tokens(work)
    knobs = Knobs(4, 1024, 2)  # two prompts (8 sequences) per generate call
    time = arm_time(work, knobs, cal, counts)
    # updates: ceil(12 / 8) + ceil(16 / 8) = 4, so 32 prompts, 128 sequences, in 16 calls of 8;
    # each call prefills its 2 prompts once (their 4 samples share the prefill).
    rollout = 16 * (2 * p / 100 + 10 * (0.1 + 8 * 0.01))
    tokens = 128 * (p + 10)
    evaluation = 2 * (2 * (4 * p / 100 + 7 * (0.1 + 4 * 0.01)) + (2 * p / 100 + 7 * (0.1 + 2 * 0.01)))  # 10 prompts
    assert time.seconds["rollout"] == pytest.approx(rollout)
    assert time.seconds["logprob_pass"] == pytest.approx(tokens / 100)  # the KL reference pass only
    assert time.seconds["grpo_step"] == pytest.approx(tokens / 50 + 4 * 0.5)
    assert time.seconds["evaluation"] == pytest.approx(evaluation)
    assert time.hours == pytest.approx((rollout + tokens / 100 + tokens / 50 + 2 + evaluation) / 3600)


def test_fixed_pass_costs_count_once_per_pass_by_hand():
    """With a fixed cost per forward pass: one per generate call, per log-prob micro-batch and
    pass, per training micro-batch (a fixed count, or a token budget's)."""
    work, cal, counts = _setup("rft")
    cal = dataclasses.replace(cal, prefill_pass_s=0.2, train_pass_s=0.3)
    p = prompt_tokens(work)
    tokens = 128 * (p + 10)
    time = arm_time(work, Knobs(4, 1024, 2), cal, counts)
    # 4 updates of 32 rollouts in micro-batches of 4: 32 micro-batches; 16 generate calls.
    assert time.seconds["rollout"] == pytest.approx(16 * (0.2 + 2 * p / 100 + 10 * (0.1 + 8 * 0.01)))
    assert time.seconds["logprob_pass"] == pytest.approx(tokens / 100 + 32 * 0.2)
    assert time.seconds["grpo_step"] == pytest.approx(tokens / 50 + 32 * 0.3 + 4 * 0.5)
    budget = Knobs(4, 1024, 2, micro_batch_tokens=int(16 * (p + 10)))  # 16 rollouts per micro-batch
    packed = arm_time(work, budget, cal, counts)
    assert packed.seconds["grpo_step"] == pytest.approx(tokens / 50 + 8 * 0.3 + 4 * 0.5)
    work, cal, counts = _setup("sft")
    cal = dataclasses.replace(cal, train_pass_s=0.3)
    sft = arm_time(work, Knobs(2, 1024, 1), cal, counts)
    # 7 steps of 4 rows in micro-batches of 2: 14 training passes.
    assert sft.seconds["sft_step"] == pytest.approx(28 * (prompt_tokens(work) + 6) / 50 + 14 * 0.3 + 7 * 0.5)


def test_measured_rollout_and_logprob_rates_apply_only_at_their_settings():
    """Seconds per rollout (and per rollout and pass) measured by the run's own phases replace the
    generation and prefill model for arms of the same model, G, length and call size only."""
    work, cal, counts = _setup("rft")
    rates = dataclasses.replace(cal, rollout_s_per_sequence=0.05, logprob_s_per_sequence=0.02,
                                rl_measured_at=[4, 10, 2])
    modelled = arm_time(work, Knobs(4, 1024, 2), cal, counts)
    measured = arm_time(work, Knobs(4, 1024, 2), rates, counts)
    assert measured.seconds["rollout"] == pytest.approx(128 * 0.05)  # 128 rollouts
    assert measured.seconds["logprob_pass"] == pytest.approx(128 * 1 * 0.02)  # one pass: the KL reference
    assert measured.seconds["grpo_step"] == pytest.approx(modelled.seconds["grpo_step"])
    other_call = arm_time(work, Knobs(4, 1024, 1), rates, counts)  # one prompt per generate call
    assert other_call.seconds["rollout"] == pytest.approx(arm_time(work, Knobs(4, 1024, 1), cal, counts).seconds["rollout"])
    elsewhere = dataclasses.replace(rates, model="another model")
    assert arm_time(work, Knobs(4, 1024, 2), elsewhere, counts).seconds["logprob_pass"] != pytest.approx(128 * 0.02)


def _rl_arm(name: str, **rft_and_rif):
    """The rft arm of RECIPE, named `name`, with `rft_and_rif`'s keys changed."""
    recipe_raw = json.loads(json.dumps(RECIPE))
    arm = {"name": name, "rft": {"group_size": 4, "prompts_per_step": 8, "max_new_tokens": 10, "kl": True,
                                 **rft_and_rif.pop("rft", {})}, **rft_and_rif}
    recipe_raw["arms"] = [arm]
    recipe = recipe_from_dict(recipe_raw)
    work = workload_of(recipe, recipe.arms[0])
    return recipe, work, dataclasses.replace(CAL, parameters=_params(work)), _at_cap(counts_of(recipe, recipe.arms[0]))


def _at_cap(counts):
    """Every answer at the cap and a row per answer in each pass: the by-hand formulas."""
    return dataclasses.replace(counts, shared_prefix=False,
                               tasks=tuple(dataclasses.replace(t, answers=None) for t in counts.tasks))


def test_rl_options_by_hand():
    """Offline RIF adds K rollouts per training row once per task; online RIF none; the ReMax
    baseline one greedy answer per prompt; a second PPO epoch a log-prob pass and a second
    update pass."""
    knobs = Knobs(4, 1024, 2)  # two prompts per generate call
    _, work, cal, counts = _rl_arm("rif_rft", rif={"rollouts": 4, "mode": "offline"})
    p = prompt_tokens(work)
    # 12 + 8 rows x K = 4: 80 sequences in calls of 2 prompts (8 sequences): 10 calls.
    assert arm_time(work, knobs, cal, counts).seconds["rif_rollout"] == pytest.approx(10 * (2 * p / 100 + 10 * 0.18))
    _, work, cal, counts = _rl_arm("rif_rft", rif={"rollouts": 4, "mode": "online"})
    assert arm_time(work, knobs, cal, counts).seconds.get("rif_rollout", 0.0) == 0.0
    # compute-matched (P = 8, G = 4): task a, 12 rows: (2 · 32 − 12 · 4) // 32 = 0 updates; task b, 8 rows, 2
    # epochs: (2 · 32 − 8 · 4) // 32 = 1 update, against 2 each when filtered (counted before filtering)
    _, work, cal, counts = _rl_arm("rif_rft", rif={"rollouts": 4, "budget": "compute"})
    filtered = arm_time(work, knobs, cal, _rl_arm("rif_rft", rif={"rollouts": 4})[3]).seconds
    matched = arm_time(work, knobs, cal, counts).seconds
    assert matched["rif_rollout"] == filtered["rif_rollout"]
    assert matched["rollout"] < filtered["rollout"] and matched["grpo_step"] < filtered["grpo_step"]

    _, work, cal, counts = _rl_arm("rft")
    plain = arm_time(work, knobs, cal, counts).seconds
    _, work, cal, counts = _rl_arm("rft", rft={"advantage": "remax"})
    # 32 prompts, one greedy answer each, in calls of 8 prompts: 4 calls.
    greedy = 4 * (8 * p / 100 + 10 * (0.1 + 8 * 0.01))
    assert arm_time(work, knobs, cal, counts).seconds["rollout"] == pytest.approx(plain["rollout"] + greedy)

    _, work, cal, counts = _rl_arm("rft", rft={"inner_epochs": 2})
    twice = arm_time(work, knobs, cal, counts).seconds
    tokens = 128 * (p + 10)
    # the reference only: one mini-batch, whose old log-probs are its first epoch's update forward
    assert twice["logprob_pass"] == pytest.approx(tokens / 100)
    assert twice["grpo_step"] == pytest.approx(2 * (tokens / 50 + 4 * 0.5))
    rates = dataclasses.replace(cal, rollout_s_per_sequence=0.05, logprob_s_per_sequence=0.02, rl_measured_at=[4, 10, 2])
    assert arm_time(work, knobs, rates, counts).seconds["logprob_pass"] == pytest.approx(128 * 1 * 0.02)
    _, work, cal, counts = _rl_arm("rft", rft={"inner_epochs": 2, "kl": False})
    assert arm_time(work, knobs, cal, counts).seconds["logprob_pass"] == 0.0  # no pass at all
    # two optimizer steps per rollout batch: the old policy's pass over the second mini-batch (the
    # first reuses its update forward), one pass over the rows to train, twice the optimizer steps
    _, work, cal, counts = _rl_arm("rft", rft={"mini_batches_per_rollout": 2})
    split = arm_time(work, knobs, cal, counts).seconds
    assert split["logprob_pass"] == pytest.approx(1.5 * tokens / 100)
    assert split["grpo_step"] == pytest.approx(plain["grpo_step"] + 4 * 0.5)


def test_a_run_logs_each_tasks_predicted_phases_and_their_training_total():
    recipe, _, cal, _ = _rl_arm("rft")
    knobs = Knobs(4, 1024, 2)
    predictions = predicted_phases(recipe, recipe.arms[0], knobs, cal)
    assert [p["task"] for p in predictions] == ["a", "b"]
    first = predictions[0]
    assert set(first) == {"task", "rollout", "logprob_pass", "grpo_step", "evaluation"}
    record = predicted_record(first)
    assert record == {k: round(first[k], 6) for k in ("rollout", "logprob_pass", "grpo_step", "evaluation")} | {
        "train": round(first["rollout"] + first["logprob_pass"] + first["grpo_step"], 6)}
    # The default calibration is the reference card's.
    assert predicted_phases(recipe, recipe.arms[0], knobs) == predicted_phases(recipe, recipe.arms[0], knobs,
                                                                                REFERENCE_24GB)


def test_an_sft_arm_reads_its_prompt_length_from_a_calibration_of_its_model():
    work, cal, counts = _setup("sft")
    measured = dataclasses.replace(cal, prompt_tokens=33.0)
    assert prompt_tokens(work, measured) == min(work.prompt_tokens, 33.0) != prompt_tokens(work)
    time = arm_time(work, Knobs(4, 1024, 1), measured, counts)
    assert time.seconds["sft_step"] == pytest.approx(28 * (prompt_tokens(work, measured) + 6) / 50 + 7 * 0.5)
    other = dataclasses.replace(measured, model="another model")
    assert prompt_tokens(work, other) == prompt_tokens(work)


def test_sft_and_joint_arms_by_hand():
    work, cal, counts = _setup("sft")
    p = prompt_tokens(work)
    time = arm_time(work, Knobs(4, 1024, 1), cal, counts)
    # 12 + 16 = 28 rows visited, ceil(12/4) + ceil(16/4) = 7 optimizer steps.
    assert time.seconds["sft_step"] == pytest.approx(28 * (p + 6) / 50 + 7 * 0.5)
    work, cal, counts = _setup("multitask_sft")
    joint = arm_time(work, Knobs(4, 1024, 1), cal, counts)
    # one phase over 20 rows at the largest epoch count (2): 40 visits, 10 steps; one evaluation
    assert joint.seconds["sft_step"] == pytest.approx(40 * (p + 6) / 50 + 10 * 0.5)
    assert joint.seconds["evaluation"] == pytest.approx(time.seconds["evaluation"] / 2)


def test_unstated_split_sizes_give_no_prediction_and_say_why():
    raw = json.loads(json.dumps(RECIPE))
    raw["tasks"][0]["train_size"] = None
    result = plan(recipe_from_dict(raw), 24)
    assert result.arms["rft"].time.hours is None
    assert "train_size" in result.arms["rft"].time.unknown
    rft = result.to_json()["time"]["arms"]["rft"]
    assert rft["hours"] is None and rft["unknown"] == result.arms["rft"].time.unknown
    # As `plan --json` prints an arm: hours to 3 places, each phase's to 4 (1,234.5 s = 0.34292 h).
    assert ArmTime("sft", {"sft_step": 1234.5}, None).to_json() == {
        "hours": 0.343, "phases_hours": {"sft_step": 0.3429}, "unknown": None}


def test_calibration_scales_with_model_size_and_loads_from_bench_json(tmp_path):
    half = REFERENCE_24GB.scaled_to(REFERENCE_24GB.parameters // 2)
    assert half.train_tokens_per_s == pytest.approx(2 * REFERENCE_24GB.train_tokens_per_s)
    assert half.decode_step_s == pytest.approx(REFERENCE_24GB.decode_step_s / 2)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"device": "x", "calibration": CAL.to_json()}))
    assert load_calibration(path) == CAL
    path.write_text(json.dumps({"gpu": "x"}))
    with pytest.raises(UserError, match="missing device, model, parameters"):
        load_calibration(path)
    with pytest.raises(UserError, match="lite-cpt bench gpu --json"):
        load_calibration(tmp_path / "absent.json")


def test_faster_card_means_proportionally_less_time(tmp_path, capsys):
    from lite_cpt.cli import plan_recipe_file

    # a card's figures for the recipe's own model (a calibration of another model is refused)
    params = total_parameters(resolve_shape(recipe_from_dict(RECIPE).model))
    slow_cal = dataclasses.replace(REFERENCE_24GB, device="a GPU", model="tiny", parameters=params)
    slow = plan(recipe_from_dict(RECIPE), 24, calibration=slow_cal)
    fast_cal = dataclasses.replace(slow_cal, decode_step_s=REFERENCE_24GB.decode_step_s / 2,
                                   decode_s_per_sequence=REFERENCE_24GB.decode_s_per_sequence / 2,
                                   prefill_tokens_per_s=REFERENCE_24GB.prefill_tokens_per_s * 2,
                                   train_tokens_per_s=REFERENCE_24GB.train_tokens_per_s * 2,
                                   optimizer_step_s=REFERENCE_24GB.optimizer_step_s / 2)
    fast = plan(recipe_from_dict(RECIPE), 24, calibration=fast_cal)
    for arm in ("sft", "rft"):
        assert fast.arms[arm].time.hours == pytest.approx(slow.arms[arm].time.hours / 2)
    recipe_path = tmp_path / "timed.yaml"
    recipe_path.write_text(json.dumps(RECIPE))
    cal_path = tmp_path / "cal.json"
    cal_path.write_text(json.dumps({"calibration": fast_cal.to_json()}))
    assert plan_recipe_file(recipe_path, [], 24, True, cal_path) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["time"]["calibration"]["train_tokens_per_s"] == fast_cal.train_tokens_per_s
    assert data["time"]["arms"]["rft"]["hours"] == pytest.approx(fast.arms["rft"].time.hours, abs=1e-3)


def test_the_protocols_rft_arm_and_the_day_recipes_arms_fit_a_day_on_24_gb():
    day_recipe = load_recipe("recipes/seven_tasks_day.yaml", [], check_data=False)
    day = plan(day_recipe, 24).to_json()
    assert day["fits"]
    assert day["time"]["arms"]["rft"]["hours"] <= 24
    assert day["time"]["arms"]["sft"]["hours"] <= 24
    # the cuts leave chains of thought whole: at most a few percent of answers reach the cap
    rft = next(a for a in day_recipe.arms if a.name == "rft").rft
    assert rft.max_new_tokens >= 1024 and day_recipe.evaluation.generation.max_new_tokens >= 1024
    for task in load_recipe("recipes/seven_tasks_day.yaml", [], check_data=False).tasks:
        assert task.train_size >= 1000 and task.test_size >= 500
    # the paper's protocol, uncut: its rft and sft arms within a day on the reference card's
    # derived figures (vLLM with the trainer offloaded, shared prefixes), the day recipe faster
    faithful = plan(load_recipe("recipes/seven_tasks.yaml", [], check_data=False), 24).to_json()
    assert faithful["fits"]
    for arm in ("rft", "sft"):
        assert faithful["time"]["arms"][arm]["hours"] <= 24
        assert day["time"]["arms"][arm]["hours"] < faithful["time"]["arms"][arm]["hours"]


def test_bench_gpu_runs_end_to_end_on_cpu_and_feeds_the_plan(tmp_path, capsys):
    """`lite-cpt bench gpu` at a tiny shape: kernels, the step bench's note, a calibration measured
    with the run's functions, which `plan --calibration` then reads."""
    import torch

    from lite_cpt.cli import app
    from typer.testing import CliRunner

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe_path = tmp_path / "timed.yaml"
        recipe_path.write_text(json.dumps({**RECIPE, "model": {"name": "tiny", "lora": {"r": 4, "alpha": 8},
                                           "base_training": {"samples_per_task": 8, "epochs": 1, "batch_size": 8}}}))
        out = tmp_path / "gpu.json"
        result = CliRunner().invoke(app, ["bench", "gpu", "--json", str(out), "--recipe", str(recipe_path), "--tiny"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["kernels"]["results"]
    step = data["step"]  # the step bench at the tiny shape: every phase timed, no device peak on a CPU
    assert step["model"] == "tiny" and set(step["phases"]) == {"sft_step", "rollout", "logprob_pass", "grpo_step",
                                                                 "evaluation"}
    assert all(row["seconds"] > 0 and row["measured_gb"] is None for row in step["phases"].values())
    assert all(rate > 0 for rate in step["throughput"].values())
    layouts = step["shared_prefix_vs_expanded"]  # the same update on the same rollouts, both layouts
    assert layouts["shared_prefix"]["tokens"] < layouts["expanded"]["tokens"] and layouts["token_ratio"] > 1
    assert layouts["shared_prefix"]["seconds"] > 0 and layouts["expanded"]["seconds"] > 0
    assert layouts["memory_ratio"] is None  # a CPU has no device peak
    cal = load_calibration(out)
    assert cal.model == "tiny" and cal.prefill_tokens_per_s > 0 and cal.train_tokens_per_s > 0
    assert cal.logprob_path == data["kernels"]["logprob_path"] in ("tile", "chunked")  # the run takes it from here
    assert cal.decode_step_s > 0 and cal.decode_s_per_sequence >= 0
    assert cal.prefill_pass_s >= 0 and cal.train_pass_s >= 0
    # the run's rollout and log-prob phases at the rft arm's G, length and call size (all 8 prompts on a CPU)
    assert cal.rl_measured_at == [4, 10, 8] and cal.rollout_s_per_sequence > 0 and cal.logprob_s_per_sequence > 0
    assert 0 < cal.answer_tokens < cal.prompt_tokens  # the tiny data's own lengths
    work = workload_of(recipe_from_dict(RECIPE), recipe_from_dict(RECIPE).arms[0])
    assert prompt_tokens(work, cal) == min(work.prompt_tokens, cal.prompt_tokens) != prompt_tokens(work)
    planned = plan(recipe_from_dict(RECIPE), 24, calibration=cal)
    assert planned.arms["rft"].time.hours > 0


def test_evaluation_calls_last_as_long_as_their_longest_answer():
    """With CoT evaluation, RL arms (and the base row) reason up to max_new_tokens; an SFT adapter
    answers like its targets: the calibrated mean answer + end of turn, else SHORT_ANSWER_STEPS."""
    from lite_cpt.planner.timeplan import SHORT_ANSWER_STEPS, evaluation_seconds, evaluation_steps

    raw = json.loads(json.dumps(RECIPE))
    raw["evaluation"].update(prompt="cot", generation={"max_new_tokens": 96, "batch_size": 4})
    recipe = recipe_from_dict(raw)
    sft, rft = (next(a for a in recipe.arms if a.name == n) for n in ("sft", "rft"))
    cal = dataclasses.replace(CAL, model="elsewhere")  # not measured on this model: no data lengths
    sft_work, rft_work = workload_of(recipe, sft), workload_of(recipe, rft)
    assert evaluation_steps(rft_work, cal, counts_of(recipe, rft)) == 96
    assert evaluation_steps(sft_work, cal, counts_of(recipe, sft)) == SHORT_ANSWER_STEPS
    assert evaluation_steps(sft_work, cal, counts_of(recipe, sft), trained=False) == 96
    measured = dataclasses.replace(CAL, answer_tokens=3.2)
    assert evaluation_steps(sft_work, measured, counts_of(recipe, sft)) == 5  # ceil(3.2) + end of turn
    # The measured rates of the run's own SFT phase and evaluation replace the per-token model.
    rates = dataclasses.replace(CAL, sft_tokens_per_s=20.0, eval_prompts_per_s=4.0, parameters=_params(sft_work))
    time = arm_time(sft_work, Knobs(4, 1024, 1), rates, counts_of(recipe, sft))
    assert time.seconds["sft_step"] == pytest.approx(28 * (prompt_tokens(sft_work, rates) + 6) / 20.0)
    assert evaluation_seconds(sft_work, rates, counts_of(recipe, sft)) == pytest.approx(10 / 4.0)
    assert time.seconds["evaluation"] == pytest.approx(2 * 10 / 4.0)


def test_hours_budget_is_the_most_rows_per_task_that_fit():
    """`plan --hours H`: every task at N training rows fits H, at N + 1 it does not; a budget
    the evaluations alone exceed says so."""
    from lite_cpt.planner.budget import arm_hours, rows_for_hours, with_rows

    recipe = load_recipe("recipes/seven_tasks_day.yaml", [], check_data=False)
    for arm, hours in (("rft", 12), ("rft", 24), ("sft", 4)):
        budget = rows_for_hours(recipe, hours, arm, 24)
        rows = budget.train_rows_per_task
        assert arm_hours(with_rows(recipe, rows), arm, 24, None)[0] == pytest.approx(budget.predicted_hours)
        assert budget.predicted_hours <= hours < arm_hours(with_rows(recipe, rows + 1), arm, 24, None)[0]
        assert budget.override() == f"tasks.*.train_size={rows}"
    assert rows_for_hours(recipe, 24, "rft", 24).train_rows_per_task >= 1000  # the recipe's own sizes fit a day
    assert rows_for_hours(recipe, 12, "rft", 24).train_rows_per_task < 1000
    tight = rows_for_hours(recipe, 1, "rft", 24)
    assert tight.train_rows_per_task is None and tight.evaluation_hours > 1
    # What the budget reports beside N: the recipe's own hours and the evaluations' share.
    seconds = plan(recipe, 24, arm="rft").arms["rft"].time.seconds
    assert tight.recipe_hours == pytest.approx(sum(seconds.values()) / 3600)
    assert tight.evaluation_hours == pytest.approx(seconds["evaluation"] / 3600)
    assert tight.to_json() == {"arm": "rft", "hours": 1, "train_rows_per_task": None, "predicted_hours": None,
                               "recipe_hours": tight.recipe_hours, "evaluation_hours": tight.evaluation_hours,
                               "override": None}
    unsized = recipe.model_copy(update={"tasks": [recipe.tasks[0].model_copy(update={"train_size": None})]})
    with pytest.raises(UserError, match=r"^--hours needs every task's train_size \(a task has null: all rows, "
                                        r"whose count the plan does not know\)$"):
        rows_for_hours(unsized, 12, "rft", 24)


def test_plan_hours_on_the_command_line(capsys):
    from lite_cpt.cli import plan_recipe_file

    assert plan_recipe_file(Path("recipes/seven_tasks_day.yaml"), [], 24, True, hours=12, arms=["rft"]) == 0
    budget = json.loads(capsys.readouterr().out)["budget"]
    assert [b["arm"] for b in budget] == ["rft"] and budget[0]["predicted_hours"] <= 12
    with pytest.raises(UserError, match="unknown arm nope; allowed values: sft, rft"):
        plan_recipe_file(Path("recipes/seven_tasks_day.yaml"), [], 24, True, hours=12, arms=["nope"])


def test_plan_prints_the_hours_of_the_recipe_it_extends_beside_its_own(capsys):
    """`lite-cpt plan` of the day recipe gives the faithful recipe's hours on the same card too;
    a recipe that extends none gives only its own."""
    from lite_cpt.cli import plan_recipe_file

    plan_recipe_file(Path("recipes/seven_tasks_day.yaml"), [], 24, True)
    data = json.loads(capsys.readouterr().out)
    faithful = plan(load_recipe("recipes/seven_tasks.yaml", [], check_data=False), 24).time_json()
    assert data["extends"]["recipe"].endswith("recipes/seven_tasks.yaml")
    assert data["extends"]["time"]["arms"]["rft"]["hours"] == faithful["arms"]["rft"]["hours"]
    assert data["time"]["arms"]["rft"]["hours"] < faithful["arms"]["rft"]["hours"]
    plan_recipe_file(Path("recipes/seven_tasks_day.yaml"), [], 24, False)
    shown = capsys.readouterr().out
    assert "beside the recipe it extends" in shown and f"{faithful['arms']['rft']['hours']:.1f}" in shown
    plan_recipe_file(Path("recipes/seven_tasks.yaml"), [], 24, True)
    assert "extends" not in json.loads(capsys.readouterr().out)


def test_bench_gpu_calibrates_the_recipes_model_only_when_it_is_here(tmp_path):
    """The tiny model and a local checkpoint are calibrated themselves; a hub id (no download on
    a borrowed GPU) is calibrated through the step bench's random weights of its architecture."""
    from lite_cpt.bench.gpu import loadable_here

    def recipe_of(name):
        return recipe_from_dict({**RECIPE, "model": {"name": name}})

    assert loadable_here(recipe_of("tiny"))
    (tmp_path / "config.json").write_text("{}")
    assert loadable_here(recipe_of(str(tmp_path)))
    assert not loadable_here(recipe_of("Qwen/Qwen2.5-VL-7B-Instruct"))


def test_answer_length_distribution_against_sampling():
    """The log-normal's capped mean, expected longest of n and cut fraction agree with a large
    sample drawn from the same distribution."""
    import numpy as np

    from lite_cpt.planner.lengths import AnswerLengths

    lengths = AnswerLengths(200.0, 0.8, "test")
    sigma = np.sqrt(np.log1p(0.8**2))
    rng = np.random.default_rng(0)
    draws = rng.lognormal(np.log(200.0) - sigma**2 / 2, sigma, size=(20000, 16))
    capped = np.minimum(draws, 512)
    assert lengths.mean_capped(10**6) == pytest.approx(200.0, rel=1e-3)
    assert lengths.mean_capped(512) == pytest.approx(capped.mean(), rel=0.02)
    assert lengths.expected_longest(16, 512) == pytest.approx(capped.max(axis=1).mean(), rel=0.02)
    assert lengths.expected_longest(1, 512) == pytest.approx(lengths.mean_capped(512))
    assert lengths.truncated_fraction(512) == pytest.approx((draws > 512).mean(), abs=0.005)
    assert lengths.mean_capped(512) < lengths.expected_longest(16, 512) < 512


def test_rl_phases_with_answer_lengths_and_shared_prefixes_by_hand():
    """Expected answer lengths instead of the cap: a static call decodes its expected longest
    answer, scoring and training count each group's prompt once and its answers at their capped
    mean; a continuous-batching backend decodes the mean per slot plus one drain of the tail."""
    import math

    from lite_cpt.planner.lengths import AnswerLengths
    from lite_cpt.planner.timeplan import rl_seconds

    work, cal, counts = _setup("rft", lengths=True)
    answers = AnswerLengths(4.0, 0.5, "test")
    task = dataclasses.replace(counts.tasks[0], answers=answers)  # 12 rows, 1 epoch: 2 updates of 8 prompts
    knobs = Knobs(4, 1024, 2)  # 2 prompts (8 answers) per generate call
    p, g, cap = prompt_tokens(work), 4, 10
    mean, longest = answers.mean_capped(cap), answers.expected_longest(8, cap)
    seconds = rl_seconds(work, knobs, cal, counts, task)
    assert seconds["rollout"] == pytest.approx(8 * (2 * p / 100 + longest * (0.1 + 8 * 0.01)))
    tokens = 16 * (p + g * mean)  # 16 prompts, each once, with its 4 answers
    micro = 2 * math.ceil(8 / 4)  # micro_batch_size 4 rows of the 8 packed rows per update
    assert seconds["logprob_pass"] == pytest.approx(tokens / 100)
    assert seconds["grpo_step"] == pytest.approx(tokens / 50 + 2 * 0.5)
    expanded = rl_seconds(work, knobs, cal, dataclasses.replace(counts, shared_prefix=False), task)
    assert expanded["logprob_pass"] == pytest.approx(16 * g * (p + mean) / 100)
    # continuous: the 64 answers of the task in one call of CONTINUOUS_SLOTS (64) slots
    continuous = rl_seconds(work, knobs, cal, dataclasses.replace(counts, continuous=True), task)
    drain = (answers.expected_longest(64, cap) - mean) * (0.1 + 64 * 0.01)
    assert continuous["rollout"] == pytest.approx(16 * p / 100 + mean * (0.1 + 64 * 0.01) + drain)
    assert micro == 4


def test_a_calibration_of_another_model_size_or_a_cpu_or_impossible_rates_is_refused():
    from lite_cpt.planner.calibration import check_calibration

    seven = load_recipe("recipes/seven_tasks.yaml", [], check_data=False)
    tiny_cal = dataclasses.replace(CAL, device="cpu (2 threads)", parameters=288_992)
    with pytest.raises(UserError, match="0.00 B parameters.*8.29 B.*bench gpu --recipe"):
        plan(seven, 24, calibration=tiny_cal)
    cpu_7b = dataclasses.replace(REFERENCE_24GB, device="cpu (16 threads)")
    with pytest.raises(UserError, match="measured on a CPU"):
        plan(seven, 24, calibration=cpu_7b)
    impossible = dataclasses.replace(REFERENCE_24GB, device="NVIDIA X", train_tokens_per_s=9000.0)
    assert any("physically impossible" in note for note in plan(seven, 24, calibration=impossible).notes)
    # the tiny model's CPU calibration plans the tiny testbed; the reference card scales, with a note
    assert check_calibration(tiny_cal, "tiny", 288_992) == []
    assert "scaled by parameter count" in check_calibration(REFERENCE_24GB, "Qwen/Qwen2.5-VL-3B-Instruct", 3_754_622_976)[0]


def test_the_plan_states_its_answer_length_assumptions(capsys):
    from lite_cpt.cli import plan_recipe_file

    assert plan_recipe_file(Path("recipes/seven_tasks_day.yaml"), [], 24, False, None) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "answer lengths (rft, cap" in out and "shared-prefix scoring passes" in out
    assert "geometry3k: mean 400 tokens (cv 0.80)" in out and "% cut at" in out


def test_a_calibrations_answer_lengths_are_the_plans_for_its_model():
    from lite_cpt.planner.lengths import measured_lengths
    from lite_cpt.planner.timeplan import task_answer_lengths

    fit = measured_lengths([10, 20, 30], "calibration")
    assert fit.mean == pytest.approx(20.0) and fit.cv == pytest.approx(10.0 / 20.0)
    recipe = recipe_from_dict(RECIPE)
    cal = dataclasses.replace(CAL, answer_lengths={"a": [20.0, 0.5]})
    assert task_answer_lengths(recipe.tasks[0], cal, "tiny").mean == 20.0
    assert task_answer_lengths(recipe.tasks[1], cal, "tiny") is None  # no figure, a synthetic type: at the cap
    assert task_answer_lengths(recipe.tasks[0], cal, "another") is None


def test_a_tasks_prompt_holds_a_typical_image_of_its_dataset_under_the_pixel_budget():
    """The time plan expects a typical image, clipped to [min_pixels, max_pixels] (the memory
    plan keeps max_pixels): CLEVR's 480x320 is raised to EasyR1's 262,144-pixel floor (334 image
    tokens at 784 pixels a token), TextVQA's 1024x768 kept (1,003), both + the prompt text."""
    from lite_cpt.planner.timeplan import PROMPT_TEXT_TOKENS, task_prompt_tokens

    recipe = load_recipe("recipes/seven_tasks.yaml", [], check_data=False)
    tasks = {t.name: t for t in recipe.tasks}
    assert task_prompt_tokens(recipe, tasks["clevr"], None) == pytest.approx(262144 / 784 + PROMPT_TEXT_TOKENS)
    assert task_prompt_tokens(recipe, tasks["textvqa"], None) == pytest.approx(1024 * 768 / 784 + PROMPT_TEXT_TOKENS)
    day = load_recipe("recipes/seven_tasks_day.yaml", [], check_data=False)
    assert task_prompt_tokens(day, tasks["textvqa"], None) == pytest.approx(401408 / 784 + PROMPT_TEXT_TOKENS)
    measured = dataclasses.replace(REFERENCE_24GB, model=recipe.model.name, prompt_tokens=500.0)
    assert task_prompt_tokens(recipe, tasks["clevr"], measured) is None  # the data's measured prompts win


def test_a_vllm_rollout_backend_plans_continuous_batching():
    """The recipe's rollout backend sets the plan's decode model: HF calls wait for their longest
    answer, vLLM refills finished slots (at a share of the 24 GiB card whose KV cache holds some:
    the default 0.3 does not hold the weights, test_planner_engine.py)."""
    hf = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=hf"], check_data=False)
    vllm = load_recipe("recipes/seven_tasks.yaml", ["rollout.backend=vllm", "rollout.gpu_memory_utilization=0.49"],
                       check_data=False)
    rft = next(a for a in hf.arms if a.method == "rft")
    assert counts_of(hf, rft).continuous is False
    assert counts_of(vllm, rft).continuous is True
    static, refill = (plan(r, 24).arms[rft.name].time.hours for r in (hf, vllm))
    assert refill < static


def test_the_decode_fit_is_least_squares_over_the_devices_widths(monkeypatch):
    """On a GPU the decode fit measures calls of 16, 32 and 64 sequences over 128 steps (the
    planner's widths) and fits a + b·n by least squares; two points give the line through them."""
    import torch

    import lite_cpt.bench.calibrate as calibrate

    assert calibrate.fit_line({2: 0.12, 16: 0.26}) == pytest.approx((0.1, 0.01))
    # by hand: mean n 37.33, mean s 0.094, Sxy 1.12, Sxx 1194.67: b = 9.375e-4, a = 0.094 - 0.035 = 0.059
    a, b = calibrate.fit_line({16: 0.072, 32: 0.092, 64: 0.118})
    assert (a, b) == pytest.approx((0.059, 0.0009375), rel=1e-6)
    assert calibrate.fit_line({16: 0.2, 32: 0.1}) == pytest.approx((0.15, 0.0))  # never a negative cost
    calls = []
    monkeypatch.setattr(calibrate, "decode_step_seconds", lambda model, processor, batch, n, steps, prefill:
                        calls.append((n, steps)) or 0.05 + 0.001 * n)
    gpu = torch.nn.Linear(1, 1)
    monkeypatch.setattr(calibrate, "model_device", lambda model: torch.device("cuda"))
    fixed, per_sequence, measured = calibrate.decode_costs(gpu, None, [], None)
    assert calls == [(16, 128), (32, 128), (64, 128)]
    assert (fixed, per_sequence) == pytest.approx((0.05, 0.001))
    assert measured == {"steps": 128, "step_s": {"16": pytest.approx(0.066), "32": pytest.approx(0.082),
                                                  "64": pytest.approx(0.114)}}


def test_a_joint_phase_pools_its_tasks_answer_lengths_and_weights_their_prompts_by_rows():
    """The joint phase mixes every task's rows: it decodes their pooled answer lengths (not the
    cap) and its prompt is the row-weighted mean of theirs."""
    from lite_cpt.planner.lengths import AnswerLengths
    from lite_cpt.planner.timeplan import Counts, TaskCounts, training_phases

    short, long = AnswerLengths(10.0, 0.5, "test"), AnswerLengths(30.0, 0.8, "test")
    tasks = (TaskCounts("a", 100, 1.0, 10, short, 200.0), TaskCounts("b", 300, 3.0, 10, long, 400.0))
    counts = Counts(tasks=tasks, general_rows=0, joint=True, rif=False, kl=True, inner_epochs=1, remax=False,
                    eval_cot=True, mini_batches=1)
    (joint,) = training_phases(counts)
    assert (joint.train_rows, joint.epochs) == (400, 3.0)
    assert joint.answers == AnswerLengths(20.0, 0.8, "test")
    assert joint.prompt == pytest.approx((100 * 200 + 300 * 400) / 400)


def test_sft_targets_of_the_built_in_tasks_are_short_answers_not_the_cap():
    """SFT trains on a built-in task's gold answer (a letter, a word, a number): the time plan
    counts DEFAULT_TARGET_TOKENS per target, not max_answer_tokens; a task of unknown answers
    (synthetic, custom) stays at the cap, and a calibration's measured length wins."""
    from lite_cpt.planner.lengths import DEFAULT_TARGET_TOKENS
    from lite_cpt.planner.timeplan import answer_tokens, sft_seconds

    recipe = load_recipe("recipes/seven_tasks.yaml", [], check_data=False)
    arm = next(a for a in recipe.arms if a.name == "sft")
    work, counts = workload_of(recipe, arm), counts_of(recipe, arm)
    assert work.answer_tokens == 2048 and {t.target for t in counts.tasks} == {DEFAULT_TARGET_TOKENS}
    task = counts.tasks[0]  # scienceqa: 1000 rows, 3 epochs, batches of 8
    cal = dataclasses.replace(CAL, parameters=_params(work))
    knobs = Knobs(1, None, 1)
    length = task.prompt + DEFAULT_TARGET_TOKENS
    steps = math.ceil(1000 * 3 / 8)
    assert sft_seconds(work, knobs, cal, task)["sft_step"] == pytest.approx(
        3000 * length / 50 + steps * (8 * cal.train_pass_s + cal.optimizer_step_s))
    assert answer_tokens(work, cal, None) == 2048  # unknown answers: the cap
    measured = dataclasses.replace(cal, model=work.shape.name, answer_tokens=7.0)
    assert answer_tokens(work, measured, DEFAULT_TARGET_TOKENS) == 7.0
