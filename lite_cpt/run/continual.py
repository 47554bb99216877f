"""The continual loop: for each arm, train task by task, save the adapter, evaluate everything.

Layout of a run (`runs/<name>/`):

    recipe.yaml                 the resolved recipe (a re-run must match it, seeds aside, to resume)
    seed_<k>/                   everything one seed produced; each (seed, arm) resumes on its own
      base_scores.json          row 0 (the base model) on tasks and general benchmarks, direct-answer prompt
      base_predictions.jsonl.gz row 0 per item (id, answer, score)
      base_*_cot.json(l.gz)     the same with the chain-of-thought prompt, for arms evaluated with it
      <arm>/matrix.json         {"tasks": [...], "R": [[...], ...]}; row 0 = base, row t = after task t
      <arm>/general.json        {"benchmarks": [...], "G": [[...], ...], "figures": [...]}, same rows
      <arm>/metrics.jsonl       per-step logs and one "task_end" record per finished task
      <arm>/predictions/row_<t>.jsonl.gz   row t per item
      <arm>/task_<t>/           PEFT adapter after task t (joint arms: task_1 only)
      checksums.json, <arm>/checksums.json   size and sha256 of the result files beside them
      <arm>/.lock               flock of the process training the arm (see lite_cpt.run.locks)
      <arm>/tracking.json       the unit's W&B and MLflow run ids (see lite_cpt.tracking.tracker)
    tensorboard/seed_<k>/<arm>/ event files when `logging.tensorboard` is on
    report.md, summary.json, *.png

A task is finished when its row is in matrix.json; the adapter is saved before the row is
written, so a run killed anywhere resumes at the first unfinished task and, because every
phase is seeded from (seed, arm, task), ends with the numbers of an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console

from lite_cpt.arms import build_arm
from lite_cpt.run.checkpoint import PhaseCheckpointer
from lite_cpt.results.consistency import damaged_prediction_rows
from lite_cpt.errors import UserError
from lite_cpt.run.eval_prompt import base_files, recipe_eval_cots
from lite_cpt.run.evaluate import EvalSet
from lite_cpt.run.integrity import remove_stale_temporaries, verify_directory
from lite_cpt.kernels.logprob_shared import using_logprob_path
from lite_cpt.io import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl, truncate_jsonl
from lite_cpt.run.locks import unit_lock, units_locked_ahead
from lite_cpt.planner.calibration import Calibration
from lite_cpt.train.numerics import flat_phase_note
from lite_cpt.models import add_lora, check_device, load_adapter_weights, load_base, save_adapter
from lite_cpt.train.phase import Phase, PhaseStats
from lite_cpt.run.preemption import stop_deferred
from lite_cpt.results.predictions import row_predictions_path
from lite_cpt.progress import task_progress
from lite_cpt.recipe import Recipe, recipe_to_yaml
from lite_cpt.run.run_time_plan import prediction_record, say_time_plan
from lite_cpt.run.unit_plan import UnitPlan, plan_evaluation, plan_unit
from lite_cpt.run.splits import load_samples
from lite_cpt.run.workspace import Workspace
from lite_cpt.run.rows import RowFiles, base_row, evaluate_row, resume_rows
from lite_cpt.run.saved_rows import _read_json, last_intact_task
from lite_cpt.train.vllm_backend import check_engine_installed, engine_for
from lite_cpt.seeding import derived_seed
from lite_cpt.tasks.base import Task, build_task
from lite_cpt.tracking.tracker import RunTracker
from lite_cpt.train.truncation import task_end_extra
from lite_cpt.train.vision_cache import vision_feature_cache

log = logging.getLogger(__name__)

BASE_SCORES = base_files(cot=False)[0]  # row 0 of the direct-answer format
#: The phase's statistics, saved with its adapter (a run killed while evaluating skips training).
PHASE_STATS = "phase_stats.json"


# Keys that do not change any one seed's numbers: which seeds run, where logs also go, and
# how often a phase checkpoints (saving consumes no randomness).
SEED_INDEPENDENT_KEYS = ("seed", "seeds", "logging", "checkpoint")
# Keys inside a section that move memory only, never a number (section, key): a run saved with
# another value, or before the key existed, resumes. The offload trains to the same weights
# (tests/test_vllm_backend.py).
PLACEMENT_KEYS = (("rollout", "offload_trainer"),)


def prepare_run_dir(recipe: Recipe) -> Path:
    """Create the run directory, or check that an existing one holds this same recipe (up to
    its seeds, so more seeds can be added to a run later); the saved recipe lists every seed."""
    run_dir = recipe.run_dir
    saved = run_dir / "recipe.yaml"
    seeds = recipe.run_seeds
    if saved.exists() and (previous := _readable_recipe(saved)) is not None:
        current = recipe.model_dump(mode="json")
        if _seedless(previous) != _seedless(current):
            raise UserError(
                f"{run_dir} already holds a run of a different recipe; give this run another name "
                f"(name=...) or remove {run_dir} to start over"
            )
        seeds = list(dict.fromkeys([*(previous.get("seeds") or [previous.get("seed", 0)]), *seeds]))
    atomic_write_text(saved, recipe_to_yaml(recipe.model_copy(update={"seeds": seeds})))
    return run_dir


def _readable_recipe(path: Path) -> dict | None:
    """A saved recipe.yaml as a mapping; None (named in the log, and written again from this
    recipe) when it no longer parses as one."""
    try:
        previous = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError:
        previous = None
    if isinstance(previous, dict):
        return previous
    log.warning("%s is damaged; it is written again from this recipe", path)
    return None


def _seedless(recipe: dict) -> dict:
    """The recipe without what may differ between the runs of one run directory."""
    out = {key: value for key, value in recipe.items() if key not in SEED_INDEPENDENT_KEYS}
    for section, key in PLACEMENT_KEYS:
        if isinstance(out.get(section), dict):
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def seed_dir(run_dir: Path, seed: int) -> Path:
    return Path(run_dir) / f"seed_{seed}"


def build_workspace(recipe: Recipe, console: Console | None = None, loaded: tuple | None = None) -> Workspace:
    """The workspace of one seed (`recipe.seed`), writing into <run>/seed_<k>/. `loaded` is a
    (model with LoRA, processor) pair from an earlier seed: arms reset the adapter, so it is reused."""
    run_dir = prepare_run_dir(recipe)
    torch.manual_seed(recipe.seed)
    if loaded is None:
        base, processor = load_base(recipe, console=console)
        model = add_lora(base, recipe.model.lora, gradient_checkpointing=recipe.model.gradient_checkpointing)
    else:
        model, processor = loaded
    root = recipe.data.root
    tasks = [build_task(cfg, root, recipe.seed) for cfg in recipe.tasks]
    evalsets = [EvalSet(t, load_samples(t, t.config.source.test_split, t.config.test_size, processor)) for t in tasks]
    general = []
    for cfg in recipe.evaluation.general:
        bench = build_task(cfg, root, recipe.seed, benchmark=True)
        general.append(EvalSet(bench, load_samples(bench, cfg.source.test_split, cfg.size)))
    return Workspace(seed_dir(run_dir, recipe.seed), model, processor, tasks, evalsets, general, console, {},
                     plan_evaluation(recipe), tracker=RunTracker(recipe, run_dir, recipe.seed))


def run_recipe(recipe: Recipe, console: Console | None = None, calibration: Calibration | None = None,
               arms: list[str] | None = None) -> Path:
    """Train and evaluate every arm of the recipe (or the named ones) under each of its seeds,
    then write the report. `calibration`: the throughputs behind the predicted times printed at
    the start and logged per task."""
    from lite_cpt.data.preflight import require_data
    from lite_cpt.results.report import write_report

    check_device(recipe.model)  # what this machine cannot run is said before anything about data
    check_engine_installed(recipe.rollout, recipe.model)
    require_data(recipe)  # every task's data, before the model loads
    loaded = None
    for seed in recipe.run_seeds:
        seeded = recipe.model_copy(update={"seed": seed})
        with lock_ahead(seeded, arms):
            ws = build_workspace(seeded, console, loaded)
            loaded = (ws.model, ws.processor)
            ws.calibration = calibration
            if len(recipe.run_seeds) > 1:
                _say(ws, f"[bold]seed {seed}[/] → {ws.run_dir}")
            _run_arms(seeded, ws, arms)
    write_report(recipe.run_dir)
    return recipe.run_dir


def run_seed_arms(recipe: Recipe, arms: list[str] | None, console: Console | None = None,
                  calibration: Calibration | None = None) -> Path:
    """Train the named arms (all when None) of one seed, `recipe.seed`, in this process, without
    a report (`lite-cpt report` assembles whatever has finished); returns the seed directory.
    `calibration`: the throughputs behind the logged time plan (used only on its own device)."""
    check_device(recipe.model)
    check_engine_installed(recipe.rollout, recipe.model)
    with lock_ahead(recipe, arms):
        ws = build_workspace(recipe, console)
        ws.calibration = calibration
        _run_arms(recipe, ws, arms)
    return ws.run_dir


def lock_ahead(recipe: Recipe, arms: list[str] | None):
    """The lock of the first unfinished arm this process trains (seed `recipe.seed`), taken
    before the model loads, so a second run of the same command is refused at once; `run_arm`
    adopts it."""
    chosen = [arm.name for arm in recipe.arms if (arms is None or arm.name in arms)
              and not _finished_quietly(recipe, arm.name)][:1]
    prepare_run_dir(recipe)  # a run directory of another recipe is refused before any lock is made in it
    return units_locked_ahead([seed_dir(recipe.run_dir, recipe.seed) / name for name in chosen])


def _finished_quietly(recipe: Recipe, arm: str) -> bool:
    try:
        return arm_finished(recipe, arm)
    except (OSError, ValueError, KeyError, TypeError):  # damaged: the arm's own run says so
        return False


def _run_arms(recipe: Recipe, ws: Workspace, arms: list[str] | None) -> None:
    """Each chosen arm of seed `recipe.seed`, with its plan resolved from the recipe here, once:
    below this point nothing reads the recipe (lite_cpt.run.unit_plan)."""
    try:  # the log-prob path the calibration found faster on this device (none: the tile kernel)
        with using_logprob_path(ws.calibration.logprob_path if ws.calibration else None):
            for arm in recipe.arms:
                if arms is None or arm.name in arms:
                    run_arm(ws, plan_unit(recipe, arm, ws.model, ws.calibration))
    except BaseException as error:  # the open tracker runs are marked preempted or failed
        ws.tracker.close(error)
        raise
    ws.tracker.close()


def arm_finished(recipe: Recipe, arm: str) -> bool:
    """Whether the arm's matrix.json (under seed `recipe.seed`) holds every row (the last file
    a finished arm writes) and every result it holds verifies: a damaged one (named in the log)
    makes the unit run again, which recomputes it."""
    arm_dir = seed_dir(recipe.run_dir, recipe.seed) / arm
    if (matrix := _read_json(arm_dir / "matrix.json", ("R",))) is None:
        return False
    done = len(matrix["R"]) - 1
    return (done + 1 == (2 if matrix.get("joint") else len(recipe.tasks) + 1)
            and last_intact_task(arm_dir, done) == done and not damaged_prediction_rows(arm_dir, done + 1))


def ensure_base_row(recipe: Recipe, console: Console | None = None) -> Path:
    """Compute and save row 0 of seed `recipe.seed` unless it is there; the seed directory."""
    directory = seed_dir(recipe.run_dir, recipe.seed)
    # A damaged file counts as missing: base_row names it and computes the row again.
    missing = [cot for cot in recipe_eval_cots(recipe)
               if _read_json(directory / base_files(cot)[0], ("R0", "G0"), quiet=True) is None]
    if missing:
        ws = build_workspace(recipe, console)
        try:
            for cot in missing:
                base_row(ws, cot)
        finally:
            ws.tracker.close()
    return directory


# ---------------------------------------------------------------------------------------------


def reset_adapter(model, seed: int) -> None:
    """Re-initialise the LoRA weights (B = 0, so the adapted model equals the base)."""
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_lora_parameters") and "default" in getattr(module, "lora_A", {}):
            module.reset_lora_parameters("default", init_lora_weights=True)


def run_arm(ws: Workspace, unit: UnitPlan) -> None:
    """Train one arm (one unit of the run) under its lock: another process on the same arm
    directory is refused, other arms of the run may train in parallel."""
    with unit_lock(ws.run_dir / unit.name):
        _run_arm_locked(ws, unit)
        if ws.tracker is not None:
            ws.tracker.finish(unit.name)


def _run_arm_locked(ws: Workspace, unit: UnitPlan) -> None:
    arm = unit.arm
    arm_dir = ws.run_dir / arm.name
    matrix_path, general_path = arm_dir / "matrix.json", arm_dir / "general.json"
    task_names = [t.name for t in ws.tasks]
    bench_names = [s.task.name for s in ws.general]
    method = build_arm(arm, ws.model, ws.processor, ws.train_examples)
    phases = [("joint", ws.tasks)] if method.joint else [(t.name, [t]) for t in ws.tasks]

    remove_stale_temporaries(arm_dir)  # what an interrupted save left behind
    if removed := truncate_jsonl(arm_dir / "metrics.jsonl"):  # a line half-written by a kill mid-append
        log.warning("%s: dropped %d unreadable line(s)", arm_dir / "metrics.jsonl", removed)
    cot = unit.eval_cot
    rows, general_rows = resume_rows(ws, arm_dir, cot)
    base_row(ws, cot)  # row 0's files verified (evaluated again when damaged)
    for row in damaged_prediction_rows(arm_dir, len(rows)):  # evaluated again with its saved adapter
        load_adapter_weights(ws.model, arm_dir / f"task_{row}")
        evaluate_row(ws, f"{arm.name} row {row}", row_predictions_path(arm_dir, row), cot)
    reset_adapter(ws.model, derived_seed(unit.seed, arm.name, "init"))
    done = max(0, len(rows) - 1)
    written = RowFiles(matrix_path, general_path, task_names, bench_names, method.joint, cot)
    if done and not _rows_on_disk(matrix_path, rows):  # rebuilt from the log, or cut back
        written.write(rows, general_rows)
    if done >= len(phases):
        _say(ws, f"[dim]{arm.name}: finished earlier, skipping[/]")
        return
    if done:
        load_adapter_weights(ws.model, arm_dir / f"task_{done}")
        method.load_state(arm_dir / f"task_{done}", [name for name, _ in phases[:done]])
        _say(ws, f"{arm.name}: resuming after task {done} ({phases[done - 1][0]}) from {arm_dir / f'task_{done}'}")
    else:
        r0, g0 = base_row(ws, cot)
        rows, general_rows = [r0], [g0]
        written.write(rows, general_rows)

    say_time_plan(unit.time, arm.name, lambda line: _say(ws, line))
    for index in range(done + 1, len(phases) + 1):
        name, phase_tasks = phases[index - 1]
        finished = [n for n, _ in phases[:index]]
        task_row, general_row = train_phase(ws, unit, method, index, len(phases), name, phase_tasks, finished)
        rows.append(task_row)
        general_rows.append(general_row)
        written.write(rows, general_rows)
        _say(ws, f"{arm.name} · {name}: " + " ".join(f"{t}={s:.2f}" for t, s in zip(task_names, task_row)))


def _rows_on_disk(matrix_path: Path, rows: list) -> bool:
    return (_read_json(matrix_path, ("R",)) or {}).get("R") == rows


def cut_log(log_path: Path, keep) -> None:
    """Keep the longest prefix of metrics.jsonl whose records satisfy `keep`: records of work
    that is about to be redone go, so none is logged twice."""
    records = read_jsonl(log_path)
    cut = next((i for i, r in enumerate(records) if not keep(r)), len(records))
    truncate_jsonl(log_path, keep=cut)


def _stats_json(stats: PhaseStats, train_seconds: float) -> dict:
    return {"steps": stats.steps, "trained_tokens": stats.trained_tokens, "seconds": stats.seconds,
            "last_loss": stats.last_loss, "generated_tokens": stats.generated_tokens, "extra": stats.extra,
            "train_seconds": train_seconds}


def _saved_phase(ws: Workspace, method, task_dir: Path, finished: list[str]) -> tuple[PhaseStats, float] | None:
    """(stats, train_seconds) of a phase whose adapter was saved before the run stopped (killed
    while evaluating): its adapter and the arm's state are loaded and training is skipped."""
    stats_path = task_dir / PHASE_STATS
    if not stats_path.exists() or verify_directory(task_dir):
        return None
    saved = json.loads(stats_path.read_text(encoding="utf-8"))
    train_seconds = saved.pop("train_seconds")
    load_adapter_weights(ws.model, task_dir)
    method.load_state(task_dir, finished)
    return PhaseStats(**saved), train_seconds


