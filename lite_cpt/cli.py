"""`lite-cpt`: the command line. Thin: parse, call one function, print.

Errors a user can fix (bad recipe, missing data, no GPU, out of memory) are printed as one
clear message with exit code 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.text import Text

from lite_cpt.errors import UserError

app = typer.Typer(
    help="Continual post-training of vision-language models (SFT, GRPO, RIF-RFT) on one GPU.\n\n"
    "Start with:  lite-cpt run recipes/tiny.yaml",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks that print side-by-side ratios.", no_args_is_help=True)
data_app = typer.Typer(help="Inspect the datasets a recipe points at.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")
app.add_typer(data_app, name="data")

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
        cls = ARMS[name]
        summary = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        table.add_row(name, cls.kind, "yes" if cls.joint else "no", ", ".join(cls.phases), summary)
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
    if as_json:
        data = result.to_json()
        if budgets:
            data["budget"] = [budget.to_json() for budget in budgets]
        print(json.dumps(data, indent=2))
    else:
        render_plan(result, console)
        render_budgets(budgets, console)
    return 0 if result.fits else 1


@bench_app.command("kernels")
@user_errors
def bench_kernels_command(
    device: str = typer.Option("cpu", help="cpu (chunked torch path) or cuda (Triton path)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
    train_head: bool = typer.Option(False, "--train-head", help="Also compute the lm_head weight gradient."),
    shapes: Optional[list[str]] = typer.Option(None, "--shape", help="N,H,V (repeatable); default per device."),
    dtype: Optional[str] = typer.Option(None, help="float32 / bfloat16 (default: fp32 on CPU, bf16 on CUDA)."),
):
    """Naive vs fused log-prob (forward + backward): peak memory and time, side by side.

    The lm_head is frozen by default, as in LoRA training (--train-head adds its gradient).

    Example:  lite-cpt bench kernels --device cuda --json bench.json
    """
    from lite_cpt.bench.kernels import bench_kernels

    if device not in ("cpu", "cuda"):
        raise UserError(f"--device must be cpu or cuda, got '{device}'")
    parsed = None
    if shapes:
        try:
            parsed = [tuple(int(x) for x in shape.split(",")) for shape in shapes]
        except ValueError:
            raise UserError(f"--shape takes N,H,V integers, got {shapes}") from None
        if any(len(shape) != 3 for shape in parsed):
            raise UserError(f"--shape takes three integers N,H,V, got {shapes}")
    bench_kernels(device=device, shapes=parsed, dtype=dtype, json_path=json_path, console=console,
                  train_head=train_head)


@bench_app.command("step")
@user_errors
def bench_step_command(
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
    model: str = typer.Option("7b", help="Architecture with random weights: 7b, 3b, or tiny (runs on a CPU: "
                                         "times, no peaks)."),
    group_size: Optional[int] = typer.Option(None, help="Rollouts per prompt (G); default 8 (tiny: its own)."),
    prompt_tokens: Optional[int] = typer.Option(None, help="Prompt length in tokens, image included; default 1024 (tiny: its own)."),
    image_tokens: Optional[int] = typer.Option(None, help="Image tokens per prompt (a square number); default 256 (tiny: its own)."),
    answer_tokens: Optional[int] = typer.Option(None, help="SFT answer and rollout length (max_new_tokens); default 512 (tiny: its own)."),
    micro_batch_size: Optional[int] = typer.Option(None, help="Sequences per forward/backward; default 1 (tiny: its own)."),
    eval_batch: Optional[int] = typer.Option(None, help="Prompts per evaluation generate call; default 16 (tiny: its own)."),
):
    """Run one SFT step, rollouts, log-prob passes, a GRPO update and an evaluation call with
    the run's own functions on random 7B weights (CUDA): peaks vs the plan, and throughputs.

    Example:  lite-cpt bench step --json step.json --group-size 5
    """
    from lite_cpt.bench.step import bench_shapes, bench_step
    from lite_cpt.cli_render import render_bench_step

    given = dict(group_size=group_size, prompt_tokens=prompt_tokens, image_tokens=image_tokens,
                 answer_tokens=answer_tokens, micro_batch_size=micro_batch_size, eval_batch=eval_batch)
    shapes = bench_shapes(model, **{name: value for name, value in given.items() if value is not None})
    render_bench_step(bench_step(json_path=json_path, model=model, shapes=shapes), console)


@bench_app.command("gpu")
@user_errors
def bench_gpu_command(
    json_path: Path = typer.Option(..., "--json", help="Write every result (and the calibration) to this JSON file."),
    recipe: Optional[Path] = typer.Option(
        None, help="Recipe whose model is calibrated when it is here (tiny, a local directory); default: the step "
                   "bench's random-weight 7B on a GPU, recipes/tiny.yaml without one."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    tiny: bool = typer.Option(False, "--tiny", help="Small shapes: a kernel shape and the step bench at the tiny "
                                                    "model's shape (a quick CPU run)."),
):
    """Kernel bench, step bench and throughput calibration in one call.

    Example:  lite-cpt bench gpu --json gpu.json && lite-cpt plan recipes/seven_tasks.yaml --calibration gpu.json
    """
    from lite_cpt.bench.gpu import bench_gpu
    from lite_cpt.recipe import load_recipe

    from lite_cpt.cli_render import render_bench_step

    loaded = load_recipe(recipe, overrides, check_data=False) if recipe is not None else None
    result = bench_gpu(loaded, json_path, tiny=tiny)
    if "phases" in result["step"]:
        render_bench_step(result["step"], console)
    cal = result["calibration"]
    console.print(f"calibration on {cal['device']}: decode {cal['decode_step_s'] * 1e3:.2f} ms/step + "
                  f"{cal['decode_s_per_sequence'] * 1e3:.3f} ms/sequence, prefill {cal['prefill_tokens_per_s']:,.0f} "
                  f"tokens/s, training {cal['train_tokens_per_s']:,.0f} tokens/s → {json_path}")


@bench_app.command("update")
@user_errors
def bench_update_command(
    recipe: Path = typer.Option(Path("recipes/tiny.yaml"), help="Recipe whose model, tasks and GRPO arm are used."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    prompts: int = typer.Option(16, help="Prompts in the rollout batch."),
    group_size: int = typer.Option(4, help="Responses per prompt (G)."),
    max_new_tokens: int = typer.Option(64, help="Longest response; lengths are drawn from 1 to this."),
    budget_sequences: int = typer.Option(4, help="Longest sequences per fixed-count micro-batch (sets the budget)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
):
    """Trained tokens/s of the GRPO update: token-budget micro-batches vs a fixed count, side by side.

    Example:  lite-cpt bench update --recipe recipes/tiny.yaml --json update.json
    """
    from lite_cpt.bench.update import bench_update
    from lite_cpt.cli_render import render_bench_update
    from lite_cpt.io import atomic_write_json
    from lite_cpt.recipe import load_recipe

    result = bench_update(load_recipe(recipe, overrides, check_data=False), prompts=prompts, group_size=group_size,
                          max_new_tokens=max_new_tokens, budget_sequences=budget_sequences)
    if json_path is not None:
        atomic_write_json(json_path, result)
    render_bench_update(result, console)


@bench_app.command("prefix")
@user_errors
def bench_prefix_command(
    recipe: Path = typer.Option(Path("recipes/tiny.yaml"), help="Recipe whose model, tasks and GRPO arm are used."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    prompts: int = typer.Option(8, help="Prompts in the rollout batch."),
    group_size: int = typer.Option(5, help="Answers per prompt (G)."),
    answer_ratio: float = typer.Option(0.37, help="Mean answer length / mean prompt length (0.37: the seven tasks)."),
    budget_tokens: int = typer.Option(4096, help="Token budget of a micro-batch, the same on both sides."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
):
    """The GRPO update with each prompt scored once per group (shared prefix) vs once per answer.

    Example:  lite-cpt bench prefix --recipe recipes/tiny.yaml --json prefix.json
    """
    from lite_cpt.bench.prefix import bench_prefix
    from lite_cpt.cli_render import render_bench_prefix
    from lite_cpt.io import atomic_write_json
    from lite_cpt.recipe import load_recipe

    result = bench_prefix(load_recipe(recipe, overrides, check_data=False), prompts=prompts, group_size=group_size,
                          answer_ratio=answer_ratio, budget_tokens=budget_tokens)
    if json_path is not None:
        atomic_write_json(json_path, result)
    render_bench_prefix(result, console)


@bench_app.command("rollout")
@user_errors
def bench_rollout_command(
    recipe: Path = typer.Argument(Path("recipes/tiny.yaml"), help="Recipe whose model, tasks and RL sampling are used."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    prompts: int = typer.Option(32, help="Prompts, taken in turn from the recipe's tasks."),
    group_size: Optional[int] = typer.Option(None, help="Answers per prompt (G); default the RL arm's."),
    prompts_per_call: int = typer.Option(8, help="Prompts per generate call (x G sequences)."),
    max_new_tokens: Optional[int] = typer.Option(None, help="Longest answer; default the RL arm's."),
    repeats: int = typer.Option(3, help="Runs of each path (alternating); the best of each counts."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
):
    """Rollout sequences/s: G copies expanded before the prefill vs one shared prefill per prompt
    with length-sorted calls, side by side.

    Example:  lite-cpt bench rollout recipes/tiny.yaml --group-size 5 --max-new-tokens 32
    """
    from lite_cpt.bench.rollout import bench_rollout
    from lite_cpt.recipe import load_recipe

    result = bench_rollout(load_recipe(recipe, overrides, check_data=False), prompts=prompts, group_size=group_size,
                           prompts_per_call=prompts_per_call, max_new_tokens=max_new_tokens, repeats=repeats,
                           json_path=json_path)
    for path, row in result["paths"].items():
        console.print(f"{path:>9}: {row['seconds']:.2f} s, {row['sequences_per_s']:.1f} sequences/s "
                      f"({row['generated_tokens']} tokens)", highlight=False)
    console.print(f"{result['prompts']} prompts x G={result['group_size']}, {result['prompts_per_call']} prompts per call, "
                  f"up to {result['max_new_tokens']} new tokens: shared / expanded = [bold]{result['ratio']}×[/]; "
                  f"load average before {result['load_average_before']}, after {result['load_average_after']}",
                  highlight=False)


@bench_app.command("ray")
@user_errors
def bench_ray_command(
    recipe: Path = typer.Argument(Path("recipes/tiny.yaml"), help="Recipe whose arms are timed."),
    overrides: list[str] = typer.Option([], "--set", help="Override key.path=value (repeatable)."),
    workers: int = typer.Option(2, help="CPU slots of the local Ray cluster."),
    out: Optional[Path] = typer.Option(None, help="Directory for the two runs (default: a new temp dir)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results to this JSON file."),
):
    """Wall time of a recipe's arms: serial in one process vs units on a local Ray cluster.

    Example:  lite-cpt bench ray recipes/tiny.yaml --workers 2
    """
    import tempfile

    from lite_cpt.bench.ray import bench_ray
    from lite_cpt.recipe import load_recipe

    out = out or Path(tempfile.mkdtemp(prefix="lite-cpt-bench-ray-"))
    result = bench_ray(load_recipe(recipe, overrides), out, workers=workers, console=console)
    console.print(
        f"{result['units']} arms of {result['recipe']} on {result['cpu_count']} cores: "
        f"serial {result['serial_seconds']} s, Ray {result['workers']} workers {result['ray_seconds']} s "
        f"(incl. cluster start) → speed-up [bold]{result['speedup']}×[/] (ideal {result['ideal_speedup']}×); "
        f"same matrices: {result['same_matrices']}; load average before {result['load_average_before']}, "
        f"after {result['load_average_after']}", highlight=False)
    if json_path:
        from lite_cpt.io import atomic_write_json

        atomic_write_json(json_path, result)


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


def main() -> None:  # pragma: no cover - entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
