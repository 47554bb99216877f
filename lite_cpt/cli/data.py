"""`lite-cpt data ...`: check, download and fake the datasets a recipe points at."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lite_cpt.cli.common import OVERRIDES_HELP, console, err_console, recipe_overrides, user_errors

data_app = typer.Typer(help="Inspect the datasets a recipe points at.", no_args_is_help=True)


@data_app.command("check")
@user_errors
def data_check_command(
    recipe: Path = typer.Argument(..., help="Recipe whose tasks and benchmarks are checked."),
    positional: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
):
    """For each task and benchmark: found or not, counts, one rendered prompt, how to provide it.

    Example:  lite-cpt data check recipes/seven_tasks.yaml --set data.root=/data/cpt
    """
    from lite_cpt.data.check import data_check, render_data_check
    from lite_cpt.recipe import load_recipe

    rows = data_check(load_recipe(recipe, recipe_overrides(positional, overrides), check_data=False))
    render_data_check(rows, console)
    if any(row["status"] in ("missing", "error") for row in rows):
        raise typer.Exit(1)


@data_app.command("download")
@user_errors
def data_download_command(
    recipe: Path = typer.Argument(..., help="Recipe whose missing data is fetched."),
    positional: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be fetched, and where."),
    keep_archives: bool = typer.Option(False, "--keep-archives", help="Keep official archives once unpacked."),
):
    """Fetch exactly what `data check` reports missing, into the places the loaders read:
    hub datasets (only the recipe's splits) into <data.root>/hub, VizWiz's and GQA's official
    archives (resumed, size- and checksum-checked) into <data.root>/vizwiz and /gqa.

    Example:  lite-cpt data download recipes/seven_tasks.yaml
    """
    from lite_cpt.data.download import download_missing
    from lite_cpt.recipe import load_recipe

    loaded = load_recipe(recipe, recipe_overrides(positional, overrides), check_data=False)
    if not download_missing(loaded, console, err_console, dry_run=dry_run, keep_archives=keep_archives):
        raise typer.Exit(1)
    if not dry_run:
        console.print(f"check with: lite-cpt data check {recipe}", highlight=False)


@data_app.command("fixtures")
@user_errors
def data_fixtures_command(
    out_dir: Path = typer.Argument(..., help="Directory to fill (created if missing)."),
    n: int = typer.Option(8, help="Rows per split."),
    seed: int = typer.Option(0, help="Seed of the generated rows and images."),
):
    """Write small stand-ins for every real dataset, in each one's published schema and layout.

    Example:  lite-cpt data fixtures /tmp/fx && lite-cpt run recipes/seven_tasks.yaml model=tiny data.root=/tmp/fx
    """
    from lite_cpt.data.fixtures import write_fixtures

    console.print(f"wrote fixtures to {write_fixtures(out_dir, n=n, seed=seed)}")
