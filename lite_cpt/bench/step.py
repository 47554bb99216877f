"""`lite-cpt bench step`: every phase of a run, run by the run's own functions on the real
architecture with random weights, measured beside the plan.

One SFT step (`train_sft`), one batch of rollouts (`generate_rollouts`), the old/reference
log-prob passes (`prepare_mini_batches`), one GRPO update (`policy_update`) and one evaluation
call (`evaluate_sets`), on Qwen2.5-VL-7B (or 3B) built from its config with random weights: no
download. The language model's linear layers are quantised to NF4 with bitsandbytes one decoder
layer at a time (so building never holds the whole model in bf16), LoRA is added with peft on
the recipe's default modules, the KL reference is a second adapter and gradient checkpointing is
on: the setup the planner models. Peaks are `torch.cuda.max_memory_allocated` per phase,
compared with the plan's live tensor bytes (`allocated_gb`, which leaves out the CUDA context
and allocator slack); throughputs are generated tokens/s, trained tokens/s and evaluation
prompts/s of those same calls.

The prompts are synthetic: an image of the chosen number of image tokens and random text of
the chosen length, encoded by the offline tokenizer of the tiny model (whose special tokens the
random model's config is given). Random weights sample over the whole vocabulary, so answers
run to `max_new_tokens` (the worst case the plan counts), and the reward is a hash of the answer
text, so every group has variance and every rollout carries a gradient.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lite_cpt.bench.build import (  # noqa: F401 (re-exported: the bench's model and prompts)
    BENCH_LORA_ALPHA,
    BENCH_LORA_R,
    BENCH_SEED,
    BenchTask,
    bench_config,
    bench_examples,
    bench_processor,
    build_random_model,
)
from lite_cpt.errors import UserError
from lite_cpt.train.oom import is_oom
from lite_cpt.planner import (
    GIB,
    KNOWN_SHAPES,
    Knobs,
    ModelShape,
    default_logprob_chunk,
    phase_peak_gb,
    tensor_peak_bytes,
    workload_of,
)

MEASURED_PHASES = ("sft_step", "rollout", "logprob_pass", "grpo_step", "evaluation")
#: The GRPO update again in the other layout than the arm's (the bench's arm shares prefixes).
OTHER_LAYOUT = "grpo_step_other_layout"
ALLOCATOR_VARIABLE = "PYTORCH_CUDA_ALLOC_CONF"
#: What the bench sets unless the user did: segments that grow in place, so that freed blocks
#: of one phase serve the next phase's differently sized tensors (less fragmentation).
EXPANDABLE_SEGMENTS = "expandable_segments:True"
#: The bench's own options that shrink each phase, for the message when it runs out of memory.
PHASE_KNOBS = {
    "sft_step": "--micro-batch-size, --answer-tokens or --prompt-tokens",
    "rollout": "--group-size or --answer-tokens",
    "logprob_pass": "--micro-batch-size or --answer-tokens",
    "grpo_step": "--micro-batch-size, --group-size or --answer-tokens",
    "evaluation": "--eval-batch or --answer-tokens",
}


# --------------------------------------------------------------------------------------------
# The recipe the planner sees (CPU-testable)


@dataclass(frozen=True)
class BenchShapes:
    """The sizes of the bench's work: G rollouts of `answer_tokens` per prompt of
    `prompt_tokens` (image included), micro-batches of `micro_batch_size` sequences, evaluation
    calls of `eval_batch` prompts."""

    group_size: int = 8
    prompt_tokens: int = 1024
    image_tokens: int = 256
    answer_tokens: int = 512
    micro_batch_size: int = 1
    eval_batch: int = 16


#: The sizes of a CPU smoke run on the tiny shape (`--model tiny`).
TINY_SHAPES = BenchShapes(group_size=4, prompt_tokens=96, image_tokens=4, answer_tokens=8, micro_batch_size=2,
                          eval_batch=4)


def bench_shapes(model: str, **sizes: int) -> BenchShapes:
    """The model's default sizes (the tiny shape's own for "tiny") with `sizes` replaced."""
    return dataclasses.replace(TINY_SHAPES if model == "tiny" else BenchShapes(), **sizes)


def bench_recipe(model: str = "7b", shapes: BenchShapes = BenchShapes(), shape: ModelShape | None = None):
    """The recipe whose plan describes the bench: one task, an SFT arm and an RFT arm with one
    prompt per step, one prompt per generate call, the sizes of `shapes`."""
    from lite_cpt.recipe import recipe_from_dict
    from lite_cpt.recipe_tasks import TaskConfig

    shape = shape or KNOWN_SHAPES[model]
    group_size, prompt_tokens, image_tokens = shapes.group_size, shapes.prompt_tokens, shapes.image_tokens
    answer_tokens, micro_batch_size = shapes.answer_tokens, shapes.micro_batch_size
    raw = {
        "name": "bench-step",
        "model": {
            "name": shape.name, "quantization": "nf4", "gradient_checkpointing": True,
            "max_pixels": image_tokens * shape.pixels_per_image_token,
            "lora": {"r": BENCH_LORA_R, "alpha": BENCH_LORA_ALPHA},
        },
        # the bench's own task (bench/build.py), no registered type: its entry is built as is
        "tasks": [TaskConfig(name="bench", type="bench", max_prompt_tokens=prompt_tokens,
                             max_answer_tokens=answer_tokens)],
        "arms": [
            {"name": "sft", "batch_size": micro_batch_size, "micro_batch_size": micro_batch_size},
            {"name": "rft", "micro_batch_size": micro_batch_size,
             "rft": {"group_size": group_size, "prompts_per_step": 1, "max_new_tokens": answer_tokens}},
        ],
        "evaluation": {"generation": {"max_new_tokens": answer_tokens, "batch_size": shapes.eval_batch},
                       "general": []},
    }
    return recipe_from_dict(raw, "bench step")


def bench_knobs(recipe, arm_name: str, shape: ModelShape | None = None) -> Knobs:
    """The knobs the bench runs an arm at: its micro-batch, the planner's log-prob chunk for
    it, one prompt per generate call."""
    work = workload_of(recipe, next(a for a in recipe.arms if a.name == arm_name), shape)
    tokens = work.micro_batch_size * (work.new_tokens if work.is_rft else work.answer_tokens)
    return Knobs(work.micro_batch_size, default_logprob_chunk(tokens, work.shape.vocab), 1)


def planned(recipe, shape: ModelShape | None = None) -> dict[str, dict[str, Any]]:
    """Plan of the bench recipe per measured phase: live tensor GiB, device peak, knobs, naive."""
    out = {}
    for arm in recipe.arms:
        work = workload_of(recipe, arm, shape)
        knobs = bench_knobs(recipe, arm.name, shape)
        for phase in work.phases:
            if phase not in MEASURED_PHASES or phase in out:
                continue
            _, tensors = tensor_peak_bytes(work, phase, knobs)
            _, naive = tensor_peak_bytes(work, phase, knobs, naive=True)
            out[phase] = {"allocated_gb": tensors / GIB, "naive_allocated_gb": naive / GIB,
                          "peak_gb": phase_peak_gb(work, phase, knobs), "logprob_chunk": knobs.logprob_chunk}
    return out



# --------------------------------------------------------------------------------------------
# The measured steps


Measure = Callable[[Callable[[], Any]], tuple[Any, float, float]]


def cuda_measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, peak allocated bytes, seconds) of `fn` on the current CUDA device."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    result = fn()
    torch.cuda.synchronize()
    return result, float(torch.cuda.max_memory_allocated()), time.perf_counter() - start


def cpu_measure(fn: Callable[[], Any]) -> tuple[Any, float | None, float]:
    """(result, None, seconds) of `fn`: a CPU run times the phases; it has no device peak."""
    start = time.perf_counter()
    result = fn()
    return result, None, time.perf_counter() - start


def free_device_memory() -> None:
    """Collect garbage (a bitsandbytes `Params4bit` and its module refer to each other, so a
    dropped NF4 model waits for the cycle collector) and hand cached CUDA blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def use_expandable_segments() -> str:
    """Set PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True unless the user set an allocator
    configuration; it takes effect only before CUDA starts, so the bench calls this first.
    Returns the configuration in force."""
    if ALLOCATOR_VARIABLE not in os.environ and "PYTORCH_ALLOC_CONF" not in os.environ:
        os.environ[ALLOCATOR_VARIABLE] = EXPANDABLE_SEGMENTS
    return os.environ.get(ALLOCATOR_VARIABLE) or os.environ["PYTORCH_ALLOC_CONF"]