def _train(ws: Workspace, unit: UnitPlan, method, index: int, total: int, name: str,
           phase_tasks: list[Task]) -> tuple[PhaseStats, float]:
    """Train one phase from its last intact mid-phase checkpoint (or its start) and save its
    adapter, the arm's state and the phase's statistics in one sealed directory."""
    arm = unit.arm
    arm_dir = ws.run_dir / arm.name
    examples = [e for t in phase_tasks for e in ws.train_examples(t.name)]
    phase = Phase(
        index=index,
        name=name,
        # seeded from (run seed, arm, task index): the same in a resumed run
        seed=derived_seed(unit.seed, arm.name, index),
        epochs=arm.epochs or max(t.config.epochs for t in phase_tasks),
        knobs=unit.knobs,
        on_step=lambda record: log_event(ws, arm_dir, {"event": "step", "task_index": index, "task": name, **record}),
        guard=unit.guard,
        checkpoint=PhaseCheckpointer(arm_dir, index, unit.checkpoint, ws.model, arm_dir / "metrics.jsonl"),
        max_nonfinite=unit.max_nonfinite, max_weight=unit.max_weight,
        rollout_engine=engine_for(ws, unit.rollout, arm_dir),
    )
    # Restoring a checkpoint cuts the log back to the records it had seen; without one the
    # phase starts over, and the records of an earlier attempt at it go.
    if (restored := phase.checkpoint.latest_intact()) is None:
        cut_log(arm_dir / "metrics.jsonl", lambda r: r.get("task_index", 0) < index)
    else:
        _say(ws, f"{arm.name}: resuming task {index} ({name}) from its checkpoint after update {restored[0]}: "
                 f"{restored[1]}")
    torch.manual_seed(phase.seed)
    started = time.perf_counter()
    with (task_progress(ws.console, f"{arm.name} · task {index}/{total} {name}") as advance, stop_deferred(),
          vision_feature_cache(ws.model, unit.vision_cache_gb)):
        phase.progress = advance
        stats = method.train(examples, phase)
    method.after_task(examples, phase)
    train_seconds = time.perf_counter() - started

    def arm_state(directory: Path) -> None:
        method.save_state(directory)
        atomic_write_json(directory / PHASE_STATS, _stats_json(stats, train_seconds))

    save_adapter(ws.model, arm_dir / f"task_{index}", extra=arm_state)
    return stats, train_seconds


