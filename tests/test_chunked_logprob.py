"""The "chunked" log-prob path (logits chunks by matmul, softmax/gather/gradient fused in Triton)
against the plain reference, its bounded memory, its choice per process and by the calibration.

Both backends run on CPU: torch ops, and the Triton kernels through the interpreter
(TRITON_INTERPRET=1, set by conftest before triton is imported).
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import json
from types import SimpleNamespace

import pytest
import torch

from lite_cpt.kernels import chunked_linear_logprob, fused_linear_logprob, reference_linear_logprob
from lite_cpt.kernels import chunked_logprob as chunked_module
from lite_cpt.kernels.logprob_shared import logprob_path, set_logprob_path, using_logprob_path
from test_fused_logprob import CASES, TOLERANCE, _close, _forward_backward, _inputs, _LargestOutput

triton_interpreted = pytest.mark.skipif(
    chunked_module.triton is None or not chunked_module.KERNELS_INTERPRETED,
    reason="needs triton with TRITON_INTERPRET=1 set before it was imported",
)
BACKENDS = ["torch", pytest.param("triton", marks=triton_interpreted)]
# fp16: the gradient buffer stays fp32 (see the module); the grads themselves are fp16.
TOLERANCES = {**TOLERANCE, torch.float16: {"value": 2e-6, "grad": 4e-3}}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("n,h,v,chunk,temperature,entropy,weight_grad,ignore", CASES)
def test_matches_reference(backend, dtype, n, h, v, chunk, temperature, entropy, weight_grad, ignore):
    """Row chunks of N x chunk / 3V rows: 7 x 5 + 2 of 37, single rows, one chunk of 33, N = 1;
    vocabularies of 50, 70, 130, 40 are no multiple of the interpreter's 32-wide block."""
    seed = n * 1000 + v
    hidden, weight, targets = _inputs(n, h, v, dtype, seed, ignore=ignore, weight_grad=weight_grad)
    kwargs = dict(temperature=temperature, chunk_size=chunk)
    logp, ent, (gh, gw) = _forward_backward(
        chunked_linear_logprob, hidden, weight, targets, entropy=entropy, seed=seed, _backend=backend, **kwargs
    )
    ref_logp, ref_ent, (ref_gh, ref_gw) = _forward_backward(
        reference_linear_logprob, hidden, weight, targets, entropy=entropy, seed=seed, **kwargs
    )
    tol = TOLERANCES[dtype]
    assert logp.dtype == torch.float32 and logp.shape == (n,)
    _close(logp, ref_logp, tol["value"], "logp")
    if entropy:
        _close(ent, ref_ent, tol["value"], "entropy")
    assert gh.dtype == dtype
    _close(gh, ref_gh, tol["grad"], "grad hidden")
    if weight_grad:
        assert gw.dtype == dtype
        _close(gw, ref_gw, tol["grad"], "grad weight")
    else:
        assert gw is None
    if ignore:
        ignored = targets == -100
        assert torch.all(logp[ignored] == 0) and torch.all(gh[ignored] == 0)


def test_the_chunks_are_the_ones_the_budget_gives():
    """The tile path's bf16 [N, chunk] buffer (2 bytes an element) holds as many bytes as the
    fp32 [rows, V] buffer and its bf16 copy (6 bytes an element)."""
    assert chunked_module.rows_per_chunk(37, 70, 32) == 5  # 37 x 32 x 2 // (70 x 6)
    assert chunked_module.rows_per_chunk(5, 700, 3) == 1  # at least one row
    assert chunked_module.rows_per_chunk(33, 130, None) == 33  # the default 256 MiB: all rows here
    assert chunked_module.rows_per_chunk(16384, 152064, None) == 294  # 2^28 B // (152064 x 6 B)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("weight_grad", [False, True], ids=["frozen-head", "trained-head"])