def out_of_memory_note(phase: str, error: BaseException) -> str:
    """What to tell about an out-of-memory error in `phase`: the error's first line, and the
    bench options that shrink the phase."""
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
    return (f"out of GPU memory during {phase} ({first_line}); rerun with a smaller {PHASE_KNOBS[phase]}, "
            f"or on a GPU with more memory")


def _recorder(results: dict, measure: Measure, model) -> Callable[..., Any]:
    """`record(name, fn, warmup=None)`: run `warmup` (if any) and then `fn` under `measure`, and
    store {"bytes", "seconds"} in results. Any out-of-memory error of either (torch's, or a
    RuntimeError from cuBLAS or CUDA: `oom.is_oom`) is stored as the phase's error with
    advice, the gradients and cached blocks are freed, and None is returned."""

    def record(name: str, fn: Callable[[], Any], warmup: Callable[[], Any] | None = None) -> Any:
        try:
            if warmup is not None:
                warmup()  # first calls compile kernels and size caches: not measured, but guarded
            value, peak, seconds = measure(fn)
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are kept; others re-raised
            if not is_oom(error):
                raise
            note = out_of_memory_note(name, error)
            error.__traceback__ = None  # its frames hold the failed phase's tensors
            del error
            model.zero_grad(set_to_none=True)
            free_device_memory()
            results[name] = {"bytes": None, "seconds": None, "error": "out of memory", "detail": note}
            return None
        results[name] = {"bytes": peak, "seconds": seconds}
        return value

    return record


