"""Turn a run directory into summary.json, report.md and PNG figures.

Reads every (seed, arm) unit of the run (see `lite_cpt.results.runs` for the layout) and writes into
the run directory:
  summary.json           {"seeds", "arms": {arm: {"seeds_finished", "metrics": {metric: estimate}}},
                          "differences": [...], "benchmark_figures": {"base", "arms"}}; an estimate is
                          {"value", "ci95", "interval", "per_seed"} (benchmark_figures: see
                          lite_cpt.results.benchmark_figures; absent when no benchmark has a summary)
  heatmap_<arm>.png      R of each arm (the mean over its finished seeds), annotated
  seen_task_average.png  mean seen-task accuracy after each task, one line per arm
  report.md              tables with 95 % intervals, paired differences, forgotten items, figures
                         and a short guide; identical inputs give identical text
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from lite_cpt.results.benchmark_figures import figures_json, figures_section
from lite_cpt.results.estimates import Estimate, arm_estimates, metric_names, paired_difference, units_for_estimates
from lite_cpt.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from lite_cpt.results.metrics import seen_task_average
from lite_cpt.results.predictions import flipped_items, read_predictions, row_predictions_path
from lite_cpt.results.runs import COST_KEYS, ArmResult, RunResults, load_run

# ---------------------------------------------------------------- figures


def _png_bytes(figure) -> bytes:
    buffer = io.BytesIO()
    # No "Software" entry: the PNG then depends only on the data, not on the matplotlib version.
    figure.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    return buffer.getvalue()


def row_labels(tasks: list[str], rows: int, joint: bool = False) -> list[str]:
    if joint:
        return ["base", "after joint training"][:rows]
    return (["base"] + [f"after {task}" for task in tasks])[:rows]


def plot_heatmap(arm: ArmResult, path: Path) -> None:
    """Annotated heatmap of R: one row per training stage, one column per task."""
    from matplotlib.figure import Figure  # without pyplot: no display backend is involved

    rows, tasks = arm.R.shape
    figure = Figure(figsize=(2.2 + 0.9 * tasks, 1.6 + 0.45 * max(rows, 1)), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(arm.R, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    for i in range(rows):
        for j in range(tasks):
            value = arm.R[i, j]
            axes.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                      color="black" if value > 0.6 else "white")  # readable on viridis
    axes.set_xticks(range(tasks), arm.tasks, rotation=30, ha="right")
    axes.set_yticks(range(rows), row_labels(arm.tasks, rows, arm.joint))
    axes.set_xlabel("evaluated on task")
    axes.set_title(f"{arm.name}: accuracy after each training stage")
    figure.colorbar(image, ax=axes, label="score")
    atomic_write_bytes(path, _png_bytes(figure))


def plot_seen_task_average(arms: list[ArmResult], path: Path) -> None:
    """Mean accuracy over the tasks trained so far, after each task; one line per arm."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.2), layout="constrained")
    axes = figure.add_subplot()
    for index, arm in enumerate(arms):
        color = f"C{index % 10}"  # one colour per arm, the same whatever is drawn for it
        if arm.joint:
            # The joint arm sees every task at once: its accuracy is a reference level.
            if arm.summary["ACC"] is not None:
                axes.axhline(arm.summary["ACC"], linestyle="--", color=color, label=f"{arm.name} (joint)")
            continue
        curve = seen_task_average(arm.R)
        if curve:
            axes.plot(range(1, len(curve) + 1), curve, marker="o", color=color, label=arm.name)
    longest = max(arms, key=lambda arm: len(arm.tasks))
    steps = range(1, len(longest.tasks) + 1)
    same_sequence = all(arm.tasks == longest.tasks[: len(arm.tasks)] for arm in arms)
    labels = [f"{step}\n{task}" for step, task in zip(steps, longest.tasks)] if same_sequence else list(steps)
    axes.set_xticks(list(steps), labels, fontsize=8)
    axes.set_xlabel("tasks trained so far")
    axes.set_ylabel("mean accuracy on seen tasks")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    atomic_write_bytes(path, _png_bytes(figure))


# ---------------------------------------------------------------- markdown


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    value = round(value, 3) + 0.0  # + 0.0 turns -0.0 into 0.0, so no "-0.000"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def _count(value: float | None) -> str:
    return "n/a" if value is None else f"{round(value):,}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _image(alt: str, filename: str) -> str:
    return f"![{alt}]({quote(filename)})"


def heatmap_filename(arm_name: str) -> str:
    return f"heatmap_{arm_name}.png"


