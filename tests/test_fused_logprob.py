"""fused_linear_logprob against the plain reference and against torch's own cross-entropy.

Both backends run on CPU: the chunked torch path, and the Triton kernels through the
interpreter (TRITON_INTERPRET=1, set before triton is imported). Shapes stay small because
the interpreter executes every tile in Python.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from lite_cpt.kernels import fused_linear_logprob, reference_linear_logprob
from lite_cpt.kernels import fused_logprob as fused_module

triton_interpreted = pytest.mark.skipif(
    fused_module.triton is None or not fused_module._KERNELS_INTERPRETED,
    reason="needs triton with TRITON_INTERPRET=1 set before it was imported",
)
BACKENDS = ["torch", pytest.param("triton", marks=triton_interpreted)]

# Worst absolute error allowed, relative to the largest reference magnitude of that tensor.
# fp32: everything is fp32 on both sides. bf16: both sides accumulate in fp32 from the same
# bf16 inputs, so logp/entropy stay tight; grads are rounded to bf16 (and on the Triton path
# dlogits are rounded to bf16 before the two gradient matmuls, as on the GPU).
TOLERANCE = {
    torch.float32: {"value": 2e-6, "grad": 5e-6},
    torch.bfloat16: {"value": 2e-6, "grad": 3e-2},
}


def _close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    scale = expected.float().abs().max().clamp(min=1.0)
    err = (actual.float() - expected.float()).abs().max()
    assert err <= rel * scale, f"{what}: max abs error {err:.3g} > {rel:.1e} x {scale:.3g}"


def _inputs(n, h, v, dtype, seed, ignore=False, weight_grad=True):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen).to(dtype).requires_grad_(True)
    # Scaled so logits have a spread of a few units, like a trained head.
    weight = (torch.randn(v, h, generator=gen) * (2.0 / h**0.5)).to(dtype).requires_grad_(weight_grad)
    targets = torch.randint(0, v, (n,), generator=gen)
    if ignore:
        targets[::3] = -100
    return hidden, weight, targets


def _forward_backward(fn, hidden, weight, targets, *, entropy, seed, **kwargs):
    """Run fn, backprop random upstream grads into logp (and entropy); return values and grads."""
    hidden.grad = None
    weight.grad = None
    gen = torch.Generator().manual_seed(seed + 1)
    g_logp = torch.randn(targets.shape, generator=gen)
    g_ent = torch.randn(targets.shape, generator=gen)
    out = fn(hidden, weight, targets, return_entropy=entropy, **kwargs)
    logp, ent = out if entropy else (out, None)
    loss = (logp * g_logp).sum() + ((ent * g_ent).sum() if entropy else 0.0)
    loss.backward()
    grads = (hidden.grad.clone(), None if weight.grad is None else weight.grad.clone())
    return logp.detach(), None if ent is None else ent.detach(), grads


# (N, H, V, chunk_size, temperature, entropy, weight_grad, ignore)
CASES = [
    pytest.param(1, 16, 50, None, 1.0, False, True, False, id="N1"),
    pytest.param(37, 40, 70, 32, 0.7, True, True, True, id="odd-ignore-entropy-T0.7"),
    pytest.param(20, 48, 96, 16, 1.3, True, False, False, id="frozen-head-T1.3"),
    pytest.param(33, 24, 130, None, 1.0, False, False, True, id="one-chunk-ignore"),
    pytest.param(9, 16, 40, 16, 0.5, True, True, False, id="T0.5"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("n,h,v,chunk,temperature,entropy,weight_grad,ignore", CASES)
def test_matches_reference(backend, dtype, n, h, v, chunk, temperature, entropy, weight_grad, ignore):
    seed = n * 1000 + v
    hidden, weight, targets = _inputs(n, h, v, dtype, seed, ignore=ignore, weight_grad=weight_grad)
    kwargs = dict(temperature=temperature, chunk_size=chunk)
    logp, ent, (gh, gw) = _forward_backward(
        fused_linear_logprob, hidden, weight, targets, entropy=entropy, seed=seed, _backend=backend, **kwargs
    )
    ref_logp, ref_ent, (ref_gh, ref_gw) = _forward_backward(
        reference_linear_logprob, hidden, weight, targets, entropy=entropy, seed=seed, **kwargs
    )
    tol = TOLERANCE[dtype]
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
        assert torch.all(logp[ignored] == 0)
        assert torch.all(gh[ignored] == 0)
        if entropy:
            assert torch.all(ent[ignored] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equals_torch_cross_entropy(backend):
    """-logp is exactly what torch.nn.functional.cross_entropy(reduction='none') computes."""
    hidden, weight, targets = _inputs(29, 32, 83, torch.float32, seed=7, ignore=True)
    logp = fused_linear_logprob(hidden, weight, targets, chunk_size=20, _backend=backend)
    ce = F.cross_entropy(hidden @ weight.T, targets, reduction="none", ignore_index=-100)
    torch.testing.assert_close(-logp, ce, atol=2e-6, rtol=1e-5)
    # and the gradient of the summed loss matches autograd through cross_entropy
    (gh_fused,) = torch.autograd.grad(-logp.sum(), hidden)
    (gh_ce,) = torch.autograd.grad(ce.sum(), hidden)
    torch.testing.assert_close(gh_fused, gh_ce, atol=2e-6, rtol=1e-5)


def test_equals_trl_selective_log_softmax():
    trl_utils = pytest.importorskip("trl.trainer.utils")
    hidden, weight, targets = _inputs(23, 32, 77, torch.float32, seed=11)
    with torch.no_grad():
        expected = trl_utils.selective_log_softmax(hidden @ weight.T, targets, temperature=0.6)
        for backend in ("torch", "triton") if fused_module._KERNELS_INTERPRETED else ("torch",):
            logp = fused_linear_logprob(hidden, weight, targets, temperature=0.6, _backend=backend)
            torch.testing.assert_close(logp, expected, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upstream_grad_of_a_sum(backend):
    """The grad of .sum() arrives as a stride-0 expanded tensor; it must be read as such."""
    hidden, weight, targets = _inputs(21, 16, 45, torch.float32, seed=4)
    logp, ent = fused_linear_logprob(hidden, weight, targets, return_entropy=True, _backend=backend)
    gh, gw = torch.autograd.grad(logp.sum() + ent.sum(), (hidden, weight))
    ref_logp, ref_ent = reference_linear_logprob(hidden, weight, targets, return_entropy=True)
    ref_gh, ref_gw = torch.autograd.grad(ref_logp.sum() + ref_ent.sum(), (hidden, weight))
    torch.testing.assert_close(gh, ref_gh, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(gw, ref_gw, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_through_entropy_alone(backend):
    """A loss on entropy only (logp's grad is None) still back-propagates -p (log p + H)."""
    hidden, weight, targets = _inputs(18, 16, 45, torch.float32, seed=3, ignore=True)
    _, ent = fused_linear_logprob(hidden, weight, targets, return_entropy=True, chunk_size=16, _backend=backend)
    gh, gw = torch.autograd.grad(ent.sum(), (hidden, weight))
    _, ref_ent = reference_linear_logprob(hidden, weight, targets, return_entropy=True)
    ref_gh, ref_gw = torch.autograd.grad(ref_ent.sum(), (hidden, weight))
    torch.testing.assert_close(gh, ref_gh, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(gw, ref_gw, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_all_positions_ignored(backend):
    hidden, weight, _ = _inputs(5, 16, 30, torch.float32, seed=5)
    targets = torch.full((5,), -100)
    logp, ent = fused_linear_logprob(hidden, weight, targets, return_entropy=True, _backend=backend)
    assert torch.all(logp == 0) and torch.all(ent == 0)
    gh, gw = torch.autograd.grad((logp + ent).sum(), (hidden, weight))
    assert torch.all(gh == 0) and torch.all(gw == 0)


def test_leading_dims_custom_ignore_index_and_mixed_dtypes():
    gen = torch.Generator().manual_seed(9)
    hidden = torch.randn(2, 7, 16, generator=gen, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(40, 16, generator=gen, requires_grad=True)  # fp32 head, bf16 activations
    targets = torch.randint(0, 40, (2, 7), generator=gen)
    targets[1, 3:] = 0  # ignore_index=0 here
    logp = fused_linear_logprob(hidden, weight, targets, ignore_index=0, chunk_size=16)
    ref = reference_linear_logprob(hidden, weight, targets, ignore_index=0)
    assert logp.shape == (2, 7)
    torch.testing.assert_close(logp, ref, atol=2e-6, rtol=1e-5)
    gh, gw = torch.autograd.grad(logp.sum(), (hidden, weight))
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.float32
    assert torch.all(gh[1, 3:] == 0)


def test_rejects_bad_targets_and_arguments():
    hidden, weight, targets = _inputs(4, 8, 10, torch.float32, seed=1)
    with pytest.raises(ValueError, match="targets must lie"):
        fused_linear_logprob(hidden, weight, torch.tensor([0, 1, 10, 2]))
    with pytest.raises(ValueError, match="temperature"):
        fused_linear_logprob(hidden, weight, targets, temperature=0.0)
    with pytest.raises(ValueError, match="backend"):
        fused_linear_logprob(hidden, weight, targets, _backend="cuda")
    with pytest.raises(ValueError, match="weight"):
        fused_linear_logprob(hidden, weight.T, targets)
    with pytest.raises(ValueError, match=r"weight \(8, 10\) must be \[V, 8\]"):  # by the hidden size
        fused_linear_logprob(hidden.detach().view(2, 2, 8), weight.T, targets.view(2, 2))
    with pytest.raises(ValueError, match=r"hidden \(4, 8\) and targets \(3,\) disagree"):
        fused_linear_logprob(hidden, weight, targets[:3])
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        fused_linear_logprob(hidden, weight, targets, chunk_size=0)


class _LargestOutput(TorchDispatchMode):
    """Records the largest number of elements of any floating-point tensor a torch op produced.

    (The Triton interpreter copies launch arguments as raw bytes; those uint8 copies are not
    logits and are left out.)"""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.is_floating_point():
                self.largest = max(self.largest, leaf.numel())
        return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_never_builds_the_full_logits(backend):
    n, h, v, chunk = 24, 16, 400, 64
    hidden, weight, targets = _inputs(n, h, v, torch.float32, seed=2)
    with _LargestOutput() as tracker:
        logp, ent = fused_linear_logprob(
            hidden, weight, targets, return_entropy=True, chunk_size=chunk, _backend=backend
        )
        (logp.sum() + ent.sum()).backward()
    # the largest tensors are the gradient of W [V, H] and one [N, chunk] buffer
    assert tracker.largest <= max(v * h, n * chunk) < n * v
    with _LargestOutput() as tracker:
        reference_linear_logprob(hidden, weight, targets)
    assert tracker.largest >= n * v  # the tracker does see a full logits matrix when one exists


def test_imports_and_runs_without_triton():
    code = (
        "import sys; sys.modules['triton'] = None; sys.modules['triton.language'] = None\n"
        "import torch\n"
        "from lite_cpt.kernels import fused_linear_logprob, reference_linear_logprob, grpo_loss\n"
        "h = torch.randn(6, 8, requires_grad=True); w = torch.randn(13, 8); t = torch.randint(0, 13, (6,))\n"
        "lp = fused_linear_logprob(h, w, t); lp.sum().backward()\n"
        "assert torch.allclose(lp, reference_linear_logprob(h, w, t), atol=1e-5)\n"
        "print('ok')\n"
    )
    env = {k: val for k, val in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_vocab_chunks_smaller_than_the_vocabulary_match_the_reference(backend, monkeypatch):
    """Many tokens shrink the default vocab chunk below the vocabulary (here: budgets that are
    no multiple of the token count, as on a real batch)."""
    monkeypatch.setattr(fused_module, "_TORCH_CHUNK_ELEMENTS", 5 * 300 + 3)
    monkeypatch.setattr(fused_module, "_TRITON_CHUNK_ELEMENTS", 5 * 200 + 2)
    hidden, weight, targets = _inputs(5, 16, 700, torch.float32, seed=3)
    got, _, (gh, gw) = _forward_backward(fused_linear_logprob, hidden, weight, targets, entropy=False, seed=3,
                                         _backend=backend)
    want, _, (ref_gh, ref_gw) = _forward_backward(reference_linear_logprob, hidden, weight, targets,
                                                  entropy=False, seed=3)
    _close(got, want, TOLERANCE[torch.float32]["value"], "logp")
    _close(gh, ref_gh, TOLERANCE[torch.float32]["grad"], "grad hidden")
    _close(gw, ref_gw, TOLERANCE[torch.float32]["grad"], "grad weight")


@pytest.mark.parametrize("backend", BACKENDS)
def test_weight_gradient_with_frozen_hidden_states(backend):
    hidden, weight, targets = _inputs(6, 16, 40, torch.float32, seed=4)
    hidden = hidden.detach()
    fused_linear_logprob(hidden, weight, targets, _backend=backend).sum().backward()
    got = weight.grad.clone()
    weight.grad = None
    reference_linear_logprob(hidden, weight, targets).sum().backward()
    _close(got, weight.grad, TOLERANCE[torch.float32]["grad"], "grad weight")


class _CudaTensor:
    """What the backend choice reads of a CUDA tensor (none is needed to check the choice)."""

    is_cuda = True


def test_compiled_kernels_run_on_cuda_tensors_and_the_torch_path_on_cpu_ones():
    """With Triton compiled (not interpreted), `auto` takes the kernels for CUDA tensors and the
    torch path for CPU ones; asking for `triton` on a CPU tensor says how to run it there."""
    from lite_cpt.kernels.backend import choose_triton

    compiled = dict(triton_installed=True, interpreted=False)
    assert choose_triton("auto", _CudaTensor(), **compiled) is True
    assert choose_triton("auto", torch.zeros(1), **compiled) is False
    assert choose_triton("torch", _CudaTensor(), **compiled) is False
    assert choose_triton("triton", _CudaTensor(), **compiled) is True
    # The whole message, as a user reads it: what is missing and how to get it.
    with pytest.raises(RuntimeError, match="^the triton backend on CPU tensors needs TRITON_INTERPRET=1 set "
                                           "before triton is imported$"):
        choose_triton("triton", torch.zeros(1), **compiled)
    # Interpreted kernels: `auto` keeps the faster torch path, `triton` runs them on a CPU tensor.
    assert choose_triton("auto", _CudaTensor(), triton_installed=True, interpreted=True) is False
    assert choose_triton("triton", torch.zeros(1), triton_installed=True, interpreted=True) is True
    assert choose_triton("auto", _CudaTensor(), triton_installed=False, interpreted=False) is False
    with pytest.raises(RuntimeError, match="^the triton backend was requested but triton is not installed$"):
        choose_triton("triton", _CudaTensor(), triton_installed=False, interpreted=False)
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        choose_triton("cuda", _CudaTensor(), **compiled)


@pytest.mark.skipif(fused_module.triton is None, reason="needs triton")
def test_the_kernel_chooses_its_path_by_whether_its_own_kernels_are_compiled(monkeypatch):
    monkeypatch.setattr(fused_module, "_KERNELS_INTERPRETED", False)
    hidden, weight, targets = torch.randn(3, 8), torch.randn(16, 8), torch.randint(0, 16, (3,))
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        fused_linear_logprob(hidden, weight, targets, _backend="triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_gpu_tiles_are_powers_of_two_and_fp32_products_stay_exact(dtype):
    """What the GPU launch is given (checked without a GPU): tl.dot needs every block dim a power
    of two >= 16, and fp32 inputs are multiplied in IEEE fp32 as torch does, not in TF32."""
    cuda = torch.device("cuda")
    tiles = fused_module._block_config(dtype, cuda)
    for name in ("BLOCK_N", "BLOCK_V", "BLOCK_H"):
        assert isinstance(tiles[name], int) and tiles[name] >= 16 and tiles[name] & (tiles[name] - 1) == 0, name
    options = fused_module._dot_options(dtype, cuda)
    assert options["PRECISION"] == ("ieee" if dtype == torch.float32 else "tf32") and not options["DOT_FP32"]


def test_the_cpu_forward_splits_each_row_blocks_vocab_so_the_combine_step_runs():
    cpu = torch.device("cpu")
    assert fused_module._forward_splits(3, 10, cpu) == 2
    assert fused_module._forward_splits(3, 1, cpu) == 1  # never more splits than vocab tiles