# --------------------------------------------------------------------------------------------
# The run's phases, measured


@dataclass
class BenchSetup:
    """The random-weight model, its processor and the synthetic examples, with their recipe."""

    recipe: Any
    shape: ModelShape
    model: Any
    processor: Any
    task: BenchTask
    examples: list
    image_tokens: int
    build_seconds: float


def tiny_bench_shape() -> ModelShape:
    """The tiny model's shape (the default `model.tiny` section): the bench's CPU smoke size."""
    from lite_cpt.families import DEFAULT_FAMILY, get_family
    from lite_cpt.recipe_model import TinyModelConfig

    return get_family(DEFAULT_FAMILY).tiny_shape(TinyModelConfig())


def bench_dtype(device):
    """The 16-bit dtype a run picks on `device` (the device policy: bf16 from compute
    capability 8.0, fp16 below it)."""
    from lite_cpt.device_policy import device_policy
    from lite_cpt.recipe_model import ModelConfig

    return device_policy(ModelConfig(device=device.type, dtype="auto")).dtype


def bench_setup(model: str = "7b", shapes: BenchShapes | None = None, device=None) -> BenchSetup:
    """Build the bench's model with random weights (NF4 for "7b" / "3b"; fp32 at the tiny
    model's shape for "tiny") on `device` (CUDA when there is one), its processor and examples."""
    import torch

    allowed = (*KNOWN_SHAPES, "tiny")
    if model not in allowed:
        raise UserError(f"--model must be one of {', '.join(allowed)}, got '{model}'")
    tiny = model == "tiny"
    shapes = shapes or bench_shapes(model)
    if shapes.group_size < 2:
        raise UserError(f"--group-size must be at least 2, got {shapes.group_size}")
    shape = tiny_bench_shape() if tiny else KNOWN_SHAPES[model]
    recipe = bench_recipe(model, shapes, shape=shape)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    processor = bench_processor(shapes.image_tokens)
    start = time.perf_counter()
    peft_model = build_random_model(bench_config(shape, processor), device=device, quantize=not tiny,
                                    dtype=torch.float32 if tiny else bench_dtype(device))
    build_seconds = time.perf_counter() - start
    task, examples = bench_examples(recipe, processor, max(shapes.micro_batch_size, shapes.eval_batch),
                                    prompt_tokens=shapes.prompt_tokens, image_tokens=shapes.image_tokens,
                                    answer_tokens=shapes.answer_tokens)
    return BenchSetup(recipe, shape, peft_model, processor, task, examples, shapes.image_tokens, build_seconds)


def _arm(recipe, name: str):
    return next(arm for arm in recipe.arms if arm.name == name)


def run_bench_phases(setup: BenchSetup, measure: Measure) -> dict[str, dict[str, Any]]:
    """Each phase by the function a run calls, under `measure`: {phase: {"bytes", "seconds",
    "tokens" or "prompts"}}.

    The SFT step is measured on its second call (the first compiles the kernels); a two-token
    generate warms generation up before the rollouts. The GRPO update is `policy_update` whole:
    its peak is that of its gradient passes, its seconds leave out its own log-prob passes.
    """
    results: dict[str, dict[str, Any]] = {}
    record = _recorder(results, measure, setup.model)
    _sft_phase(setup, record, results)
    _rl_phases(setup, record, results)
    _evaluation_phase(setup, record, results)
    return results


