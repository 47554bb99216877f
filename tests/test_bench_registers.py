"""Registers and spills of the log-prob kernels compiled for sm80 without a GPU (Triton to PTX,
then ptxas -v), and the parsing of ptxas's report."""

import json
import os
import subprocess
import sys

import pytest

from lite_cpt.bench.registers import parse_ptxas

PTXAS_REPORT = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_logprob_fwd_kernel' for 'sm_80'
ptxas info    : Function properties for _logprob_fwd_kernel
    432 bytes stack frame, 656 bytes spill stores, 524 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 432 bytes cumulative stack size, 456 bytes cmem[0]
"""


def test_ptxas_report_is_read_into_figures():
    assert parse_ptxas(PTXAS_REPORT) == {"registers": 255, "stack_bytes": 432, "spill_store_bytes": 656,
                                         "spill_load_bytes": 524}
    with pytest.raises(ValueError, match="Used"):
        parse_ptxas(PTXAS_REPORT.replace("Used 255 registers", ""))


def test_the_chunked_kernels_compile_for_sm80_without_spilling(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "registers.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    done = subprocess.run([sys.executable, "-m", "lite_cpt.bench.registers", "--path", "chunked", "--json", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert [row["kernel"] for row in rows] == ["_row_stats_kernel", "_row_grad_kernel"]
    for row in rows:
        assert row["arch"] == "sm80" and row["tiles"] == {"BLOCK_V": 2048} and row["num_warps"] == 8
        assert 0 < row["registers"] <= 128 and row["spill_store_bytes"] == 0 and row["stack_bytes"] == 0
    assert "_row_stats_kernel" in done.stdout and "registers" in done.stdout
