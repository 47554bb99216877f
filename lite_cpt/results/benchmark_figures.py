"""Figures beside a general benchmark's mean score, from its own `Task.summary` (POPE: accuracy,
F1, precision, recall and yes-ratio, pooled and per category), with 95 % intervals.

Where they are computed and kept:
* each evaluated row: the benchmark's `summary` over its items, and a percentile bootstrap over
  those items (`lite_cpt.results.stats.bootstrap_figures`), saved beside the row's per-item predictions
  as `<predictions name>.figures.json` ({benchmark: {figure: {"value", "ci95"}}});
* `<arm>/general.json` gathers them row by row under "figures" (row 0 = base, as "G");
* summary.json and report.md show the last row of each arm and the base row: the mean over
  finished seeds with a t-interval, or with one seed its bootstrap interval.
A benchmark whose task defines no summary has no figures; its mean score stays in "G".
"""

from __future__ import annotations

import json
from pathlib import Path

from lite_cpt.results.estimates import Estimate, units_for_estimates
from lite_cpt.io import atomic_write_json
from lite_cpt.results.predictions import BASE_PREDICTIONS, row_predictions_path, write_predictions
from lite_cpt.results.runs import ArmResult
from lite_cpt.results.stats import bootstrap_figures, t_interval

FIGURES_SUFFIX = ".figures.json"


def figures_path(predictions_path: Path) -> Path:
    """`row_3.jsonl.gz` -> `row_3.figures.json` (the same directory)."""
    predictions_path = Path(predictions_path)
    return predictions_path.with_name(predictions_path.name.removesuffix(".jsonl.gz") + FIGURES_SUFFIX)


def set_figures(evalset, items: list[dict], cot: bool = False) -> dict[str, dict]:
    """{figure: {"value", "ci95"}} of one evaluated set from its task's `summary` ({} when the
    task defines none); `items` are `score_items` results in the order of `evalset.samples`."""
    task, samples = evalset.task, evalset.samples
    answers = [item["answer"] for item in items]
    values = task.summary(answers, samples, cot)
    if not values:
        return {}
    names = list(values)

    def statistic(indices) -> list[float | None]:
        resampled = task.summary([answers[i] for i in indices], [samples[i] for i in indices], cot)
        return [resampled.get(name) for name in names]

    intervals = bootstrap_figures(len(samples), statistic, [values[name] for name in names])
    return {name: {"value": float(values[name]),
                   "ci95": None if interval.low is None else [interval.low, interval.high]}
            for name, interval in zip(names, intervals)}


def write_row_results(predictions_path: Path, items_by_set: dict[str, list[dict]], general: list,
                      cot: bool = False) -> None:
    """The row's per-item predictions, then the figures of its general benchmarks (if any)."""
    write_predictions(predictions_path, items_by_set)
    figures = {s.task.name: found for s in general if (found := set_figures(s, items_by_set[s.task.name], cot))}
    if figures:
        atomic_write_json(figures_path(predictions_path), figures)


def _read_figures(path: Path) -> dict:
    try:
        figures = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent (no summary, or a run from before figures) or damaged
        return {}
    return figures if isinstance(figures, dict) else {}


def figure_rows(arm_dir: Path, rows: int, base_predictions: str = BASE_PREDICTIONS) -> dict:
    """{"figures": [row 0, row 1, ...]} for general.json ({} when no row has any figures); row 0
    from the seed's `base_predictions` (the base row in the arm's evaluation prompt format)."""
    paths = [arm_dir.parent / base_predictions, *(row_predictions_path(arm_dir, i) for i in range(1, rows))]
    found = [_read_figures(figures_path(path)) for path in paths[:rows]]
    return {"figures": found} if any(found) else {}


# ---------------------------------------------------------------- estimates over seeds


def row_estimates(units: dict[int, ArmResult], row: int | None) -> dict[str, dict[str, Estimate]]:
    """{benchmark: {figure: Estimate}} of row `row` (None: each unit's last evaluated row) over the
    units used for estimates: a t-interval with 2+ seeds, else the row's bootstrap interval."""
    per_seed: dict[str, dict[str, dict[int, dict]]] = {}
    for seed, unit in units_for_estimates(units).items():
        index = unit.R.shape[0] - 1 if row is None else row
        if 0 <= index < len(unit.figures):
            for bench, figures in unit.figures[index].items():
                for name, entry in (figures.items() if isinstance(figures, dict) else ()):
                    if isinstance(entry, dict) and isinstance(entry.get("value"), (int, float)):
                        per_seed.setdefault(bench, {}).setdefault(name, {})[seed] = entry
    return {bench: {name: _estimate(entries) for name, entries in figures.items()}
            for bench, figures in per_seed.items()}


def _estimate(entries: dict[int, dict]) -> Estimate:
    values = {seed: float(entry["value"]) for seed, entry in entries.items()}
    if len(values) >= 2:
        interval = t_interval(list(values.values()))
        return Estimate(interval.value, interval.low, interval.high, f"t, {len(values)} seeds", values)
    (seed, entry), = entries.items()
    low, high = entry.get("ci95") or (None, None)
    return Estimate(values[seed], low, high, "bootstrap over items" if low is not None else None, values)


def figures_json(reports) -> dict:
    """summary.json's "benchmark_figures": the base row (of the first arm) and each arm's last row."""
    if not reports:
        return {}
    base = row_estimates(reports[0].units, 0)
    arms = {r.name: row_estimates(r.units, None) for r in reports}
    if not base and not any(arms.values()):
        return {}

    def as_json(found):
        return {bench: {name: e.as_json() for name, e in figures.items()} for bench, figures in found.items()}

    return {"benchmark_figures": {"base": as_json(base), "arms": {name: as_json(f) for name, f in arms.items()}}}


# ---------------------------------------------------------------- report.md


def _split(name: str) -> tuple[str, str]:
    """'random/f1' -> ('random', 'f1'); a figure without a group is 'all'."""
    group, _, figure = name.rpartition("/")
    return group or "all", figure


def figures_section(reports, estimate_text) -> list[str]:
    """One table per benchmark with figures: rows (model, group), columns the figures, each cell
    `estimate_text(Estimate)`; [] when no benchmark has any."""
    if not reports:
        return []
    shown = [("base", row_estimates(reports[0].units, 0))] + [(r.name, row_estimates(r.units, None)) for r in reports]
    benches = list(dict.fromkeys(b for _, found in shown for b in found))
    if not benches:
        return []
    lines = ["", "## General benchmarks in detail", "",
             "Each benchmark's own figures (its `summary`), pooled and per category, for the base model and "
             "each arm's last evaluated row, with 95 % intervals (t over seeds, or a bootstrap over items)."]
    for bench in benches:
        names = [n for _, found in shown for n in found.get(bench, {})]
        columns = list(dict.fromkeys(_split(n)[1] for n in names))
        groups = list(dict.fromkeys(_split(n)[0] for n in names))
        rows = []
        for model, found in shown:
            figures = found.get(bench, {})
            for group in groups:
                cells = [figures.get(column if group == "all" else f"{group}/{column}") for column in columns]
                if any(cell is not None for cell in cells):
                    rows.append([model, group, *("n/a" if c is None else estimate_text(c) for c in cells)])
        lines += ["", f"### {bench}", "", *_markdown_table(["model", "group", *columns], rows)]
    return lines


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
