"""Progress bars for long work (training steps, evaluation), quiet when there is no console."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def task_progress(console: Console | None, description: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(done, total)`; draws a bar on `console`, or nothing when it is None."""
    if console is None:
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        yield advance
