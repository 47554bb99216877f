"""Checksums of a run's finished result files: matrix.json, general.json, base_scores.json and
the per-item predictions, checked whenever `run`, `report` or `compare` reads them.

Each directory holding such files keeps `checksums.json`:

    {"format": 1, "files": {"matrix.json": {"size": 412, "sha256": "…", "previous": {…} | null}}}

A result file is written in two atomic steps: its entry first (the new size and sha256, with
the entry it replaces kept as `previous`), then the file itself. A process killed between the
two leaves the file as it was, which still matches `previous`: a kill never makes an intact
file look damaged, while any other change to a recorded file (a truncation, one digit edited)
is named with what was recorded and what was found. A file without an entry (written before
checksums were kept) is trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lite_cpt.io import atomic_write_bytes, atomic_write_json

CHECKSUMS = "checksums.json"


def _digest(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _entries(directory: Path) -> dict:
    try:
        saved = json.loads((directory / CHECKSUMS).read_text(encoding="utf-8"))
        files = saved["files"]
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}  # none kept yet, or unreadable: nothing can be checked, everything is trusted


def write_checked_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Record `data`'s size and sha256 for `path`, then write `path` atomically."""
    path = Path(path)
    # the file on disk, when intact, is what a kill before the rename below leaves
    intact = path.is_file() and artefact_problem(path) is None
    entries = _entries(path.parent)
    entries[path.name] = {**_digest(data), "previous": _digest(path.read_bytes()) if intact else None}
    atomic_write_json(path.parent / CHECKSUMS, {"format": 1, "files": dict(sorted(entries.items()))})
    atomic_write_bytes(path, data)


def write_checked_json(path: str | os.PathLike, obj) -> None:
    """`atomic_write_json` with a checksum entry (the same bytes)."""
    write_checked_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def artefact_problem(path: str | os.PathLike) -> str | None:
    """What is wrong with a recorded result file (None: intact, or never recorded): it is
    missing, or its size or sha256 is not the one recorded (expected vs found)."""
    path = Path(path)
    entry = _entries(path.parent).get(path.name)
    if not isinstance(entry, dict):
        return None
    if not path.is_file():
        return f"{path} is missing ({entry['size']} bytes recorded in {path.parent / CHECKSUMS})"
    found = _digest(path.read_bytes())
    accepted = [entry, entry.get("previous") or {}]
    if any(found["size"] == e.get("size") and found["sha256"] == e.get("sha256") for e in accepted):
        return None
    what = "truncated" if found["size"] < entry["size"] else "changed"
    return (f"{path} was {what} after it was written: {found['size']} bytes, sha256 {found['sha256'][:12]}… "
            f"found; {entry['size']} bytes, sha256 {entry['sha256'][:12]}… recorded in {path.parent / CHECKSUMS}")
