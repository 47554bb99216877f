"""Estimates of a run over seeds and items: which interval each value gets, paired differences,
forgotten items, partial runs. Runs are written in the layout `lite-cpt run` produces."""

import json
from pathlib import Path

import numpy as np
import pytest

from lite_cpt.results.estimates import arm_estimates, metric_names, paired_difference
from lite_cpt.results.predictions import BASE_PREDICTIONS, row_predictions_path, write_predictions
from lite_cpt.results.report import write_report
from lite_cpt.results.runs import load_run
from lite_cpt.results.stats import paired_t_interval, t_interval

TASKS = ["a", "b"]


def write_unit(seed_dir: Path, arm: str, item_rows: list[dict[str, list[float]]], joint: bool = False) -> None:
    """One (seed, arm) unit from per-item scores: row 0 (base) is written once per seed."""
    arm_dir = seed_dir / arm
    arm_dir.mkdir(parents=True, exist_ok=True)
    for index, row in enumerate(item_rows):
        items = {name: [{"id": f"{name}/{i}", "answer": str(s), "score": s} for i, s in enumerate(scores)]
                 for name, scores in row.items()}
        write_predictions(seed_dir / BASE_PREDICTIONS if index == 0 else row_predictions_path(arm_dir, index), items)
    means = [[float(np.mean(row[name])) for name in row] for row in item_rows]
    matrix = {"tasks": TASKS, "R": [m[:2] for m in means], **({"joint": True} if joint else {})}
    (arm_dir / "matrix.json").write_text(json.dumps(matrix))
    (arm_dir / "general.json").write_text(json.dumps({"benchmarks": ["g"], "G": [m[2:] for m in means]}))


BASE = {"a": [0, 0, 0, 0], "b": [0, 0, 1, 1], "g": [1, 1, 1, 0]}
SFT = [BASE, {"a": [1, 1, 1, 0], "b": [0, 0, 1, 1], "g": [1, 1, 0, 0]},
       {"a": [1, 0, 0, 0], "b": [1, 1, 1, 1], "g": [1, 0, 0, 0]}]
RFT = [BASE, {"a": [1, 1, 0, 0], "b": [0, 0, 1, 1], "g": [1, 1, 1, 0]},
       {"a": [1, 1, 0, 0], "b": [1, 1, 1, 0], "g": [1, 1, 1, 0]}]


def make_seeded_run(tmp_path: Path, seeds=(0,)) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: run\nseeds: [" + ", ".join(map(str, seeds)) + "]\n"
                                     "arms:\n  - name: sft\n  - name: rft\n")
    return run


def test_one_seed_gets_a_bootstrap_over_items_and_a_paired_difference(tmp_path):
    run = make_seeded_run(tmp_path)
    write_unit(run / "seed_0", "sft", SFT)
    write_unit(run / "seed_0", "rft", RFT)
    result = load_run(run)
    metrics = metric_names(u for units in result.units.values() for u in units.values())
    assert metrics == ["ACC", "BWT", "forgetting", "FWT", "Δ g"]
    sft = arm_estimates(result.units["sft"], metrics)
    # BWT(sft) = R[2, a] - R[1, a] = 0.25 - 0.75; ACC = (0.25 + 1.0) / 2; Δ g = 0.25 - 0.75
    assert (sft["BWT"].value, sft["ACC"].value, sft["Δ g"].value) == pytest.approx((-0.5, 0.625, -0.5))
    assert all(e.method == "bootstrap over items" and e.low <= e.value <= e.high for e in sft.values())
    difference = paired_difference(result.units["rft"], result.units["sft"], "BWT")
    # BWT(rft) = 0.5 - 0.5 = 0; the difference 0 - (-0.5) = 0.5, paired over the same items
    assert difference.value == pytest.approx(0.5) and difference.method == "paired bootstrap over items"
    assert difference.low <= 0.5 <= difference.high


