"""`lite-cpt`: the command line. Thin: parse, call one function, print.

This module is the app and its top-level commands (run, sweep, validate, eval, report, arms,
compare, plan); `lite-cpt bench ...` lives in cli/bench.py, `lite-cpt data ...` in cli/data.py,
and what they all share (the consoles, the user-error wrapper) in cli/common.py.

Errors a user can fix (bad recipe, missing data, no GPU, out of memory) are printed as one
clear message with exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.text import Text

from lite_cpt.cli.bench import bench_app
from lite_cpt.cli.common import OVERRIDES_HELP, console, err_console, recipe_overrides, user_errors
from lite_cpt.cli.data import data_app
from lite_cpt.errors import UserError

__all__ = ["app", "console", "err_console", "plan_recipe_file", "recipe_overrides", "seed_overrides"]

app = typer.Typer(
    help="Continual post-training of vision-language models (SFT, GRPO, RIF-RFT) on one GPU.\n\n"
    "Start with:  lite-cpt run recipes/tiny.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")


ARM_OPTION = typer.Option(None, "--arm", help="Run only this arm (repeatable): one unit of work per arm.")
RAY_OPTION = typer.Option(False, "--ray", help="Run each unit as a Ray task (pip install 'lite-cpt\\[ray]').")
ADDRESS_OPTION = typer.Option(
    None, "--address", envvar="RAY_ADDRESS",
    help="Ray cluster to join (host:6379 or ray://host:10001); default: start a loopback-only local cluster.")
WORKERS_OPTION = typer.Option(None, "--workers", help="CPU slots of a local Ray cluster (default: all cores).")


@dataclass
class RayChoice:
    """Where a command's units run: here, or (`enabled`) on Ray at `address` with `workers` slots."""

    enabled: bool = False
    address: Optional[str] = None
    workers: Optional[int] = None


_RAY_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
    for name, default, annotation in (("ray", RAY_OPTION, bool), ("address", ADDRESS_OPTION, Optional[str]),
                                      ("workers", WORKERS_OPTION, Optional[int]))
]


def ray_options(fn):
    """Give a command --ray, --address and --workers; it receives them as one `ray: RayChoice`."""
    signature = inspect.signature(fn)
    kept = [p for p in signature.parameters.values() if p.name != "ray"]

    @functools.wraps(fn)
    def wrapper(*args, ray: bool = False, address: Optional[str] = None, workers: Optional[int] = None, **kwargs):
        return fn(*args, ray=RayChoice(ray, address, workers), **kwargs)

    # The command line reads the signature: show it the three options, not the one object.
    wrapper.__signature__ = signature.replace(parameters=[*kept, *_RAY_PARAMETERS])
    wrapper.__annotations__ = {**{k: v for k, v in fn.__annotations__.items() if k != "ray"},
                               **{p.name: p.annotation for p in _RAY_PARAMETERS}}
    return wrapper


@app.command()
@user_errors
@ray_options
def run(
    recipe: Path = typer.Argument(..., help="Recipe YAML (e.g. recipes/tiny.yaml)."),
    overrides: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    set_: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Throughputs from `lite-cpt bench gpu --json F` on this device, for the time plan the run "
                              "prints and logs (without one, or from another device: no plan)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1,2 (same as seeds=[0,1,2])."),
    arms: Optional[list[str]] = ARM_OPTION,
    seed: Optional[int] = typer.Option(None, "--seed", help="Run only this seed (one of the recipe's, or another)."),
    ray: RayChoice = RayChoice(),
):
    """Train every arm of RECIPE task by task, evaluate after each task, write the report.

    Each seed runs into <run>/seed_<k>/; re-running the same command resumes at the first
    unfinished task of each (seed, arm). With --arm and/or --seed, only those units run
    (each under its lock, into the shared run directory, no report: `lite-cpt report`
    assembles whatever has finished), so any scheduler can run units in parallel.
    SIGTERM / SIGINT stop the run with exit status 75 and
    one line naming the command that resumes it; a second signal stops at once.

    Examples:\n
      lite-cpt run recipes/tiny.yaml\n
      lite-cpt run recipes/tiny.yaml --seeds 0,1,2\n
      lite-cpt run recipes/tiny.yaml --arm rft --seed 1\n
      lite-cpt run recipes/tiny.yaml --ray\n
      lite-cpt data fixtures /tmp/fx && lite-cpt run recipes/seven_tasks.yaml model=tiny data.root=/tmp/fx\n
      lite-cpt run recipes/tiny.yaml name=tiny-nokl arms.rft.rft.kl=false
    """
    from lite_cpt.recipe import load_recipe

    # The recipe is validated before anything heavy (torch, transformers) is imported: a bad
    # one is refused in a moment.
    loaded = load_recipe(recipe, [*recipe_overrides(overrides, set_), *seed_overrides(seeds)],
                         check_data=False)  # the preflight checks the data
    from lite_cpt.planner.calibration import load_calibration  # after the recipe: unsloth, if named, goes first
    from lite_cpt.run.preemption import PREEMPTED_EXIT_CODE, Preempted, preemption_handlers, resume_command
    from lite_cpt.run.units import plan_units

    cal = load_calibration(calibration) if calibration else None
    only_seeds = None if seed is None else [seed]
    if ray.enabled:
        _sweep_on_ray(plan_units([loaded], arms, only_seeds), ray)
        return
    try:
        with preemption_handlers():
            _run_here(loaded, arms, only_seeds, cal)
    except Preempted as stop:
        err_console.print(f"[bold yellow]stopped[/] ({stop.where}); it resumes from its last checkpoint with: "
                          f"{resume_command()}", highlight=False, soft_wrap=True)
        raise typer.Exit(PREEMPTED_EXIT_CODE) from None


