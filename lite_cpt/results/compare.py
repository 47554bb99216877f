"""`lite-cpt compare RUN_DIR...`: several runs side by side in one table and one plot.

For each (run, arm): its metrics with 95 % intervals (`lite_cpt.results.estimates`). Above the table, the
recipe keys whose values differ between the runs, read from each run's saved recipe.yaml (so an
ablation is labelled by what it changed, e.g. `arms.rft.rft.kl: true | false`). Below it, the
differences in one metric that a reader asks about: the same arm across runs (each run against
the first run that has the arm) and, within each run, each arm against its first sequential arm;
each paired where the data allow (`lite_cpt.results.estimates.paired_difference`), and marked where its
interval excludes zero. Partial runs are read as far as they got; what is missing is listed.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lite_cpt.errors import UserError
from lite_cpt.results.estimates import Estimate, arm_estimates, metric_names, paired_difference
from lite_cpt.io import atomic_write_bytes, atomic_write_text
from lite_cpt.results.report import flagged_lines
from lite_cpt.results.runs import RunResults, load_run, recipe_seeds

# Keys that never change results: a run's own name and location, and where its logs also go.
NON_RESULT_KEYS = ("name", "output_dir", "logging", "seed")
MISSING = "(absent)"


def flatten_recipe(recipe: dict) -> dict[str, Any]:
    """Dotted keys of a saved recipe. Lists of named sections (arms, tasks, benchmarks) are keyed
    by name, so `arms.rft.rft.kl` means the same thing whatever the arm's position; `seeds` is the
    list of seeds the run asked for (its `seed` when there is no list)."""
    flat: dict[str, Any] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}.{key}" if prefix else str(key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            flat[f"{prefix}[order]"] = [v["name"] for v in value]
            for item in value:
                walk({k: v for k, v in item.items() if k != "name"}, f"{prefix}.{item['name']}")
        else:
            flat[prefix] = value

    walk({k: v for k, v in recipe.items() if k not in NON_RESULT_KEYS}, "")
    if recipe:
        flat["seeds"] = recipe_seeds(recipe)
    return flat


def recipe_differences(recipes: list[dict]) -> list[tuple[str, list[Any]]]:
    """(key, [value in each run]) for every key whose value is not the same in all runs."""
    flats = [flatten_recipe(r) for r in recipes]
    keys = list(dict.fromkeys(key for flat in flats for key in flat))
    differing = []
    for key in keys:
        values = [flat.get(key, MISSING) for flat in flats]
        if any(value != values[0] for value in values[1:]):
            differing.append((key, values))
    return differing


@dataclass
class Row:
    run: str
    arm: str
    seeds: str  # "finished/expected"
    estimates: dict[str, Estimate]


@dataclass
class Comparison:
    runs: list[RunResults]
    labels: list[str]  # unique run labels (directory names, numbered when they repeat)
    metrics: list[str]
    metric: str  # the one the differences and the plot are about
    rows: list[Row]
    recipe_differences: list[tuple[str, list[Any]]]
    differences: list[tuple[str, Estimate]]  # (label "run/arm − run/arm", estimate)
    missing: list[str]


def run_labels(runs: list[RunResults]) -> list[str]:
    labels = []
    for run in runs:
        label, count = run.name, 2
        while label in labels:
            label, count = f"{run.name} ({count})", count + 1
        labels.append(label)
    return labels


def resolve_metric(metric: str, metrics: list[str]) -> str:
    """`--metric` as a metric name: exact or case-insensitive, or a benchmark name for its Δ."""
    for candidate in (metric, f"Δ {metric}", f"Δ {metric.removeprefix('delta_')}"):
        for name in metrics:
            if name.lower() == candidate.lower():
                return name
    raise UserError(f"unknown metric '{metric}'; allowed values: {', '.join(metrics)}")


def compare_runs(run_dirs: list[Path], arms: list[str] | None = None, metric: str = "BWT") -> Comparison:
    """Read the runs and compute everything `lite-cpt compare` shows (no files written)."""
    if not run_dirs:
        raise UserError("give at least one run directory, e.g. lite-cpt compare runs/tiny runs/tiny-nokl")
    runs = [load_run(Path(d)) for d in run_dirs]
    known = list(dict.fromkeys(arm for run in runs for arm in run.units))
    if arms:
        unknown = [a for a in arms if a not in known]
        if unknown:
            raise UserError(f"no run has arm {', '.join(unknown)}; arms with results: {', '.join(known)}")
    chosen = arms or known
    units = [unit for run in runs for arm in chosen for unit in run.units.get(arm, {}).values()]
    metrics = metric_names(units)
    metric = resolve_metric(metric, metrics)
    labels = run_labels(runs)
    rows = [Row(label, arm, f"{sum(u.finished for u in run.units[arm].values())}/{len(run.seeds)}",
                arm_estimates(run.units[arm], metrics))
            for run, label in zip(runs, labels) for arm in chosen if arm in run.units]
    return Comparison(runs, labels, metrics, metric, rows, recipe_differences([r.recipe for r in runs]),
                      _differences(runs, labels, chosen, metric), _missing(runs, labels, chosen))


def _differences(runs: list[RunResults], labels: list[str], arms: list[str], metric: str) -> list[tuple[str, Estimate]]:
    found = []
    for arm in arms:  # the same arm across runs, against the first run that has it
        having = [(run, label) for run, label in zip(runs, labels) if arm in run.units]
        for run, label in having[1:]:
            first, first_label = having[0]
            found.append((f"{label}/{arm} − {first_label}/{arm}",
                          paired_difference(run.units[arm], first.units[arm], metric)))
    for run, label in zip(runs, labels):  # within a run, against its first sequential arm
        present = [arm for arm in arms if arm in run.units]
        sequential = [arm for arm in present if not any(u.joint for u in run.units[arm].values())]
        if not sequential:
            continue
        for arm in present:
            if arm != sequential[0]:
                found.append((f"{label}/{arm} − {label}/{sequential[0]}",
                              paired_difference(run.units[arm], run.units[sequential[0]], metric)))
    return found


def _missing(runs: list[RunResults], labels: list[str], arms: list[str]) -> list[str]:
    missing = []
    for run, label in zip(runs, labels):
        for arm, seed, state in run.missing_units():
            if arm in arms:
                missing.append(f"{label}/{arm} seed {seed} ({state})")
        missing += [f"{label}/{arm} (no results)" for arm in arms if arm not in run.units]
    return missing


# ---------------------------------------------------------------- rendering


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    value = round(value, 3) + 0.0  # no "-0.000"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _estimate(estimate: Estimate, signed: bool = False) -> str:
    text = _number(estimate.value, signed)
    if estimate.value is not None and estimate.low is not None:
        text += f" [{_number(estimate.low, signed)}, {_number(estimate.high, signed)}]"
    return text


def _value(value: Any) -> str:
    return "–" if value == MISSING else f"`{value}`"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]


def render_comparison(comparison: Comparison) -> str:
    """The markdown of `lite-cpt compare`; it depends on the comparison only."""
    c = comparison
    lines = [f"# lite-cpt compare: {', '.join(c.labels)}", ""]
    if len(c.runs) > 1:
        lines += ["## Recipe differences", ""]
        if c.recipe_differences:
            lines += _table(["key", *c.labels], [[key, *map(_value, values)] for key, values in c.recipe_differences])
        else:
            lines += ["The runs' recipes are the same (apart from name, output directory and logging)."]
        lines += [""]
    if flagged := flagged_lines([problem for run in c.runs for problem in run.problems()]):
        lines += [*flagged[1:], ""]
    lines += ["## Metrics (95 % intervals)", ""]
    lines += _table(["run", "arm", "seeds", *c.metrics, "interval"],
                    [[r.run, r.arm, r.seeds, *(_estimate(r.estimates[m]) for m in c.metrics),
                      ", ".join(dict.fromkeys(e.method for e in r.estimates.values() if e.method)) or "none"]
                     for r in c.rows])
    lines += ["", f"## Differences in {c.metric}", ""]
    if c.differences:
        rows = [[label, _estimate(e, signed=True), e.method or "none",
                 {True: "yes", False: "no", None: "n/a"}[e.excludes_zero]] for label, e in c.differences]
        lines += _table(["difference", c.metric, "interval", "excludes 0"], rows)
    else:
        lines += ["Nothing to difference: one (run, arm) only."]
    if c.missing:
        lines += ["", "Missing (left out of the intervals): " + "; ".join(c.missing) + "."]
    lines += ["", f"![{c.metric} per run and arm](compare.png)", ""]
    return "\n".join(lines)


def plot_comparison(comparison: Comparison, path: Path) -> None:
    """One horizontal error-bar row per (run, arm) for the chosen metric, every seed as a dot."""
    from matplotlib.figure import Figure

    rows = comparison.rows
    figure = Figure(figsize=(7.5, 1.2 + 0.4 * max(len(rows), 1)), layout="constrained")
    axes = figure.add_subplot()
    for y, row in enumerate(rows):
        estimate = row.estimates[comparison.metric]
        if estimate.value is None:
            continue
        seeds = list(estimate.per_seed.values())
        axes.scatter(seeds, [y] * len(seeds), s=12, color="grey", alpha=0.7, zorder=2)
        if estimate.low is not None:
            error = [[estimate.value - estimate.low], [estimate.high - estimate.value]]
            axes.errorbar([estimate.value], [y], xerr=error, fmt="o", color="C0", capsize=3, zorder=3)
        else:
            axes.plot([estimate.value], [y], "o", color="C0", zorder=3)
    axes.axvline(0.0, color="black", linewidth=0.8, alpha=0.5)
    axes.set_yticks(range(len(rows)), [f"{r.run} / {r.arm}" for r in rows], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel(f"{comparison.metric} (95 % interval; grey: each seed)")
    axes.grid(axis="x", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())


def write_comparison(run_dirs: list[Path], out_dir: Path, arms: list[str] | None = None,
                     metric: str = "BWT") -> tuple[Path, str]:
    """Write compare.md and compare.png into `out_dir`; return the markdown path and text."""
    comparison = compare_runs(run_dirs, arms, metric)
    out_dir = Path(out_dir)
    plot_comparison(comparison, out_dir / "compare.png")
    text = render_comparison(comparison)
    atomic_write_text(out_dir / "compare.md", text)
    return out_dir / "compare.md", text
