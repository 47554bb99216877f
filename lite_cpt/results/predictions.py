"""Per-item predictions of one evaluated row of the matrix, saved as compressed JSONL.

One file per row: `base_predictions.jsonl.gz` for the base model (row 0, shared by the arms of a
seed) and `<arm>/predictions/row_<i>.jsonl.gz` for row i of an arm. Each line is one item:

    {"set": "textvqa", "id": "mini_textvqa/test/17", "answer": "blue", "score": 1.0}

`set` is a task or general-benchmark name, in evaluation order; items of a set keep the order of
its evaluation samples, which is the same for every row of a seed. Intervals over test items and
the "flipped right to wrong" listing are computed from these files without rerunning anything.
"""

from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lite_cpt.errors import UserError
from lite_cpt.run.artefacts import write_checked_bytes

BASE_PREDICTIONS = "base_predictions.jsonl.gz"


def row_predictions_path(arm_dir: Path, row: int) -> Path:
    return Path(arm_dir) / "predictions" / f"row_{row}.jsonl.gz"


def write_predictions(path: Path, items_by_set: dict[str, list[dict]]) -> None:
    """Write {set name: [{"id", "answer", "score"}, ...]} as one gzip JSONL file, atomically."""
    buffer = io.BytesIO()
    # mtime=0: the file depends only on its content, so identical rows give identical bytes
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
        for set_name, items in items_by_set.items():
            for item in items:
                record = {"set": set_name, "id": item["id"], "answer": item["answer"], "score": item["score"]}
                if item.get("truncated"):
                    record["truncated"] = True  # cut at the answer-length cap
                handle.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
    write_checked_bytes(path, buffer.getvalue())  # checked when run, report or compare read it


def read_predictions(path: Path) -> dict[str, list[dict]]:
    """{set name: [item records in order]} from a predictions file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}; remove it (its row's intervals are then skipped)") from exc
    by_set: dict[str, list[dict]] = {}
    for record in records:
        by_set.setdefault(record["set"], []).append(record)
    return by_set


@dataclass
class ItemScores:
    """Per-item scores of every row of one arm: `columns[name]` is an array (rows, items)."""

    columns: dict[str, np.ndarray]
    ids: dict[str, list[str]]


def load_item_scores(row_paths: list[Path], set_names: list[str]) -> ItemScores | None:
    """Stack the rows' per-item scores; None when a row's file is missing or the rows disagree
    on the items of a set (then no item-level interval can be paired across rows)."""
    if not row_paths or any(not path.is_file() for path in row_paths):
        return None
    rows = [read_predictions(path) for path in row_paths]
    columns, ids = {}, {}
    for name in set_names:
        if any(name not in row for row in rows):
            return None
        row_ids = [[item["id"] for item in row[name]] for row in rows]
        if any(r != row_ids[0] for r in row_ids) or not row_ids[0]:
            return None
        columns[name] = np.array([[float(item["score"]) for item in row[name]] for row in rows])
        ids[name] = row_ids[0]
    return ItemScores(columns, ids)


def flipped_items(before: dict[str, list[dict]], after: dict[str, list[dict]], set_name: str,
                  limit: int | None = None) -> list[tuple[dict, dict]]:
    """Items of `set_name` scored right (score 1) in `before` and wrong (score 0) in `after`,
    matched by id, in evaluation order; at most `limit` pairs (before, after)."""
    later = {item["id"]: item for item in after.get(set_name, [])}
    flips = []
    for item in before.get(set_name, []):
        other = later.get(item["id"])
        if other is not None and item["score"] >= 1.0 and other["score"] <= 0.0:
            flips.append((item, other))
            if len(flips) == limit:
                break
    return flips
