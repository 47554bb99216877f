"""Naive vs fused per-token log-probs through the LM head: peak memory and time in one run.

For each shape (N tokens, H hidden, V vocab) every method computes logp = log_softmax(h W^T)[t]
and backpropagates loss = -sum(logp) into h and W:

    naive   : logits = h @ W.T -> log_softmax -> gather  (builds [N, V] logits and their grads)
    fused   : fused_linear_logprob, the "tile" path      (Triton logits tiles; vocab chunks on CPU)
    chunked : fused_linear_logprob, the "chunked" path   (row chunks: [rows, V] logits by matmul,
              softmax and gradient in Triton; torch ops on CPU)
    liger   : LigerFusedLinearCrossEntropyLoss            (CUDA only, when liger_kernel imports)

The faster of the two fused paths (total time over the shapes) is the report's `logprob_path`;
`lite-cpt bench gpu` puts it into the calibration, and a run given that calibration uses it.

Peak memory is the most bytes allocated above what existed before the method started (inputs
excluded; the gradients of h and W count, since every method must produce them). On CUDA it
comes from torch.cuda.max_memory_allocated; on CPU from the allocator's alloc/free events
recorded by torch.profiler(profile_memory=True), so it counts every tensor and op-internal
buffer, not process RSS. Ratios are naive / method: above 1 means the method is better.
The "max |d ...|" columns compare fused with naive; in bf16 the naive logits themselves are
rounded to bf16, so there the difference is mostly the naive side's rounding.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import torch

from lite_cpt.errors import UserError
from lite_cpt.io import atomic_write_json
from lite_cpt.kernels import fused_linear_logprob
from lite_cpt.kernels.logprob_shared import LOGPROB_PATHS

# N=2048 keeps the default CPU run under a minute on 2 cores; --shape 4096,896,151936 for more.
CPU_DEFAULT_SHAPES = [(2048, 896, 151936)]
CUDA_DEFAULT_SHAPES = [(4096, 3584, 152064), (8192, 3584, 152064), (16384, 3584, 152064)]
_CUDA_REPEATS = 3

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def bench_kernels(
    device: str = "cpu",
    shapes: list[tuple[int, int, int]] | None = None,
    dtype: torch.dtype | str | None = None,
    json_path: str | os.PathLike | None = None,
    console: Any = None,
    train_head: bool = False,
) -> dict:
    """Benchmark naive vs fused log-probs (forward + backward) for each (N, H, V) shape.

    By default the lm_head is frozen, as in LoRA training (gradient to the hidden states only);
    `train_head=True` also measures the weight gradient (full fine-tuning of the head).

    Defaults: CPU fp32 at (2048, 896, 151936); CUDA bf16 at N = 4096, 8192, 16384 with
    H = 3584, V = 152064. Prints a table, returns {"device", "dtype", "machine", "results"},
    and writes the same dict to `json_path` when given.
    """
    target = _parse_device(device)
    dtype = _parse_dtype(dtype, target)
    shapes = [tuple(int(x) for x in s) for s in (shapes or (CUDA_DEFAULT_SHAPES if target.type == "cuda" else CPU_DEFAULT_SHAPES))]
    liger_loss, liger_note = _liger(target)

    results = [_bench_shape(shape, target, dtype, liger_loss, train_head) for shape in shapes]
    report = {
        "device": str(target),
        "dtype": str(dtype).replace("torch.", ""),
        "train_head": train_head,
        "machine": _machine_description(target),
        "results": results,
        "logprob_path": winning_path(results),
    }
    if liger_note:
        report["liger"] = liger_note
    _print_table(report, console)
    if json_path is not None:
        atomic_write_json(json_path, report)
    return report


def _parse_device(device: str) -> torch.device:
    try:
        target = torch.device(device)
    except RuntimeError as err:
        raise UserError(f"unknown device {device!r}; use cpu or cuda") from err
    if target.type not in ("cpu", "cuda"):
        raise UserError(f"bench kernels runs on cpu or cuda, not {device!r}")
    if target.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu")
    return target


def _parse_dtype(dtype: torch.dtype | str | None, target: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if target.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]


# ----------------------------------------------------------------------------- methods


def _naive_logprob(hidden, weight, targets):
    logits = hidden @ weight.T
    return torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)


def _fused_logprob(hidden, weight, targets):
    return fused_linear_logprob(hidden, weight, targets, _path="tile")


def _chunked_logprob(hidden, weight, targets):
    return fused_linear_logprob(hidden, weight, targets, _path="chunked")


def _liger(target: torch.device):
    """(Liger's loss class or None, a note saying why its column is missing)."""
    if target.type != "cuda":
        return None, "liger skipped: its kernels run on CUDA only"
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss
    except Exception as err:  # any import failure just drops the column
        return None, f"liger skipped: liger_kernel does not import ({type(err).__name__}); pip install liger-kernel"
    return LigerFusedLinearCrossEntropyLoss, None


def winning_path(results: list[dict]) -> str:
    """The fused path with the least total time over the shapes: "tile" or "chunked"."""
    totals = {path: sum(r[f"{key}_ms"] for r in results) for path, key in zip(LOGPROB_PATHS, ("fused", "chunked"))}
    return min(LOGPROB_PATHS, key=totals.__getitem__)


def _clear_grads(*tensors: torch.Tensor) -> None:
    for tensor in tensors:
        tensor.grad = None


def _run_backward(method: Callable, hidden, weight, targets) -> torch.Tensor:
    """Forward + backward of loss = -sum(logp) from cleared grads; returns logp (detached)."""
    _clear_grads(hidden, weight)
    logp = method(hidden, weight, targets)
    (-logp.sum()).backward()
    return logp.detach()


def _run_liger(loss_class, hidden, weight, targets) -> torch.Tensor:
    # reduction="sum" is the path Liger optimises (gradients during the forward); the per-token
    # values for the accuracy column come from a reduction="none" call outside the measurement.
    _clear_grads(hidden, weight)
    loss_class(reduction="sum")(weight, hidden, targets).backward()
    return torch.empty(0)


# ----------------------------------------------------------------------------- measurement


def _bench_shape(shape, target, dtype, liger_loss, train_head: bool = False) -> dict:
    n_tokens, hidden_size, vocab = shape
    gen = torch.Generator(device=target).manual_seed(0)
    draw = dict(generator=gen, device=target, dtype=dtype)
    hidden = torch.randn(n_tokens, hidden_size, **draw).requires_grad_(True)
    # W ~ N(0, 1/H) keeps logits ~ N(0, 1), the scale of a trained head.
    weight = (torch.randn(vocab, hidden_size, **draw) / hidden_size**0.5).requires_grad_(train_head)
    targets = torch.randint(0, vocab, (n_tokens,), generator=gen, device=target)

    outcome: dict[str, Any] = {"shape": [n_tokens, hidden_size, vocab]}
    outputs = {}
    methods = {"naive": _naive_logprob, "fused": _fused_logprob, "chunked": _chunked_logprob}
    for name, method in methods.items():
        run = lambda m=method: _run_backward(m, hidden, weight, targets)  # noqa: E731
        seconds, peak, logp, cpu_seconds = _measure(run, lambda: _clear_grads(hidden, weight), target)
        outputs[name] = (logp, hidden.grad, weight.grad)
        _clear_grads(hidden, weight)
        outcome[f"{name}_ms"] = seconds * 1e3
        outcome[f"{name}_peak_mb"] = peak / 2**20
        if cpu_seconds is not None:
            outcome[f"{name}_cpu_ms"] = cpu_seconds * 1e3

    if liger_loss is not None:
        try:
            run = lambda: _run_liger(liger_loss, hidden, weight, targets)  # noqa: E731
            seconds, peak, _, _ = _measure(run, lambda: _clear_grads(hidden, weight), target)
            liger_grads = (hidden.grad, weight.grad)
            _clear_grads(hidden, weight)
            with torch.no_grad():
                liger_logp = -liger_loss(reduction="none")(weight.detach(), hidden.detach(), targets).float()
            outcome["liger_ms"] = seconds * 1e3
            outcome["liger_peak_mb"] = peak / 2**20
            outcome["liger_time_ratio"] = outcome["naive_ms"] / outcome["liger_ms"]
            outcome["liger_peak_memory_ratio"] = outcome["naive_peak_mb"] / max(outcome["liger_peak_mb"], 1e-9)
            outcome["liger_max_abs_diff_logp"] = _max_diff(liger_logp, outputs["naive"][0])
            outcome["liger_max_abs_diff_grad"] = max(
                _max_diff(liger_grads[0], outputs["naive"][1]), _max_diff(liger_grads[1], outputs["naive"][2])
            )
        except Exception as err:  # a Liger API change must not sink the whole benchmark
            outcome["liger_error"] = f"{type(err).__name__}: {err}"

    _compare(outcome, outputs, "fused", "")
    _compare(outcome, outputs, "chunked", "chunked_")
    return outcome


def _compare(outcome: dict, outputs: dict, name: str, prefix: str) -> None:
    """Ratios naive / `name` and differences from naive, under keys starting with `prefix`."""
    naive, method = outputs["naive"], outputs[name]
    outcome[f"{prefix}time_ratio"] = outcome["naive_ms"] / outcome[f"{name}_ms"]
    if f"{name}_cpu_ms" in outcome:
        outcome[f"{prefix}cpu_time_ratio"] = outcome["naive_cpu_ms"] / outcome[f"{name}_cpu_ms"]
    outcome[f"{prefix}peak_memory_ratio"] = outcome["naive_peak_mb"] / max(outcome[f"{name}_peak_mb"], 1e-9)
    outcome[f"{prefix}max_abs_diff_logp"] = _max_diff(method[0], naive[0])
    outcome[f"{prefix}max_abs_diff_grad_hidden"] = _max_diff(method[1], naive[1])
    outcome[f"{prefix}max_abs_diff_grad_weight"] = _max_diff(method[2], naive[2])


def _max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:  # frozen head: no weight gradient on either side
        return 0.0
    return float((a.float() - b.float()).abs().max())


def _measure(run: Callable[[], torch.Tensor], reset: Callable[[], None], target: torch.device):
    """(wall seconds, peak extra bytes, run's result, CPU seconds or None) for forward + backward.

    `reset` drops grads. On CPU the process CPU time is kept too: on a shared machine it is
    the steadier comparison of work done."""
    reset()
    gc.collect()
    if target.type == "cuda":
        return _measure_cuda(run, reset, target)
    return _measure_cpu(run)


def _measure_cuda(run, reset, target) -> tuple[float, int, torch.Tensor, None]:
    run()  # warm-up: Triton compilation, cuBLAS handles, allocator pools
    reset()
    torch.cuda.synchronize(target)
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(target)
    torch.cuda.reset_peak_memory_stats(target)
    times, result = [], None
    for _ in range(_CUDA_REPEATS):
        result = None
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        result = run()
        stop.record()
        torch.cuda.synchronize(target)
        times.append(start.elapsed_time(stop) / 1e3)
    peak = torch.cuda.max_memory_allocated(target) - baseline
    return statistics.median(times), peak, result, None


def _measure_cpu(run) -> tuple[float, int, torch.Tensor, float]:
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler's native start/stop lines are noise here
        prof.start()
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        result = run()
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        with _quiet_stderr():
            prof.stop()
    return seconds, _peak_from_memory_events(prof), result, cpu_seconds


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (native code writes there directly) for the block."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _peak_from_memory_events(prof) -> int:
    """Highest running total of allocations minus frees during the profiled region."""
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


# ----------------------------------------------------------------------------- reporting


def _machine_description(target: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if target.type == "cuda":
        props = torch.cuda.get_device_properties(target)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 2**30, 1)
    return info


_TABLE_METHODS = (("naive", "naive", ""), ("fused", "fused (tile)", ""), ("chunked", "fused (chunked)", "chunked_"),
                  ("liger", "liger", "liger_"))


def _method_row(r: dict, name: str, label: str, prefix: str) -> list[str]:
    if name == "naive":
        return [label, f"{r['naive_ms']:.0f}", "1.00", f"{r['naive_peak_mb']:.0f}", "1.0", "-", "-"]
    grad = max(r.get(f"{prefix}max_abs_diff_grad_hidden", 0.0), r.get(f"{prefix}max_abs_diff_grad_weight", 0.0))
    if name == "liger":
        grad = r["liger_max_abs_diff_grad"]
    return [label, f"{r[f'{name}_ms']:.0f}", f"{r[f'{prefix}time_ratio']:.2f}", f"{r[f'{name}_peak_mb']:.0f}",
            f"{r[f'{prefix}peak_memory_ratio']:.1f}", f"{r[f'{prefix}max_abs_diff_logp']:.2e}", f"{grad:.2e}"]


def _print_table(report: dict, console: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=160)
    table = Table(title=f"fused linear log-prob vs naive, forward + backward ({report['device']}, {report['dtype']})")
    for column in ("N x H x V", "method", "ms", "time ratio", "peak MB", "memory ratio", "max |d logp|",
                   "max |d grad|"):
        table.add_column(column, justify="right", no_wrap=True)
    for r in report["results"]:
        shape = "x".join(str(x) for x in r["shape"])
        for name, label, prefix in _TABLE_METHODS:
            if f"{name}_ms" in r:
                table.add_row(shape, *_method_row(r, name, label, prefix))
                shape = ""
    console.print(table)
    console.print("ratios are naive / method (above 1: the method is faster or smaller); peak = bytes allocated "
                  "above the inputs, gradients included")
    for r in report["results"]:
        if "cpu_time_ratio" in r:
            console.print(f"{'x'.join(map(str, r['shape']))}: process CPU time naive {r['naive_cpu_ms']:.0f} ms, "
                          f"tile {r['fused_cpu_ms']:.0f} ms (ratio {r['cpu_time_ratio']:.2f}), chunked "
                          f"{r['chunked_cpu_ms']:.0f} ms (ratio {r['chunked_cpu_time_ratio']:.2f})")
    for r in report["results"]:
        if "liger_error" in r:
            console.print(f"liger skipped at {r['shape']}: {r['liger_error']}")
    if "liger" in report:
        console.print(report["liger"])
    console.print(f"faster fused path here: {report['logprob_path']} (`lite-cpt bench gpu` writes it into the "
                  "calibration as logprob_path)")
