"""Per-token log-probabilities through the LM head without building the [tokens, vocab] logits.

For hidden states h [N, H], head weight W [V, H], targets t [N] and temperature T:

    z      = h @ W.T / T                       (never stored whole)
    lse_n  = log sum_v exp(z[n, v])            (online log-sum-exp over vocab chunks)
    logp_n = z[n, t_n] - lse_n
    ent_n  = -sum_v p[n, v] log p[n, v] = log s_n - A_n / s_n,
             with s_n = sum_v exp(z - m_n) and A_n = sum_v exp(z - m_n) (z - m_n), m_n the running max.

Backward, for upstream grads g (of logp) and g_ent (of entropy), recomputes z chunk by chunk:

    dz[n, v] = g_n (onehot - p) - g_ent_n p (log p + ent_n)
    dh = (dz / T) @ W              dW = (dz / T).T @ h   (dW only when W requires grad)

Two backends share that math: a chunked torch path (CPU and any non-CUDA tensor,
`torch_logprob.py`) and Triton kernels (CUDA; also CPU tensors when TRITON_INTERPRET=1 was set
before triton was imported, which is how the tests check them). Extra memory is O(N x chunk),
all accumulation is fp32. This module's Triton kernels tile the logits themselves; the other
path, `chunked_logprob.py`, takes logits chunks from a matmul (see `LOGPROB_PATHS`).
"""

from __future__ import annotations

import torch

from .backend import choose_triton
from .chunked_logprob import row_chunked_logprob
from .logprob_shared import check_arguments, gather_rows as _gather_rows, kept_rows, logprob_path
from .logprob_shared import scatter_rows as _scatter_rows
from .torch_logprob import _torch_backward, _torch_forward

try:  # triton is optional: without it every call takes the torch path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where triton is absent
    triton = None
    tl = None

__all__ = ["chunked_linear_logprob", "fused_linear_logprob", "reference_linear_logprob"]

# Elements of one [tokens, vocab-chunk] fp32 buffer on the torch path (32 MiB): small enough
# that the two live buffers stay far below the [N, V] logits, large enough for full-speed matmuls.
_TORCH_CHUNK_ELEMENTS = 1 << 23
# Elements of one dlogits chunk on the Triton path (256 MiB in bf16).
_TRITON_CHUNK_ELEMENTS = 1 << 27