HOW_TO_READ = """\
R[i, j] is the score on task j after training task i; row "base" is the model before any
training. **ACC** is the mean of the last row (higher is better). **BWT** (backward transfer) is
the mean change on each earlier task from right after it was trained to the end: negative means
forgetting, positive means later tasks helped it. **Forgetting** is, per earlier task, the drop
from its best score during training (base row excluded) to its final score, averaged; 0 is no
forgetting. **FWT** (forward transfer) is the mean gain on a task before it is trained, against
the base model. **Δ general** is the last row's change on each general benchmark against the
base model; negative means general ability was lost (for an unfinished arm: the change so far).
ACC, BWT, forgetting and FWT are n/a for an arm that has not finished every task (and BWT,
forgetting, FWT for a single-task run).

Each value comes with its 95 % interval in brackets. With two or more finished seeds the value is
the mean over seeds and the interval a Student t-interval (mean ± t·s/√n; every seed's value is
listed); with one seed it is that seed's value and a percentile bootstrap over its test items
(2000 resamples, each task's items resampled alike for every row). A difference between two arms
is paired: by seed (t-interval of the per-seed differences), or with one seed by test item (both
arms resampled with the same items); `*` marks an interval that excludes zero. Compute cost sums
the per-task logs (the mean over seeds): wall time is training plus evaluation seconds; the time
plan is what `lite-cpt plan` predicts for the same tasks with the run's calibration
(`--calibration`, else a reference 24 GB card); kept fraction is the mean share of instances
that rollout-based filtering kept."""


@dataclass
class ArmReport:
    """One arm of the report: its units, what is shown for it, and its estimates."""

    name: str
    units: dict[int, ArmResult]  # seed -> unit
    shown: ArmResult  # mean over the finished seeds (or the most advanced unit)
    estimates: dict[str, Estimate]

    @property
    def seeds_finished(self) -> list[int]:
        return [seed for seed, unit in self.units.items() if unit.finished]


def mean_unit(units: dict[int, ArmResult]) -> ArmResult:
    """The arm as the report shows it: R, G and cost averaged over the finished seeds."""
    used = list(units_for_estimates(units).values())
    first = used[0]
    if len(used) == 1:
        return first
    costs = {key: [u.cost[key] for u in used if u.cost.get(key) is not None] for key in first.cost}
    G = np.mean([np.asarray(u.G, dtype=float) for u in used], axis=0).tolist() if first.G else []
    cost = {key: float(np.mean(v)) if v else None for key, v in costs.items() if key != "phase_seconds"}
    cost["phase_seconds"] = _mean_phase_seconds(costs.get("phase_seconds", []))
    return ArmResult(name=first.name, tasks=first.tasks, R=np.mean([u.R for u in used], axis=0), cost=cost,
                     benchmarks=first.benchmarks, G=G, joint=first.joint)


def _mean_phase_seconds(per_seed: list[dict]) -> dict:
    """{phase: {"predicted", "measured"}} averaged over the seeds that logged the phase."""
    phases = dict.fromkeys(p for seed in per_seed for p in seed)
    return {p: {k: float(np.mean([seed[p][k] for seed in per_seed if p in seed])) for k in ("predicted", "measured")}
            for p in phases}


def build_arm_reports(run: RunResults, metrics: list[str]) -> list[ArmReport]:
    return [ArmReport(arm, units, mean_unit(units), arm_estimates(units, metrics)) for arm, units in run.units.items()]


def reference_arm(reports: list[ArmReport]) -> ArmReport | None:
    """The arm the others are compared with: the first sequential arm (sft in the shipped recipes)."""
    sequential = [r for r in reports if not r.shown.joint]
    return sequential[0] if sequential else (reports[0] if reports else None)


def arm_differences(reports: list[ArmReport], metrics: list[str]) -> list[dict]:
    """metric(arm) − metric(reference) for every other arm, paired (see lite_cpt.results.estimates)."""
    reference = reference_arm(reports)
    if reference is None:
        return []
    rows = []
    for report in reports:
        if report is reference:
            continue
        estimates = {m: paired_difference(report.units, reference.units, m) for m in metrics}
        rows.append({"arm": report.name, "reference": reference.name, "estimates": estimates})
    return rows


def forgotten_items(unit: ArmResult, examples: int = 2) -> list[dict]:
    """Per earlier task: items right just after the task was trained and wrong at the end.

    Read from the per-item predictions of the unit (rows j and T); [] when they are missing.
    """
    if unit.joint or not unit.finished or unit.path is None:
        return []
    last = row_predictions_path(unit.path, len(unit.tasks))
    if not last.is_file():
        return []
    final = read_predictions(last)
    found = []
    for index, task in enumerate(unit.tasks[:-1], 1):
        path = row_predictions_path(unit.path, index)
        if not path.is_file():
            continue
        flips = flipped_items(read_predictions(path), final, task)
        total = len(final.get(task, []))
        found.append({"task": task, "flipped": len(flips), "items": total, "examples": flips[:examples]})
    return found


