"""Rich rendering of what the library commands return (plans, benchmark results): the CLI layer
prints, the library functions return data."""

from __future__ import annotations

from lite_cpt.planner import SAFETY_MARGIN, Plan


COMPONENT_LABELS = {
    "frozen_weights": "frozen base",
    "lora_weights": "LoRA weights",
    "lora_grads": "LoRA grads",
    "optimizer_states": "AdamW m, v",
    "ewc_state": "EWC state",
    "reference_adapter": "KL reference adapter",
    "optimizer_step": "AdamW step temps",
    "batch_inputs": "inputs + masks",
    "rollout_buffers": "rollout buffers",
    "vision_encoder": "vision encoder",
    "vision_cache": "vision feature cache",
    "activations_stored": "act. checkpoints",
    "activations_layer": "act. one layer",
    "logprob": "log-prob buffers",
    "grpo_loss": "GRPO loss",
    "kv_cache": "KV cache",
    "generation_transient": "forward working",
    "fragmentation": "allocator slack",
    "cuda_context": "CUDA context",
    "engine_weights": "vLLM: weights",
    "engine_adapter": "vLLM: LoRA slot",
    "engine_overhead": "vLLM: overhead",
    "engine_kv_cache": "vLLM: KV cache",
}


def render_plan(plan: Plan, console) -> None:
    """A rich table: components x phases, peaks fused / naive / at the smallest knobs, knobs."""
    from rich.table import Table

    counts = plan.parameters
    console.print(
        f"[bold]{plan.model}[/]: {counts['total'] / 1e9:.2f} B parameters, LoRA {counts['lora'] / 1e6:.1f} M; "
        f"GPU {plan.gpu_gb:g} GiB, usable {plan.usable_gb:.1f} GiB ({SAFETY_MARGIN:.0%} kept free)"
    )
    weights = ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in plan.weights_gb.items())
    console.print(f"frozen weights (GiB): {weights}")
    phases = plan.phases
    table = Table(title="peak GPU memory per phase (GiB)", padding=(0, 1))
    table.add_column("component", no_wrap=True)
    for name in phases:
        table.add_column(name, justify="right")
    table.add_row("[dim]arm", *[f"[dim]{p.arm}" for p in phases.values()])
    table.add_row("[dim]moment of peak", *[f"[dim]{p.instant}" for p in phases.values()])
    keys = [k for k in COMPONENT_LABELS if any(k in p.components for p in phases.values())]
    for key in keys:
        cells = [f"{p.components[key]:.2f}" if key in p.components else "" for p in phases.values()]
        table.add_row(COMPONENT_LABELS[key], *cells)
    table.add_section()
    table.add_row("[bold]peak", *[
        f"[bold {'green' if p.fits else 'red'}]{p.peak_gb:.2f}" for p in phases.values()])
    table.add_row("naive logits peak", *[f"{p.naive_peak_gb:.2f}" for p in phases.values()])
    table.add_row("min-knobs peak", *[f"{p.min_peak_gb:.2f}" for p in phases.values()])
    console.print(table)
    console.print("[dim]peak: fused log-prob at the chosen knobs; naive: tokens x vocab logits "
                  "materialised; min-knobs: micro-batch 1, smallest chunk, one prompt per generate; "
                  "act.: activations.")
    for line in plan.engine.describe() if plan.engine is not None else []:
        console.print(line)
    knobs = Table(title="knobs per arm")
    for column in ("arm", "method", "micro_batch", "token budget (most sequences)", "logprob_chunk",
                   "rollout_batch", "fits"):
        knobs.add_column(column)
    for arm in plan.arms.values():
        budget = arm.knobs.micro_batch_tokens
        packed = "off" if budget is None else f"{budget} ({arm.knobs.packed_sequences})"
        knobs.add_row(arm.arm, arm.method, str(arm.knobs.micro_batch_size), packed, str(arm.knobs.logprob_chunk),
                      str(arm.knobs.rollout_batch_size) if arm.workload.is_rft else "-",
                      "yes" if arm.fits else "[red]no")
    console.print(knobs)
    for arm in plan.arms.values():
        name, phase = max(arm.phases.items(), key=lambda item: item[1].min_peak_gb)
        console.print(f"{arm.arm}: needs at least {phase.min_peak_gb:.1f} GiB ({name} at the smallest knobs)")
    render_time_plan(plan, console)
    verdict = "fits" if plan.fits else "does NOT fit"
    console.print(f"[bold]{verdict}[/] on a {plan.gpu_gb:g} GiB GPU.")
    for line in plan.advice:
        console.print(f"  - {line}")
    for note in plan.notes:
        console.print(f"[dim]note: {note}")


