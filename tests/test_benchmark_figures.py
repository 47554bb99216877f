"""A general benchmark's own figures (POPE: accuracy, F1, precision, recall, yes-ratio, pooled and
per category) reach general.json, summary.json (with intervals) and report.md; the pooled mean
score stays in "G"."""

import json
from pathlib import Path

import numpy as np
import pytest

from lite_cpt.results.benchmark_figures import figures_path, set_figures
from lite_cpt.run.evaluate import EvalSet
from lite_cpt.results.report import write_report
from lite_cpt.results.stats import bootstrap_figures
from lite_cpt.tasks.base import Sample
from lite_cpt.tasks.vqa import POPETask

# Plain "yes"/"no" answers, which every reading of yes/no agrees on.
# random:      gold yes yes no no, said yes no no yes -> TP 1, FN 1, TN 1, FP 1
# popular:     gold yes no yes no, said yes no yes no -> TP 2, TN 2
# adversarial: gold yes no no no, said yes yes yes no -> TP 1, FP 2, TN 1
CASES = {
    "random": [("yes", "yes"), ("yes", "no"), ("no", "no"), ("no", "yes")],
    "popular": [("yes", "yes"), ("no", "no"), ("yes", "yes"), ("no", "no")],
    "adversarial": [("yes", "yes"), ("no", "yes"), ("no", "yes"), ("no", "no")],
}
EXPECTED = {  # accuracy, precision, recall, f1, yes_ratio
    "random": (0.5, 0.5, 0.5, 0.5, 0.5),
    "popular": (1.0, 1.0, 1.0, 1.0, 0.5),
    "adversarial": (0.5, 1 / 3, 1.0, 0.5, 0.75),
    # pooled: TP 4, FP 3, TN 4, FN 1 over 12 items
    "pooled": (8 / 12, 4 / 7, 4 / 5, 2 * (4 / 7) * (4 / 5) / (4 / 7 + 4 / 5), 7 / 12),
}


def pope_set(repeat: int = 1) -> tuple[EvalSet, list[dict]]:
    samples, items = [], []
    for _ in range(repeat):
        for category, pairs in CASES.items():
            for gold, said in pairs:
                sample_id = f"pope/{len(samples)}"
                samples.append(Sample(id=sample_id, question="Is there a dog in the image?", answer=gold,
                                      answers=[gold], meta={"category": category}))
                items.append({"id": sample_id, "answer": said, "score": float(gold == said)})
    return EvalSet(POPETask("pope"), samples), items


def test_pope_figures_per_category_match_the_hand_count():
    evalset, items = pope_set()
    figures = set_figures(evalset, items)
    for group, (accuracy, precision, recall, f1, yes_ratio) in EXPECTED.items():
        got = {k: figures[f"{group}/{k}"]["value"] for k in ("accuracy", "precision", "recall", "f1", "yes_ratio")}
        assert got == pytest.approx(dict(accuracy=accuracy, precision=precision, recall=recall, f1=f1,
                                         yes_ratio=yes_ratio)), group
    for name, entry in figures.items():
        low, high = entry["ci95"]
        assert 0.0 <= low <= entry["value"] <= high <= 1.0, name
    # popular is right on every item: any resample of it is too
    assert figures["popular/accuracy"]["ci95"] == [1.0, 1.0]


def test_a_benchmark_without_a_summary_has_no_figures():
    from lite_cpt.tasks.mini import _FAMILIES  # noqa: F401  (registers the mini task types)
    from lite_cpt.tasks.base import BENCHMARK_TYPES

    task = BENCHMARK_TYPES["mini_pope"]("mini_pope")
    samples = task.load("test", 4)
    items = [{"id": s.id, "answer": "yes", "score": 0.0} for s in samples]
    assert set_figures(EvalSet(task, samples), items) == {}


def test_bootstrap_figures_percentiles_and_undefined_figures():
    data = np.array([0.0] * 30 + [1.0] * 70)

    def statistic(indices):
        drawn = data[indices]
        # figure 1 is defined only when the draw holds item 0 (about 63 % of draws), figure 2 in ~0.4 %
        return [float(drawn.mean()), 1.0 if 0 in indices else None, 1.0 if np.all(indices < 95) else None]

    mean, often, rarely = bootstrap_figures(len(data), statistic, [0.7, 1.0, 1.0], n_resamples=400)
    # the mean of 100 Bernoulli(0.7) items: standard error 0.046, so about 0.7 ± 0.09
    assert 0.58 < mean.low < 0.64 and 0.76 < mean.high < 0.82
    assert (often.low, often.high) == (1.0, 1.0)
    assert (rarely.low, rarely.high) == (None, None)