# ---------------------------------------------------------------- markdown: estimates and sections


def _estimate(estimate: Estimate, signed: bool = False, mark: bool = False) -> str:
    text = _number(estimate.value, signed)
    if estimate.value is not None and estimate.low is not None:
        text += f" [{_number(estimate.low, signed)}, {_number(estimate.high, signed)}]"
    if mark and estimate.excludes_zero:
        text += " *"
    return text


def _signed(metric: str) -> bool:
    return metric in ("BWT", "FWT") or metric.startswith("Δ ")


def _methods(estimates: list[Estimate]) -> str:
    return ", ".join(dict.fromkeys(e.method for e in estimates if e.method)) or "none"


def _tasks_done(report: ArmReport) -> str:
    done = dict.fromkeys(f"{u.tasks_done}/{len(u.tasks)}" for u in report.units.values())
    return ", ".join(done)


def _status_lines(run: RunResults, reports: list[ArmReport]) -> list[str]:
    seeds = run.seeds
    lines = [f"Seeds: {', '.join(map(str, seeds))}. Arms: "
             + ", ".join(f"{r.name} ({len(r.seeds_finished)}/{len(seeds)} seeds finished)" for r in reports) + "."]
    unfinished = [(arm, seed, state) for arm, seed, state in run.missing_units() if arm in run.units]
    if unfinished:
        lines += ["", "Not finished yet (left out of the intervals): "
                  + "; ".join(f"{arm} seed {seed} ({state})" for arm, seed, state in unfinished) + "."]
    absent = [arm for arm in run.expected_arms if arm not in run.units]
    if absent:
        lines += ["", f"Arms in the recipe with no results yet: {', '.join(absent)}."]
    return lines


def flagged_lines(problems: list[str]) -> list[str]:
    """Result files damaged since they were written, scores their predictions do not give, and
    phases whose training went flat (a degenerate model)."""
    if not problems:
        return []
    return ["", "## Flagged results", "",
            "Do not trust a damaged file or a score its predictions do not give: run the arm again (`lite-cpt "
            "run` recomputes it) or restore the file. A phase that went flat learnt nothing: look at the "
            "learning rate, the data and the reward.", "",
            *(f"- {_cell(problem)}" for problem in problems)]


def _metrics_section(reports: list[ArmReport], metrics: list[str], seeds: list[int]) -> list[str]:
    lines = ["", "## Continual-learning metrics", ""]
    header = ["arm", "seeds", "tasks done", *metrics, "interval"]
    rows = [[r.name, f"{len(r.seeds_finished)}/{len(seeds)}", _tasks_done(r),
             *(_estimate(r.estimates[m], _signed(m)) for m in metrics), _methods(list(r.estimates.values()))]
            for r in reports]
    lines += _table(header, rows)
    if any(len(e.per_seed) > 1 for r in reports for e in r.estimates.values()):
        lines += ["", "### Every seed's value", ""]
        shown = [s for s in seeds if any(s in r.units for r in reports)]
        body = [[r.name, m, *(_number(r.estimates[m].per_seed.get(s), _signed(m)) for s in shown)]
                for r in reports for m in metrics if r.estimates[m].value is not None]
        lines += _table(["arm", "metric", *(f"seed {s}" for s in shown)], body)
    return lines


def _differences_section(differences: list[dict], metrics: list[str]) -> list[str]:
    if not differences:
        return []
    reference = differences[0]["reference"]
    lines = ["", f"## Paired differences against {reference}", "",
             f"Each cell: metric(arm) − metric({reference}) [95 % interval]; `*` = the interval excludes 0.", ""]
    rows = [[f"{d['arm']} − {reference}", *(_estimate(d["estimates"][m], True, mark=True) for m in metrics),
             _methods(list(d["estimates"].values()))] for d in differences]
    return lines + _table(["difference", *metrics, "interval"], rows)


def _cost_section(reports: list[ArmReport]) -> list[str]:
    lines = ["", "## Compute cost (per seed)", ""]
    header = ["arm", "wall time (train + eval, s)", "time plan (s)", "generated tokens", "trained tokens",
              "policy updates", "kept fraction (mean)"]
    rows = []
    for report in reports:
        cost = report.shown.cost
        rows.append([report.name, "n/a" if cost["wall_seconds"] is None else f"{cost['wall_seconds']:.1f}",
                     "n/a" if cost.get("predicted_seconds") is None else f"{cost['predicted_seconds']:.1f}",
                     _count(cost["generated_tokens"]), _count(cost["trained_tokens"]),
                     _count(cost["policy_updates"]), _number(cost["kept_fraction"])])
    return lines + _table(header, rows) + _phase_time_section(reports)