def test_several_seeds_get_t_intervals_and_paired_t_differences(tmp_path):
    run = make_seeded_run(tmp_path, seeds=(0, 1, 2))
    flip = {"a": [1, 1, 1, 1], "b": [0, 0, 1, 1], "g": [1, 1, 0, 0]}
    for seed, middle in zip((0, 1, 2), (SFT[1], flip, SFT[1])):
        write_unit(run / f"seed_{seed}", "sft", [BASE, middle, SFT[2]])
        write_unit(run / f"seed_{seed}", "rft", RFT)
    result = load_run(run)
    sft = arm_estimates(result.units["sft"], ["BWT"])["BWT"]
    # per-seed BWT: -0.5, -0.75, -0.5 (task a: 0.25 at the end, 0.75 / 1.0 / 0.75 after training it)
    assert sft.per_seed == pytest.approx({0: -0.5, 1: -0.75, 2: -0.5})
    expected = t_interval([-0.5, -0.75, -0.5])
    assert (sft.value, sft.low, sft.high) == pytest.approx((expected.value, expected.low, expected.high))
    assert sft.method == "t, 3 seeds"
    difference = paired_difference(result.units["rft"], result.units["sft"], "BWT")
    paired = paired_t_interval([0.0, 0.0, 0.0], [-0.5, -0.75, -0.5])
    assert (difference.value, difference.low, difference.high) == pytest.approx((paired.value, paired.low,
                                                                                 paired.high))
    assert difference.method == "paired t, 3 seeds" and difference.excludes_zero


def test_report_of_a_partial_multi_seed_run(tmp_path):
    run = make_seeded_run(tmp_path, seeds=(0, 1, 2))
    for seed in (0, 1):
        write_unit(run / f"seed_{seed}", "sft", SFT)
        write_unit(run / f"seed_{seed}", "rft", RFT)
    write_unit(run / "seed_2", "sft", SFT[:2])  # seed 2 of sft stopped after task 1; rft not started
    text = write_report(run).read_text()
    assert "Not finished yet (left out of the intervals): sft seed 2 (1/2 tasks); rft seed 2 (not started)." in text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["arms"]["sft"]["seeds_finished"] == [0, 1]
    assert summary["arms"]["sft"]["metrics"]["BWT"]["interval"] == "t, 2 seeds"
    # two identical seeds: no spread, the interval is the point
    assert summary["arms"]["sft"]["metrics"]["BWT"]["ci95"] == pytest.approx([-0.5, -0.5])
    rft_vs_sft = summary["differences"][0]
    assert (rft_vs_sft["arm"], rft_vs_sft["reference"]) == ("rft", "sft")
    assert rft_vs_sft["metrics"]["BWT"]["value"] == pytest.approx(0.5)
    assert rft_vs_sft["metrics"]["BWT"]["excludes_zero"] is True
    assert "| rft − sft | " in text and "+0.500 [+0.500, +0.500] *" in text
    assert "| sft | 2/3 | 2/2, 1/2 | 0.625 [0.625, 0.625] | -0.500 [-0.500, -0.500] |" in text


def test_report_lists_items_that_flipped_from_right_to_wrong(tmp_path):
    run = make_seeded_run(tmp_path)
    write_unit(run / "seed_0", "sft", SFT)
    text = write_report(run).read_text()
    # task a: items 1 and 2 were right after training a, wrong at the end; item 0 stayed right
    assert "## Forgotten items" in text and "### sft (seed 0)" in text
    assert "| a | 2/4 | a/1: '1' → '0'; a/2: '1' → '0' |" in text


