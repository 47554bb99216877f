"""Group-relative advantages and the clipped GRPO policy loss with its gradient in one pass.

Advantages (rewards laid out as B prompts x G consecutive rollouts):

    grpo : A_i = (r_i - mean_g) / (std_g + eps)        (scale="none": A_i = r_i - mean_g)
    rloo : A_i = r_i - mean_{j != i} r_j = G / (G - 1) (r_i - mean_g)
    remax: A_i = r_i - b_g                             (b_g: reward of the prompt's greedy answer)

A group whose rewards are all equal gets exactly 0 from grpo and rloo (and from remax when the
greedy reward equals them too, since r - b is then exactly 0).

Loss per response token, EasyR1's PPO objective (verl/trainer/core_algos.py: compute_policy_loss,
compute_kl with kl_penalty="low_var_kl"), with lo = 1 - eps_low, hi = 1 + eps_high, C = dual_clip:

    x         = clamp(logp - old_logp, -20, 20)            (before exp: no inf, no nan gradient)
    r         = exp(x)
    surrogate = max(-r A, -clip(r, lo, hi) A)               (PPO clip; clip_fraction counts it)
    surrogate = min(surrogate, -C A)        where A < 0     (dual clip; dual_clip_fraction)
    d         = clamp(ref_logp - logp, -20, 20)
    kl        = min(exp(d) - d - 1, 10)                     (k3; only with ref_logp and beta > 0)
    loss_tok  = surrogate + beta kl

A clamp passes no gradient where it is active (as torch.clamp's backward), so

    d loss_tok / d logp = -r A [unclipped branch, |logp - old_logp| < 20]
                          + beta (1 - exp(d)) [|ref_logp - logp| < 20 and exp(d) - d - 1 < 10]

The ±20 clamp only bites on junk or on a ratio clipped anyway (one exception: A > 0 with
x < -20, where r A < 1e-8 and the gradient becomes 0); the k3 cap keeps one token whose policy
ran far from the reference (a log-ratio of 9 gives k3 = 8093) from dominating the gradient-norm
clip. `dual_clip=None` turns the dual clip off (plain PPO clipping).

aggregated as token-mean  sum(mask loss) / sum(mask)  or seq-mean  mean_b(sum_t mask loss / sum_t mask)
(a sequence with no tokens counts as 0; sums of mask are clamped to >= 1). The gradient goes to
`logp` only. One Triton kernel (CUDA, or CPU under TRITON_INTERPRET=1) computes the per-token
loss, its gradient and the statistics' partial sums; the torch path does the same on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .backend import choose_triton

try:  # triton is optional: without it every call takes the torch path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "grpo_advantages",
    "grpo_loss",
    "reference_grpo_advantages",
    "reference_grpo_loss",
    "remax_advantages",
    "rloo_advantages",
]

_AGGREGATIONS = ("token-mean", "seq-mean")


# ----------------------------------------------------------------------------- advantages


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    flat = rewards.reshape(-1).float()
    if flat.numel() % group_size:
        raise ValueError(f"{flat.numel()} rewards do not split into groups of {group_size}")
    return flat.view(-1, group_size)


def _zero_equal_groups(advantages: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Exactly 0 for a group with no spread (rounding in the mean would otherwise leave ~1e-8)."""
    flat_group = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return torch.where(flat_group, torch.zeros_like(advantages), advantages).reshape(-1)


