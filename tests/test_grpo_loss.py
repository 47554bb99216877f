"""GRPO advantages and the clipped policy loss against plain references, on both backends."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import importlib
import math

import pytest
import torch

from lite_cpt.kernels import (
    ADVANTAGE_ESTIMATORS,
    grpo_advantages,
    grpo_loss,
    reference_grpo_advantages,
    reference_grpo_loss,
    remax_advantages,
    rloo_advantages,
)
# the package attribute `grpo_loss` is the function; the module is reached through its path
loss_module = importlib.import_module("lite_cpt.kernels.grpo_loss")

triton_interpreted = pytest.mark.skipif(
    loss_module.triton is None or not loss_module._KERNELS_INTERPRETED,
    reason="needs triton with TRITON_INTERPRET=1 set before it was imported",
)
BACKENDS = ["torch", pytest.param("triton", marks=triton_interpreted)]


# ----------------------------------------------------------------------------- advantages


def _rewards():
    return torch.tensor([
        1.0, 0.0, 1.0, 0.0,      # mixed
        1.0, 1.0, 1.0, 1.0,      # all equal
        0.1, 0.1, 0.1, 0.1,      # all equal, not exactly representable
        3.0, 1.0, 2.0, 5.0,      # spread
    ])


@pytest.mark.parametrize("scale", ["std", "none"])
def test_grpo_advantages_match_statistics_module(scale):
    gen = torch.Generator().manual_seed(0)
    rewards = torch.cat([_rewards(), torch.rand(24, generator=gen)])
    got = grpo_advantages(rewards, 4, scale=scale)
    torch.testing.assert_close(got, reference_grpo_advantages(rewards, 4, scale=scale), atol=1e-6, rtol=1e-5)
    assert torch.all(got[4:12] == 0)  # exactly zero for flat groups
    # each group is centred
    torch.testing.assert_close(got.view(-1, 4).sum(1), torch.zeros(10), atol=1e-5, rtol=0)


def test_grpo_advantages_worked_example():
    # group [1, 0, 1, 0]: mean 0.5, unbiased std sqrt(1/3) -> +-0.5 / 0.57735 = +-0.866
    got = grpo_advantages(torch.tensor([1.0, 0.0, 1.0, 0.0]), 4, eps=0.0)
    expected = 0.5 / math.sqrt(1 / 3)
    torch.testing.assert_close(got, torch.tensor([expected, -expected, expected, -expected]))


def test_rloo_is_leave_one_out():
    rewards = _rewards()
    got = rloo_advantages(rewards, 4)
    groups = rewards.view(-1, 4)
    explicit = torch.stack([
        torch.stack([groups[b, i] - torch.cat([groups[b, :i], groups[b, i + 1:]]).mean() for i in range(4)])
        for b in range(groups.shape[0])
    ]).reshape(-1)
    torch.testing.assert_close(got, explicit)
    assert torch.all(got[4:12] == 0)
    with pytest.raises(ValueError, match="group_size >= 2"):
        rloo_advantages(rewards, 1)


def test_remax_subtracts_the_greedy_reward():
    rewards = _rewards()
    baseline = torch.tensor([0.0, 1.0, 0.5, 2.0])
    got = remax_advantages(rewards, baseline)
    torch.testing.assert_close(got, rewards - baseline.repeat_interleave(4))
    assert torch.all(got[4:8] == 0)


def test_registry_has_one_call_signature():
    rewards, baseline = _rewards(), torch.tensor([0.0, 1.0, 0.5, 2.0])
    assert set(ADVANTAGE_ESTIMATORS) == {"grpo", "rloo", "remax"}
    for name, estimator in ADVANTAGE_ESTIMATORS.items():
        out = estimator(rewards, 4, baseline=baseline)
        assert out.shape == (16,) and out.dtype == torch.float32, name
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["grpo"](rewards, 4), grpo_advantages(rewards, 4))
    with pytest.raises(ValueError, match="baseline"):
        ADVANTAGE_ESTIMATORS["remax"](rewards, 4)
    with pytest.raises(ValueError, match="groups of 3"):
        ADVANTAGE_ESTIMATORS["grpo"](rewards, 3)


# ----------------------------------------------------------------------------- loss


def _batch(seed, n_seq=5, n_tok=13, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(n_seq, n_tok, generator=gen) * 3).to(dtype).requires_grad_(True)
    old = logp.detach().float() + 0.4 * torch.randn(n_seq, n_tok, generator=gen)  # ratios well outside [0.8, 1.2]
    ref = logp.detach().float() + 0.3 * torch.randn(n_seq, n_tok, generator=gen)
    adv = torch.randn(n_seq, generator=gen)
    mask = (torch.rand(n_seq, n_tok, generator=gen) > 0.25).float()
    mask[0, 9:] = 0  # a short sequence
    return logp, old, ref, adv, mask


def _loss_and_grad(fn, logp, *args, **kwargs):
    logp.grad = None
    loss, stats = fn(logp, *args, **kwargs)
    loss.backward()
    return loss.detach(), logp.grad.clone(), {k: float(v) for k, v in stats.items()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean"])
@pytest.mark.parametrize("beta", [0.0, 0.04], ids=["no-kl", "kl"])
def test_loss_matches_reference(backend, aggregation, beta):
    logp, old, ref, adv, mask = _batch(seed=int(beta * 100) + len(aggregation))
    kwargs = dict(ref_logp=ref, beta=beta, eps_low=0.2, eps_high=0.28, aggregation=aggregation)
    loss, grad, stats = _loss_and_grad(grpo_loss, logp, old, adv, mask, _backend=backend, **kwargs)
    ref_loss, ref_grad, ref_stats = _loss_and_grad(reference_grpo_loss, logp, old, adv, mask, **kwargs)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-7, rtol=1e-5)
    for key in ("clip_fraction", "kl_mean", "ratio_mean"):
        assert stats[key] == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-7), key
    assert 0 < stats["clip_fraction"] < 1  # the batch does exercise clipping
    assert (stats["kl_mean"] > 0) == (beta > 0)
    assert torch.all(grad[mask == 0] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_clipping_on_both_sides(backend):
    eps_low, eps_high = 0.2, 0.3
    ratios = torch.tensor([[1.5, 1.1, 0.5, 0.9, 1.5, 0.5]])
    adv_per_token = torch.tensor([[1.0, 1.0, -1.0, -1.0, -1.0, 1.0]])
    # token 0: r > 1+eps_high, A > 0 -> clipped; token 2: r < 1-eps_low, A < 0 -> clipped;
    # tokens 1, 3: inside the range; token 4: r high but A < 0 and token 5: r low but A > 0 -> unclipped
    old = torch.full((1, 6), -2.0)
    logp = (old + ratios.log()).requires_grad_(True)
    mask = torch.ones(1, 6)
    loss, stats = grpo_loss(logp, old, adv_per_token, mask, eps_low=eps_low, eps_high=eps_high, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    expected_tokens = torch.tensor([-1.3, -1.1, 0.8, 0.9, 1.5, -0.5])
    assert float(loss.detach()) == pytest.approx(float(expected_tokens.mean()), rel=1e-5)
    assert float(stats["clip_fraction"]) == pytest.approx(2 / 6)
    # clipped tokens get no gradient; the others get -r A / n
    expected_grad = torch.tensor([[0.0, -1.1, 0.0, 0.9, 1.5, -0.5]]) / 6
    torch.testing.assert_close(grad, expected_grad, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_reward_groups_give_zero_loss_gradient(backend):
    logp, old, _, _, mask = _batch(seed=4, n_seq=4)
    advantages = grpo_advantages(torch.tensor([0.3, 0.3, 1.0, 1.0]), 2)  # two flat groups of 2
    assert torch.all(advantages == 0)
    loss, stats = grpo_loss(logp, old, advantages, mask, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    assert float(loss.detach()) == 0.0
    assert torch.all(grad == 0)
    assert float(stats["clip_fraction"]) == 0.0


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # the junk, inside numpy
@pytest.mark.parametrize("backend", BACKENDS)
def test_masked_positions_cannot_leak(backend):
    logp, old, ref, adv, mask = _batch(seed=6)
    mask[2] = 0  # a sequence with no response tokens
    old = torch.where(mask == 0, torch.tensor(float("-inf")), old)  # padding holds junk
    ref = torch.where(mask == 0, torch.tensor(float("nan")), ref)
    for aggregation in ("token-mean", "seq-mean"):
        loss, stats = grpo_loss(logp, old, adv, mask, ref_logp=ref, beta=0.1, aggregation=aggregation, _backend=backend)
        (grad,) = torch.autograd.grad(loss, logp)
        assert torch.isfinite(loss) and all(math.isfinite(float(v)) for v in stats.values())
        assert torch.all(grad[mask == 0] == 0)
        assert torch.all(torch.isfinite(grad))


def test_seq_mean_counts_an_empty_sequence_as_zero():
    logp, old, _, adv, mask = _batch(seed=8, n_seq=3)
    mask[1] = 0
    full, _ = grpo_loss(logp, old, adv, mask, aggregation="seq-mean")
    kept = [0, 2]
    partial, _ = grpo_loss(logp[kept], old[kept], adv[kept], mask[kept], aggregation="seq-mean")
    torch.testing.assert_close(full, partial * 2 / 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_on_policy_statistics_and_bf16(backend):
    # logp == old_logp == ref_logp: ratio 1, k3 0, nothing clipped; loss = -masked mean of A
    logp, _, _, adv, mask = _batch(seed=10, dtype=torch.bfloat16)
    same = logp.detach().float()
    loss, stats = grpo_loss(logp, same, adv, mask, ref_logp=same, beta=0.5, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    assert grad.dtype == torch.bfloat16
    assert float(stats["ratio_mean"]) == pytest.approx(1.0)
    assert float(stats["kl_mean"]) == 0.0
    assert float(stats["clip_fraction"]) == 0.0
    expected = -(adv[:, None] * mask).sum() / mask.sum()
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)


# ----------------------------------------------------------------------------- EasyR1's clamps


def _extreme_batch(seed, n_seq, n_tok):
    """Log-ratios to the old policy and to the reference spread over +-30, so that every clamp
    (log-ratio +-20 before exp, k3 capped at 10, PPO clip, dual clip) is active somewhere."""
    gen = torch.Generator().manual_seed(seed)
    logp = (-torch.rand(n_seq, n_tok, generator=gen) * 5).requires_grad_(True)
    old = logp.detach() - 30 + 60 * torch.rand(n_seq, n_tok, generator=gen)
    ref = logp.detach() - 30 + 60 * torch.rand(n_seq, n_tok, generator=gen)
    near = torch.rand(n_seq, n_tok, generator=gen) < 0.5  # half the tokens close to on-policy
    old = torch.where(near, logp.detach() + 0.5 * torch.randn(n_seq, n_tok, generator=gen), old)
    ref = torch.where(near, logp.detach() + 0.5 * torch.randn(n_seq, n_tok, generator=gen), ref)
    adv = torch.randn(n_seq, generator=gen)
    mask = (torch.rand(n_seq, n_tok, generator=gen) > 0.2).float()
    mask[0, 0] = 1.0
    return logp, old, ref, adv, mask


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 67), (7, 29)], ids=["1x1", "3x67", "7x29"])
@pytest.mark.parametrize("dual_clip", [3.0, None], ids=["dual", "no-dual"])
@pytest.mark.parametrize("aggregation", ["token-mean", "seq-mean"])
def test_clamped_loss_matches_easyr1_reference_on_odd_shapes(backend, shape, dual_clip, aggregation):
    logp, old, ref, adv, mask = _extreme_batch(sum(shape), *shape)
    kwargs = dict(ref_logp=ref, beta=0.05, eps_low=0.2, eps_high=0.3, dual_clip=dual_clip, aggregation=aggregation)
    loss, grad, stats = _loss_and_grad(grpo_loss, logp, old, adv, mask, _backend=backend, **kwargs)
    ref_loss, ref_grad, ref_stats = _loss_and_grad(reference_grpo_loss, logp, old, adv, mask, **kwargs)
    assert torch.isfinite(loss) and torch.all(torch.isfinite(grad))
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=1e-5)
    for key in ("clip_fraction", "dual_clip_fraction", "kl_mean", "ratio_mean"):
        assert stats[key] == pytest.approx(ref_stats[key], rel=1e-5, abs=1e-6), key
    if shape == (7, 29):  # the big batch does reach every clamp
        assert stats["clip_fraction"] > 0 and stats["kl_mean"] > 0
        assert (stats["dual_clip_fraction"] > 0) == (dual_clip is not None)
        assert float(grad.abs().max()) > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_dual_clip_caps_negative_advantages(backend):
    # A = -1 throughout. r = 5 > C = 3: the loss is C |A| = 3 and the token gets no gradient;
    # r = 2 < C: ordinary PPO term r |A| = 2 with gradient r |A| / n; r = 0.5 < 1 - eps_low: clipped.
    ratios = torch.tensor([[5.0, 2.0, 0.5]])
    old = torch.full((1, 3), -1.0)
    logp = (old + ratios.log()).requires_grad_(True)
    adv = torch.full((1, 3), -1.0)
    mask = torch.ones(1, 3)
    loss, stats = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.3, dual_clip=3.0, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    assert float(loss.detach()) == pytest.approx((3.0 + 2.0 + 0.8) / 3, rel=1e-5)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 2.0 / 3, 0.0]]), atol=1e-6, rtol=1e-5)
    assert float(stats["dual_clip_fraction"]) == pytest.approx(1 / 3)
    assert float(stats["clip_fraction"]) == pytest.approx(1 / 3)
    without, _ = grpo_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.3, dual_clip=None, _backend=backend)
    assert float(without.detach()) == pytest.approx((5.0 + 2.0 + 0.8) / 3, rel=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_k3_is_capped_at_ten(backend):
    # ref - logp = 9: raw k3 = e^9 - 10 = 8093 (x beta 0.01 = a per-token loss of 80.9);
    # EasyR1 caps k3 at 10 and the capped token passes no gradient. ref - logp = 1: k3 = e - 2.
    logp = torch.tensor([[-12.0, -3.0]], requires_grad=True)
    ref = torch.tensor([[-3.0, -2.0]])
    mask = torch.ones(1, 2)
    loss, stats = grpo_loss(logp, logp.detach(), torch.zeros(1), mask, ref_logp=ref, beta=0.01, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    assert float(stats["kl_mean"]) == pytest.approx((10.0 + math.e - 2) / 2, rel=1e-5)
    assert float(loss.detach()) == pytest.approx(0.01 * (10.0 + math.e - 2) / 2, rel=1e-5)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.01 * (1 - math.e) / 2]]), atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_ratio_is_clamped_before_exp(backend):
    # log-ratio 100: exp overflows to inf in fp32 and inf * 0 is nan without the clamp; with it
    # the ratio is e^20. A > 0 and log-ratio -25: the clamp is active, so no gradient.
    old = torch.tensor([[-101.0, -1.0, -1.0]])
    logp = torch.tensor([[-1.0, -26.0, -1.2]], requires_grad=True)
    adv = torch.tensor([[0.0, 1.0, 1.0]])
    mask = torch.ones(1, 3)
    loss, stats = grpo_loss(logp, old, adv, mask, _backend=backend)
    (grad,) = torch.autograd.grad(loss, logp)
    assert torch.isfinite(loss) and torch.all(torch.isfinite(grad))
    r = math.exp(-0.2)
    assert float(loss.detach()) == pytest.approx((-math.exp(-20) - r) / 3, rel=1e-5)
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, -r / 3]]), atol=1e-9, rtol=1e-5)
    assert float(stats["ratio_mean"]) == pytest.approx((math.exp(20) + math.exp(-20) + r) / 3, rel=1e-5)


def test_rejects_a_dual_clip_not_above_one():
    logp, old, _, adv, mask = _batch(seed=1)
    with pytest.raises(ValueError, match="dual_clip"):
        grpo_loss(logp, old, adv, mask, dual_clip=1.0)


def test_rejects_bad_arguments():
    logp, old, _, adv, mask = _batch(seed=1)
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logp, old, adv, mask, aggregation="sum")
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logp, old, adv[:-1], mask)
    with pytest.raises(ValueError, match=r"ref_logp must be \[B, T\] like logp"):
        grpo_loss(logp, old, adv, mask, ref_logp=logp[:, :-1], beta=0.1)
    with pytest.raises(ValueError, match="scale"):
        grpo_advantages(torch.ones(4), 2, scale="max")


@pytest.mark.skipif(loss_module.triton is None, reason="needs triton")
def test_the_loss_chooses_its_path_by_whether_its_own_kernel_is_compiled(monkeypatch):
    """Compiled (not interpreted), the loss asked for its Triton kernel on a CPU tensor says how
    to run it there (the choice itself: `lite_cpt.kernels.backend`, tested with the log-prob)."""
    monkeypatch.setattr(loss_module, "_KERNELS_INTERPRETED", False)
    logp = torch.zeros(2, 3)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        grpo_loss(logp, logp, torch.ones(2), torch.ones(2, 3), _backend="triton")