def test_flipped_items_are_right_before_and_wrong_after_in_order_up_to_the_limit():
    from lite_cpt.results.predictions import flipped_items

    before = {"a": [{"id": "1", "score": 1.0}, {"id": "2", "score": 0.0}, {"id": "3", "score": 1.0},
                    {"id": "4", "score": 1.0}]}
    after = {"a": [{"id": "4", "score": 0.0}, {"id": "3", "score": 0.0}, {"id": "2", "score": 1.0},
                   {"id": "1", "score": 1.0}]}
    flips = flipped_items(before, after, "a")
    assert [(b["id"], a["id"]) for b, a in flips] == [("3", "3"), ("4", "4")]  # before's order
    assert [b["id"] for b, _ in flipped_items(before, after, "a", limit=1)] == ["3"]
    assert flipped_items(before, after, "b") == [] and flipped_items({}, after, "a") == []


#: report.md of two seeds of sft and rft (the rows of SFT and RFT above), down to its reading
#: guide, every figure checked by hand: sft ends at a = 0.25, b = 1.0 (ACC 0.625), a fell from
#: 0.75 (BWT -0.5, forgetting 0.5), g from 0.75 to 0.25 (Δ g -0.5); rft ends at a = 0.5, b = 0.75
#: with a unchanged (BWT 0) and g unchanged; sft's items a/1 and a/2 were right after task a and
#: wrong at the end. rft's logs (`_task_ends`): wall time 2 x (10 + 2) and 2 x (20 + 2) s, mean 34;
#: plan 2 x (9 + 1) = 20 s; rollout predicted 2 x 6 = 12 s against a mean of 10 and 20 s measured.
EXPECTED_REPORT = """# lite-cpt report: run

Seeds: 0, 1. Arms: sft (2/2 seeds finished), rft (2/2 seeds finished).

## Continual-learning metrics

| arm | seeds | tasks done | ACC | BWT | forgetting | FWT | Δ g | interval |
|---|---|---|---|---|---|---|---|---|
| sft | 2/2 | 2/2 | 0.625 [0.625, 0.625] | -0.500 [-0.500, -0.500] | 0.500 [0.500, 0.500] | +0.000 [+0.000, +0.000] | -0.500 [-0.500, -0.500] | t, 2 seeds |
| rft | 2/2 | 2/2 | 0.625 [0.625, 0.625] | +0.000 [+0.000, +0.000] | 0.000 [0.000, 0.000] | +0.000 [+0.000, +0.000] | +0.000 [+0.000, +0.000] | t, 2 seeds |

### Every seed's value

| arm | metric | seed 0 | seed 1 |
|---|---|---|---|
| sft | ACC | 0.625 | 0.625 |
| sft | BWT | -0.500 | -0.500 |
| sft | forgetting | 0.500 | 0.500 |
| sft | FWT | +0.000 | +0.000 |
| sft | Δ g | -0.500 | -0.500 |
| rft | ACC | 0.625 | 0.625 |
| rft | BWT | +0.000 | +0.000 |
| rft | forgetting | 0.000 | 0.000 |
| rft | FWT | +0.000 | +0.000 |
| rft | Δ g | +0.000 | +0.000 |

## Paired differences against sft

Each cell: metric(arm) − metric(sft) [95 % interval]; `*` = the interval excludes 0.

| difference | ACC | BWT | forgetting | FWT | Δ g | interval |
|---|---|---|---|---|---|---|
| rft − sft | +0.000 [+0.000, +0.000] | +0.500 [+0.500, +0.500] * | -0.500 [-0.500, -0.500] * | +0.000 [+0.000, +0.000] | +0.500 [+0.500, +0.500] * | paired t, 2 seeds |

## Compute cost (per seed)

| arm | wall time (train + eval, s) | time plan (s) | generated tokens | trained tokens | policy updates | kept fraction (mean) |
|---|---|---|---|---|---|---|
| sft | n/a | n/a | n/a | n/a | n/a | n/a |
| rft | 34.0 | 20.0 | 200 | 800 | 4 | n/a |

### Time plan vs measured, per phase

Seconds summed over the arm's tasks (`predicted_seconds` and `phase_seconds` of metrics.jsonl).

| arm | phase | predicted (s) | measured (s) | predicted / measured |
|---|---|---|---|---|
| rft | rollout | 12.0 | 15.0 | 0.80 |
| rft | grpo_step | 6.0 | 8.0 | 0.75 |
| rft | evaluation | 2.0 | 4.0 | 0.50 |

## Mean accuracy on seen tasks

![mean seen-task accuracy per arm](seen_task_average.png)

## Forgotten items

Test items answered right just after their task was trained and wrong at the end (lowest finished seed; every item is in `seed_<k>/<arm>/predictions/`).

### sft (seed 0)

| task | right → wrong | examples (then → at the end) |
|---|---|---|
| a | 2/4 | a/1: '1' → '0'; a/2: '1' → '0' |

### rft (seed 0)

| task | right → wrong | examples (then → at the end) |
|---|---|---|
| a | 0/4 | – |

## Accuracy matrix: sft (mean over seeds 0, 1)

![accuracy heatmap of sft](heatmap_sft.png)

| stage \\ task | a | b |
|---|---|---|
| base | 0.000 | 0.500 |
| after a | 0.750 | 0.500 |
| after b | 0.250 | 1.000 |

## Accuracy matrix: rft (mean over seeds 0, 1)

![accuracy heatmap of rft](heatmap_rft.png)

| stage \\ task | a | b |
|---|---|---|
| base | 0.000 | 0.500 |
| after a | 0.500 | 0.500 |
| after b | 0.500 | 0.750 |

"""