def grpo_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "std", eps: float = 1e-6
) -> torch.Tensor:
    """[B*G] advantages (r - mean_g) / (std_g + eps) per group of G consecutive rewards.

    std is the unbiased sample std (as in the GRPO paper and TRL); scale="none" keeps r - mean_g.
    """
    groups = _grouped(rewards, group_size)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "std":
        spread = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
        centred = centred / (spread + eps)
    elif scale != "none":
        raise ValueError(f"scale must be 'std' or 'none', got {scale!r}")
    return _zero_equal_groups(centred, groups)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B*G] leave-one-out advantages r_i - mean_{j != i} r_j within each group (G >= 2)."""
    if group_size < 2:
        raise ValueError("rloo needs group_size >= 2 (the baseline leaves one rollout out)")
    groups = _grouped(rewards, group_size)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return _zero_equal_groups(groups - others_mean, groups)


def remax_advantages(rewards: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """[B*G] advantages r - b per prompt, b [B] the reward of each prompt's greedy response."""
    baseline = baseline.reshape(-1).float()
    if baseline.numel() == 0:
        raise ValueError("remax needs one baseline reward per prompt")
    if rewards.numel() % baseline.numel():
        raise ValueError(f"{rewards.numel()} rewards do not split evenly over {baseline.numel()} prompts")
    groups = _grouped(rewards, rewards.numel() // baseline.numel())
    return (groups - baseline.unsqueeze(1)).reshape(-1)


def _grpo_estimator(rewards, group_size, baseline=None):
    return grpo_advantages(rewards, group_size)


def _rloo_estimator(rewards, group_size, baseline=None):
    return rloo_advantages(rewards, group_size)


def _remax_estimator(rewards, group_size, baseline=None):
    if baseline is None:
        raise ValueError("the remax estimator needs baseline rewards (one greedy reward per prompt)")
    if rewards.numel() != baseline.numel() * group_size:
        raise ValueError(f"{rewards.numel()} rewards do not match {baseline.numel()} prompts x {group_size}")
    return remax_advantages(rewards, baseline)


# Uniform call: estimator(rewards [B*G], group_size G, baseline [B] or None) -> advantages [B*G].
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "grpo": _grpo_estimator,
    "rloo": _rloo_estimator,
    "remax": _remax_estimator,
}


def reference_grpo_advantages(
    rewards: torch.Tensor, group_size: int, *, scale: str = "std", eps: float = 1e-6
) -> torch.Tensor:
    """One group at a time with Python's statistics module; slow, for tests."""
    import statistics

    values = [float(r) for r in rewards.reshape(-1)]
    out: list[float] = []
    for start in range(0, len(values), group_size):
        group = values[start:start + group_size]
        if max(group) == min(group):
            out.extend([0.0] * len(group))
            continue
        mean = statistics.fmean(group)
        denom = statistics.stdev(group) + eps if scale == "std" else 1.0
        out.extend([(r - mean) / denom for r in group])
    return torch.tensor(out, dtype=torch.float32)


# ----------------------------------------------------------------------------- loss


#: EasyR1's safety clamps (verl/trainer/core_algos.py): the log-ratio before exp, and k3's value.
LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0


