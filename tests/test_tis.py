"""Truncated importance sampling: weights min(exp(old - sampler), cap) on the answer tokens, and a
GRPO loss whose policy-gradient term each token's weight multiplies (KL term unweighted), on both
loss backends, against a hand computation."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib
import math

import pytest
import torch

from lite_cpt.kernels import grpo_loss
from lite_cpt.train.tis import sampler_logp_like, tis_advantages, tis_weights

loss_module = importlib.import_module("lite_cpt.kernels.grpo_loss")
triton_interpreted = pytest.mark.skipif(
    loss_module.triton is None or not loss_module._KERNELS_INTERPRETED,
    reason="needs triton with TRITON_INTERPRET=1 set before it was imported",
)
BACKENDS = ["torch", pytest.param("triton", marks=triton_interpreted)]


def test_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5]])
    sampler = torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    got = tis_weights(old, sampler, mask, cap=1.5)
    # exp(0.5) = 1.6487 is cut to the cap; exp(-1) = 0.3679 stays; the unmasked position is 0
    torch.testing.assert_close(got, torch.tensor([[1.5, math.exp(-1.0), 0.0]]))


def test_sampler_log_probs_land_on_each_rows_answer_positions():
    mask = torch.tensor([[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])  # prompt first, then the answer
    got = sampler_logp_like(mask, [[-0.1, -0.2], [-0.3, -0.4]])
    torch.testing.assert_close(got, torch.tensor([[0.0, -0.1, -0.2, 0.0], [0.0, 0.0, -0.3, -0.4]]))
    with pytest.raises(ValueError, match="do not match"):
        sampler_logp_like(mask, [[-0.1], [-0.3, -0.4]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_loss_with_tis_equals_the_weighted_policy_gradient_by_hand(backend):
    logp = torch.tensor([[-1.0, -0.7, -2.0], [-0.3, -1.2, -0.9]], requires_grad=True)
    old = torch.tensor([[-1.1, -0.4, -2.0], [-0.3, -1.0, -0.2]])
    sampler = torch.tensor([[-1.6, -0.4, -1.0], [-0.1, -1.5, -0.2]])
    ref = torch.tensor([[-1.0, -0.5, -2.1], [-0.4, -1.2, -1.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv = torch.tensor([0.8, -1.5])
    cap, beta, lo, hi, c = 2.0, 0.05, 0.8, 1.3, 3.0
    rows = [[-1.6, -0.4, -1.0], [-0.1, -1.5]]
    loss, _ = grpo_loss(logp, old, tis_advantages(adv, old, rows, mask, cap), mask, ref_logp=ref, beta=beta,
                        eps_low=0.2, eps_high=0.3, dual_clip=c, _backend=backend)
    expected = 0.0
    for b in range(2):
        for t in range(3):
            if not mask[b, t]:
                continue
            a, x = float(adv[b]), float(logp[b, t].detach() - old[b, t])
            r = math.exp(x)
            surrogate = max(-r * a, -min(max(r, lo), hi) * a)
            if a < 0:
                surrogate = min(surrogate, -c * a)
            w = min(math.exp(float(old[b, t] - sampler[b, t])), cap)
            d = float(ref[b, t] - logp[b, t].detach())
            expected += w * surrogate + beta * min(math.exp(d) - d - 1, 10)
    assert float(loss.detach()) == pytest.approx(expected / 5, rel=1e-5)
    # the gradient of the weighted surrogate: -w r A on unclipped tokens (plus the KL's)
    loss.backward()
    b, t = 0, 0  # r = exp(0.1) inside [0.8, 1.3], A > 0: unclipped; w = exp(0.5)
    r, w, d = math.exp(0.1), math.exp(0.5), float(ref[0, 0] - logp[0, 0].detach())
    assert float(logp.grad[b, t]) == pytest.approx((-w * r * 0.8 + beta * (1 - math.exp(d))) / 5, rel=1e-5)
