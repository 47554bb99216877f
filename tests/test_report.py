import json
from pathlib import Path

import pytest
from PIL import Image

from lite_cpt.errors import UserError
from lite_cpt.results.report import write_report

TASKS = ["scienceqa", "textvqa", "vizwiz"]

# Same hand-computed matrix as tests/test_metrics.py:
# ACC = 2.15/3 = 0.717, BWT = -0.250, forgetting = 0.275, FWT = +0.150.
SFT_R = [
    [0.90, 0.10, 0.30],
    [0.80, 0.20, 0.40],
    [0.85, 0.90, 0.50],
    [0.50, 0.70, 0.95],
]
# Unfinished arm: base and task 1 only.
RIF_R = [
    [0.90, 0.10, 0.30],
    [0.95, 0.15, 0.35],
]


def _write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")


#: Where a run on a CPU with a CPU calibration says its plan and its measurements come from.
ON_CPU = {"predicted_on": "cpu (2 threads)", "device": "cpu"}


def _task_end(index: int, **extra) -> dict:
    return {"event": "task_end", "task_index": index, "task": TASKS[index - 1], "train_seconds": 10.0 * index,
            "eval_seconds": 2.5, "generated_tokens": 1000 * index, "trained_tokens": 500 * index,
            "policy_updates": 4, **extra}


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "demo-run"
    (run / "sft").mkdir(parents=True)
    (run / "rif_rft").mkdir()
    (run / "notes").mkdir()  # a directory without matrix.json is not an arm
    # Recipe lists sft first: the report must follow the recipe, not the alphabet.
    (run / "recipe.yaml").write_text(
        "name: demo-run\narms:\n  - name: sft\n    kind: sft\n  - name: rif_rft\n    kind: rft\n"
        "  - name: ewc\n    kind: ewc\n",
        encoding="utf-8",
    )
    (run / "sft" / "matrix.json").write_text(json.dumps({"tasks": TASKS, "R": SFT_R}))
    (run / "sft" / "general.json").write_text(
        json.dumps({"benchmarks": ["MMMU", "POPE"], "G": [[0.40, 0.80], [0.38, 0.79], [0.36, 0.75], [0.35, 0.70]]})
    )
    _write_jsonl(
        run / "sft" / "metrics.jsonl",
        [
            {"event": "step", "task_index": 1, "loss": 1.2},
            _task_end(1, predicted_seconds={"sft_step": 9.0, "train": 9.0, "evaluation": 3.0}, **ON_CPU),
            {"event": "checkpoint", "path": "task_1"},  # unknown events are ignored
            _task_end(2, predicted_seconds={"sft_step": 19.0, "train": 19.0, "evaluation": 3.0}, **ON_CPU),
            _task_end(3, predicted_seconds={"sft_step": 29.0, "train": 29.0, "evaluation": 3.0}, **ON_CPU),
        ],
    )
    (run / "rif_rft" / "matrix.json").write_text(json.dumps({"tasks": TASKS, "R": RIF_R}))
    (run / "rif_rft" / "general.json").write_text(json.dumps({"benchmarks": ["MMMU"], "G": [[0.40], [0.42]]}))
    # Task 1 logged twice (a resumed run retrained it): only the last event counts.
    _write_jsonl(
        run / "rif_rft" / "metrics.jsonl",
        [_task_end(1, kept_fraction=0.9, train_seconds=99.0), _task_end(1, kept_fraction=0.4)],
    )
    return run


def test_write_report_writes_summary_figures_and_markdown(tmp_path):
    run = make_run(tmp_path)
    report_path = write_report(run)
    assert report_path == run / "report.md"

    summary = json.loads((run / "summary.json").read_text())
    assert summary["seeds"] == [0]
    assert list(summary["arms"]) == ["sft", "rif_rft"]
    values = {m: e["value"] for m, e in summary["arms"]["sft"]["metrics"].items()}
    assert values == pytest.approx({"ACC": 2.15 / 3, "BWT": -0.25, "forgetting": 0.275, "FWT": 0.15,
                                    "Δ MMMU": -0.05, "Δ POPE": -0.10})
    # one seed and no per-item predictions: no interval can be computed
    assert summary["arms"]["sft"]["metrics"]["BWT"]["ci95"] is None
    rif = summary["arms"]["rif_rft"]["metrics"]
    assert [rif[m]["value"] for m in ("ACC", "BWT", "forgetting", "FWT")] == [None] * 4
    assert summary["arms"]["rif_rft"]["seeds_finished"] == []

    for name in ["heatmap_sft.png", "heatmap_rif_rft.png", "seen_task_average.png"]:
        with Image.open(run / name) as image:
            assert image.format == "PNG"
            assert image.size[0] > 100 and image.size[1] > 100
    assert not (run / "heatmap_notes.png").exists()

    text = report_path.read_text()
    assert text.startswith("# lite-cpt report: demo-run\n")
    assert text.index("## Accuracy matrix: sft") < text.index("## Accuracy matrix: rif_rft")
    assert "Arms in the recipe with no results yet: ewc." in text
    # Metric row of sft, general deltas MMMU 0.35-0.40, POPE 0.70-0.80; rif_rft has no POPE.
    assert "| sft | 1/1 | 3/3 | 0.717 | -0.250 | 0.275 | +0.150 | -0.050 | -0.100 | none |" in text
    assert "| rif_rft | 0/1 | 1/3 | n/a | n/a | n/a | n/a | +0.020 | n/a | none |" in text
    assert "Not finished yet (left out of the intervals): rif_rft seed 0 (1/3 tasks)." in text
    # Compute: sft wall = (10+2.5)+(20+2.5)+(30+2.5) = 67.5 s, planned (9+3)+(19+3)+(29+3) = 66 s,
    # tokens 6000 / 3000, updates 12; rif_rft logged no prediction.
    assert "| sft | 67.5 | 66.0 | 6,000 | 3,000 | 12 | n/a |" in text
    assert "| rif_rft | 12.5 | n/a | 1,000 | 500 | 4 | 0.400 |" in text
    # Matrix tables, 3 decimals, labelled rows.
    assert "| stage \\ task | scienceqa | textvqa | vizwiz |" in text
    assert "| after vizwiz | 0.500 | 0.700 | 0.950 |" in text
    assert "| after scienceqa | 0.950 | 0.150 | 0.350 |" in text
    for link in ["(heatmap_sft.png)", "(heatmap_rif_rft.png)", "(seen_task_average.png)"]:
        assert link in text
    assert "## How to read this" in text and "negative means\nforgetting" in text


