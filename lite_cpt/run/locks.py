"""Per-unit locks: one process trains a unit (one arm's directory within a run) at a time.

Different arms (or seeds) of one run directory may be trained by different processes at once,
each holding its own unit's lock; a second process on the same unit refuses with a message.

The lock is `fcntl.flock` on `<unit>/.lock`. The kernel releases it when the holding process
dies (SIGKILL, power loss of a node sharing the file system aside), so a crashed run never
leaves a stale lock behind: the file may stay, the lock does not. The file records the
holder's pid, host and command for the refusal message only; it is never trusted as the lock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from lite_cpt.errors import UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".lock"


class UnitLocked(UserError):
    """Another live process holds the unit's lock."""


def lock_path(unit_dir: str | os.PathLike) -> Path:
    return Path(unit_dir) / LOCK_NAME


def lock_holder(unit_dir: str | os.PathLike) -> dict | None:
    """What the last holder wrote in the lock file (pid, host, command, since), if readable."""
    try:
        return json.loads(lock_path(unit_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _describe(holder: dict | None) -> str:
    if not holder:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"process {holder.get('pid')} on {holder.get('host')} (since {since}: {holder.get('command')})"


#: Unit locks taken ahead (`units_locked_ahead`), by unit directory, for `unit_lock` to adopt.
_AHEAD: dict[Path, object] = {}


def _acquire(unit_dir: Path):
    """An open lock file of `unit_dir` holding its flock; `UnitLocked` when another holds it."""
    unit_dir.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path(unit_dir), "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise UnitLocked(
            f"{unit_dir} is being trained by {_describe(lock_holder(unit_dir))}; wait for it to "
            f"finish or stop it (a killed process releases the lock), then run the same command again"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                             "command": " ".join(sys.argv)[:300]}))
    handle.flush()
    return handle


@contextmanager
def unit_lock(unit_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of `unit_dir` (created if missing) for the block; raise `UnitLocked` at
    once, without waiting, when another process holds it. Re-entrant use in one process on
    the same unit is refused too (each `with` opens its own file description), except that a
    lock taken ahead by `units_locked_ahead` is adopted once."""
    unit_dir = Path(unit_dir)
    if fcntl is None:  # pragma: no cover - no flock: no protection, but no refusal either
        unit_dir.mkdir(parents=True, exist_ok=True)
        yield lock_path(unit_dir)
        return
    handle = _AHEAD.pop(unit_dir.absolute(), None) or _acquire(unit_dir)
    try:
        yield lock_path(unit_dir)
    finally:
        # Closing the descriptor releases the flock; the file stays (removing it would race
        # with a process that has just opened it).
        handle.close()


@contextmanager
def units_locked_ahead(unit_dirs: list[Path]) -> Iterator[None]:
    """Take the units' locks now, before slow work (loading the model), so a second process on
    them is refused at once; `unit_lock` on one of them within the block adopts its lock, and
    those never adopted are released when the block ends."""
    keys = [Path(d).absolute() for d in unit_dirs]
    try:
        for key in keys:
            if fcntl is not None:
                _AHEAD[key] = _acquire(key)
        yield
    finally:
        for key in keys:
            handle = _AHEAD.pop(key, None)
            if handle is not None:
                handle.close()


@contextmanager
def waiting_lock(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an exclusive `flock` on `path` for the block, waiting for any other holder.

    For work that must happen once however many processes want it (the tiny base, a seed's
    base row): the first process does it, the others wait and then find it done. As with
    `unit_lock`, the kernel releases the lock when its holder dies, so a crashed builder
    never blocks the rest.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover - no flock: each process may do the work itself
        yield path
        return
    with open(path, "a+", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield path