def reference_linear_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    chunk_size: int | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Plain fp32 torch: logits = h @ W.T / T, log_softmax, gather; entropy = -(p * logp).sum.

    Builds the full [N, V] logits; meant for tests and small inputs. `chunk_size` is accepted
    only so the signature matches `fused_linear_logprob`.
    """
    del chunk_size
    logits = hidden.float() @ weight.float().T / temperature
    logprobs = torch.log_softmax(logits, dim=-1)
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets))
    picked = logprobs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logp = torch.where(valid, picked, torch.zeros_like(picked))
    if not return_entropy:
        return logp
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    return logp, torch.where(valid, entropy, torch.zeros_like(entropy))


def fused_linear_logprob(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    chunk_size: int | None = None,
    _backend: str = "auto",
    _path: str | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """log p(target) [...] float32 (and entropy [...] when `return_entropy`) for h [..., H], W [V, H].

    Positions whose target equals `ignore_index` get logp 0, entropy 0 and no gradient.
    `chunk_size` is the vocab chunk, in rows of W, of the torch path's forward and backward and
    of the Triton backward's dlogits buffer (the Triton forward tiles the vocab itself); by
    default it is sized from N so one [N, chunk] buffer stays small. `_backend`:
    "auto" (Triton for CUDA tensors, torch otherwise), "torch", or "triton" (also on CPU
    tensors when the Triton interpreter is on). `_path`: "tile" or "chunked" (None: the process's
    choice, `set_logprob_path`; see `LOGPROB_PATHS`). Gradients come back in the inputs' dtypes.
    """
    check_arguments(hidden, weight, targets, temperature, chunk_size)
    use_triton = choose_triton(_backend, hidden, triton_installed=triton is not None,
                               interpreted=_KERNELS_INTERPRETED)
    args = (hidden.reshape(-1, hidden.shape[-1]), weight, targets.reshape(-1), 1.0 / temperature, ignore_index,
            return_entropy, chunk_size, use_triton)
    if logprob_path(_path) == "chunked":
        outputs = row_chunked_logprob(*args)
        outputs = outputs if return_entropy else outputs[0]
    else:
        outputs = _FusedLinearLogprob.apply(*args)
    if return_entropy:
        logp, entropy = outputs
        return logp.view(targets.shape), entropy.view(targets.shape)
    return outputs.view(targets.shape)


def chunked_linear_logprob(hidden, weight, targets, **options):
    """`fused_linear_logprob` on the "chunked" path: logits chunks of [rows, vocab] by matmul,
    softmax, gather and gradient in Triton (`chunked_logprob.py`); the same arguments."""
    return fused_linear_logprob(hidden, weight, targets, _path="chunked", **options)


class _FusedLinearLogprob(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, inv_temp, ignore_index, with_entropy, chunk_size, use_triton):
        ctx.set_materialize_grads(False)
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        compute_dtype = torch.promote_types(hidden.dtype, weight.dtype)
        rows, kept_targets = kept_rows(targets, ignore_index, vocab)
        kept_hidden = hidden if rows is None else hidden.index_select(0, rows)

        lse = torch.zeros(kept_targets.numel(), dtype=torch.float32, device=hidden.device)
        entropy = torch.zeros_like(lse)
        logp = torch.zeros_like(lse)
        if kept_targets.numel():
            h, w = kept_hidden.to(compute_dtype), weight.to(compute_dtype)
            if use_triton:
                target_logit, lse, entropy = _triton_forward(h, w, kept_targets, inv_temp, with_entropy)
            else:
                chunk = chunk_size or _torch_chunk(h.shape[0], vocab)
                target_logit, lse, entropy = _torch_forward(h, w, kept_targets, inv_temp, with_entropy, chunk)
            logp = target_logit - lse

        ctx.save_for_backward(hidden, weight, kept_targets, rows, lse, entropy)
        ctx.inv_temp, ctx.chunk_size, ctx.use_triton = inv_temp, chunk_size, use_triton
        ctx.compute_dtype = compute_dtype
        full_logp = _scatter_rows(logp, rows, n_tokens)
        if not with_entropy:
            return full_logp
        return full_logp, _scatter_rows(entropy, rows, n_tokens)

    @staticmethod
    def backward(ctx, grad_logp, grad_entropy=None):
        hidden, weight, kept_targets, rows, lse, entropy = ctx.saved_tensors
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if (grad_logp is None and grad_entropy is None) or not (need_hidden or need_weight):
            return (None,) * 8
        n_kept = kept_targets.numel()
        if grad_logp is None:
            grad_logp = torch.zeros(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        # Upstream grads are often expanded views (the grad of .sum() has stride 0); the kernels
        # index them densely, so make them contiguous.
        g = _gather_rows(grad_logp.float(), rows).contiguous()
        g_ent = None if grad_entropy is None else _gather_rows(grad_entropy.float(), rows).contiguous()

        grad_hidden_kept = grad_weight = None
        if n_kept:
            h = _gather_rows(hidden, rows).to(ctx.compute_dtype)
            w = weight.to(ctx.compute_dtype)
            args = (h, w, kept_targets, lse, entropy, g, g_ent, ctx.inv_temp, need_hidden, need_weight)
            if ctx.use_triton:
                chunk = ctx.chunk_size or _triton_chunk(n_kept, w.shape[0])
                grad_hidden_kept, grad_weight = _triton_backward(*args, chunk)
            else:
                chunk = ctx.chunk_size or _torch_chunk(n_kept, w.shape[0])
                grad_hidden_kept, grad_weight = _torch_backward(*args, chunk)
        elif need_weight:
            grad_weight = torch.zeros_like(weight)

        grad_hidden = None
        if need_hidden:
            if grad_hidden_kept is None:
                grad_hidden = torch.zeros_like(hidden)
            elif rows is None:
                grad_hidden = grad_hidden_kept.to(hidden.dtype)
            else:
                grad_hidden = torch.zeros_like(hidden).index_copy_(0, rows, grad_hidden_kept.to(hidden.dtype))
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None, None, None


# ----------------------------------------------------------------------------- torch path


def _torch_chunk(n_tokens: int, vocab: int) -> int:
    """Vocab chunk so that one [N, chunk] fp32 buffer holds about _TORCH_CHUNK_ELEMENTS."""
    return max(256, min(vocab, _TORCH_CHUNK_ELEMENTS // max(n_tokens, 1)))


# ----------------------------------------------------------------------------- Triton path


def _block_config(dtype: torch.dtype, device: torch.device) -> dict:
    """Tile sizes: tl.dot needs every block dim >= 16; the interpreter wants them small."""
    if device.type != "cuda":
        return dict(BLOCK_N=16, BLOCK_V=16, BLOCK_H=16, num_warps=4, num_stages=1)
    if dtype == torch.float32:
        return dict(BLOCK_N=64, BLOCK_V=64, BLOCK_H=32, num_warps=4, num_stages=3)
    return dict(BLOCK_N=128, BLOCK_V=128, BLOCK_H=64, num_warps=8, num_stages=3)


def _dot_options(dtype: torch.dtype, device: torch.device) -> dict:
    # fp32 inputs get exact fp32 products (torch's default for fp32 matmul), not TF32. The
    # interpreter's tl.dot mishandles bf16 operands, so there they are widened to fp32 first,
    # which is exact (bf16 products fit in fp32) and matches what the GPU accumulates.
    return dict(
        DOT_FP32=device.type != "cuda",
        PRECISION="ieee" if dtype == torch.float32 else "tf32",
    )


def _triton_chunk(n_tokens: int, vocab: int) -> int:
    return max(128, min(vocab, _TRITON_CHUNK_ELEMENTS // max(n_tokens, 1)))


def _forward_splits(n_row_blocks: int, n_vtiles: int, device: torch.device) -> int:
    """How many programs share one row block's vocab: enough to fill the GPU a few times over."""
    if device.type == "cuda":
        wanted_programs = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    else:
        wanted_programs = 2 * n_row_blocks  # two splits, so the combine step is exercised
    return max(1, min(n_vtiles, -(-wanted_programs // n_row_blocks)))


def _triton_forward(h, w, targets, inv_temp, with_entropy):
    n_tokens, hidden_size = h.shape
    vocab = w.shape[0]
    cfg = _block_config(h.dtype, h.device)
    n_row_blocks = triton.cdiv(n_tokens, cfg["BLOCK_N"])
    n_vtiles = triton.cdiv(vocab, cfg["BLOCK_V"])
    n_splits = _forward_splits(n_row_blocks, n_vtiles, h.device)
    tiles_per_split = triton.cdiv(n_vtiles, n_splits)
    n_splits = triton.cdiv(n_vtiles, tiles_per_split)

    part_max = torch.empty(n_splits, n_tokens, dtype=torch.float32, device=h.device)
    part_sum = torch.empty_like(part_max)
    part_shifted = torch.empty_like(part_max)
    target_logit = torch.empty(n_tokens, dtype=torch.float32, device=h.device)
    targets = targets.contiguous()
    _logprob_fwd_kernel[(n_row_blocks * n_splits,)](
        h, w, targets, part_max, part_sum, part_shifted, target_logit,
        n_tokens, vocab, hidden_size,
        h.stride(0), h.stride(1), w.stride(0), w.stride(1),
        inv_temp, tiles_per_split, n_splits,
        WITH_ENTROPY=with_entropy,
        **_dot_options(h.dtype, h.device),
        **cfg,
    )
    # Merge the per-split (max, sum, A) triples: rescale each to the global max.
    row_max = part_max.amax(dim=0)
    rescale = torch.exp(part_max - row_max)
    sum_exp = (part_sum * rescale).sum(dim=0)
    log_sum = torch.log(sum_exp)
    lse = row_max + log_sum
    if with_entropy:
        shifted = (rescale * (part_shifted + (part_max - row_max) * part_sum)).sum(dim=0)
        entropy = log_sum - shifted / sum_exp
    else:
        entropy = torch.zeros_like(lse)
    return target_logit, lse, entropy


def _triton_backward(h, w, targets, lse, entropy, g, g_ent, inv_temp, need_hidden, need_weight, chunk):
    """Per vocab chunk: a Triton kernel writes dz/T for all tokens, then two matmuls use it."""
    n_tokens, hidden_size = h.shape
    vocab = w.shape[0]
    cfg = _block_config(h.dtype, h.device)
    grad_hidden = torch.zeros(n_tokens, hidden_size, dtype=torch.float32, device=h.device) if need_hidden else None
    grad_weight = torch.empty(w.shape, dtype=w.dtype, device=w.device) if need_weight else None
    targets, lse, entropy = targets.contiguous(), lse.contiguous(), entropy.contiguous()
    chunk = min(chunk, vocab)
    # fp16 flushes values under 6e-8 to zero, and a probability times a small upstream grad
    # is often that small: an fp16 dz is held in fp32 (bf16 has fp32's exponent range).
    dz = torch.empty(n_tokens, chunk, dtype=torch.float32 if h.dtype == torch.float16 else h.dtype, device=h.device)
    h_dz = h.to(dz.dtype)
    with_entropy_grad = g_ent is not None
    g_ent_arg = g_ent if with_entropy_grad else g  # never read when WITH_ENTROPY_GRAD is off
    for start in range(0, vocab, chunk):
        count = min(chunk, vocab - start)
        dz_chunk = dz[:, :count]
        grid = (triton.cdiv(n_tokens, cfg["BLOCK_N"]) * triton.cdiv(count, cfg["BLOCK_V"]),)
        _logprob_bwd_kernel[grid](
            h, w, targets, lse, entropy, g, g_ent_arg, dz_chunk,
            n_tokens, hidden_size, start, count,
            h.stride(0), h.stride(1), w.stride(0), w.stride(1), dz_chunk.stride(0),
            inv_temp,
            WITH_ENTROPY_GRAD=with_entropy_grad,
            GROUP_N=8,
            **_dot_options(h.dtype, h.device),
            **cfg,
        )
        w_chunk = w[start:start + count].to(dz.dtype)
        if need_hidden:
            if grad_hidden.dtype == dz_chunk.dtype:
                grad_hidden.addmm_(dz_chunk, w_chunk)
            else:
                grad_hidden += dz_chunk @ w_chunk
        if need_weight:
            if grad_weight.dtype == dz_chunk.dtype:
                torch.mm(dz_chunk.T, h_dz, out=grad_weight[start:start + count])
            else:
                grad_weight[start:start + count].copy_(dz_chunk.T @ h_dz)
    return grad_hidden, grad_weight


if triton is not None:

    @triton.jit
    def _logits_tile(
        h_ptr, w_ptr, rows, cols, row_mask, col_mask, hidden_size,
        stride_hn, stride_hk, stride_wv, stride_wk,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
        DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
    ):
        """fp32 [BLOCK_N, BLOCK_V] tile of h @ W.T, looping over the hidden dim."""
        acc = tl.zeros((BLOCK_N, BLOCK_V), dtype=tl.float32)
        ks = tl.arange(0, BLOCK_H)
        h_rows = h_ptr + rows.to(tl.int64)[:, None] * stride_hn
        w_cols = w_ptr + cols.to(tl.int64)[None, :] * stride_wv
        for k0 in range(0, hidden_size, BLOCK_H):
            k = k0 + ks
            k_mask = k < hidden_size
            h_tile = tl.load(h_rows + k[None, :] * stride_hk, mask=row_mask[:, None] & k_mask[None, :], other=0.0)
            w_tile = tl.load(w_cols + k[:, None] * stride_wk, mask=k_mask[:, None] & col_mask[None, :], other=0.0)
            if DOT_FP32:
                h_tile = h_tile.to(tl.float32)
                w_tile = w_tile.to(tl.float32)
            acc = tl.dot(h_tile, w_tile, acc, input_precision=PRECISION)
        return acc

    @triton.jit
    def _logprob_fwd_kernel(
        h_ptr, w_ptr, t_ptr, max_ptr, sum_ptr, shifted_ptr, target_ptr,
        n_tokens, vocab, hidden_size,
        stride_hn, stride_hk, stride_wv, stride_wk,
        inv_temp, tiles_per_split, n_splits,
        WITH_ENTROPY: tl.constexpr,
        DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    ):
        """One program: a block of rows x one split of the vocab; writes that split's
        running max m, sum exp(z - m), sum exp(z - m)(z - m), and z[target] if it lies there.
        The split index varies fastest, so programs running together share the rows' h."""
        pid = tl.program_id(0)
        pid_n = pid // n_splits
        pid_s = pid % n_splits
        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        row_mask = rows < n_tokens
        targets = tl.load(t_ptr + rows, mask=row_mask, other=-1)
        running_max = tl.full((BLOCK_N,), -1.0e30, dtype=tl.float32)
        sum_exp = tl.zeros((BLOCK_N,), dtype=tl.float32)
        sum_shifted = tl.zeros((BLOCK_N,), dtype=tl.float32)
        target_logit = tl.zeros((BLOCK_N,), dtype=tl.float32)
        split_start = pid_s * tiles_per_split * BLOCK_V
        for tile in range(0, tiles_per_split):
            cols = split_start + tile * BLOCK_V + tl.arange(0, BLOCK_V)
            col_mask = cols < vocab
            acc = _logits_tile(
                h_ptr, w_ptr, rows, cols, row_mask, col_mask, hidden_size,
                stride_hn, stride_hk, stride_wv, stride_wk,
                BLOCK_N, BLOCK_V, BLOCK_H, DOT_FP32, PRECISION,
            )
            z = tl.where(col_mask[None, :], acc * inv_temp, -1.0e30)
            new_max = tl.maximum(running_max, tl.max(z, axis=1))
            rescale = tl.exp(running_max - new_max)
            shifted = z - new_max[:, None]
            exp_z = tl.exp(shifted)
            if WITH_ENTROPY:
                sum_shifted = rescale * (sum_shifted + (running_max - new_max) * sum_exp) + tl.sum(exp_z * shifted, axis=1)
            sum_exp = sum_exp * rescale + tl.sum(exp_z, axis=1)
            running_max = new_max
            target_logit += tl.sum(tl.where(cols[None, :] == targets[:, None], z, 0.0), axis=1)
        out = pid_s * n_tokens + rows
        tl.store(max_ptr + out, running_max, mask=row_mask)
        tl.store(sum_ptr + out, sum_exp, mask=row_mask)
        tl.store(shifted_ptr + out, sum_shifted, mask=row_mask)
        split_stop = split_start + tiles_per_split * BLOCK_V
        has_target = row_mask & (targets >= split_start) & (targets < split_stop)
        tl.store(target_ptr + rows, target_logit, mask=has_target)

    @triton.jit
    def _logprob_bwd_kernel(
        h_ptr, w_ptr, t_ptr, lse_ptr, ent_ptr, g_ptr, g_ent_ptr, dz_ptr,
        n_tokens, hidden_size, chunk_start, chunk_count,
        stride_hn, stride_hk, stride_wv, stride_wk, stride_dn,
        inv_temp,
        WITH_ENTROPY_GRAD: tl.constexpr, GROUP_N: tl.constexpr,
        DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
        BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
    ):
        """dz[n, v] / T for one [BLOCK_N, BLOCK_V] tile of the vocab chunk, logits recomputed."""
        pid = tl.program_id(0)
        n_pid_n = tl.cdiv(n_tokens, BLOCK_N)
        n_pid_v = tl.cdiv(chunk_count, BLOCK_V)
        # Grouped order (as in a tiled matmul) so neighbouring programs reuse h and W from L2.
        per_group = GROUP_N * n_pid_v
        first_n = (pid // per_group) * GROUP_N
        group_rows = tl.minimum(n_pid_n - first_n, GROUP_N)
        pid_n = first_n + (pid % per_group) % group_rows
        pid_v = (pid % per_group) // group_rows

        rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        local_cols = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
        cols = chunk_start + local_cols
        row_mask = rows < n_tokens
        col_mask = local_cols < chunk_count
        acc = _logits_tile(
            h_ptr, w_ptr, rows, cols, row_mask, col_mask, hidden_size,
            stride_hn, stride_hk, stride_wv, stride_wk,
            BLOCK_N, BLOCK_V, BLOCK_H, DOT_FP32, PRECISION,
        )
        lse = tl.load(lse_ptr + rows, mask=row_mask, other=0.0)
        g = tl.load(g_ptr + rows, mask=row_mask, other=0.0)
        targets = tl.load(t_ptr + rows, mask=row_mask, other=-1)
        log_p = acc * inv_temp - lse[:, None]
        p = tl.exp(log_p)
        if WITH_ENTROPY_GRAD:
            ent = tl.load(ent_ptr + rows, mask=row_mask, other=0.0)
            g_ent = tl.load(g_ent_ptr + rows, mask=row_mask, other=0.0)
            dz = -p * (g[:, None] + g_ent[:, None] * (log_p + ent[:, None]))
        else:
            dz = -p * g[:, None]
        dz = tl.where(cols[None, :] == targets[:, None], dz + g[:, None], dz) * inv_temp
        out = dz_ptr + rows.to(tl.int64)[:, None] * stride_dn + local_cols[None, :]
        tl.store(out, dz.to(dz_ptr.dtype.element_ty), mask=row_mask[:, None] & col_mask[None, :])

    # Kernels decorated while TRITON_INTERPRET=1 run through the CPU interpreter.
    _KERNELS_INTERPRETED = type(_logprob_fwd_kernel).__name__ == "InterpretedFunction"
else:  # pragma: no cover
    _KERNELS_INTERPRETED = False
