"""The "chunked" path of `fused_linear_logprob`: logits chunks by matmul, softmax fused in Triton.

For a chunk of rows of h [N, H] (all of the vocabulary at once, as Liger-Kernel's fused linear
cross-entropy does):

    logits = h_chunk @ W.T                     a [rows, V] fp32 buffer, by cuBLAS on a GPU
    kernel 1 (one program per row, a loop over vocab blocks with an online log-sum-exp):
             lse, z[target], entropy of z = logits / T
    kernel 2 (in place): logits <- dz / T = (g (onehot - p) - g_ent p (log p + ent)) / T
    dh_chunk = dz @ W                          dW += dz.T @ h_chunk (only when W is trained)

The matmuls run on the tensor cores through cuBLAS; the Triton work is two memory-bound passes
over the buffer, so no kernel holds a [block, block] accumulator tile (the "tile" path's kernels
do, and spill registers). Memory: one [rows, V] fp32 buffer plus its bf16 copy (6 bytes an
element), rows chosen so both fit the bytes of the tile path's bf16 [N, chunk] gradient buffer,
the one the planner counts: N x chunk_size x 2 bytes, or 2^27 x 2 bytes (256 MiB) by default.
Unlike the tile path, a no-grad pass holds that buffer too.

Frozen head (LoRA): d logp_n / d h_n depends on row n alone, so the forward already writes it
(g = 1) and the backward only scales it by the upstream grad: two matmuls per chunk instead of
three. With a trained head, or a gradient through the entropy, the backward recomputes the
logits chunk by chunk.

The gradient buffer stays fp32 where the inputs are fp16 (dz reaches 1e-10, below fp16's
smallest value); for bf16 it is rounded to bf16 before the two gradient matmuls, as on the tile
path. Without Triton (or with the torch backend) the two kernels are torch ops on the same buffer.
"""

from __future__ import annotations

import torch

from .logprob_shared import gather_rows, kept_rows, scatter_rows

try:  # triton is optional: without it the two kernels are torch ops
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

# The tile path's default gradient buffer, in bf16 elements (`_TRITON_CHUNK_ELEMENTS` there,
# `KERNEL_CHUNK_ELEMENTS` in the planner): 256 MiB, about 290 rows of a 152k vocabulary here.
_BUDGET_ELEMENTS = 1 << 27
_BUDGET_BYTES_PER_ELEMENT = 2  # the tile path's bf16 dz
_BUFFER_BYTES_PER_ELEMENT = 6  # fp32 logits / gradient + its bf16 copy
# Rows (of the vocabulary or of H) widened to fp32 at a time where operands' dtypes differ.
_WIDEN_BLOCK = 1 << 14


