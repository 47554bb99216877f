"""`lite-cpt bench gpu`: every measurement a borrowed GPU should give, in one call and one JSON.

1. the kernel benchmark (naive vs fused log-prob, and Liger when installed on CUDA);
2. the step benchmark (peak memory of one SFT and one GRPO step on random 7B weights vs the
   plan) on CUDA; on a CPU a note says it was left out (it measures CUDA memory);
3. the calibration: throughputs of a recipe's model measured with the run's own generation and
   log-prob functions (`lite_cpt.calibrate`), which `lite-cpt plan --calibration` and
   `lite-cpt run --calibration` read from the same file.
"""

from __future__ import annotations

from pathlib import Path

import torch

from lite_cpt.io import atomic_write_json

#: A kernel shape small enough for a CPU smoke run of the whole command.
TINY_KERNEL_SHAPE = (256, 64, 4096)


def bench_gpu(recipe, json_path: str | Path | None = None, *, tiny: bool = False) -> dict:
    """Run the three benchmarks; `tiny` uses a small kernel shape (CPU tests)."""
    from lite_cpt.bench_kernels import bench_kernels
    from lite_cpt.calibrate import measure_calibration
    from lite_cpt.models import add_lora, load_base

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict = {"device": device}
    result["kernels"] = bench_kernels(device=device, shapes=[TINY_KERNEL_SHAPE] if tiny else None)
    if device == "cuda":
        from lite_cpt.bench_step import bench_step

        result["step"] = bench_step()
    else:
        result["step"] = {"skipped": "the step benchmark measures CUDA memory: run it on a GPU"}
    base, processor = load_base(recipe)
    model = add_lora(base, recipe.model.lora, gradient_checkpointing=recipe.model.gradient_checkpointing)
    result["calibration"] = measure_calibration(recipe, model, processor).to_json()
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result
