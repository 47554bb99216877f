"""What every `lite-cpt` command shares: the two consoles, the user-error wrapper and the
recipe overrides given as arguments or `--set`."""

from __future__ import annotations

import functools
from typing import Optional

import typer
from rich.console import Console

from lite_cpt.errors import UserError

console = Console()
err_console = Console(stderr=True)


def recipe_overrides(positional: Optional[list[str]], option: Optional[list[str]]) -> list[str]:
    """Overrides given either way, positional `a.b=c` first, then each `--set a.b=c`."""
    return [*(positional or []), *(option or [])]


OVERRIDES_HELP = "Overrides key.path=value, e.g. seed=1 arms.sft.lr=1e-4 tasks.*.test_size=100"


def user_errors(fn):
    """Print a UserError as one red line and exit 1 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return wrapper