def test_report_is_deterministic(tmp_path):
    run = make_run(tmp_path)
    first = write_report(run).read_text()
    first_png = (run / "heatmap_sft.png").read_bytes()
    assert write_report(run).read_text() == first
    assert (run / "heatmap_sft.png").read_bytes() == first_png


def test_arms_are_alphabetical_without_a_readable_recipe(tmp_path):
    run = make_run(tmp_path)
    (run / "recipe.yaml").write_text("arms: [unclosed", encoding="utf-8")
    write_report(run)
    assert list(json.loads((run / "summary.json").read_text())["arms"]) == ["rif_rft", "sft"]
    text = (run / "report.md").read_text()
    assert text.index("## Accuracy matrix: rif_rft") < text.index("## Accuracy matrix: sft")
    assert "no results yet" not in text


def test_missing_general_and_metrics_files_show_as_not_available(tmp_path):
    run = tmp_path / "bare"
    (run / "sft").mkdir(parents=True)
    (run / "sft" / "matrix.json").write_text(json.dumps({"tasks": ["a"], "R": [[0.2], [0.6]]}))
    text = write_report(run).read_text()
    assert "| sft | 1/1 | 1/1 | 0.600 | n/a | n/a | n/a | none |" in text
    assert "| sft | n/a | n/a | n/a | n/a | n/a | n/a |" in text


def test_truncated_last_metrics_line_is_skipped(tmp_path):
    run = make_run(tmp_path)
    with open(run / "sft" / "metrics.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"event": "task_end", "task_ind')
    assert "| sft | 67.5 | 66.0 | 6,000 | 3,000 | 12 | n/a |" in write_report(run).read_text()


def test_bad_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nope")
    with pytest.raises(UserError, match="no arm results"):
        write_report(tmp_path)
    run = make_run(tmp_path)
    (run / "sft" / "matrix.json").write_text(json.dumps({"tasks": TASKS, "R": SFT_R + [[0.1, 0.2, 0.3]]}))
    with pytest.raises(UserError, match="at most T \\+ 1"):
        write_report(run)
    (run / "sft" / "matrix.json").write_text(json.dumps({"tasks": TASKS, "R": [[0.1, 0.2]]}))
    with pytest.raises(UserError, match="one score per task"):
        write_report(run)
    (run / "sft" / "matrix.json").write_text("{not json")
    with pytest.raises(UserError, match="matrix.json"):
        write_report(run)


def test_phase_seconds_sum_predicted_and_measured_per_phase():
    from lite_cpt.results.runs import phase_seconds

    events = [
        {"predicted_seconds": {"rollout": 2.0, "grpo_step": 1.0, "evaluation": 3.0, "train": 3.0},
         "phase_seconds": {"rollout": 2.5, "grpo_step": 0.5}, "eval_seconds": 4.0, **ON_CPU},
        {"predicted_seconds": {"rollout": 1.0, "grpo_step": 1.0, "rif_rollout": 2.0, "evaluation": 3.0, "train": 4.0},
         "phase_seconds": {"rollout": 1.5, "grpo_step": 1.5}, "eval_seconds": 2.0, "rif_seconds": 1.0, **ON_CPU},
        {"train_seconds": 9.0},  # a record without a plan counts nowhere
    ]
    assert phase_seconds(events) == {
        "rollout": {"predicted": 3.0, "measured": 4.0},
        "grpo_step": {"predicted": 2.0, "measured": 2.0},
        "evaluation": {"predicted": 6.0, "measured": 6.0},
        "rif_rollout": {"predicted": 2.0, "measured": 1.0},
    }


def test_predictions_of_another_device_are_not_set_beside_measured_seconds():
    from lite_cpt.results.runs import compute_cost, phase_seconds

    measured = {"predicted_seconds": {"sft_step": 9.0, "train": 9.0, "evaluation": 3.0},
                "phase_seconds": {"sft_step": 0.1}, "eval_seconds": 0.05, "train_seconds": 0.1}
    for placed in ({"predicted_on": "the reference 24 GB card", "device": "cpu"},  # another device
                   {"predicted_on": "NVIDIA GeForce RTX 4090", "device": "cpu"},
                   {}):  # logged without saying where (earlier versions, on a reference card)
        event = {**measured, **placed}
        assert phase_seconds([event]) == {} and compute_cost([event])["predicted_seconds"] is None
    event = {**measured, "predicted_on": "cpu (1 threads)", "device": "cpu"}
    assert phase_seconds([event]) == {"sft_step": {"predicted": 9.0, "measured": 0.1},
                                      "evaluation": {"predicted": 3.0, "measured": 0.05}}
    assert compute_cost([event])["predicted_seconds"] == 12.0
