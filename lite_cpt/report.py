"""Turn a run directory into summary.json, report.md and PNG figures.

Reads, for each arm (a subdirectory of the run holding matrix.json):
  matrix.json    {"tasks": [T names], "R": [[T floats] x rows]}   row 0 = base, row i = after task i
  general.json   {"benchmarks": [names], "G": [[floats] x rows]}  optional, same row meaning
  metrics.jsonl  "task_end" events give the compute cost; other events are ignored
and writes into the run directory:
  summary.json               {arm: {"ACC", "BWT", "forgetting", "FWT"}}  (null where undefined)
  heatmap_<arm>.png          R of each arm, annotated
  seen_task_average.png      mean seen-task accuracy after each task, one line per arm
  report.md                  tables, figures and a short guide; identical inputs give identical text
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import quote

import numpy as np
import yaml

from lite_cpt.errors import UserError
from lite_cpt.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from lite_cpt.metrics import accuracy_matrix, general_deltas, seen_task_average, summarize

COST_KEYS = ("generated_tokens", "trained_tokens", "policy_updates")


@dataclass
class ArmResult:
    """Everything the report shows about one arm."""

    name: str
    tasks: list[str]
    R: np.ndarray  # (rows, T); rows < T + 1 while the arm is unfinished
    cost: dict[str, float | None]  # see compute_cost
    benchmarks: list[str] = field(default_factory=list)
    G: list[list[float]] = field(default_factory=list)
    # Joint (multi-task) arms train once on every task: R = [base row, joint row]. Only ACC is
    # defined for them; BWT, forgetting and FWT need a sequence.
    joint: bool = False

    @property
    def tasks_done(self) -> int:
        if self.joint:
            return self.R.shape[1] if self.R.shape[0] == 2 else 0
        return max(self.R.shape[0] - 1, 0)

    @cached_property
    def summary(self) -> dict[str, float | None]:
        if self.joint:
            acc = float(self.R[-1].mean()) if self.R.shape[0] == 2 else None
            return {"ACC": acc, "BWT": None, "forgetting": None, "FWT": None}
        return summarize(self.R)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; rerun the arm or remove the broken file") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def load_accuracy_matrix(path: Path) -> tuple[list[str], np.ndarray]:
    """Task names and R (shape (rows, T)) from a matrix.json, checked."""
    data = _read_json(path)
    tasks, rows = data.get("tasks"), data.get("R")
    if not isinstance(tasks, list) or not tasks or not all(isinstance(t, str) for t in tasks):
        raise UserError(f"{path}: 'tasks' must be a non-empty list of task names")
    if not isinstance(rows, list):
        raise UserError(f"{path}: 'R' must be a list of rows (row 0 = base model, row i = after task i)")
    if any(not isinstance(row, list) or len(row) != len(tasks) for row in rows):
        raise UserError(f"{path}: every row of 'R' must hold one score per task ({len(tasks)} tasks)")
    try:
        R = accuracy_matrix(np.asarray(rows, dtype=float).reshape(len(rows), len(tasks)), complete=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"{path}: {exc}") from exc
    return tasks, R


def load_general_scores(path: Path) -> tuple[list[str], list[list[float]]]:
    """Benchmark names and G rows from a general.json; ([], []) when the file is absent."""
    if not path.exists():
        return [], []
    data = _read_json(path)
    benchmarks, rows = data.get("benchmarks", []), data.get("G", [])
    if not isinstance(benchmarks, list) or not all(isinstance(b, str) for b in benchmarks):
        raise UserError(f"{path}: 'benchmarks' must be a list of benchmark names")
    if not isinstance(rows, list) or any(not isinstance(r, list) or len(r) != len(benchmarks) for r in rows):
        raise UserError(f"{path}: every row of 'G' must hold one score per benchmark ({len(benchmarks)})")
    return benchmarks, rows


def read_task_end_events(path: Path) -> list[dict]:
    """The "task_end" events of a metrics.jsonl, one per task index (the last one logged wins).

    A resumed run retrains a task whose result was not saved and logs its task_end again; the
    last event is the one whose result the matrix holds. A truncated final line (the process
    died mid-write) is skipped; a broken line elsewhere is an error.
    """
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_task: dict[int, dict] = {}
    for number, line in enumerate(lines, 1):
        try:
            event = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines):
                break
            raise UserError(f"{path}:{number} is not valid JSON ({exc}); fix or remove that line") from exc
        if isinstance(event, dict) and event.get("event") == "task_end":
            by_task[int(event.get("task_index", len(by_task) + 1))] = event
    return [by_task[index] for index in sorted(by_task)]


def compute_cost(events: list[dict]) -> dict[str, float | None]:
    """Totals over task_end events: wall seconds (train + eval), tokens, policy updates.

    Also the mean "kept_fraction" for RIF arms. A quantity no event reports is None.
    """

    def total(keys: tuple[str, ...]) -> float | None:
        values = [event[key] for event in events for key in keys if event.get(key) is not None]
        return float(sum(values)) if values else None

    cost = {"wall_seconds": total(("train_seconds", "eval_seconds"))}
    predicted = [event["predicted_seconds"] for event in events if event.get("predicted_seconds")]
    cost["predicted_seconds"] = (float(sum(p["train"] + p.get("evaluation", 0.0) for p in predicted))
                                 if predicted else None)
    cost.update({key: total((key,)) for key in COST_KEYS})
    kept = [event["kept_fraction"] for event in events if event.get("kept_fraction") is not None]
    cost["kept_fraction"] = float(np.mean(kept)) if kept else None
    return cost


def load_arm(arm_dir: Path) -> ArmResult:
    tasks, R = load_accuracy_matrix(arm_dir / "matrix.json")
    benchmarks, G = load_general_scores(arm_dir / "general.json")
    cost = compute_cost(read_task_end_events(arm_dir / "metrics.jsonl"))
    joint = bool(_read_json(arm_dir / "matrix.json").get("joint", False))
    return ArmResult(name=arm_dir.name, tasks=tasks, R=R, cost=cost, benchmarks=benchmarks, G=G, joint=joint)


def recipe_arm_names(run_dir: Path) -> list[str]:
    """Arm names in recipe.yaml order; [] when the recipe is missing or unreadable."""
    try:
        recipe = yaml.safe_load((run_dir / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return []
    arms = recipe.get("arms") if isinstance(recipe, dict) else None
    if not isinstance(arms, list):
        return []
    return [str(arm["name"]) for arm in arms if isinstance(arm, dict) and "name" in arm]


def order_arms(found: list[str], recipe_order: list[str]) -> list[str]:
    """Arms in recipe order, then any the recipe does not list, alphabetically."""
    listed = [name for name in dict.fromkeys(recipe_order) if name in found]
    return listed + sorted(set(found) - set(listed))


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
forgetting, FWT for a single-task run). Compute cost sums the
per-task logs: wall time is training plus evaluation seconds; the time plan is what `lite-cpt
plan` predicts for the same tasks with the run's calibration (`--calibration`, else a reference
24 GB card); kept fraction is the mean share of instances that rollout-based filtering kept."""