def test_evaluated_rows_write_their_figures_into_general_json(tmp_path, monkeypatch):
    """The continual loop's own evaluation and row writer, with generation replaced by fixed answers."""
    import lite_cpt.run.continual as continual
    import lite_cpt.run.rows as rows_module
    from lite_cpt.results.predictions import BASE_PREDICTIONS
    from lite_cpt.recipe import load_recipe
    from lite_cpt.run.unit_plan import plan_evaluation

    evalset, items = pope_set()
    recipe = load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "tiny.yaml", [])
    ws = continual.Workspace(tmp_path / "seed_0", None, None, [], [], [evalset], None, {}, plan_evaluation(recipe))
    monkeypatch.setattr(rows_module, "evaluate_sets_items", lambda *a, **k: {"pope": items})
    arm_dir = ws.run_dir / "sft"
    _, general_row, _ = rows_module.evaluate_row(ws, "the base model", ws.run_dir / BASE_PREDICTIONS, False)
    rows_module.evaluate_row(ws, "sft after t1", continual.row_predictions_path(arm_dir, 1), False)
    files = rows_module.RowFiles(arm_dir / "matrix.json", arm_dir / "general.json", ["t1"], ["pope"], False, False)
    files.write([[0.5], [0.5]], [general_row, general_row])

    general = json.loads((arm_dir / "general.json").read_text())
    assert general["G"] == [[8 / 12], [8 / 12]]  # the pooled mean score stays
    assert len(general["figures"]) == 2
    assert general["figures"][1]["pope"]["adversarial/yes_ratio"]["value"] == pytest.approx(0.75)
    assert figures_path(continual.row_predictions_path(arm_dir, 1)).is_file()


def _unit(directory: Path, figures: list[dict]) -> None:
    directory.mkdir(parents=True)
    (directory / "matrix.json").write_text(json.dumps({"tasks": ["t1"], "R": [[0.2], [0.6]]}))
    g = [[row["pope"]["pooled/accuracy"]["value"]] for row in figures]
    (directory / "general.json").write_text(json.dumps({"benchmarks": ["pope"], "G": g, "figures": figures}))


def _row(f1: float, accuracy: float = 0.8) -> dict:
    return {"pope": {"pooled/accuracy": {"value": accuracy, "ci95": [accuracy - 0.1, accuracy + 0.1]},
                     "random/f1": {"value": f1, "ci95": [f1 - 0.05, f1 + 0.05]}}}


def test_summary_and_report_carry_the_figures_with_intervals(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: run\nseeds: [0, 1]\narms:\n  - name: sft\n    kind: sft\n")
    _unit(run / "seed_0" / "sft", [_row(0.70), _row(0.60)])
    _unit(run / "seed_1" / "sft", [_row(0.70), _row(0.64)])
    write_report(run)

    figures = json.loads((run / "summary.json").read_text())["benchmark_figures"]
    final = figures["arms"]["sft"]["pope"]["random/f1"]
    assert final["value"] == pytest.approx(0.62)
    assert final["interval"] == "t, 2 seeds"
    # t_{0.975, 1} = 12.706; s = 0.02828, s/√2 = 0.02 -> 0.62 ± 0.2541
    assert final["ci95"] == pytest.approx([0.62 - 0.25412, 0.62 + 0.25412], abs=1e-4)
    assert figures["base"]["pope"]["random/f1"]["ci95"] == [0.70, 0.70]  # the same on both seeds

    report = (run / "report.md").read_text()
    assert "### pope" in report
    assert "| sft | random | n/a | 0.620 [0.366, 0.874] |" in report
    assert "| base | pooled | 0.800 [0.800, 0.800] | n/a |" in report


def test_one_seed_shows_the_rows_bootstrap_interval(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: run\narms:\n  - name: sft\n    kind: sft\n")
    _unit(run / "seed_0" / "sft", [_row(0.70), _row(0.60)])
    write_report(run)
    final = json.loads((run / "summary.json").read_text())["benchmark_figures"]["arms"]["sft"]["pope"]["random/f1"]
    assert final["value"] == 0.60 and final["ci95"] == pytest.approx([0.55, 0.65])
    assert final["interval"] == "bootstrap over items"
