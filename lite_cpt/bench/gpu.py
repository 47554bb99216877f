"""`lite-cpt bench gpu`: every measurement a borrowed GPU should give, in one call and one JSON.

1. the kernel benchmark (naive vs both fused log-prob paths, and Liger when installed on CUDA);
   the faster fused path is used for the rest of the call and written into the calibration
   (`logprob_path`), so a run given the calibration uses it;
2. the step benchmark: one SFT step, rollouts, log-prob passes, a GRPO update and an evaluation
   call by the run's own functions on random 7B weights, peaks vs the plan and throughputs
   (`lite_cpt.bench.step`; `tiny`: the tiny shape, on a CPU times only);
3. the calibration: throughputs measured with the run's generation, log-prob, SFT and
   evaluation functions (`lite_cpt.bench.calibrate`), which `lite-cpt plan --calibration` and
   `lite-cpt run --calibration` read from the same file. It measures the given recipe's own
   model when it can be loaded here (the tiny model, or a local directory); otherwise, and
   by default on a GPU, the step benchmark's random-weight 7B, so a GPU without the weights
   (or without network) still calibrates the plan. Without a GPU nor a recipe, the tiny
   recipe's model.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from lite_cpt.errors import UserError
from lite_cpt.io import atomic_write_json
from lite_cpt.train.oom import is_oom

#: A kernel shape small enough for a CPU smoke run of the whole command.
TINY_KERNEL_SHAPE = (256, 64, 4096)


def loadable_here(recipe) -> bool:
    """Whether the recipe's model needs no download: the tiny model or a local directory."""
    name = recipe.model.name
    return name == "tiny" or (Path(name).expanduser() / "config.json").is_file()


@contextmanager
def calibration_oom_explained() -> Iterator[None]:
    """An out-of-memory error of the calibration (any form: `oom.is_oom`) as one message."""
    try:
        yield
    except Exception as error:  # noqa: BLE001 - only out-of-memory errors become a message
        if not is_oom(error):
            raise
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        error.__traceback__ = None
        raise UserError(f"bench gpu: out of GPU memory during the calibration ({first_line}); calibrate a "
                        "smaller model with --recipe (its own model.max_pixels and batch sizes), or use a GPU "
                        "with more memory") from None


def bench_gpu(recipe=None, json_path: str | Path | None = None, *, tiny: bool = False) -> dict:
    """Run the three benchmarks; `tiny` uses small shapes (CPU tests); `recipe`: the recipe
    whose model to calibrate (None: see the module's docstring)."""
    from lite_cpt.bench.step import use_expandable_segments

    use_expandable_segments()  # before anything starts CUDA
    from lite_cpt.bench.kernels import bench_kernels
    from lite_cpt.kernels import using_logprob_path

    device = "cuda" if torch.cuda.is_available() else "cpu"
    result: dict = {"device": device}
    result["kernels"] = bench_kernels(device=device, shapes=[TINY_KERNEL_SHAPE] if tiny else None)
    with using_logprob_path(result["kernels"]["logprob_path"]) as path:
        result.update(_step_and_calibration(recipe, device, tiny))
    result["calibration"]["logprob_path"] = path
    if json_path is not None:
        atomic_write_json(Path(json_path), result)
    return result


def _step_and_calibration(recipe, device: str, tiny: bool) -> dict:
    """The step benchmark and the calibration, on the log-prob path now in use."""
    from lite_cpt.bench.step import free_device_memory, guarded_setup, measure_step
    from lite_cpt.bench.calibrate import measure_calibration

    result: dict = {}
    free_device_memory()  # the kernel bench's tensors, before the model is built
    setup = None
    if device == "cuda" or tiny:
        setup = guarded_setup("tiny" if tiny else "7b")
        result["step"] = measure_step(setup)
    else:
        result["step"] = {"skipped": "the step benchmark measures CUDA memory: run it on a GPU (or --tiny)"}
    if setup is None and recipe is None:
        from lite_cpt.recipe import load_recipe

        recipe = load_recipe("recipes/tiny.yaml", [], check_data=False)
    if recipe is not None and (setup is None or loadable_here(recipe)):
        from lite_cpt.models import add_lora, load_base

        setup = None  # one model on the device at a time: the random 7B goes before the recipe's loads
        free_device_memory()
        with calibration_oom_explained():
            base, processor = load_base(recipe)
            model = add_lora(base, recipe.model.lora, gradient_checkpointing=recipe.model.gradient_checkpointing)
            calibration = measure_calibration(recipe, model, processor)
    else:
        with calibration_oom_explained():
            calibration = measure_calibration(setup.recipe, setup.model, setup.processor, examples=setup.examples,
                                              data_rates=False)
    result["calibration"] = calibration.to_json()
    return result
