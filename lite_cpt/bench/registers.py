"""Registers and spills of the log-prob kernels, compiled (not run) for a GPU architecture.

    python -m lite_cpt.bench.registers [--arch 80] [--path tile|chunked] [--json F]

Needs no GPU: Triton compiles each kernel at the tiles and warps its launch uses to PTX and a
cubin for `GPUTarget("cuda", arch, 32)`; `ptxas -v` on that PTX (the ptxas Triton ships and
compiles with) reports registers per thread, stack frame and spill stores/loads. The
compiled kernel's own `n_regs`/`n_spills` are filled only when a CUDA driver loads it, so
they are not read here. Pointer arguments are typed as a launch with bf16 (or fp32) inputs
types them; unit strides are specialised to 1, as the JIT does for contiguous tensors.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

_PTXAS_FIGURES = {
    "registers": r"Used (\d+) registers",
    "stack_bytes": r"(\d+) bytes stack frame",
    "spill_store_bytes": r"(\d+) bytes spill stores",
    "spill_load_bytes": r"(\d+) bytes spill loads",
}


def parse_ptxas(report: str) -> dict:
    """Registers, stack frame and spill bytes from `ptxas -v` output (one kernel)."""
    figures = {}
    for name, pattern in _PTXAS_FIGURES.items():
        found = re.search(pattern, report)
        if found is None:
            raise ValueError(f"ptxas -v output has no '{pattern}': {report!r}")
        figures[name] = int(found.group(1))
    return figures


def kernel_specs() -> list[dict]:
    """Each kernel as its launch configures it on a GPU (bf16 inputs; the tile path also fp32)."""
    import torch

    from lite_cpt.kernels import chunked_logprob, fused_logprob

    cuda = torch.device("cuda")
    specs = []
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32")):
        tiles = fused_logprob._block_config(dtype, cuda)
        dots = fused_logprob._dot_options(dtype, cuda)
        options = dict(num_warps=tiles.pop("num_warps"), num_stages=tiles.pop("num_stages"))
        for kernel, flag in ((fused_logprob._logprob_fwd_kernel, "WITH_ENTROPY"),
                             (fused_logprob._logprob_bwd_kernel, "WITH_ENTROPY_GRAD")):
            extra = dict(GROUP_N=8) if flag == "WITH_ENTROPY_GRAD" else {}
            specs.append(dict(path="tile", kernel=kernel, dtype=name, options=options,
                              constexprs={flag: True, **extra, **dots, **tiles, "stride_hk": 1, "stride_wk": 1}))
    rows = chunked_logprob.row_config(cuda)
    for kernel, flag in ((chunked_logprob._row_stats_kernel, "WITH_ENTROPY"),
                         (chunked_logprob._row_grad_kernel, "WITH_ENTROPY_GRAD")):
        specs.append(dict(path="chunked", kernel=kernel, dtype="fp32 buffer", options=dict(num_warps=rows["num_warps"]),
                          constexprs={flag: True, "BLOCK_V": rows["BLOCK_V"]}))
    return specs


def _signature(kernel, constexprs: dict, dtype: str) -> dict:
    element = "bf16" if dtype == "bf16" else "fp32"
    signature = {}
    for arg in kernel.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg == "t_ptr":
            signature[arg] = "*i64"
        elif arg in ("h_ptr", "w_ptr", "dz_ptr"):
            signature[arg] = f"*{element}"
        elif arg.endswith("_ptr"):
            signature[arg] = "*fp32"
        else:
            signature[arg] = "fp32" if arg == "inv_temp" else "i32"
    return signature


def compile_figures(arch: int = 80, path: str | None = None) -> list[dict]:
    """One row per kernel (of `path` only, when given): path, kernel, dtype, tiles, warps,
    registers, stack and spills."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter's kernels cannot be compiled")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptxas = triton.knobs.nvidia.ptxas.path
    rows = []
    for spec in (s for s in kernel_specs() if path in (None, s["path"])):
        kernel, constexprs = spec["kernel"], spec["constexprs"]
        source = ASTSource(kernel, _signature(kernel, constexprs, spec["dtype"]),
                           constexprs={(kernel.arg_names.index(k),): v for k, v in constexprs.items()})
        compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=spec["options"])
        with tempfile.TemporaryDirectory() as folder:
            ptx = Path(folder) / "kernel.ptx"
            ptx.write_text(compiled.asm["ptx"])
            done = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}", str(ptx), "-o", str(Path(folder) / "k.cubin")],
                                  capture_output=True, text=True, check=True)
        tiles = {k: v for k, v in constexprs.items() if k.startswith("BLOCK")}
        rows.append(dict(path=spec["path"], kernel=kernel.__name__, dtype=spec["dtype"], arch=f"sm{arch}",
                         tiles=tiles, **spec["options"], shared_bytes=compiled.metadata.shared,
                         **parse_ptxas(done.stderr)))
    return rows


def main(argv: list[str]) -> int:
    import argparse

    from lite_cpt.io import atomic_write_json

    parser = argparse.ArgumentParser(prog="python -m lite_cpt.bench.registers", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=int, default=80, help="compute capability x 10 (default 80: A100)")
    parser.add_argument("--path", choices=("tile", "chunked"), default=None, help="only this path's kernels")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    rows = compile_figures(args.arch, args.path)
    for row in rows:
        tiles = "x".join(str(v) for v in row["tiles"].values())
        print(f"{row['path']:8} {row['kernel']:22} {row['dtype']:11} {row['arch']} tiles {tiles:10} "
              f"warps {row['num_warps']}: {row['registers']} registers, {row['stack_bytes']} B stack, "
              f"{row['spill_store_bytes']} B spill stores, {row['spill_load_bytes']} B spill loads")
    if args.json is not None:
        atomic_write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