def _run_here(loaded, arms, only_seeds, cal) -> None:
    """The whole recipe (and its report), or the chosen units, in this process."""
    from lite_cpt.run.units import plan_units, run_unit

    if not arms and only_seeds is None:
        from lite_cpt.run.continual import run_recipe

        console.print(f"[bold]lite-cpt[/] run [cyan]{loaded.name}[/] → {loaded.run_dir}")
        run_dir = run_recipe(loaded, console=console, calibration=cal)
        console.print(f"[green]done[/]: {run_dir / 'report.md'}")
        return
    units = plan_units([loaded], arms, only_seeds)
    for unit in units:
        console.print(f"[bold]lite-cpt[/] run [cyan]{unit.label}[/] → {unit.arm_dir}")
        run_unit(unit, console=console, calibration=cal)
    console.print(f"[green]done[/]: {', '.join(u.label for u in units)}; "
                  f"assemble the report with: lite-cpt report {loaded.run_dir}")


@app.command()
@user_errors
@ray_options
def sweep(
    recipes: list[Path] = typer.Argument(..., help="One or more recipes (e.g. recipes/ablations/*.yaml)."),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma-separated seeds, e.g. 0,1,2 (each in seed_<k>/)."),
    arms: Optional[list[str]] = ARM_OPTION,
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value for every recipe (repeatable)."),
    ray: RayChoice = RayChoice(),
):
    """Run every (recipe, seed, arm) unit: one after another here, or in parallel with --ray.

    Examples:\n
      lite-cpt sweep recipes/tiny.yaml recipes/ablations/*.yaml --seeds 0,1,2 --ray\n
      lite-cpt sweep recipes/seven_tasks.yaml --arm sft --arm rft --ray --address head-node:6379\n
      lite-cpt sweep recipes/tiny.yaml --seeds 0,1    (no --ray: one unit after another, here)
    """
    from lite_cpt.run.units import load_units, run_units

    units = load_units(recipes, [*overrides, *seed_overrides(seeds)], arms)
    if ray.enabled:
        _sweep_on_ray(units, ray)
        return
    for run_dir in run_units(units, console=console):
        console.print(f"[green]done[/]: {run_dir / 'report.md'}")


def _sweep_on_ray(units, ray: RayChoice) -> None:
    from lite_cpt.run.ray_backend import run_on_ray

    address, workers = ray.address, ray.workers
    where = address or f"a local loopback-only cluster ({workers or 'all'} CPU slots, this machine's GPUs)"
    console.print(f"[bold]lite-cpt[/] {len(units)} unit(s) on Ray: {where}")
    outcomes = run_on_ray(units, address, workers=workers, on_event=_print_unit_event)
    failed = [outcome for outcome in outcomes if not outcome.ok]
    for outcome in failed:
        err_console.print(f"[bold red]failed[/] {outcome.unit.label} after {outcome.attempts} attempt(s): "
                          f"{outcome.error}", highlight=False)
    console.print(f"[green]{len(outcomes) - len(failed)} of {len(outcomes)} unit(s) done[/]")
    if failed:
        raise typer.Exit(1)


