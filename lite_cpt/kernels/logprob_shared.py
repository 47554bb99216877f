"""What both log-prob paths share: argument checks, the dropping of ignored positions, and
the process-wide choice between the two CUDA paths."""

from __future__ import annotations

import contextlib

import torch

# A finite "minus infinity": exp() of it is 0 and 0 * it is 0, so empty chunks produce no NaN.
NEG_INIT = -1.0e30

#: The paths of `fused_linear_logprob`: "tile" recomputes [block, block] logits tiles inside one
#: Triton kernel (vocab chunks on the torch path); "chunked" has a matmul (cuBLAS on a GPU)
#: write a [rows, vocab] logits chunk and fuses only the softmax, gather and gradient in Triton.
LOGPROB_PATHS = ("tile", "chunked")
_chosen = {"path": "tile"}


def set_logprob_path(path: str | None) -> str:
    """Make `path` the one `fused_linear_logprob` takes when a call names none (None: "tile",
    the default when no calibration chose one); returns the path now in use."""
    path = path or "tile"
    if path not in LOGPROB_PATHS:
        raise ValueError(f"unknown log-prob path {path!r}; use one of {', '.join(LOGPROB_PATHS)}")
    _chosen["path"] = path
    return path


@contextlib.contextmanager
def using_logprob_path(path: str | None):
    """`set_logprob_path(path)` for the block, the previous choice after it."""
    previous = _chosen["path"]
    try:
        yield set_logprob_path(path)
    finally:
        _chosen["path"] = previous


def logprob_path(requested: str | None = None) -> str:
    """The path a call takes: the one it names, else the process's choice."""
    if requested is None:
        return _chosen["path"]
    if requested not in LOGPROB_PATHS:
        raise ValueError(f"unknown log-prob path {requested!r}; use one of {', '.join(LOGPROB_PATHS)}")
    return requested


def check_arguments(hidden, weight, targets, temperature: float, chunk_size: int | None) -> None:
    if hidden.shape[:-1] != targets.shape:
        raise ValueError(f"hidden {tuple(hidden.shape)} and targets {tuple(targets.shape)} disagree")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be [V, {hidden.shape[-1]}]")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def kept_rows(targets: torch.Tensor, ignore_index: int, vocab: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(indices of the positions that count, or None when all do; their targets). Ignored
    positions (prompt tokens, padding) are dropped before any matmul: for SFT they are often
    most of the batch."""
    valid = targets != ignore_index
    rows = None if bool(valid.all()) else valid.nonzero().squeeze(1)
    kept_targets = targets if rows is None else targets.index_select(0, rows)
    if kept_targets.numel() and (int(kept_targets.min()) < 0 or int(kept_targets.max()) >= vocab):
        raise ValueError(f"targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    return rows, kept_targets


def scatter_rows(values: torch.Tensor, rows: torch.Tensor | None, n_tokens: int) -> torch.Tensor:
    if rows is None:
        return values
    return torch.zeros(n_tokens, dtype=values.dtype, device=values.device).index_copy(0, rows, values)


def gather_rows(values: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    return values if rows is None else values.index_select(0, rows)
