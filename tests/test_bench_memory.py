"""`bench step` / `bench gpu` on a GPU that runs out: every out-of-memory form (torch's, and
cuBLAS's allocation failure, which arrives as a RuntimeError) is caught, warm-ups included, and
explained; expandable segments are asked for before CUDA starts unless the user chose an
allocator setting; the step's model is freed before the calibration loads another."""

from __future__ import annotations

import gc
import types
import weakref

import pytest
import torch

from lite_cpt.bench import step as bench_step
from lite_cpt.errors import UserError

CUBLAS_ERROR = "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"


def tiny_setup(model=None):
    """What the phases read of a setup, without building a model."""
    shape = bench_step.tiny_bench_shape()
    recipe = bench_step.bench_recipe("tiny", bench_step.TINY_SHAPES, shape=shape)
    return types.SimpleNamespace(recipe=recipe, shape=shape, model=model or torch.nn.Linear(2, 2), processor=None,
                                 examples=[None] * 4)


def test_a_cublas_allocation_failure_in_the_warm_up_is_the_phases_explained_error(monkeypatch):
    import lite_cpt.train.sft

    calls = []

    def train_sft(*args, **kwargs):
        calls.append(args)
        raise RuntimeError(CUBLAS_ERROR)

    monkeypatch.setattr(lite_cpt.train.sft, "train_sft", train_sft)
    setup, results = tiny_setup(), {}
    bench_step._sft_phase(setup, bench_step._recorder(results, bench_step.cpu_measure, setup.model), results)
    assert len(calls) == 1  # the warm-up failed inside the guarded region; nothing was measured
    row = results["sft_step"]
    assert row["bytes"] is None and row["error"] == "out of memory"
    assert "CUBLAS_STATUS_ALLOC_FAILED" in row["detail"] and "--micro-batch-size" in row["detail"]
    assert row["detail"].startswith("out of GPU memory during sft_step")


def test_torch_out_of_memory_is_recorded_and_other_errors_pass_through():
    results = {}
    model = torch.nn.Linear(2, 2)
    model(torch.ones(1, 2)).sum().backward()
    record = bench_step._recorder(results, bench_step.cpu_measure, model)

    def oom():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert record("rollout", oom) is None
    assert results["rollout"]["error"] == "out of memory" and "--group-size" in results["rollout"]["detail"]
    assert model.weight.grad is None  # the failed step's gradients are gone
    with pytest.raises(RuntimeError, match="shape mismatch"):
        record("evaluation", lambda: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    assert record("evaluation", lambda: 3) == 3 and results["evaluation"]["seconds"] >= 0


def test_building_out_of_memory_is_one_message(monkeypatch):
    def bench_setup(model, shapes):
        raise RuntimeError(CUBLAS_ERROR)

    monkeypatch.setattr(bench_step, "bench_setup", bench_setup)
    with pytest.raises(UserError) as caught:
        bench_step.guarded_setup("7b")
    message = str(caught.value)
    assert "out of GPU memory while building the random-weight 7b model" in message and "--model 3b" in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


@pytest.mark.parametrize("user_setting", [None, "max_split_size_mb:128"])
def test_expandable_segments_are_set_before_the_model_is_built(monkeypatch, user_setting):
    monkeypatch.delenv("PYTORCH_ALLOC_CONF", raising=False)
    if user_setting is None:
        monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    else:
        monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", user_setting)
    seen = []

    def guarded_setup(model, shapes):
        import os

        seen.append(os.environ.get("PYTORCH_CUDA_ALLOC_CONF"))
        raise UserError("stop here")

    monkeypatch.setattr(bench_step, "guarded_setup", guarded_setup)
    with pytest.raises(UserError, match="stop here"):
        bench_step.bench_step(model="tiny")
    assert seen == [user_setting or "expandable_segments:True"]


def test_bench_gpu_frees_the_step_model_before_the_recipe_model_loads(monkeypatch):
    """The step bench's model (here held in a reference cycle, as a bitsandbytes Params4bit
    holds its module) is collected before `load_base` runs."""
    import lite_cpt.bench.kernels
    import lite_cpt.bench.calibrate
    import lite_cpt.models
    from lite_cpt.bench.gpu import bench_gpu
    from lite_cpt.recipe import load_recipe

    class Model:
        pass

    step_model = Model()
    step_model.itself = step_model  # a cycle: only the collector frees it
    alive = weakref.ref(step_model)
    holder = [tiny_setup(step_model)]
    del step_model
    seen_at_load = []
    monkeypatch.setattr(lite_cpt.bench.kernels, "bench_kernels", lambda **kwargs: {"kernels": "measured", "logprob_path": "tile"})
    monkeypatch.setattr(bench_step, "guarded_setup", lambda model: holder.pop())
    monkeypatch.setattr(bench_step, "measure_step", lambda setup: {"phases": {}})

    def load_base(recipe):
        seen_at_load.append(alive() is None)
        return torch.nn.Linear(2, 2), None

    monkeypatch.setattr(lite_cpt.models, "load_base", load_base)
    monkeypatch.setattr(lite_cpt.models, "add_lora", lambda base, lora, gradient_checkpointing: base)
    monkeypatch.setattr(lite_cpt.bench.calibrate, "measure_calibration",
                        lambda recipe, model, processor: types.SimpleNamespace(to_json=lambda: {"calibrated": True}))
    recipe = load_recipe("recipes/tiny.yaml", [], check_data=False)
    gc.disable()  # only an explicit collection may free the cycle
    try:
        result = bench_gpu(recipe, tiny=True)
    finally:
        gc.enable()
    assert seen_at_load == [True]
    assert result["calibration"] == {"calibrated": True, "logprob_path": "tile"}


def test_calibration_out_of_memory_is_one_message(monkeypatch):
    import lite_cpt.bench.kernels
    import lite_cpt.bench.calibrate
    from lite_cpt.bench.gpu import bench_gpu

    monkeypatch.setattr(lite_cpt.bench.kernels, "bench_kernels", lambda **kwargs: {"logprob_path": "tile"})
    monkeypatch.setattr(bench_step, "guarded_setup", lambda model: tiny_setup())
    monkeypatch.setattr(bench_step, "measure_step", lambda setup: {"phases": {}})

    def measure_calibration(*args, **kwargs):
        raise RuntimeError(CUBLAS_ERROR)

    monkeypatch.setattr(lite_cpt.bench.calibrate, "measure_calibration", measure_calibration)
    with pytest.raises(UserError, match="out of GPU memory during the calibration"):
        bench_gpu(None, tiny=True)
