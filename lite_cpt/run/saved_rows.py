"""What a resumed run trusts of an arm's saved rows and task adapters (`rows.resume_rows`).

matrix.json (the resume marker) and general.json hold the finished rows; when either is damaged
(unreadable, or not what its checksum recorded) the rows are rebuilt from the task_end records
of metrics.jsonl. The rows are then cut back to the last task before the first damaged adapter:
that task and every later one are trained again.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from lite_cpt.run.artefacts import artefact_problem
from lite_cpt.run.checkpoint import CHECKPOINTS_DIR
from lite_cpt.run.integrity import MANIFEST, verify_directory
from lite_cpt.io import read_jsonl

log = logging.getLogger(__name__)


def _read_json(path: Path, keys: tuple[str, ...], quiet: bool = False) -> dict | None:
    """A JSON object with `keys` from `path`; None when it is absent, or damaged (unreadable,
    or not what its checksum recorded; named in the log unless `quiet`: it is computed again)."""
    if not path.exists():
        return None
    if problem := artefact_problem(path):
        if not quiet:
            log.warning("%s; what it held is computed again", problem)
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(saved, dict) and all(isinstance(saved.get(key), list) for key in keys):
            return saved
    except (UnicodeDecodeError, ValueError):
        pass
    if not quiet:
        log.warning("%s is damaged; what it held is computed again", path)
    return None


def _rows_from_log(log_path: Path, base: list[float], key: str) -> list[list[float]]:
    """Rows 0..t from the base row and the task_end records (each carries its rows)."""
    rows = [base]
    for record in read_jsonl(log_path):
        if record.get("event") == "task_end" and record.get("task_index") == len(rows) and key in record:
            rows.append(record[key])
    return rows


def last_intact_task(arm_dir: Path, done: int) -> int:
    """The highest k <= done such that the adapters of tasks 1..k all verify against their
    manifests: each damaged one (finished arms included) is named in the log, and the run falls
    back to the one before the first, whose task is trained again. An adapter saved without a
    manifest (by an earlier version) is trusted."""
    damaged = []
    for k in range(done, 0, -1):
        task_dir = arm_dir / f"task_{k}"
        problems = verify_directory(task_dir)
        legacy = not (task_dir / MANIFEST).exists() and (task_dir / "adapter_model.safetensors").exists()
        if problems and not legacy:
            log.warning("task adapter %s is damaged (%s); falling back to the one before", task_dir, "; ".join(problems))
            damaged.append(k)
    return min(damaged, default=done + 1) - 1


def drop_after(arm_dir: Path, done: int) -> None:
    """The run falls back to task `done`: later task adapters and the checkpoints of later
    phases descend from a damaged adapter and are removed (they are trained again)."""
    for path in arm_dir.glob("task_*"):
        if path.name.removeprefix("task_").isdigit() and int(path.name.removeprefix("task_")) > done:
            shutil.rmtree(path, ignore_errors=True)
    for path in (arm_dir / CHECKPOINTS_DIR).glob("phase_*_update_*"):
        if int(path.name.split("_")[1]) > done + 1:
            shutil.rmtree(path, ignore_errors=True)
