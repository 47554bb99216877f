"""Experiment tracking: every record of a (seed, arm) unit in the trackers a recipe enables.

    logging: {tensorboard: true}   # <run>/tensorboard/seed_<k>/<arm>/events.out.tfevents.*
    logging: {wandb: true}         # offline by default: <run>/wandb/*-<id>/run-<id>.wandb
    logging: {mlflow: true}        # <run>/mlflow.db (SQLite), artifacts in <run>/mlflow-artifacts/

`<arm>/metrics.jsonl` stays the record of truth; the trackers follow it. Each unit is one
tracker run for its whole life, across any number of stops and resumes: its W&B and MLflow
run ids live in `<arm>/tracking.json`. A process that opens a unit first sends the stores
what they lack of the base row and of metrics.jsonl (a kill can land between a line and its
tracker call, or before a buffered tracker wrote anything), so each record reaches each store
exactly once: TensorBoard hides what an earlier process wrote from the resume point on
(`purge_step`) and writes it again; W&B and MLflow skip the steps their stores already hold.

Scalars (docs/tracking.md lists them all): `train/<key>` per step; at each task end the
matrix row `matrix/after_<task>/<task>` and `.../seen_mean`, the same values as curves
`accuracy/<task>` and `accuracy/seen_mean`, the general benchmarks `general/after_<task>/<bench>`
and `general/<bench>`, the seconds `seconds/<phase>` and the rest as `task_end/<key>`; the
base row as `matrix/after_base/<task>` at step 0. TensorBoard and MLflow steps are the training
steps so far (a task end sits at its last training step); W&B's own step counts records, and
its charts plot against the `train_step` and `task` fields.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from lite_cpt.io import atomic_write_json, read_jsonl
from lite_cpt.run.preemption import Preempted
from lite_cpt.tracking.backends import open_backends
from lite_cpt.tracking.scalars import Entry, Unit, row_scalars, scalars_of

__all__ = ["RunTracker", "UNIT_STATE", "scalars_of"]

#: The unit's tracker run ids, in the arm directory.
UNIT_STATE = "tracking.json"


class _OpenUnit:
    """A unit whose tracker runs are open in this process, and where its step counts stand."""

    def __init__(self, backends: list, tasks: list[str], benches: list[str], train_step: int, index: int):
        self.backends, self.tasks, self.benches = backends, tasks, benches
        self.train_step, self.index = train_step, index

    def entry(self, record: dict) -> Entry:
        self.index += 1
        self.train_step += record.get("event") == "step"
        return Entry(self.train_step, self.index, scalars_of(record, self.tasks, self.benches))

    def send(self, record: dict) -> None:
        entry = self.entry(record)
        for backend in self.backends:
            backend.log(entry)

    def close(self, status: str) -> None:
        for backend in self.backends:
            backend.close(status)


class RunTracker:
    """Fans each (seed, arm)'s records out to the enabled trackers, opening a unit on first use."""

    def __init__(self, recipe, run_dir: Path, seed: int):
        self.recipe, self.run_dir, self.seed = recipe, Path(run_dir), seed
        self._units: dict[str, _OpenUnit] = {}

    @property
    def enabled(self) -> bool:
        config = self.recipe.logging
        return config.tensorboard or config.wandb or config.mlflow

    def log(self, arm: str, record: dict, metrics_path: Path | None = None) -> None:
        """Send one record; call it after the record is appended to `metrics_path`: a unit that
        opens on it sends what the stores lack of that file, this record included."""
        if not self.enabled:
            return
        if arm in self._units:
            self._units[arm].send(record)
            return
        records = read_jsonl(metrics_path) if metrics_path is not None and metrics_path.exists() else []
        if not records or json.dumps(records[-1], sort_keys=True) != json.dumps(record, sort_keys=True):
            records.append(record)  # called before the append (or without a file): send it too
        self._units[arm] = self._open(arm, records)

    def finish(self, arm: str) -> None:
        """The unit finished: its tracker runs are closed as finished."""
        if (unit := self._units.pop(arm, None)) is not None:
            unit.close("finished")

    def close(self, error: BaseException | None = None) -> None:
        """Close every open unit: finished, preempted (a SIGTERM/SIGINT stop) or failed."""
        status = "finished" if error is None else "preempted" if isinstance(error, Preempted) else "failed"
        for arm in list(self._units):
            self._units.pop(arm).close(status)

    def _open(self, arm: str, records: list[dict]) -> _OpenUnit:
        unit = Unit(self.recipe, self.run_dir, self.seed, arm, _read_state(self.run_dir / f"seed_{self.seed}" / arm))
        tasks = [t.name for t in self.recipe.tasks]
        benches = [b.name for b in self.recipe.evaluation.general]
        if self.recipe.logging.wandb and "wandb_run_id" not in unit.state:
            # saved before the run exists: a process killed while creating it leaves the id to reuse
            unit.state["wandb_run_id"] = uuid.uuid4().hex[:12]
            atomic_write_json(unit.arm_dir / UNIT_STATE, unit.state)
        saved = dict(unit.state)
        backends = open_backends(unit)
        if unit.state != saved:
            atomic_write_json(unit.arm_dir / UNIT_STATE, unit.state)
        opened = _OpenUnit(backends, tasks, benches, 0, 0)
        entries = [Entry(0, 0, base)] if (base := _base_scalars(unit.arm_dir, tasks, benches)) else []
        entries += [opened.entry(record) for record in records]
        for backend in backends:
            backend.backfill(entries)
        return opened


def _read_state(arm_dir: Path) -> dict:
    try:
        state = json.loads((arm_dir / UNIT_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _base_scalars(arm_dir: Path, tasks: list[str], benches: list[str]) -> dict[str, float]:
    """Row 0 (the base model) from the arm's matrix.json and general.json, as the base row's
    scalars; empty when they are not there yet."""
    try:
        r0 = json.loads((arm_dir / "matrix.json").read_text(encoding="utf-8"))["R"][0]
        g0 = json.loads((arm_dir / "general.json").read_text(encoding="utf-8"))["G"][0]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return {}
    return {"task": 0.0, **row_scalars("base", r0, g0, tasks, benches, [])}