def _print_unit_event(event) -> None:
    styles = {"start": "cyan", "done": "green", "skipped": "dim", "retry": "yellow", "line": ""}
    where = f" (pid {event.pid} on {event.host})" if event.kind in ("start", "retry") else ""
    # Worker lines are plain text already rendered there: print them as text, not markup.
    line = Text(event.label, style=styles.get(event.kind, ""))
    line.append(f" {event.text or event.kind}{where}")
    console.print(line, highlight=False)


def seed_overrides(seeds: str | None) -> list[str]:
    """`--seeds 0,1,2` as the override `seeds=[0, 1, 2]`."""
    if seeds is None:
        return []
    try:
        values = [int(part) for part in seeds.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--seeds takes comma-separated integers such as 0,1,2, got '{seeds}'") from None
    if not values:
        raise UserError("--seeds needs at least one seed, e.g. --seeds 0,1,2")
    return [f"seeds=[{', '.join(map(str, values))}]"]


@app.command()
@user_errors
def validate(
    recipes: list[str] = typer.Argument(..., help="One or more recipe files, then any key.path=value overrides."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    skip_data: bool = typer.Option(False, "--skip-data", help="Check the schema only, not the data paths."),
):
    """Check recipes (keys, types, allowed values, task types, data paths) without running them.

    Example:  lite-cpt validate recipes/*.yaml recipes/ablations/*.yaml --skip-data
    """
    from lite_cpt.recipe import load_recipe

    paths = [Path(item) for item in recipes if "=" not in item]
    overrides = recipe_overrides([item for item in recipes if "=" in item], overrides)
    failures = 0
    for path in paths:
        try:
            loaded = load_recipe(path, overrides, check_data=not skip_data)
            console.print(f"[green]ok[/]   {path}  ({len(loaded.tasks)} tasks, arms: "
                          f"{', '.join(a.name for a in loaded.arms)})")
        except UserError as error:
            failures += 1
            err_console.print(f"[bold red]fail[/] {path}: {error}", highlight=False)
    if failures:
        raise typer.Exit(1)


@app.command("eval")
@user_errors
def eval_command(
    recipe: Path = typer.Argument(..., help="Recipe whose model, tasks and evaluation settings are used."),
    positional: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    adapter: Optional[Path] = typer.Option(None, help="PEFT adapter directory (omit for the base model)."),
    tasks: Optional[list[str]] = typer.Option(None, "--task", help="Task or benchmark name (repeatable; default all)."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the scores to this JSON file."),
):
    """Evaluate an adapter (or the base) on a recipe's tasks and general benchmarks.

    Example:  lite-cpt eval recipes/tiny.yaml --adapter runs/tiny/sft/task_3 --task mini_clevr
    """
    from rich.table import Table

    from lite_cpt.run.evaluate import evaluate_adapter

    scores = evaluate_adapter(recipe, recipe_overrides(positional, overrides), adapter, tasks or None,
                              console=console)
    table = Table("task", "score")
    for name, score in scores.items():
        table.add_row(name, f"{score:.3f}")
    console.print(table)
    if json_out:
        from lite_cpt.io import atomic_write_json

        atomic_write_json(json_out, scores)


@app.command()
@user_errors
def report(run_dir: Path = typer.Argument(..., help="A run directory, e.g. runs/tiny.")):
    """Write report.md, summary.json and plots for a run directory."""
    from lite_cpt.results.report import write_report

    console.print(f"wrote {write_report(run_dir)}")


@app.command()
def arms():
    """List the training methods an arm can use (`arms[].method` in a recipe).

    kind: sft or rl; joint: trains once on all tasks together; phases: the steps the memory
    planner sizes and an out-of-memory message names.
    """
    from rich.table import Table

    from lite_cpt.arms import ARMS, arm_names

    table = Table("method", "kind", "joint", "phases", "what it does")
    for name in arm_names():
        arm = ARMS[name]
        table.add_row(name, arm.kind, "yes" if arm.joint else "no", ", ".join(arm.phases), arm.summary)
    console.print(table)


@app.command()
@user_errors
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Run directories (finished or partial), e.g. runs/tiny runs/tiny-nokl."),
    arms: Optional[str] = typer.Option(None, "--arms", help="Comma-separated arms to show (default: all)."),
    metric: str = typer.Option("BWT", "--metric", help="Metric of the differences and the plot: ACC, BWT, "
                               "forgetting, FWT or a general benchmark's name."),
    out: Optional[Path] = typer.Option(None, "--out", help="Directory for compare.md and compare.png "
                                       "(default: <parent of the first run>/compare)."),
):
    """Put runs side by side: metrics with 95 % intervals, the recipe keys that differ, and which
    differences exclude zero.

    Example:  lite-cpt compare runs/tiny runs/tiny-nokl --arms sft,rft --metric BWT
    """
    from lite_cpt.results.compare import write_comparison

    chosen = [a.strip() for a in arms.split(",") if a.strip()] if arms else None
    out_dir = out if out is not None else Path(run_dirs[0]).resolve().parent / "compare"
    path, text = write_comparison(run_dirs, out_dir, chosen, metric)
    console.print(text, markup=False, highlight=False)
    console.print(f"wrote {path} and {path.with_name('compare.png')}")


@app.command()
@user_errors
def plan(
    recipe: Path = typer.Argument(..., help="Recipe to plan."),
    positional: Optional[list[str]] = typer.Argument(None, help=OVERRIDES_HELP),
    gpu_gb: float = typer.Option(24.0, "--gpu-gb", help="GPU memory in GB."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Throughputs measured by `lite-cpt bench gpu --json F` (default: a reference 24 GB card)."),
    hours: Optional[float] = typer.Option(
        None, "--hours", help="Also say how many training rows per task fit each arm (or --arm) into this many hours."),
    arms: Optional[list[str]] = typer.Option(None, "--arm", help="With --hours: the arm (repeatable; default all)."),
):
    """Estimate peak GPU memory and wall time per phase and arm; pick micro-batch / chunk sizes that fit.

    Exits 1 when the recipe does not fit.

    Example:  lite-cpt plan recipes/seven_tasks.yaml --gpu-gb 24 --calibration bench.json --hours 12 --arm rft
    """
    raise typer.Exit(plan_recipe_file(recipe, recipe_overrides(positional, overrides), gpu_gb, as_json, calibration,
                                      hours=hours, arms=arms))


def plan_recipe_file(path: Path, overrides: list[str] | None, gpu_gb: float, as_json: bool,
                     calibration: Path | None = None, *, hours: float | None = None,
                     arms: list[str] | None = None) -> int:
    """`lite-cpt plan`: load a recipe, print its plan (table or JSON); exit code 1 if it won't fit."""
    import json

    from lite_cpt.recipe import load_recipe

    recipe = load_recipe(path, overrides or [], check_data=False)  # before the heavy imports below
    from lite_cpt.cli_render import render_budgets, render_plan
    from lite_cpt.planner import plan as plan_recipe
    from lite_cpt.planner.calibration import load_calibration

    cal = load_calibration(calibration) if calibration else None
    result = plan_recipe(recipe, gpu_gb, calibration=cal)
    budgets = []
    if hours is not None:
        from lite_cpt.planner.budget import rows_for_hours

        known = [arm.name for arm in recipe.arms]
        unknown = [name for name in arms or [] if name not in known]
        if unknown:
            raise UserError(f"unknown arm {', '.join(unknown)}; allowed values: {', '.join(known)}")
        budgets = [rows_for_hours(recipe, hours, name, gpu_gb, cal) for name in arms or known]
    extended = plan_extended(path, overrides or [], gpu_gb, cal)
    if as_json:
        data = result.to_json()
        if budgets:
            data["budget"] = [budget.to_json() for budget in budgets]
        if extended is not None:
            data["extends"] = {"recipe": str(extended[0]), "time": extended[1].time_json()}
        print(json.dumps(data, indent=2))
    else:
        render_plan(result, console)
        render_budgets(budgets, console)
        if extended is not None:
            from lite_cpt.cli_render import render_beside_extended

            render_beside_extended(result, *extended, console)
    return 0 if result.fits else 1


def plan_extended(path: Path, overrides: list[str], gpu_gb: float, cal):
    """(path, plan) of the recipe that `path` extends, on the same card, for the hours side by
    side (the day recipe beside the faithful one); None when it extends none or the overrides
    do not apply to it."""
    from lite_cpt.planner import plan as plan_recipe
    from lite_cpt.recipe import extended_recipe_path, load_recipe, resolve_recipe_path

    parent = extended_recipe_path(resolve_recipe_path(path))
    if parent is None:
        return None
    try:
        return parent, plan_recipe(load_recipe(parent, overrides, check_data=False), gpu_gb, calibration=cal)
    except UserError:
        return None


def main() -> None:  # pragma: no cover - entry point
    app()
