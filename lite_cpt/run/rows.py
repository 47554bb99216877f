"""The rows of an arm's score tables: evaluating one row, row 0 of the base model, the rows a
resume can trust, and the files that hold them (matrix.json and general.json).

lite_cpt.run.continual writes a row after each task's adapter is saved; matrix.json, written
last, is the resume marker (see the layout in lite_cpt.run.continual).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lite_cpt.progress import task_progress
from lite_cpt.run.workspace import Workspace
from lite_cpt.results.benchmark_figures import figure_rows, write_row_results
from lite_cpt.run.artefacts import artefact_problem, write_checked_json
from lite_cpt.run.eval_prompt import base_files
from lite_cpt.run.evaluate import evaluate_sets_items, mean_score
from lite_cpt.run.locks import waiting_lock
from lite_cpt.run.saved_rows import _read_json, _rows_from_log, drop_after, last_intact_task
from lite_cpt.train.rollout import rollout_engine
from lite_cpt.train.truncation import answer_shares
from lite_cpt.train.vllm_backend import evaluation_engine


log = logging.getLogger(__name__)


def evaluate_row(ws: Workspace, label: str, predictions_path: Path, cot: bool
                 ) -> tuple[list[float], list[float], dict[str, float]]:
    """Scores of one matrix row, with the chain-of-thought prompt or the direct-answer one, and
    the share of each set's answers cut at the length cap; its per-item predictions are saved to
    `predictions_path`. With rollout.backend vllm the answers come from the rollout engine
    (continuous batching, the adapter as it is now; none inside `disable_adapter()`)."""
    gen = ws.evaluation.generation
    sets = ws.evalsets + ws.general
    with ws.evaluation.guard(), task_progress(ws.console, f"evaluating {label}") as advance, \
            rollout_engine(evaluation_engine(ws)):
        done = iter(range(1, len(sets) + 1))
        items = evaluate_sets_items(ws.model, ws.processor, sets, gen, cot=cot,
                                    on_done=lambda _: advance(next(done), len(sets)))
    write_row_results(predictions_path, items, ws.general, cot)  # and the benchmarks' own figures
    scores = {name: mean_score(scored) for name, scored in items.items()}
    return ([scores[s.task.name] for s in ws.evalsets], [scores[s.task.name] for s in ws.general],
            answer_shares(items))


def base_row(ws: Workspace, cot: bool = False) -> tuple[list[float], list[float]]:
    """Row 0 in one prompt format, shared by the arms evaluated with it (a fresh adapter leaves
    the base unchanged), cached on disk.

    Processes training other arms of the same seed wait for the one computing it, so row 0 is
    computed once per recipe and seed, however many workers share the run directory."""
    scores, predictions = base_files(cot)
    path = ws.run_dir / scores
    with waiting_lock(ws.run_dir / ".base_scores.lock"):
        if (saved := _read_json(path, ("R0", "G0"))) is not None and not artefact_problem(
                ws.run_dir / predictions):  # damaged predictions: the row is evaluated again
            return saved["R0"], saved["G0"]
        label = "the base model" + (" (chain-of-thought prompt)" if cot else "")
        with ws.model.disable_adapter():
            tasks_row, general_row, _ = evaluate_row(ws, label, ws.run_dir / predictions, cot)
        write_checked_json(path, {"R0": tasks_row, "G0": general_row})
    return tasks_row, general_row


def resume_rows(ws: Workspace, arm_dir: Path, cot: bool = False) -> tuple[list, list]:
    """The matrix and general-benchmark rows a resume can trust: those of matrix.json (the
    marker) and general.json, rebuilt from metrics.jsonl when either is damaged (see
    lite_cpt.run.saved_rows), cut back to the task before the first damaged adapter."""
    matrix, general = _read_json(arm_dir / "matrix.json", ("R",)), _read_json(arm_dir / "general.json", ("G",))
    rows, general_rows = (matrix or {}).get("R", []), (general or {}).get("G", [])
    damaged = [p for p, v in ((arm_dir / "matrix.json", matrix), (arm_dir / "general.json", general))
               if v is None and p.exists()]
    if damaged:
        log.warning("%s is damaged; its rows are rebuilt from %s", " and ".join(map(str, damaged)),
                    arm_dir / "metrics.jsonl")
        r0, g0 = base_row(ws, cot)
        rows = _rows_from_log(arm_dir / "metrics.jsonl", r0, "scores")
        general_rows = _rows_from_log(arm_dir / "metrics.jsonl", g0, "general")
    # matrix.json is the resume marker. general.json is written just before it, so a run killed
    # between the two writes left one row more there: keep only the rows the marker covers.
    rows = rows[: len(general_rows)]
    done = last_intact_task(arm_dir, max(0, len(rows) - 1))
    if done < len(rows) - 1:
        drop_after(arm_dir, done)
    return rows[: done + 1], general_rows[: done + 1]


@dataclass
class RowFiles:
    """An arm's matrix.json and general.json; a chain-of-thought evaluation is marked in
    matrix.json (`eval_prompt: cot`), so its row 0 is read from the base files of that format."""

    matrix_path: Path
    general_path: Path
    tasks: list[str]
    benches: list[str]
    joint: bool
    cot: bool

    def write(self, rows: list, general_rows: list) -> None:
        # general.json first: matrix.json is the resume marker and must be the last file written.
        figures = figure_rows(Path(self.general_path).parent, len(general_rows), base_files(self.cot)[1])
        write_checked_json(self.general_path, {"benchmarks": self.benches, "G": general_rows, **figures})
        matrix = {"tasks": self.tasks, "R": rows}
        if self.joint:
            matrix["joint"] = True
        if self.cot:
            matrix["eval_prompt"] = "cot"
        write_checked_json(self.matrix_path, matrix)