def rows_per_chunk(n_tokens: int, vocab: int, chunk_size: int | None) -> int:
    """Rows per logits chunk, so that its buffers take the bytes the tile path's [N, chunk_size]
    bf16 buffer takes (its default size when chunk_size is None)."""
    budget = (n_tokens * chunk_size if chunk_size else _BUDGET_ELEMENTS) * _BUDGET_BYTES_PER_ELEMENT
    return max(1, min(n_tokens, budget // (_BUFFER_BYTES_PER_ELEMENT * vocab)))


def row_config(device: torch.device) -> dict:
    """Vocab block of both kernels: wide on a GPU; small under the interpreter, so the tests
    cross several blocks and a partial last one."""
    if device.type != "cuda":
        return dict(BLOCK_V=32, num_warps=4)
    # Compiled for sm80 (docs/kernels.md): 58 and 32 registers, no spills; 4096 wide needs 102
    # registers for the statistics kernel, halving how many programs an SM holds.
    return dict(BLOCK_V=2048, num_warps=8)


def row_chunked_logprob(hidden, weight, targets, inv_temp, ignore_index, with_entropy, chunk_size, use_triton):
    """(logp [N], entropy [N]) in fp32 for h [N, H], W [V, H]; ignored positions give 0 and no
    gradient (they are dropped before any matmul)."""
    n_tokens, vocab = hidden.shape[0], weight.shape[0]
    rows, kept_targets = kept_rows(targets, ignore_index, vocab)
    kept_hidden = gather_rows(hidden, rows)
    per_chunk = rows_per_chunk(kept_targets.numel(), vocab, chunk_size)
    # Frozen head (LoRA) and a backward to come: the forward writes d logp / d h itself.
    eager = torch.is_grad_enabled() and kept_hidden.requires_grad and not weight.requires_grad
    logp, entropy = _RowChunkedLogprob.apply(kept_hidden, weight, kept_targets.contiguous(), inv_temp,
                                             with_entropy, per_chunk, use_triton, eager)
    return scatter_rows(logp, rows, n_tokens), scatter_rows(entropy, rows, n_tokens)


class _RowChunkedLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, with_entropy, per_chunk, use_triton, eager):
        ctx.set_materialize_grads(False)
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        n_tokens = h.shape[0]
        lse, target_logit, entropy = (torch.zeros(n_tokens, dtype=torch.float32, device=h.device) for _ in range(3))
        unit_grad = torch.empty(n_tokens, h.shape[1], dtype=torch.float32, device=h.device) if eager else None
        ones = torch.ones(n_tokens, dtype=torch.float32, device=h.device) if eager else None
        for start in range(0, n_tokens, per_chunk):
            part = slice(start, min(start + per_chunk, n_tokens))
            logits = mm_fp32(h[part], w.T)
            row_stats(logits, targets[part], inv_temp, with_entropy, lse[part], target_logit[part], entropy[part],
                      use_triton)
            if eager:
                row_grad_(logits, targets[part], lse[part], entropy[part], ones[part], None, inv_temp, use_triton)
                unit_grad[part] = mm_fp32(_grad_operand(logits, compute_dtype), w)
            del logits  # free this chunk's buffer before the next matmul allocates
        ctx.save_for_backward(hidden, weight, targets, lse, entropy, unit_grad)
        ctx.inv_temp, ctx.per_chunk, ctx.use_triton = inv_temp, per_chunk, use_triton
        if not with_entropy:
            ctx.mark_non_differentiable(entropy)
        return target_logit - lse, entropy

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, targets, lse, entropy, unit_grad = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_logp is None and grad_entropy is None) or not (need_hidden or need_weight):
            return (None,) * 8
        g = torch.zeros_like(lse) if grad_logp is None else grad_logp.float().contiguous()
        g_ent = None if grad_entropy is None else grad_entropy.float().contiguous()
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        h, w = hidden.to(compute_dtype), weight.to(compute_dtype)
        settings = (ctx.inv_temp, ctx.per_chunk, ctx.use_triton)
        if unit_grad is None:
            grad_hidden, grad_weight = recomputed_grads(h, w, targets, lse, entropy, g, g_ent, need_hidden,
                                                        need_weight, *settings)
        else:
            grad_hidden, grad_weight = unit_grad * g.unsqueeze(1), None
            if g_ent is not None:  # the entropy's share was not written in the forward
                grad_hidden += recomputed_grads(h, w, targets, lse, entropy, torch.zeros_like(g), g_ent, True,
                                                False, *settings)[0]
        if grad_hidden is not None:
            grad_hidden = grad_hidden.to(hidden.dtype)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None


