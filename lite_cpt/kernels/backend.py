"""Which path a kernel call takes: the Triton kernels or the chunked torch code."""

from __future__ import annotations


def choose_triton(backend: str, tensor, *, triton_installed: bool, interpreted: bool) -> bool:
    """True to run the Triton kernels on `tensor`. `auto`: for CUDA tensors when Triton is
    installed and compiles its kernels (under TRITON_INTERPRET the torch path is faster on a
    GPU); `triton`: always, which on a CPU tensor needs the interpreter; `torch`: never."""
    if backend == "torch":
        return False
    if backend == "auto":
        return tensor.is_cuda and triton_installed and not interpreted
    if backend == "triton":
        if not triton_installed:
            raise RuntimeError("the triton backend was requested but triton is not installed")
        if not tensor.is_cuda and not interpreted:
            raise RuntimeError(
                "the triton backend on CPU tensors needs TRITON_INTERPRET=1 set before triton is imported"
            )
        return True
    raise ValueError(f"unknown backend {backend!r}; use 'auto', 'torch' or 'triton'")