def _task_ends(seed: int) -> list[dict]:
    """rft's two task_end records of a seed: seed 1 took twice seed 0's rollout seconds."""
    return [{"event": "task_end", "task_index": index, "train_seconds": 10.0 * (1 + seed), "eval_seconds": 2.0,
             "generated_tokens": 100, "trained_tokens": 400, "policy_updates": 2,
             "predicted_seconds": {"rollout": 6.0, "grpo_step": 3.0, "evaluation": 1.0, "train": 9.0},
             "phase_seconds": {"rollout": 5.0 * (1 + seed), "grpo_step": 4.0},
             "predicted_on": "cpu (2 threads)", "device": "cpu"} for index in (1, 2)]


def test_report_markdown_whole_for_two_seeds(tmp_path):
    run = make_seeded_run(tmp_path, seeds=(0, 1))
    for seed in (0, 1):
        write_unit(run / f"seed_{seed}", "sft", SFT)
        write_unit(run / f"seed_{seed}", "rft", RFT)
        log = run / f"seed_{seed}" / "rft" / "metrics.jsonl"
        log.write_text("".join(json.dumps(record) + "\n" for record in _task_ends(seed)))
    write_report(run)
    text = (run / "report.md").read_text()
    assert text.startswith(EXPECTED_REPORT + "## How to read this\n"), text


def test_the_report_plots_draw_each_arms_curve_and_the_matrix_on_a_fixed_scale(tmp_path, monkeypatch):
    """What the figures hold (not their pixels): a line per sequential arm through its mean
    seen-task accuracy, y from 0 to 1 with each step labelled by its task; the heatmap coloured on
    [0, 1] whatever the scores."""
    import lite_cpt.results.report as report_module
    from lite_cpt.results.metrics import seen_task_average

    drawn = {}
    monkeypatch.setattr(report_module, "_png_bytes", lambda figure: drawn.setdefault(len(drawn), figure) and b"png")
    run = make_seeded_run(tmp_path, seeds=(0,))
    write_unit(run / "seed_0", "sft", SFT)
    write_unit(run / "seed_0", "rft", RFT)
    write_report(run)
    by_kind = {figure.axes[0].get_ylabel(): figure for figure in drawn.values()}
    seen = by_kind["mean accuracy on seen tasks"].axes[0]
    expected = {"sft": seen_task_average([[0.0, 0.5], [0.75, 0.5], [0.25, 1.0]]),
                "rft": seen_task_average([[0.0, 0.5], [0.5, 0.5], [0.5, 0.75]])}
    assert {line.get_label(): list(line.get_ydata()) for line in seen.lines} == expected
    assert len({line.get_color() for line in seen.lines}) == 2  # one colour per arm
    assert seen.get_ylim() == (-0.02, 1.02)
    assert [tick.get_text() for tick in seen.get_xticklabels()] == ["1\na", "2\nb"]
    heatmaps = [f for f in drawn.values() if f.axes[0].images]
    assert len(heatmaps) == 2 and all(f.axes[0].images[0].get_clim() == (0.0, 1.0) for f in heatmaps)
    # Sized per cell: 0.9 in per task and 0.45 in per row beside the margins (2 tasks, 3 rows).
    assert all(tuple(f.get_size_inches()) == pytest.approx((2.2 + 0.9 * 2, 1.6 + 0.45 * 3)) for f in heatmaps)


