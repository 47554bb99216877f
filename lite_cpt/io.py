"""Every write of a run: atomic files (a reader, or a resumed run, never sees a half-written
file), whole-line log appends, atomic directories; and one message for a full disk.

A write that fails because the disk is full, a quota is exceeded or the file system is
read-only (ENOSPC, EDQUOT, EROFS) becomes a `DiskFull` error naming the path, what is intact
(the file as it was before: every write here is atomic or cut back) and the fix.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from lite_cpt.errors import UserError

#: errno -> what the user is told
DISK_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "the file system is read-only"}
# safetensors (Rust) reports an I/O error only as text, "... (os error 28)" or "Os { code: 28, ..."
_RUST_OS_ERROR = re.compile(r"os error (\d+)|Os \{ code: (\d+)")


class DiskFull(UserError):
    """A write failed for lack of space, quota or a writable file system (`code`: its errno)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def disk_errno(error: BaseException) -> int | None:
    """The ENOSPC / EDQUOT / EROFS code behind `error` (an OSError, or a library error that
    carries the OS error in its text, such as safetensors' SafetensorError); None otherwise."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None and (match := _RUST_OS_ERROR.search(str(error))):
        code = int(match.group(1) or match.group(2))
    return code if code in DISK_ERRORS else None


def disk_full_message(path: str | os.PathLike, code: int, intact: str) -> str:
    path = Path(path)
    return (f"could not write {path}: {DISK_ERRORS[code]}; {intact}, and nothing half-written was left. "
            f"Free disk space (or raise the quota, or make {path.parent} writable; or set output_dir to "
            "another disk), then run the same command again")


@contextmanager
def explained_write(path: str | os.PathLike, intact: str | None = None) -> Iterator[None]:
    """Turn a full-disk, over-quota or read-only failure inside the block into `DiskFull`
    (`intact`: what the user still has; by default the file as it was before). Blocks nest: the
    outermost names the path, as the user knows it (an adapter directory, not a file inside its
    temporary copy)."""
    try:
        yield
    except Exception as error:
        code = error.code if isinstance(error, DiskFull) else disk_errno(error)
        if code is None:
            raise
        message = disk_full_message(path, code, intact or f"{Path(path)} is as it was before")
        raise DiskFull(message, code) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to a temp file in the same directory, fsync it, then rename over `path`."""
    path = Path(path)
    with explained_write(path):
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
    """Append one JSON line; a line is written with a single write call so it lands whole,
    and a write that fails (a full disk) is cut back so the file ends at its last whole line."""
    path = Path(path)
    line = (json.dumps(record) + "\n").encode("utf-8")
    with explained_write(path, f"{path} holds every record before this one"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            try:
                written = 0
                while written < len(line):  # unbuffered: nothing is left to be flushed later
                    written += os.write(fd, line[written:])
            except OSError:
                os.ftruncate(fd, size)  # never a part of the line
                raise
        finally:
            os.close(fd)


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
    with explained_write(path, f"{path} is as it was before"):
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
