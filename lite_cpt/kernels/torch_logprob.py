"""The chunked torch path of `fused_linear_logprob`: vocab chunks of [tokens, chunk] logits by
matmul, an online log-sum-exp forward and a per-chunk backward (the formulas are in
`lite_cpt.kernels.fused_logprob`). It runs wherever torch does; CPU tensors take it by default.
"""

from __future__ import annotations

import torch

from .logprob_shared import NEG_INIT as _NEG_INIT


def _torch_forward(h, w, targets, inv_temp, with_entropy, chunk):
    """Online log-sum-exp over vocab chunks; returns (z[target], lse, entropy) in fp32."""
    n_tokens, vocab = h.shape[0], w.shape[0]
    # 1/T folded into h once, so each chunk's matmul yields z directly.
    h_scaled = h.float() * inv_temp if inv_temp != 1.0 else h.float()
    running_max = torch.full((n_tokens,), _NEG_INIT, dtype=torch.float32, device=h.device)
    sum_exp = torch.zeros(n_tokens, dtype=torch.float32, device=h.device)
    sum_exp_shifted = torch.zeros_like(sum_exp)  # A = sum exp(z - m) (z - m)
    target_logit = torch.zeros_like(sum_exp)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        z = h_scaled @ w[start:stop].float().T
        _pick_targets(z, targets, start, stop, target_logit)
        new_max = torch.maximum(running_max, z.amax(dim=1))
        rescale = torch.exp(running_max - new_max)
        z.sub_(new_max.unsqueeze(1))  # z - m_new
        if with_entropy:
            exp_z = torch.exp(z)
            chunk_sum = exp_z.sum(dim=1)
            chunk_shifted = exp_z.mul_(z).sum(dim=1)
            sum_exp_shifted = rescale * (sum_exp_shifted + (running_max - new_max) * sum_exp) + chunk_shifted
            del exp_z
        else:
            chunk_sum = z.exp_().sum(dim=1)
        sum_exp = sum_exp * rescale + chunk_sum
        running_max = new_max
        del z  # free this chunk's buffer before the next matmul allocates
    log_sum = torch.log(sum_exp)
    lse = running_max + log_sum
    entropy = log_sum - sum_exp_shifted / sum_exp if with_entropy else torch.zeros_like(lse)
    return target_logit, lse, entropy


def _pick_targets(z, targets, start, stop, target_logit):
    """Copy z[n, t_n - start] into target_logit[n] for rows whose target lies in [start, stop)."""
    in_chunk = (targets >= start) & (targets < stop)
    local = (targets - start).clamp(0, stop - start - 1)
    picked = z.gather(1, local.unsqueeze(1)).squeeze(1)
    target_logit.copy_(torch.where(in_chunk, picked, target_logit))


def _torch_backward(h, w, targets, lse, entropy, g, g_ent, inv_temp, need_hidden, need_weight, chunk):
    """dz = g (onehot - p) - g_ent p (log p + ent) per vocab chunk; dh += dz W / T, dW[chunk] = dz.T h / T."""
    n_tokens, vocab = h.shape[0], w.shape[0]
    h32 = h.float()
    h_scaled = h32 * inv_temp if inv_temp != 1.0 else h32
    grad_hidden = torch.zeros(n_tokens, h.shape[1], dtype=torch.float32, device=h.device) if need_hidden else None
    grad_weight = torch.empty(w.shape, dtype=w.dtype, device=w.device) if need_weight else None
    # 1/T is folded into the upstream grads, so dz below already is d loss / d logits.
    g_scaled = g * inv_temp
    neg_lse = -lse.unsqueeze(1)
    if g_ent is not None:
        neg_g_ent_scaled = (-g_ent * inv_temp).unsqueeze(1)
        ent_col = entropy.unsqueeze(1)
    for start in range(0, vocab, chunk):
        stop = min(start + chunk, vocab)
        w_chunk = w[start:stop].float()
        log_p = torch.addmm(neg_lse, h_scaled, w_chunk.T)
        if g_ent is None:
            dz = log_p.exp_().mul_(-g_scaled.unsqueeze(1))  # in place: one buffer per chunk
        else:
            dz = torch.exp(log_p)
            # -(g + g_ent (log p + ent)) / T, built in the log_p buffer, times p
            dz.mul_(log_p.add_(ent_col).mul_(neg_g_ent_scaled).sub_(g_scaled.unsqueeze(1)))
        del log_p
        in_chunk = (targets >= start) & (targets < stop)
        local = (targets - start).clamp(0, stop - start - 1)
        onehot_grad = torch.where(in_chunk, g_scaled, torch.zeros_like(g_scaled))
        dz.scatter_add_(1, local.unsqueeze(1), onehot_grad.unsqueeze(1))
        if need_hidden:
            grad_hidden.addmm_(dz, w_chunk)
        if need_weight:
            if grad_weight.dtype == torch.float32:
                torch.mm(dz.T, h32, out=grad_weight[start:stop])
            else:
                grad_weight[start:stop].copy_(dz.T @ h32)
        del dz  # free this chunk's buffer before the next matmul allocates
    return grad_hidden, grad_weight
