"""Reading a run directory: its recipe, its seeds, and each (seed, arm)'s results.

A run directory (`runs/<name>/`) holds `recipe.yaml` and one `seed_<k>/` directory per seed, each
with one subdirectory per arm:
  matrix.json    {"tasks": [T names], "R": [[T floats] x rows]}   row 0 = base, row i = after task i
  general.json   {"benchmarks": [names], "G": [[floats] x rows]}  optional, same row meaning;
                 "figures": per row, each benchmark's own figures (see lite_cpt.results.benchmark_figures)
  metrics.jsonl  "task_end" events give the compute cost; other events are ignored
  predictions/row_<i>.jsonl.gz   per-item scores of row i (row 0: ../base_predictions.jsonl.gz)
Runs written before seeds had directories keep the arms directly under the run directory; they
read as one seed (the recipe's `seed`). Anything unfinished reads as far as it got.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from lite_cpt.results.consistency import unit_problems
from lite_cpt.device_names import same_device
from lite_cpt.errors import UserError
from lite_cpt.results.metrics import accuracy_matrix, summarize

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
    path: Path | None = None  # the arm's directory, where its per-item predictions are
    # per row, {benchmark: {figure: {"value", "ci95"}}} of general.json (lite_cpt.results.benchmark_figures)
    figures: list[dict] = field(default_factory=list)
    eval_cot: bool = False  # evaluated with the chain-of-thought prompt (matrix.json's eval_prompt)
    # damaged result files and scores their predictions do not give (lite_cpt.results.consistency)
    problems: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.R.shape[0] == (2 if self.joint else self.R.shape[1] + 1)

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


def load_figure_rows(path: Path) -> list[dict]:
    """The "figures" rows of a general.json (lite_cpt.results.benchmark_figures); [] when it has none."""
    rows = _read_json(path).get("figures", []) if path.exists() else []
    return [row if isinstance(row, dict) else {} for row in rows] if isinstance(rows, list) else []


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
    predicted = [event["predicted_seconds"] for event in events if comparable_prediction(event)]
    cost["predicted_seconds"] = (float(sum(p["train"] + p.get("evaluation", 0.0) for p in predicted))
                                 if predicted else None)
    cost["phase_seconds"] = phase_seconds(events)
    cost.update({key: total((key,)) for key in COST_KEYS})
    kept = [event["kept_fraction"] for event in events if event.get("kept_fraction") is not None]
    cost["kept_fraction"] = float(np.mean(kept)) if kept else None
    return cost


def comparable_prediction(event: dict) -> bool:
    """Whether a task_end record's predicted seconds describe the device its measured seconds
    come from (`predicted_on` and `device`): a plan of another card, or one a record does not
    place (logged by earlier versions), is not set beside what was measured."""
    return bool(event.get("predicted_seconds")) and same_device(event.get("predicted_on"), event.get("device"))


def phase_seconds(events: list[dict]) -> dict[str, dict[str, float]]:
    """Per time-plan phase, the plan's seconds and the measured ones summed over the task_end
    events that carry both ({phase: {"predicted", "measured"}}); evaluation is the measured
    eval_seconds, offline instance filtering the measured rif_seconds."""
    sums: dict[str, dict[str, float]] = {}
    for event in events:
        predicted = event.get("predicted_seconds") if comparable_prediction(event) else {}
        measured = dict(event.get("phase_seconds") or {})
        if event.get("eval_seconds") is not None:
            measured["evaluation"] = event["eval_seconds"]
        if event.get("rif_seconds") is not None and "rif_rollout" in predicted:
            measured["rif_rollout"] = event["rif_seconds"]
        for phase, value in predicted.items():
            if phase != "train" and phase in measured:
                row = sums.setdefault(phase, {"predicted": 0.0, "measured": 0.0})
                row["predicted"] += value
                row["measured"] += measured[phase]
    return sums


def load_arm(arm_dir: Path) -> ArmResult:
    tasks, R = load_accuracy_matrix(arm_dir / "matrix.json")
    benchmarks, G = load_general_scores(arm_dir / "general.json")
    events = read_task_end_events(arm_dir / "metrics.jsonl")
    cost = compute_cost(events)
    matrix = _read_json(arm_dir / "matrix.json")
    joint = bool(matrix.get("joint", False))
    problems = unit_problems(arm_dir, tasks, R.tolist(), benchmarks, G)
    problems += [f"{arm_dir}: task {e.get('task_index')} ({e.get('task')}) went flat in training: {e['degenerate']}"
                 for e in events if e.get("degenerate")]
    return ArmResult(name=arm_dir.name, tasks=tasks, R=R, cost=cost, benchmarks=benchmarks, G=G, joint=joint,
                     path=arm_dir, figures=load_figure_rows(arm_dir / "general.json"),
                     eval_cot=matrix.get("eval_prompt") == "cot", problems=problems)


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


SEED_DIR = re.compile(r"seed_(\d+)")


def read_saved_recipe(run_dir: Path) -> dict:
    """The run's recipe.yaml as a dict; {} when it is missing or unreadable."""
    try:
        recipe = yaml.safe_load((Path(run_dir) / "recipe.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return recipe if isinstance(recipe, dict) else {}


def recipe_seeds(recipe: dict) -> list[int]:
    """Seeds a saved recipe asks for: `seeds`, else [`seed`]; [] for an unreadable recipe."""
    if not recipe:
        return []
    seeds = recipe.get("seeds")
    if isinstance(seeds, list) and all(isinstance(s, int) for s in seeds):
        return list(seeds)
    seed = recipe.get("seed", 0)
    return [seed] if isinstance(seed, int) else []


def seed_directories(run_dir: Path) -> dict[int, Path]:
    """{seed: directory holding that seed's arms}, in seed order."""
    run_dir = Path(run_dir)
    found = {int(m.group(1)): p for p in run_dir.iterdir()
             if p.is_dir() and (m := SEED_DIR.fullmatch(p.name))}
    if not found and _arm_names(run_dir):  # a run from before seed_<k>/ directories
        seeds = recipe_seeds(read_saved_recipe(run_dir)) or [0]
        found = {seeds[0]: run_dir}
    return dict(sorted(found.items()))


def _arm_names(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.is_dir() and (p / "matrix.json").is_file()]


@dataclass
class RunResults:
    """Every finished or partial (seed, arm) unit of one run directory."""

    run_dir: Path
    recipe: dict
    units: dict[str, dict[int, ArmResult]]  # arm -> seed -> result, arms in recipe order
    seed_dirs: dict[int, Path]
    expected_seeds: list[int]
    expected_arms: list[str]

    @property
    def name(self) -> str:
        return self.run_dir.resolve().name

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.expected_seeds) | set(self.seed_dirs))

    def arm_dir(self, arm: str, seed: int) -> Path:
        return self.seed_dirs[seed] / arm

    def problems(self) -> list[str]:
        """Every flagged result of the run's units (see ArmResult.problems), in unit order."""
        return [p for units in self.units.values() for unit in units.values() for p in unit.problems]

    def missing_units(self) -> list[tuple[str, int, str]]:
        """(arm, seed, state) for every expected unit that has not finished: 'not started' or 'k/T tasks'."""
        missing = []
        for arm in dict.fromkeys([*self.expected_arms, *self.units]):
            for seed in self.seeds:
                result = self.units.get(arm, {}).get(seed)
                if result is None:
                    missing.append((arm, seed, "not started"))
                elif not result.finished:
                    missing.append((arm, seed, f"{result.tasks_done}/{len(result.tasks)} tasks"))
        return missing


def load_run(run_dir: Path) -> RunResults:
    """Read every (seed, arm) unit of a run directory; a UserError when there is nothing to read."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass runs/<name> of a started run")
    seed_dirs = seed_directories(run_dir)
    found: dict[str, dict[int, ArmResult]] = {}
    for seed, directory in seed_dirs.items():
        for arm in _arm_names(directory):
            found.setdefault(arm, {})[seed] = load_arm(directory / arm)
    if not found:
        raise UserError(f"no arm results in {run_dir} (no seed_<k>/<arm>/matrix.json); run `lite-cpt run` first")
    recipe = read_saved_recipe(run_dir)
    order = recipe_arm_names(run_dir)
    units = {arm: found[arm] for arm in order_arms(list(found), order)}
    return RunResults(run_dir, recipe, units, seed_dirs, recipe_seeds(recipe), list(dict.fromkeys(order)))