def render_markdown(run_name: str, arms: list[ArmResult], missing: list[str]) -> str:
    """The report text; it depends on its arguments only (no timestamps)."""
    benchmarks = list(dict.fromkeys(b for arm in arms for b in arm.benchmarks))

    lines = [f"# lite-cpt report: {run_name}", ""]
    lines += [f"Arms: {', '.join(f'{arm.name} ({arm.tasks_done}/{len(arm.tasks)} tasks)' for arm in arms)}."]
    if missing:
        lines += ["", f"Arms in the recipe with no results yet: {', '.join(missing)}."]

    lines += ["", "## Continual-learning metrics", ""]
    header = ["arm", "tasks done", "ACC", "BWT", "forgetting", "FWT"] + [f"Δ {b}" for b in benchmarks]
    rows = []
    for arm in arms:
        summary = arm.summary
        deltas = dict(zip(arm.benchmarks, general_deltas(arm.G)))
        rows.append(
            [arm.name, f"{arm.tasks_done}/{len(arm.tasks)}", _number(summary["ACC"]),
             _number(summary["BWT"], signed=True), _number(summary["forgetting"]),
             _number(summary["FWT"], signed=True)]
            + [_number(deltas.get(b), signed=True) for b in benchmarks]
        )
    lines += _table(header, rows)

    lines += ["", "## Compute cost", ""]
    header = ["arm", "wall time (train + eval, s)", "time plan (s)", "generated tokens", "trained tokens",
              "policy updates", "kept fraction (mean)"]
    rows = [
        [arm.name,
         "n/a" if arm.cost["wall_seconds"] is None else f"{arm.cost['wall_seconds']:.1f}",
         "n/a" if arm.cost.get("predicted_seconds") is None else f"{arm.cost['predicted_seconds']:.1f}",
         _count(arm.cost["generated_tokens"]), _count(arm.cost["trained_tokens"]),
         _count(arm.cost["policy_updates"]), _number(arm.cost["kept_fraction"])]
        for arm in arms
    ]
    lines += _table(header, rows)

    lines += ["", "## Mean accuracy on seen tasks", "", _image("mean seen-task accuracy per arm",
                                                               "seen_task_average.png")]

    for arm in arms:
        lines += ["", f"## Accuracy matrix: {arm.name}", ""]
        if arm.R.shape[0] == 0:
            lines += ["No evaluated row yet."]
            continue
        lines += [_image(f"accuracy heatmap of {arm.name}", heatmap_filename(arm.name)), ""]
        body = [[label] + [f"{value:.3f}" for value in arm.R[i]]
                for i, label in enumerate(row_labels(arm.tasks, arm.R.shape[0], arm.joint))]
        lines += _table(["stage \\ task", *arm.tasks], body)

    lines += ["", "## How to read this", "", HOW_TO_READ, ""]
    return "\n".join(lines)


def write_report(run_dir: Path) -> Path:
    """Write summary.json, the PNGs and report.md into `run_dir`; return the report.md path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass runs/<name> of a started run")
    found = [p.name for p in run_dir.iterdir() if p.is_dir() and (p / "matrix.json").is_file()]
    if not found:
        raise UserError(f"no arm results in {run_dir} (no <arm>/matrix.json); run `lite-cpt run` first")
    recipe_order = recipe_arm_names(run_dir)
    arms = [load_arm(run_dir / name) for name in order_arms(found, recipe_order)]
    missing = [name for name in dict.fromkeys(recipe_order) if name not in found]

    atomic_write_json(run_dir / "summary.json", {arm.name: arm.summary for arm in arms})
    for arm in arms:
        if arm.R.shape[0] > 0:
            plot_heatmap(arm, run_dir / heatmap_filename(arm.name))
    plot_seen_task_average(arms, run_dir / "seen_task_average.png")
    report_path = run_dir / "report.md"
    atomic_write_text(report_path, render_markdown(run_dir.resolve().name, arms, missing))
    return report_path