def test_never_builds_the_full_logits(backend, weight_grad):
    n, h, v, chunk = 24, 3, 400, 200  # rows per chunk: 24 x 200 // (3 x 400) = 4; H < 4, so [V, H] < [4, V]
    hidden, weight, targets = _inputs(n, h, v, torch.float32, seed=2, weight_grad=weight_grad)
    with _LargestOutput() as tracker:
        logp, ent = chunked_linear_logprob(hidden, weight, targets, return_entropy=True, chunk_size=chunk,
                                           _backend=backend)
        (logp.sum() + ent.sum()).backward()
    # the largest tensors: one [4, V] logits chunk (W [V, H] and its views and gradient are smaller)
    assert tracker.largest == 4 * v < n * v


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_frozen_head_gets_its_gradient_in_the_forward(backend, monkeypatch):
    """Frozen head (LoRA): two matmuls per chunk in the forward, none in the backward of logp;
    a no-grad pass does one per chunk; a trained head recomputes in the backward (three)."""
    calls = []
    real_mm = chunked_module.mm_fp32
    monkeypatch.setattr(chunked_module, "mm_fp32", lambda a, b: calls.append(1) or real_mm(a, b))
    hidden, weight, targets = _inputs(10, 16, 60, torch.float32, seed=6, weight_grad=False)
    logp = chunked_linear_logprob(hidden, weight, targets, chunk_size=72, _backend=backend)  # 4 + 4 + 2 rows
    assert len(calls) == 2 * 3
    calls.clear()
    (gh,) = torch.autograd.grad(logp.sum(), hidden)
    assert calls == []
    (ref_gh,) = torch.autograd.grad(reference_linear_logprob(hidden, weight, targets).sum(), hidden)
    _close(gh, ref_gh, TOLERANCE[torch.float32]["grad"], "grad hidden")
    with torch.no_grad():
        chunked_linear_logprob(hidden, weight, targets, chunk_size=72, _backend=backend)
    assert len(calls) == 3
    calls.clear()
    weight.requires_grad_(True)
    chunked_linear_logprob(hidden, weight, targets, chunk_size=72, _backend=backend).sum().backward()
    assert len(calls) == 3 + 3 * 3  # forward; backward: logits again, dh, dW


def test_fp16_gradients_keep_values_below_fp16s_smallest():
    """dz of 1e-10 is 0 in fp16; the buffer the gradient matmuls read stays fp32 for fp16
    inputs (bf16 inputs get bf16, whose range holds it)."""
    dz = torch.full((2, 3), 1e-10)
    assert torch.all(dz.to(torch.float16) == 0)
    assert torch.all(chunked_module._grad_operand(dz, torch.float16) == dz)
    assert chunked_module._grad_operand(dz, torch.bfloat16).dtype == torch.bfloat16
    # and the product with an fp16 weight accumulates in fp32: 1e-10 x 4096 rows x 2.0
    weight = torch.full((4096, 2), 2.0, dtype=torch.float16)
    product = chunked_module.mm_fp32(torch.full((1, 4096), 1e-10), weight)
    torch.testing.assert_close(product, torch.full((1, 2), 8.192e-7), rtol=1e-4, atol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_positions_ignored(backend):
    hidden, weight, _ = _inputs(5, 16, 30, torch.float32, seed=5)
    targets = torch.full((5,), -100)
    logp, ent = chunked_linear_logprob(hidden, weight, targets, return_entropy=True, _backend=backend)
    assert torch.all(logp == 0) and torch.all(ent == 0)
    gh, gw = torch.autograd.grad((logp + ent).sum(), (hidden, weight))
    assert torch.all(gh == 0) and torch.all(gw == 0)


def test_the_process_takes_the_chosen_path(monkeypatch):
    hidden, weight, targets = _inputs(4, 8, 20, torch.float32, seed=1)
    taken = []
    real = chunked_module.row_chunked_logprob
    from lite_cpt.kernels import fused_logprob

    monkeypatch.setattr(fused_logprob, "row_chunked_logprob", lambda *a: taken.append(1) or real(*a))
    assert logprob_path() == "tile"  # the default
    fused_linear_logprob(hidden, weight, targets)
    assert taken == []
    with using_logprob_path("chunked") as path:
        assert path == "chunked"
        got = fused_linear_logprob(hidden, weight, targets)
        assert taken == [1]
        fused_linear_logprob(hidden, weight, targets, _path="tile")  # a call may name its own
        assert taken == [1]
    assert logprob_path() == "tile"
    torch.testing.assert_close(got, reference_linear_logprob(hidden, weight, targets), atol=2e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown log-prob path 'cublas'; use one of tile, chunked"):
        set_logprob_path("cublas")


def test_a_run_uses_the_path_its_calibration_found_faster(monkeypatch, tmp_path):
    """The calibration's logprob_path is what the run's log-prob calls take; without a
    calibration, or with one measured before the field existed, the tile kernel."""
    from lite_cpt.run import continual
    from lite_cpt.planner.calibration import REFERENCE_24GB, load_calibration

    seen = []
    monkeypatch.setattr(continual, "run_arm", lambda ws, unit: seen.append(logprob_path()))
    monkeypatch.setattr(continual, "plan_unit", lambda recipe, arm, model, calibration: arm)
    recipe = SimpleNamespace(arms=[SimpleNamespace(name="sft")])
    path = tmp_path / "gpu.json"
    older = REFERENCE_24GB.to_json()
    del older["logprob_path"]
    for written, expected in ((older, "tile"), ({**older, "logprob_path": "chunked"}, "chunked")):
        path.write_text(json.dumps({"calibration": written}))
        ws = SimpleNamespace(model=None, calibration=load_calibration(path), tracker=SimpleNamespace(close=lambda: None))
        continual._run_arms(recipe, ws, None)
        assert seen.pop() == expected
    continual._run_arms(recipe, SimpleNamespace(model=None, calibration=None, tracker=ws.tracker), None)
    assert seen == ["tile"] and logprob_path() == "tile"