def reference_grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.3,
    dual_clip: float | None = 3.0,
    aggregation: str = "token-mean",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """EasyR1's compute_policy_loss (default loss type) and low_var_kl, line for line in torch
    (autograd for the gradient; torch.max / torch.min / torch.clamp as EasyR1 writes them)."""
    logp = logp.float()
    mask = mask.float()
    adv = advantages.float()
    adv = adv.reshape(-1, 1) if adv.dim() == 1 else adv
    log_ratio = logp - old_logp.float()
    ratio = torch.exp(torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    clipped_ratio = torch.exp(torch.clamp(log_ratio, math.log(1.0 - eps_low), math.log(1.0 + eps_high)))
    pg_loss = -adv * ratio
    pg_loss2 = -adv * clipped_ratio
    per_token = torch.max(pg_loss, pg_loss2)
    dual_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip is not None:
        pg_loss3 = -adv * dual_clip
        dual_clipped = (per_token > pg_loss3) & (adv < 0)
        per_token = torch.where(adv < 0, torch.min(per_token, pg_loss3), per_token)
    kl = torch.zeros_like(per_token)
    if ref_logp is not None and beta > 0:
        delta = (ref_logp.float() - logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = torch.clamp(delta.exp() - delta - 1, min=-KL_CLAMP, max=KL_CLAMP)
        per_token = per_token + beta * kl
    per_token = torch.where(mask != 0, per_token * mask, torch.zeros_like(per_token))
    if aggregation == "token-mean":
        loss = per_token.sum() / mask.sum().clamp(min=1)
    elif aggregation == "seq-mean":
        loss = (per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    else:
        raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}")
    n = mask.sum().clamp(min=1)
    with torch.no_grad():
        stats = {
            "clip_fraction": ((pg_loss < pg_loss2).float() * mask).sum() / n,
            "dual_clip_fraction": (dual_clipped.float() * mask).sum() / n,
            "kl_mean": (kl * mask).sum() / n,
            "ratio_mean": (ratio * mask).sum() / n,
        }
    return loss, stats


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    ref_logp: torch.Tensor | None = None,
    beta: float = 0.0,
    eps_low: float = 0.2,
    eps_high: float = 0.3,
    dual_clip: float | None = 3.0,
    aggregation: str = "token-mean",
    _backend: str = "auto",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped GRPO loss (module docstring) over [B, T] tokens; advantages [B] (or [B, T]).

    Returns (loss, stats): a 0-d fp32 loss whose gradient reaches `logp` only, and 0-d detached
    tensors clip_fraction (masked tokens where the PPO clip is active), dual_clip_fraction
    (masked tokens where the dual clip is), kl_mean (masked mean of the clamped k3; 0 when off)
    and ratio_mean. `_backend` as in fused_linear_logprob.
    """
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {_AGGREGATIONS}, got {aggregation!r}")
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be above 1 (it caps -A r for A < 0 at -A C), got {dual_clip}")
    if logp.dim() != 2 or old_logp.shape != logp.shape or mask.shape != logp.shape:
        raise ValueError("logp, old_logp and mask must all be [B, T]")
    if ref_logp is not None and ref_logp.shape != logp.shape:
        raise ValueError("ref_logp must be [B, T] like logp")
    n_seq, n_tok = logp.shape
    if advantages.dim() == 1 and advantages.shape[0] == n_seq:
        advantages = advantages.unsqueeze(1).expand(n_seq, n_tok)
    elif advantages.shape != logp.shape:
        raise ValueError(f"advantages must be [B] or [B, T]; got {tuple(advantages.shape)} for logp {tuple(logp.shape)}")

    mask32 = mask.float()
    # The per-token weight turns either aggregation into one weighted sum.
    if aggregation == "token-mean":
        weight = mask32 / mask32.sum().clamp(min=1)
    else:
        weight = mask32 / (mask32.sum(dim=1, keepdim=True).clamp(min=1) * n_seq)
    use_kl = ref_logp is not None and beta > 0
    use_triton = choose_triton(_backend, logp, triton_installed=triton is not None,
                               interpreted=_KERNELS_INTERPRETED)
    clip = _Clip(1.0 - eps_low, 1.0 + eps_high, dual_clip)
    loss, sums = _GrpoLoss.apply(
        logp, old_logp.detach(), advantages.detach(), mask32, weight,
        ref_logp.detach() if use_kl else None, float(beta) if use_kl else 0.0, clip, use_triton,
    )
    n = mask32.sum().clamp(min=1)
    stats = {"clip_fraction": sums[0] / n, "dual_clip_fraction": sums[1] / n, "kl_mean": sums[2] / n,
             "ratio_mean": sums[3] / n}
    return loss, stats


@dataclass(frozen=True)
class _Clip:
    low: float  # 1 - eps_low
    high: float  # 1 + eps_high
    dual: float | None  # C, or None for no dual clip


class _GrpoLoss(torch.autograd.Function):
    """Forward computes the loss and d loss / d logp together; backward only scales the latter."""

    @staticmethod
    def forward(ctx, logp, old_logp, advantages, mask, weight, ref_logp, beta, clip, use_triton):
        terms = _triton_terms if use_triton else _torch_terms
        loss, grad, sums = terms(logp, old_logp, advantages, mask, weight, ref_logp, beta, clip)
        ctx.save_for_backward(grad)
        ctx.logp_dtype = logp.dtype
        ctx.mark_non_differentiable(sums)
        return loss, sums

    @staticmethod
    def backward(ctx, grad_loss, grad_sums):
        (grad,) = ctx.saved_tensors
        grad_logp = (grad * grad_loss).to(ctx.logp_dtype) if ctx.needs_input_grad[0] else None
        return grad_logp, None, None, None, None, None, None, None, None


def _torch_terms(logp, old_logp, advantages, mask, weight, ref_logp, beta, clip: _Clip):
    """(loss, d loss/d logp [B, T], sums [clipped, dual-clipped, kl, ratio]) with the kernel's formulas."""
    logp32 = logp.detach().float()
    adv = advantages.float()
    log_ratio = logp32 - old_logp.float()
    ratio = torch.exp(torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    ratio_passes = log_ratio.abs() < LOG_RATIO_CLAMP  # where the clamp before exp is inactive
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, clip.low, clip.high) * adv
    clip_active = clipped < unclipped
    per_token = -torch.where(clip_active, clipped, unclipped)
    d_token = torch.where(clip_active | ~ratio_passes, torch.zeros_like(unclipped), -unclipped)
    dual_active = torch.zeros_like(clip_active)
    if clip.dual is not None:
        floor = -adv * clip.dual
        dual_active = (adv < 0) & (per_token > floor)
        per_token = torch.where(dual_active, floor, per_token)
        d_token = torch.where(dual_active, torch.zeros_like(d_token), d_token)
    kl = torch.zeros_like(per_token)
    if ref_logp is not None:
        raw_delta = ref_logp.float() - logp32
        delta = torch.clamp(raw_delta, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        exp_delta = torch.exp(delta)
        raw_kl = exp_delta - delta - 1
        kl = torch.clamp(raw_kl, max=KL_CLAMP)
        kl_passes = (raw_delta.abs() < LOG_RATIO_CLAMP) & (raw_kl < KL_CLAMP)
        per_token = per_token + beta * kl
        d_token = d_token + torch.where(kl_passes, beta * (1 - exp_delta), torch.zeros_like(kl))
    counted = mask != 0
    zero = torch.zeros_like(per_token)
    loss = torch.where(counted, weight * per_token, zero).sum()
    grad = torch.where(counted, weight * d_token, zero)
    sums = torch.stack([
        torch.where(counted, mask * clip_active.float(), zero).sum(),
        torch.where(counted, mask * dual_active.float(), zero).sum(),
        torch.where(counted, mask * kl, zero).sum(),
        torch.where(counted, mask * ratio, zero).sum(),
    ])
    return loss, grad, sums


_LOSS_BLOCK = 1024
_N_SUMS = 5  # weighted loss, clipped count, dual-clipped count, kl, ratio


def _triton_terms(logp, old_logp, advantages, mask, weight, ref_logp, beta, clip: _Clip):
    n_elements = logp.numel()
    block = _LOSS_BLOCK if logp.is_cuda else 64
    n_blocks = max(1, triton.cdiv(n_elements, block))
    logp_c = logp.detach().contiguous()
    grad = torch.empty(logp.shape, dtype=torch.float32, device=logp.device)
    partial = torch.zeros(n_blocks, _N_SUMS, dtype=torch.float32, device=logp.device)
    has_ref = ref_logp is not None
    _grpo_token_kernel[(n_blocks,)](
        logp_c, old_logp.contiguous(), advantages.contiguous(), mask.contiguous(), weight.contiguous(),
        ref_logp.contiguous() if has_ref else logp_c,  # never read without HAS_REF
        grad, partial,
        n_elements, beta, clip.low, clip.high, clip.dual if clip.dual is not None else 0.0,
        LOG_RATIO_CLAMP, KL_CLAMP,
        HAS_REF=has_ref, HAS_DUAL=clip.dual is not None, BLOCK=block, N_SUMS=_N_SUMS,
    )
    totals = partial.sum(dim=0)  # fixed-order sum of per-block partials: deterministic
    return totals[0], grad, totals[1:]


if triton is not None:

    @triton.jit
    def _grpo_token_kernel(
        logp_ptr, old_ptr, adv_ptr, mask_ptr, weight_ptr, ref_ptr, grad_ptr, partial_ptr,
        n_elements, beta, clip_low, clip_high, clip_dual, log_ratio_clamp, kl_clamp,
        HAS_REF: tl.constexpr, HAS_DUAL: tl.constexpr, BLOCK: tl.constexpr, N_SUMS: tl.constexpr,
    ):
        """Per token: loss, d loss / d logp (already weighted for the aggregation), and this
        block's partial sums of [weighted loss, clipped, dual-clipped, masked kl, masked ratio]."""
        pid = tl.program_id(0)
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        in_range = offs < n_elements
        logp = tl.load(logp_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
        old = tl.load(old_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
        adv = tl.load(adv_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
        m = tl.load(mask_ptr + offs, mask=in_range, other=0.0)
        w = tl.load(weight_ptr + offs, mask=in_range, other=0.0)
        counted = in_range & (m != 0.0)

        log_ratio = logp - old
        ratio = tl.exp(tl.minimum(tl.maximum(log_ratio, -log_ratio_clamp), log_ratio_clamp))
        ratio_passes = tl.abs(log_ratio) < log_ratio_clamp
        unclipped = ratio * adv
        clipped = tl.minimum(tl.maximum(ratio, clip_low), clip_high) * adv
        clip_active = clipped < unclipped
        per_token = -tl.where(clip_active, clipped, unclipped)
        d_token = tl.where(clip_active, 0.0, tl.where(ratio_passes, -unclipped, 0.0))
        dual_active = tl.zeros((BLOCK,), dtype=tl.int1)
        if HAS_DUAL:
            floor = -adv * clip_dual
            dual_active = (adv < 0.0) & (per_token > floor)
            per_token = tl.where(dual_active, floor, per_token)
            d_token = tl.where(dual_active, 0.0, d_token)
        kl = tl.zeros((BLOCK,), dtype=tl.float32)
        if HAS_REF:
            ref = tl.load(ref_ptr + offs, mask=in_range, other=0.0).to(tl.float32)
            raw_delta = ref - logp
            delta = tl.minimum(tl.maximum(raw_delta, -log_ratio_clamp), log_ratio_clamp)
            exp_delta = tl.exp(delta)
            raw_kl = exp_delta - delta - 1.0
            kl = tl.minimum(raw_kl, kl_clamp)
            kl_passes = (tl.abs(raw_delta) < log_ratio_clamp) & (raw_kl < kl_clamp)
            per_token += beta * kl
            d_token += tl.where(kl_passes, beta * (1.0 - exp_delta), 0.0)

        tl.store(grad_ptr + offs, tl.where(counted, w * d_token, 0.0), mask=in_range)
        base = partial_ptr + pid * N_SUMS
        tl.store(base + 0, tl.sum(tl.where(counted, w * per_token, 0.0), axis=0))
        tl.store(base + 1, tl.sum(tl.where(counted & clip_active, m, 0.0), axis=0))
        tl.store(base + 2, tl.sum(tl.where(counted & dual_active, m, 0.0), axis=0))
        tl.store(base + 3, tl.sum(tl.where(counted, m * kl, 0.0), axis=0))
        tl.store(base + 4, tl.sum(tl.where(counted, m * ratio, 0.0), axis=0))

    _KERNELS_INTERPRETED = type(_grpo_token_kernel).__name__ == "InterpretedFunction"
else:  # pragma: no cover
    _KERNELS_INTERPRETED = False