def _phase_time_section(reports: list[ArmReport]) -> list[str]:
    """Predicted vs measured seconds per phase of each arm (the runs that logged both)."""
    rows = []
    for report in reports:
        for phase, times in (report.shown.cost.get("phase_seconds") or {}).items():
            ratio = times["predicted"] / times["measured"] if times["measured"] > 0 else None
            rows.append([report.name, phase, f"{times['predicted']:.1f}", f"{times['measured']:.1f}",
                         "n/a" if ratio is None else f"{ratio:.2f}"])
    if not rows:
        return []
    lines = ["", "### Time plan vs measured, per phase", "",
             "Seconds summed over the arm's tasks (`predicted_seconds` and `phase_seconds` of metrics.jsonl)."]
    return lines + [""] + _table(["arm", "phase", "predicted (s)", "measured (s)", "predicted / measured"], rows)


def _forgotten_section(reports: list[ArmReport]) -> list[str]:
    lines = []
    for report in reports:
        seeds = report.seeds_finished
        found = forgotten_items(report.units[seeds[0]]) if seeds else []
        if not found:
            continue
        if not lines:
            lines = ["", "## Forgotten items", "",
                     "Test items answered right just after their task was trained and wrong at the end "
                     "(lowest finished seed; every item is in `seed_<k>/<arm>/predictions/`)."]
        lines += ["", f"### {report.name} (seed {seeds[0]})", ""]
        rows = [[f["task"], f"{f['flipped']}/{f['items']}",
                 "; ".join(f"{b['id']}: {b['answer']!r} → {a['answer']!r}" for b, a in f["examples"]) or "–"]
                for f in found]
        lines += _table(["task", "right → wrong", "examples (then → at the end)"], rows)
    return lines


def _matrix_sections(reports: list[ArmReport]) -> list[str]:
    lines = []
    for report in reports:
        arm = report.shown
        finished = report.seeds_finished
        where = f" (mean over seeds {', '.join(map(str, finished))})" if len(finished) > 1 else ""
        lines += ["", f"## Accuracy matrix: {report.name}{where}", ""]
        if arm.R.shape[0] == 0:
            lines += ["No evaluated row yet."]
            continue
        lines += [_image(f"accuracy heatmap of {report.name}", heatmap_filename(report.name)), ""]
        body = [[label] + [f"{value:.3f}" for value in arm.R[i]]
                for i, label in enumerate(row_labels(arm.tasks, arm.R.shape[0], arm.joint))]
        lines += _table(["stage \\ task", *arm.tasks], body)
    return lines


def render_markdown(run: RunResults, reports: list[ArmReport], metrics: list[str],
                    differences: list[dict]) -> str:
    """The report text; it depends on its arguments only (no timestamps)."""
    lines = [f"# lite-cpt report: {run.name}", "", *_status_lines(run, reports), *flagged_lines(run.problems())]
    lines += _metrics_section(reports, metrics, run.seeds)
    lines += _differences_section(differences, metrics)
    lines += figures_section(reports, _estimate)
    lines += _cost_section(reports)
    lines += ["", "## Mean accuracy on seen tasks", "",
              _image("mean seen-task accuracy per arm", "seen_task_average.png")]
    lines += _forgotten_section(reports)
    lines += _matrix_sections(reports)
    lines += ["", "## How to read this", "", HOW_TO_READ, ""]
    return "\n".join(lines)


def summary_json(run: RunResults, reports: list[ArmReport], differences: list[dict]) -> dict:
    return {
        "seeds": run.seeds,
        "arms": {r.name: {"seeds_finished": r.seeds_finished,
                          "metrics": {m: e.as_json() for m, e in r.estimates.items()}} for r in reports},
        "differences": [{"arm": d["arm"], "reference": d["reference"],
                         "metrics": {m: {**e.as_json(), "excludes_zero": e.excludes_zero}
                                     for m, e in d["estimates"].items()}} for d in differences],
        **figures_json(reports),
    }


def write_report(run_dir: Path) -> Path:
    """Write summary.json, the PNGs and report.md into `run_dir`; return the report.md path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    metrics = metric_names(unit for units in run.units.values() for unit in units.values())
    reports = build_arm_reports(run, metrics)
    differences = arm_differences(reports, metrics)

    atomic_write_json(run_dir / "summary.json", summary_json(run, reports, differences))
    for report in reports:
        if report.shown.R.shape[0] > 0:
            plot_heatmap(report.shown, run_dir / heatmap_filename(report.name))
    plot_seen_task_average([r.shown for r in reports], run_dir / "seen_task_average.png")
    report_path = run_dir / "report.md"
    atomic_write_text(report_path, render_markdown(run, reports, metrics, differences))
    return report_path