def render_time_plan(plan: Plan, console) -> None:
    """Predicted hours per arm and phase, with the throughputs they come from."""
    from rich.table import Table

    from lite_cpt.planner.timeplan import TIME_PHASES

    times = {name: arm.time for name, arm in plan.arms.items() if arm.time is not None}
    used = [p for p in TIME_PHASES if any(p in t.seconds for t in times.values())]
    table = Table(title="predicted wall time per arm (hours)")
    for column in ("arm", *used, "total"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, time in times.items():
        if time.hours is None:
            table.add_row(name, *["?" for _ in used], "?")
            continue
        cells = [f"{time.seconds[p] / 3600:.2f}" if p in time.seconds else "-" for p in used]
        table.add_row(name, *cells, f"[bold]{time.hours:.1f}")
    console.print(table)
    if plan.base_evaluation_hours is not None:
        console.print(f"base model evaluation (row 0, once per run): {plan.base_evaluation_hours:.2f} h")
    for name, time in times.items():
        if time.unknown:
            console.print(f"[yellow]{name}: no time prediction: {time.unknown}")
    cal = plan.calibration
    console.print(f"[dim]throughputs: {cal.device} ({cal.model}): decode step {cal.decode_step_s * 1e3:.1f} ms "
                  f"+ {cal.decode_s_per_sequence * 1e3:.2f} ms/sequence, prefill {cal.prefill_tokens_per_s:,.0f} "
                  f"tokens/s, training {cal.train_tokens_per_s:,.0f} tokens/s, host copies {cal.host_copy_gb_per_s:.0f} "
                  f"GB/s. Source: {cal.source}")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def render_budgets(budgets: list, console) -> None:
    """`plan --hours H`: per arm, the training rows per task that fit H hours."""
    for budget in budgets:
        if budget.train_rows_per_task is None:
            console.print(f"{budget.arm}: no training fits {budget.hours:g} h: its evaluations alone take "
                          f"{budget.evaluation_hours:.1f} h (lower tasks.*.test_size or the general benchmarks' size)")
        else:
            console.print(f"{budget.arm}: {budget.train_rows_per_task:,} training rows per task fit {budget.hours:g} h "
                          f"(predicted {budget.predicted_hours:.1f} h; the recipe's sizes: {budget.recipe_hours:.1f} h): "
                          f"--set {budget.override()}")


def render_bench_step(result: dict, console) -> None:
    """`lite-cpt bench step`: measured vs planned GiB and seconds per phase, then throughputs."""
    from rich.table import Table

    shapes = result["shapes"]
    table = Table(title=(
        f"{result['model']} (random weights, {result['weights']}, LoRA r={shapes['lora_r']}) on {result['device']}: "
        f"G={shapes['group_size']}, prompt {shapes['prompt_tokens']} incl. {shapes['image_tokens']} image "
        f"tokens, answers {shapes['answer_tokens']}, micro-batch {shapes['micro_batch_size']}, "
        f"evaluation {shapes['eval_batch']} prompts per call"
    ))
    for column in ("phase", "measured GiB", "planned GiB", "planned/measured", "naive planned", "seconds"):
        table.add_column(column, justify="right" if column != "phase" else "left")
    for phase, row in result["phases"].items():
        table.add_row(phase, row.get("error") or _fmt(row["measured_gb"]), _fmt(row["planned_gb"]),
                      _fmt(row.get("planned_over_measured")), _fmt(row.get("naive_planned_gb")), _fmt(row["seconds"]))
    console.print(table)
    for phase, row in result["phases"].items():
        if row.get("detail"):
            console.print(f"{phase}: {row['detail']}", highlight=False)
    console.print("measured = torch.cuda.max_memory_allocated; planned = the plan's live tensors "
                  "(without CUDA context and allocator slack); none on a CPU.")
    rates = result["throughput"]
    console.print("throughput: " + ", ".join(
        f"{name.replace('_per_s', '').replace('_', ' ')} " + ("-" if value is None else f"{value:,.1f}/s")
        for name, value in rates.items()))
    layouts = result.get("shared_prefix_vs_expanded")
    if layouts:
        sides = [(name, layouts[key]) for name, key in (("shared prefix", "shared_prefix"), ("expanded", "expanded"))]
        console.print("GRPO update, same rollouts: " + "; ".join(
            f"{name} " + (side["error"] or f"{side['tokens']:,} tokens, {_fmt(side['seconds'])} s, "
                                            f"{_fmt(side['peak_gb'])} GiB") for name, side in sides)
            + " (expanded / shared: " + ", ".join(
                f"{what} {_fmt(layouts[key])}" + ("x" if layouts[key] is not None else "")
                for what, key in (("tokens", "token_ratio"), ("time", "speedup"), ("memory", "memory_ratio"))) + ")",
            highlight=False)


def render_bench_update(result: dict, console) -> None:
    """Token budget vs fixed count: seconds, trained tokens and tokens/s of the policy update."""
    from rich.table import Table

    lengths = result["response_tokens"]
    table = Table(title=f"GRPO policy update, {result['rollouts']} rollouts of {lengths['min']}-{lengths['max']} "
                        f"response tokens (mean {lengths['mean']:.1f}), {result['threads']} threads")
    for column in ("micro-batches", "knobs", "seconds", "trained tokens", "trained tokens/s"):
        table.add_column(column)
    for name, side in result["sides"].items():
        knobs = side["knobs"]
        shown = (f"{knobs['micro_batch_size']} sequences" if knobs["micro_batch_tokens"] is None
                 else f"{knobs['micro_batch_tokens']} tokens")
        table.add_row(name, shown, f"{side['seconds']:.2f}", f"{side['trained_tokens']:,}",
                      f"{side['trained_tokens_per_s']:,.0f}")
    console.print(table)
    console.print(f"token budget / fixed count: {result['ratio']:.2f}x trained tokens/s")


def render_bench_prefix(result: dict, console) -> None:
    """Shared prefix vs expanded: tokens per scoring pass and seconds per policy update."""
    from rich.table import Table

    table = Table(title=f"GRPO update, {result['prompts']} prompts x G={result['group_size']}: prompts "
                        f"{result['mean_prompt_tokens']:.0f} tokens, answers {result['mean_answer_tokens']:.0f} "
                        f"on average, budget {result['budget_tokens']} tokens, {result['threads']} threads")
    for column in ("layout", "tokens per pass", "with padding", "micro-batches", "seconds per update"):
        table.add_column(column)
    for name, side in result["sides"].items():
        table.add_row(name, f"{side['tokens']:,}", f"{side['padded_tokens']:,}", str(side["micro_batches"]),
                      f"{side['seconds']:.2f}")
    console.print(table)
    console.print(f"expanded / shared prefix: {result['token_ratio']:.2f}x tokens per pass, "
                  f"{result['speedup']:.2f}x seconds per update")
    vision = result.get("vision_cache")
    if vision:
        off, on = vision["without"], vision["with"]
        console.print(f"vision cache (shared prefix): {off['seconds']:.2f} s -> {on['seconds']:.2f} s per update "
                      f"({vision['speedup']:.2f}x); vision tower per update: {off['tower_images']} images in "
                      f"{off['tower_calls']} calls, {off['tower_seconds']:.3f} s -> {on['tower_images']} images, "
                      f"{on['tower_seconds']:.3f} s")


def render_beside_extended(result, parent_path, parent, console) -> None:
    """Each arm's predicted hours beside those of the recipe this one extends (same card)."""
    from rich.table import Table

    table = Table(title=f"predicted hours beside the recipe it extends ({parent_path.name})")
    for column in ("arm", "this recipe", parent_path.name):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, arm in result.arms.items():
        theirs = parent.arms.get(name)
        hours = [None if a is None or a.time is None else a.time.hours for a in (arm, theirs)]
        table.add_row(name, *("-" if h is None else f"{h:.1f}" for h in hours))
    console.print(table)
