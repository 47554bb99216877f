"""Truncated importance sampling (TIS): a correction for rollouts drawn by an engine whose
probabilities differ from the trainer's (vLLM's kernels, sampling in another precision).

The GRPO loss's ratio compares the policy with the old policy as the trainer scores it, but the
answers were drawn from the sampler's distribution. Each token's policy-gradient term is
weighted by w = min(exp(old_logp_trainer - logp_sampler), cap), detached (verl's
`tis_imp_ratio_cap`, slime's `--use-tis`; "Your efficient RL framework secretly brings you
off-policy RL training", Yao et al. 2025). The KL term is left unweighted, as there.

Because w > 0, weighting a token's clipped (and dual-clipped) surrogate by w is the same as
scaling its advantage by w: every branch of the loss is linear in the advantage. So the weight
enters as per-token advantages and the loss kernels (reference and Triton) stay as they are.
"""

from __future__ import annotations

import torch


def sampler_logp_like(mask: torch.Tensor, rows: list[list[float]]) -> torch.Tensor:
    """The sampler's per-token log-probs of `rows` (one list per answer, in the micro-batch's
    row order) laid out like the trainer's [B, T] log-probs: on the masked positions, in order."""
    counts = mask.bool().sum(dim=1).tolist()
    if counts != [len(row) for row in rows]:
        raise ValueError(f"sampler log-probs of {[len(r) for r in rows]} tokens do not match the scored "
                         f"answers' {counts}")
    values = torch.tensor([v for row in rows for v in row], dtype=torch.float32, device=mask.device)
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_scatter(mask.bool(), values)


def tis_weights(old_logp: torch.Tensor, sampler_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """[B, T] min(exp(old_logp - sampler_logp), cap) on masked positions (0 elsewhere), detached."""
    ratio = torch.exp(old_logp.detach().float() - sampler_logp).clamp(max=cap)
    return ratio * mask


def tis_advantages(advantages: torch.Tensor, old_logp: torch.Tensor, rows: list[list[float]],
                   mask: torch.Tensor, cap: float) -> torch.Tensor:
    """[B, T] advantages that carry the TIS weight of each token (module docstring)."""
    weights = tis_weights(old_logp, sampler_logp_like(mask, rows), mask, cap)
    return advantages.float()[:, None] * weights
