"""Preemption: SIGTERM / SIGINT end a run at a resumable point instead of wherever they land.

Inside a training phase (`stop_deferred()`), a first signal only sets a flag; the training loop
finishes its current policy update, writes a mid-phase checkpoint and raises `Preempted`.
Outside a phase (evaluation, report) there is nothing in flight worth keeping — the task's
adapter is already saved — so the first signal raises `Preempted` at once. A second signal
ends the process immediately (`os._exit`), leaving the last complete checkpoint.

The command line turns `Preempted` into one line naming the command that resumes, and exit
status `PREEMPTED_EXIT_CODE` (75, EX_TEMPFAIL: "try again later"), which a scheduler's requeue
hook can tell apart from a failure (1) or a finished run (0).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from typing import Iterator

PREEMPTED_EXIT_CODE = 75
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal at a resumable point."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


class _State:
    signal_name: str | None = None
    deferring: int = 0


_state = _State()


def stop_requested() -> bool:
    """True once a signal asked the run to stop (checked by the training loops after an update)."""
    return _state.signal_name is not None


def requested_by() -> str | None:
    return _state.signal_name


def request_stop(name: str = "request") -> None:
    """Ask the run to stop at its next resumable point (what the signal handler does)."""
    _state.signal_name = name


def _handle(signum, frame) -> None:
    name = signal.Signals(signum).name
    if _state.signal_name is not None:
        # Second signal: the user (or the scheduler) does not want to wait. The last complete
        # checkpoint stays valid; a checkpoint being written is a temporary directory.
        os.write(2, f"\n{name} again: stopping now; the last complete checkpoint is kept\n".encode())
        os._exit(128 + signum)
    _state.signal_name = name
    if not _state.deferring:
        raise Preempted(f"{name} outside training")
    os.write(2, f"\n{name}: finishing the current update, then writing a checkpoint "
                f"(send it again to stop at once)\n".encode())


@contextmanager
def preemption_handlers() -> Iterator[None]:
    """Install the SIGTERM / SIGINT handlers for the block (main thread only), then restore."""
    previous = {sig: signal.getsignal(sig) for sig in _SIGNALS}
    _state.signal_name, _state.deferring = None, 0
    for sig in _SIGNALS:
        signal.signal(sig, _handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _state.signal_name, _state.deferring = None, 0


@contextmanager
def stop_deferred() -> Iterator[None]:
    """Within the block a first signal only requests a stop (training finishes its update)."""
    _state.deferring += 1
    try:
        yield
    finally:
        _state.deferring -= 1


def resume_command() -> str:
    """The command line that resumes this run: the same command."""
    import shlex

    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "lite-cpt"
    if program in ("__main__.py", "cli.py"):
        program = "lite-cpt"
    return shlex.join([program, *sys.argv[1:]])