def _sft_phase(setup: BenchSetup, record, results: dict) -> None:
    from lite_cpt.train.phase import Phase
    from lite_cpt.train.sft import train_sft

    arm = _arm(setup.recipe, "sft")
    knobs = bench_knobs(setup.recipe, "sft", setup.shape)

    def sft_step():
        return train_sft(setup.model, setup.processor, setup.examples[: arm.batch_size], arm, Phase(knobs, epochs=1))

    if (stats := record("sft_step", sft_step, warmup=sft_step)) is not None:
        results["sft_step"]["tokens"] = stats.trained_tokens


def _rl_phases(setup: BenchSetup, record, results: dict) -> None:
    """Rollouts, the no-grad log-prob passes and one GRPO update, with the KL reference adapter
    held as an RL phase holds it."""
    from lite_cpt.train.phase import Phase, adamw
    from lite_cpt.train.reference_adapter import hold_reference
    from lite_cpt.train.policy_update import compute_advantages, policy_update, prepare_mini_batches
    from lite_cpt.train.rft import generate_rollouts

    model, processor = setup.model, setup.processor
    arm = _arm(setup.recipe, "rft")
    rft, knobs = arm.rft, bench_knobs(setup.recipe, "rft", setup.shape)
    hold_reference(model)
    prompts = setup.examples[: rft.prompts_per_step]

    def rollout(settings=rft):
        return generate_rollouts(model, processor, prompts, settings, group_size=rft.group_size,
                                 generator_seed=BENCH_SEED, rollout_batch_size=knobs.rollout_batch_size)

    warmup = rft.model_copy(update={"max_new_tokens": 2})
    if (rollouts := record("rollout", rollout, warmup=lambda: rollout(warmup))) is None:
        return
    results["rollout"]["tokens"] = rollouts.generated_tokens
    rows = list(range(len(rollouts.token_ids)))
    parts = record("logprob_pass", lambda: prepare_mini_batches(
        model, processor, rollouts, rows, compute_advantages(rollouts, rft), rft, knobs))
    if parts is not None:
        micro = [mb for part in parts for mb in part.micro_batches]
        passes = sum((mb.old_logp is not None) + (mb.ref_logp is not None) for mb in micro)
        results["logprob_pass"]["tokens"] = sum(mb.input_tokens for mb in micro) * passes // max(
            1, len(micro))
    del parts
    optimizer, _ = adamw(model, arm.lr, 0.0, "bench step")
    update = record("grpo_step", lambda: policy_update(model, processor, optimizer, rollouts, arm, Phase(knobs, epochs=1)))
    if update is not None:
        results["grpo_step"]["tokens"] = update["trained_tokens"]
        results["grpo_step"]["seconds"] -= update.get("logprob_seconds", 0.0)
    # the same update with one row per answer (each holding its prompt), for the shared-prefix ratio
    other = arm.model_copy(update={"rft": rft.model_copy(update={"shared_prefix": not rft.shared_prefix})})
    name = OTHER_LAYOUT
    update = record(name, lambda: policy_update(model, processor, optimizer, rollouts, other, Phase(knobs, epochs=1)))
    if update is not None:
        from lite_cpt.bench.prefix import pass_tokens

        results[name]["seconds"] -= update.get("logprob_seconds", 0.0)
        results[name]["layout_tokens"] = pass_tokens(model, processor, rollouts, arm, knobs)


def _evaluation_phase(setup: BenchSetup, record, results: dict) -> None:
    from lite_cpt.run.evaluate import EvalSet, evaluate_sets

    generation = setup.recipe.evaluation.generation
    evalset = EvalSet(setup.task, [example.sample for example in setup.examples[: generation.batch_size]])
    if record("evaluation", lambda: evaluate_sets(setup.model, setup.processor, [evalset], generation)) is not None:
        results["evaluation"]["prompts"] = len(evalset.samples)


def _rate(row: dict, key: str) -> float | None:
    amount, seconds = row.get(key), row.get("seconds")
    return amount / seconds if amount is not None and seconds else None


