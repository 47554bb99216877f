"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file in the same directory, fsync it, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line; a line is written with a single write call so it lands whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def _parse_lines(text: str) -> tuple[list[dict], int]:
    """Records of a JSONL text and how many lines could not be parsed (dropped)."""
    records, dropped = [], 0
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except ValueError:
            dropped += 1  # a line cut short by a crash mid-write
    return records, dropped


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSONL file; a half-written line (a crash mid-append) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    return _parse_lines(path.read_text(encoding="utf-8", errors="replace"))[0]


def truncate_jsonl(path: str | os.PathLike, keep: int | None = None) -> int:
    """Rewrite a JSONL file atomically with its first `keep` whole records (all when None),
    dropping half-written lines, so that appends continue from a clean line boundary.
    Returns the number of lines removed."""
    path = Path(path)
    if not path.exists():
        return 0
    records, dropped = _parse_lines(path.read_text(encoding="utf-8", errors="replace"))
    kept = records if keep is None else records[:keep]
    removed = dropped + len(records) - len(kept)
    if removed or not path.read_bytes().endswith(b"\n") and kept:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return removed


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp directory beside `path`; on success it replaces `path` in one rename.

    A reader never sees a half-written model or adapter: either the old directory or the new.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