def train_phase(ws: Workspace, unit: UnitPlan, method, index: int, total: int, name: str,
                phase_tasks: list[Task], finished: list[str]) -> tuple[list[float], list[float]]:
    """Train one phase (a task, or all tasks for a joint arm), save the adapter, evaluate,
    and log the phase's cost; returns the new rows of the task and general-benchmark scores.
    `finished`: the phases up to this one (an arm's state is restored for them when the phase
    was saved before the run stopped)."""
    arm = unit.arm
    arm_dir = ws.run_dir / arm.name
    saved = _saved_phase(ws, method, arm_dir / f"task_{index}", finished)
    if saved is None:
        stats, train_seconds = _train(ws, unit, method, index, total, name, phase_tasks)
    else:
        stats, train_seconds = saved
        _say(ws, f"{arm.name}: task {index} ({name}) was trained and saved earlier; evaluating it")
    PhaseCheckpointer(arm_dir, index, unit.checkpoint, ws.model).clear()  # superseded
    cut_log(arm_dir / "metrics.jsonl", lambda r: r.get("task_index", 0) < index or
            (r.get("task_index") == index and r.get("event") != "task_end"))
    started = time.perf_counter()
    task_row, general_row, cut = evaluate_row(ws, f"{arm.name} after {name}", row_predictions_path(arm_dir, index),
                                              unit.eval_cot)
    log_event(ws, arm_dir, {
        "event": "task_end", "task_index": index, "task": name,
        "train_seconds": round(train_seconds, 3), "eval_seconds": round(time.perf_counter() - started, 3),
        "generated_tokens": stats.generated_tokens, "trained_tokens": stats.trained_tokens,
        "policy_updates": stats.steps, "final_loss": stats.last_loss, **task_end_extra(stats.extra),
        "truncated_answers": cut,
        **prediction_record(unit.time, index),
        **flat_phase_note(read_jsonl(arm_dir / "metrics.jsonl"), index, f"{arm.name} · {name}"),
        "scores": task_row, "general": general_row,
    })
    return task_row, general_row


def log_event(ws: Workspace, arm_dir: Path, record: dict) -> None:
    """One record to the arm's metrics.jsonl and to the recipe's trackers."""
    log_path = arm_dir / "metrics.jsonl"
    append_jsonl(log_path, record)  # first: the trackers follow metrics.jsonl (see lite_cpt.tracking.tracker)
    if ws.tracker is not None:
        ws.tracker.log(arm_dir.name, record, log_path)


def _say(ws: Workspace, message: str) -> None:
    if ws.console is not None:
        ws.console.print(message)