def recomputed_grads(h, w, targets, lse, entropy, g, g_ent, need_hidden, need_weight, inv_temp, per_chunk,
                     use_triton):
    """(dh [N, H], dW [V, H]) in fp32 (each None when not needed), logits recomputed per chunk."""
    n_tokens = h.shape[0]
    grad_hidden = torch.empty(n_tokens, h.shape[1], dtype=torch.float32, device=h.device) if need_hidden else None
    grad_weight = torch.zeros(w.shape, dtype=torch.float32, device=w.device) if need_weight else None
    for start in range(0, n_tokens, per_chunk):
        part = slice(start, min(start + per_chunk, n_tokens))
        logits = mm_fp32(h[part], w.T)
        row_grad_(logits, targets[part], lse[part], entropy[part], g[part], None if g_ent is None else g_ent[part],
                  inv_temp, use_triton)
        dz = _grad_operand(logits, h.dtype)
        del logits
        if need_hidden:
            grad_hidden[part] = mm_fp32(dz, w)
        if need_weight:
            add_mm_fp32_(grad_weight, dz.T, h[part])
        del dz
    return grad_hidden, grad_weight


def _grad_operand(dz: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The fp32 gradient buffer as the gradient matmuls take it: rounded to bf16 for bf16
    inputs (tensor-core matmuls), kept fp32 for fp16 inputs (values near 1e-10 underflow)."""
    return dz.to(torch.bfloat16) if dtype == torch.bfloat16 else dz


def mm_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with an fp32 result: products of two bf16/fp16 CUDA operands accumulate in fp32 in
    cuBLAS; otherwise blocks of the inner dimension are widened to fp32 one at a time, so a
    whole fp16/bf16 weight is never copied to fp32."""
    if a.dtype == torch.float32 and b.dtype == torch.float32:
        return a @ b
    if a.is_cuda and a.dtype == b.dtype:
        return torch.mm(a, b, out_dtype=torch.float32)
    out = torch.zeros(a.shape[0], b.shape[1], dtype=torch.float32, device=a.device)
    for k in range(0, a.shape[1], _WIDEN_BLOCK):
        out.addmm_(a[:, k:k + _WIDEN_BLOCK].float(), b[k:k + _WIDEN_BLOCK].float())
    return out


def add_mm_fp32_(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """acc += a @ b in fp32, a block of acc's rows at a time (bounded temporaries)."""
    for r in range(0, acc.shape[0], _WIDEN_BLOCK):
        acc[r:r + _WIDEN_BLOCK] += mm_fp32(a[r:r + _WIDEN_BLOCK], b)


def row_stats(logits, targets, inv_temp, with_entropy, lse, target_logit, entropy, use_triton) -> None:
    """Writes lse, z[target] and (with_entropy) the entropy of each row of z = logits / T."""
    if use_triton:
        cfg = row_config(logits.device)
        _row_stats_kernel[(logits.shape[0],)](
            logits, logits.stride(0), targets, lse, target_logit, entropy, logits.shape[1], inv_temp,
            WITH_ENTROPY=with_entropy, BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"],
        )
        return
    z = logits * inv_temp
    lse.copy_(torch.logsumexp(z, dim=1))
    target_logit.copy_(z.gather(1, targets.unsqueeze(1)).squeeze(1))
    if with_entropy:  # H = -sum p (z - lse) = lse - sum p z
        entropy.copy_(lse - (torch.softmax(z, dim=1) * z).sum(dim=1))


def row_grad_(logits, targets, lse, entropy, g, g_ent, inv_temp, use_triton) -> None:
    """In place: logits <- d loss / d (h W^T) = (g (onehot - p) - g_ent p (log p + ent)) / T."""
    if use_triton:
        cfg = row_config(logits.device)
        _row_grad_kernel[(logits.shape[0],)](
            logits, logits.stride(0), targets, lse, entropy, g, g if g_ent is None else g_ent,
            logits.shape[1], inv_temp,
            WITH_ENTROPY_GRAD=g_ent is not None, BLOCK_V=cfg["BLOCK_V"], num_warps=cfg["num_warps"],
        )
        return
    log_p = logits.mul_(inv_temp).sub_(lse.unsqueeze(1))
    scale = -g.unsqueeze(1) if g_ent is None else -(g.unsqueeze(1) + g_ent.unsqueeze(1) * (log_p + entropy.unsqueeze(1)))
    dz = log_p.exp_().mul_(scale)  # log_p's buffer: p, then dz
    dz.scatter_add_(1, targets.unsqueeze(1), g.unsqueeze(1)).mul_(inv_temp)


if triton is not None:

    @triton.jit
    def _row_stats_kernel(
        logits_ptr, stride_row, t_ptr, lse_ptr, target_ptr, ent_ptr, vocab, inv_temp,
        WITH_ENTROPY: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        """One row: per-lane running max m, sum exp(z - m), sum exp(z - m)(z - m) over the vocab
        blocks, merged across lanes at the end; z[target] picked on the way."""
        row = tl.program_id(0)
        base = logits_ptr + row.to(tl.int64) * stride_row
        target = tl.load(t_ptr + row)
        lane_max = tl.full((BLOCK_V,), -1.0e30, dtype=tl.float32)
        lane_sum = tl.zeros((BLOCK_V,), dtype=tl.float32)
        lane_shifted = tl.zeros((BLOCK_V,), dtype=tl.float32)
        lane_target = tl.zeros((BLOCK_V,), dtype=tl.float32)
        for start in range(0, vocab, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_vocab = cols < vocab
            z = tl.load(base + cols, mask=in_vocab, other=-1.0e30) * inv_temp
            z = tl.where(in_vocab, z, -1.0e30)
            new_max = tl.maximum(lane_max, z)
            rescale = tl.exp(lane_max - new_max)
            shifted = z - new_max
            exp_z = tl.where(in_vocab, tl.exp(shifted), 0.0)  # a lane past the vocab adds nothing
            if WITH_ENTROPY:
                lane_shifted = rescale * (lane_shifted + (lane_max - new_max) * lane_sum) + exp_z * shifted
            lane_sum = lane_sum * rescale + exp_z
            lane_max = new_max
            lane_target += tl.where(cols == target, z, 0.0)
        row_max = tl.max(lane_max, axis=0)
        rescale = tl.exp(lane_max - row_max)
        sum_exp = tl.sum(lane_sum * rescale, axis=0)
        log_sum = tl.log(sum_exp)
        tl.store(lse_ptr + row, row_max + log_sum)
        tl.store(target_ptr + row, tl.sum(lane_target, axis=0))
        if WITH_ENTROPY:
            shifted_sum = tl.sum(rescale * (lane_shifted + (lane_max - row_max) * lane_sum), axis=0)
            tl.store(ent_ptr + row, log_sum - shifted_sum / sum_exp)

    @triton.jit
    def _row_grad_kernel(
        logits_ptr, stride_row, t_ptr, lse_ptr, ent_ptr, g_ptr, g_ent_ptr, vocab, inv_temp,
        WITH_ENTROPY_GRAD: tl.constexpr, BLOCK_V: tl.constexpr,
    ):
        """One row, in place: logits -> dz / T. Each element is read and written by the same
        lane, so overwriting the buffer is safe."""
        row = tl.program_id(0)
        base = logits_ptr + row.to(tl.int64) * stride_row
        target = tl.load(t_ptr + row)
        lse = tl.load(lse_ptr + row)
        g = tl.load(g_ptr + row)
        if WITH_ENTROPY_GRAD:
            ent = tl.load(ent_ptr + row)
            g_ent = tl.load(g_ent_ptr + row)
        for start in range(0, vocab, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            in_vocab = cols < vocab
            log_p = tl.load(base + cols, mask=in_vocab, other=0.0) * inv_temp - lse
            p = tl.exp(log_p)
            if WITH_ENTROPY_GRAD:
                dz = -p * (g + g_ent * (log_p + ent))
            else:
                dz = -p * g
            dz = tl.where(cols == target, dz + g, dz) * inv_temp
            tl.store(base + cols, dz, mask=in_vocab)

    # Kernels decorated while TRITON_INTERPRET=1 run through the CPU interpreter.
    KERNELS_INTERPRETED = type(_row_stats_kernel).__name__ == "InterpretedFunction"
else:  # pragma: no cover
    KERNELS_INTERPRETED = False
