"""The fused log-prob's Triton backward in fp16 keeps its dlogits buffer in fp32: with a
4096-word vocabulary and near-uniform logits each p is about 2.4e-4, so p times an upstream
grad of 1e-4 is about 2.4e-8, which fp16 flushes to zero; the gradient's -g·E_p[W] term would
vanish. Run by the Triton interpreter on CPU tensors, checked against the torch path (fp32)."""

from __future__ import annotations

import pytest
import torch

from lite_cpt.kernels import fused_linear_logprob
from lite_cpt.kernels.fused_logprob import _KERNELS_INTERPRETED

pytestmark = pytest.mark.skipif(not _KERNELS_INTERPRETED, reason="needs TRITON_INTERPRET=1 before triton loads")


def test_fp16_gradients_from_small_probabilities_survive():
    generator = torch.Generator().manual_seed(0)
    tokens, hidden, vocab = 3, 16, 4096
    h = (torch.randn(tokens, hidden, generator=generator) * 0.01).half()
    # Every row of W shares an offset, so E_p[W] is far from zero and its loss shows.
    w = (torch.randn(vocab, hidden, generator=generator) * 0.1 + 1.0).half()
    targets = torch.randint(0, vocab, (tokens,), generator=generator)
    grads = {}
    for backend in ("torch", "triton"):
        h_in, w_in = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
        logp = fused_linear_logprob(h_in, w_in, targets, chunk_size=1024, _backend=backend)
        (logp.float() * 1e-4).sum().backward()
        grads[backend] = (h_in.grad.float(), w_in.grad.float())
    expected_h, expected_w = grads["torch"]
    got_h, got_w = grads["triton"]
    assert expected_h.abs().max() > 1e-6  # the -g E_p[W] term is there to lose
    torch.testing.assert_close(got_h, expected_h, rtol=0.02, atol=2e-7)
    torch.testing.assert_close(got_w, expected_w, rtol=0.02, atol=2e-7)
