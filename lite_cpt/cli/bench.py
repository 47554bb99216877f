"""`lite-cpt bench ...`: the benchmarks, each printing side-by-side ratios. Each command imports
its benchmark (and torch) only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lite_cpt.cli.common import console, user_errors
from lite_cpt.errors import UserError

bench_app = typer.Typer(help="Benchmarks that print side-by-side ratios.", no_args_is_help=True)


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
                  f"tokens/s, training {cal['train_tokens_per_s']:,.0f} tokens/s, host copies "
                  f"{cal['host_copy_gb_per_s']:.1f} GB/s → {json_path}")


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