def _arm(R, G=None, joint=False, benchmarks=("g",)) -> "ArmResult":
    from lite_cpt.results.runs import ArmResult

    R = np.asarray(R, dtype=float)
    return ArmResult("x", [f"t{j}" for j in range(R.shape[1])], R, {}, list(benchmarks),
                     [list(row) for row in (G if G is not None else [[0.5]] * R.shape[0])], joint)


def test_unit_values_of_joint_partial_and_base_only_arms_by_hand():
    from lite_cpt.results.estimates import unit_value

    joint = _arm([[0.0, 0.5], [0.5, 1.0]], G=[[0.5], [0.25]], joint=True)
    assert unit_value(joint, "ACC") == 0.75 and unit_value(joint, "BWT") is None  # the joint row's mean
    assert unit_value(joint, "Δ g") == -0.25
    base_only = _arm([[0.0, 0.5]], G=[[0.5]])
    assert unit_value(base_only, "Δ g") is None and unit_value(base_only, "ACC") is None
    # general.json a row short (a run killed between its two writes): Δ g unknown, not a crash
    short = _arm([[0.0, 0.5], [0.5, 0.5], [0.5, 1.0]], G=[[0.5], [0.5]])
    assert unit_value(short, "Δ g") is None and unit_value(short, "ACC") == 0.75


def test_with_no_finished_seed_the_most_advanced_unit_is_shown_with_its_seed():
    from lite_cpt.results.estimates import arm_estimates, units_for_estimates

    behind = _arm([[0.0, 0.5, 0.5]])
    ahead = _arm([[0.0, 0.5, 0.5], [1.0, 0.5, 0.5]])
    assert list(units_for_estimates({0: behind, 3: ahead})) == [3]
    estimates = arm_estimates({0: behind, 3: ahead}, ["Δ g"])
    assert estimates["Δ g"].value == 0.0 and estimates["Δ g"].per_seed == {3: 0.0}


def test_saved_matrices_and_recipes_are_read_strictly(tmp_path):
    from lite_cpt.errors import UserError
    from lite_cpt.results.runs import load_accuracy_matrix, recipe_seeds

    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"tasks": ["a", 2], "R": [[0.0, 0.0]]}))
    with pytest.raises(UserError, match=r"'tasks' must be a non-empty list of task names$"):
        load_accuracy_matrix(path)
    assert recipe_seeds({"seed": 3}) == [3] and recipe_seeds({"seeds": [1, 2], "seed": 3}) == [1, 2]
    assert recipe_seeds({}) == [] and recipe_seeds({"name": "x"}) == [0]


def test_a_seed_the_recipe_asks_for_and_never_started_is_missing(tmp_path):
    from lite_cpt.results.runs import load_run

    run = make_seeded_run(tmp_path, seeds=(0, 4))
    write_unit(run / "seed_0", "sft", SFT)
    write_unit(run / "seed_0", "rft", RFT)
    loaded = load_run(run)
    assert loaded.seeds == [0, 4]
    assert loaded.missing_units() == [("sft", 4, "not started"), ("rft", 4, "not started")]