def step_result(setup: BenchSetup, measured: dict[str, dict[str, Any]], device) -> dict:
    """The bench's report: per phase measured vs planned GiB and seconds, and the throughputs."""
    import torch

    plan = planned(setup.recipe, setup.shape)
    device = torch.device(device)
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        name, gpu_gb = properties.name, properties.total_memory / GIB
    else:
        name, gpu_gb = f"cpu ({torch.get_num_threads()} threads)", None
    rft = _arm(setup.recipe, "rft").rft
    task = setup.recipe.tasks[0]
    result = {
        "device": name,
        "gpu_gb": gpu_gb,
        "model": setup.shape.name,
        "weights": "fp32 (tiny shape)" if setup.shape.name == "tiny" else f"NF4 + {str(bench_dtype(device))[6:]}",
        "shapes": {"group_size": rft.group_size, "prompt_tokens": task.max_prompt_tokens,
                   "image_tokens": setup.image_tokens,
                   "answer_tokens": task.max_answer_tokens,
                   "micro_batch_size": _arm(setup.recipe, "sft").micro_batch_size,
                   "eval_batch": setup.recipe.evaluation.generation.batch_size, "lora_r": BENCH_LORA_R},
        "build_seconds": setup.build_seconds,
        "allocator": os.environ.get(ALLOCATOR_VARIABLE) or os.environ.get("PYTORCH_ALLOC_CONF"),
        "phases": {},
        "throughput": {
            "sft_trained_tokens_per_s": _rate(measured.get("sft_step", {}), "tokens"),
            "generated_tokens_per_s": _rate(measured.get("rollout", {}), "tokens"),
            "logprob_tokens_per_s": _rate(measured.get("logprob_pass", {}), "tokens"),
            "grpo_trained_tokens_per_s": _rate(measured.get("grpo_step", {}), "tokens"),
            "eval_prompts_per_s": _rate(measured.get("evaluation", {}), "prompts"),
        },
    }
    for phase in MEASURED_PHASES:
        got = measured.get(phase, {})
        row = {
            "measured_gb": None if got.get("bytes") is None else got["bytes"] / GIB,
            "planned_gb": plan[phase]["allocated_gb"],
            "planned_peak_gb": plan[phase]["peak_gb"],
            "naive_planned_gb": plan[phase]["naive_allocated_gb"],
            "seconds": got.get("seconds"),
        }
        for key in ("error", "detail"):
            if key in got:
                row[key] = got[key]
        if row["measured_gb"]:
            row["planned_over_measured"] = row["planned_gb"] / row["measured_gb"]
        result["phases"][phase] = row
    from lite_cpt.bench.prefix import layout_comparison

    result["shared_prefix_vs_expanded"] = layout_comparison(measured, _arm(setup.recipe, "rft").rft.shared_prefix,
                                                            OTHER_LAYOUT)
    return result


def guarded_setup(model: str = "7b", shapes: BenchShapes | None = None) -> BenchSetup:
    """`bench_setup`, with an out-of-memory error while building explained in one message."""
    try:
        return bench_setup(model, shapes)
    except Exception as error:  # noqa: BLE001 - only out-of-memory errors become a message
        if not is_oom(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        error.__traceback__ = None
        free_device_memory()
        raise UserError(f"bench step: out of GPU memory while building the random-weight {model} model "
                        f"({first_line}); the frozen model alone must fit: try --model 3b, or a GPU with more "
                        "memory (check nvidia-smi for other processes)") from None


def measure_step(setup: BenchSetup) -> dict:
    """Run the phases on the setup's device (peaks on CUDA, times only on a CPU) and report them."""
    device = next(setup.model.parameters()).device
    measured = run_bench_phases(setup, cuda_measure if device.type == "cuda" else cpu_measure)
    return step_result(setup, measured, device)


# --------------------------------------------------------------------------------------------
# The command


def bench_step(json_path: str | Path | None = None, model: str = "7b", shapes: BenchShapes | None = None) -> dict:
    """Run every phase of a run once on the random-weight model `model` (7b or 3b on CUDA; tiny
    on a CPU too); measured vs planned per phase and the throughputs, written as JSON to
    `json_path` when given."""
    use_expandable_segments()  # before anything starts CUDA
    import torch

    if model != "tiny" and not torch.cuda.is_available():
        raise UserError("bench step needs a CUDA GPU (it measures real peak GPU memory); "
                        "--model tiny runs the tiny shape on the CPU")
    result = measure_step(guarded_setup(model, shapes))
    if json_path is not None:
        from lite_cpt.io import atomic_write_json

        atomic_write_json(Path(json_path), result)
    return result


__all__ = [
    "BenchSetup", "BenchShapes", "BenchTask", "TINY_SHAPES", "bench_config", "bench_examples", "bench_processor",
    "bench_recipe", "bench_setup", "bench_shapes", "bench_step", "build_random_model", "free_device_memory",
    "guarded_setup", "measure_step", "planned", "run_bench_phases", "step_result", "use_expandable_segments",
]
