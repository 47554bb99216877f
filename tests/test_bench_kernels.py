"""bench_kernels on a tiny CPU shape: the report's structure, the JSON file and the table."""

import io
import json

import pytest
import torch
from rich.console import Console

from lite_cpt.bench.kernels import bench_kernels
from lite_cpt.errors import UserError


def test_tiny_cpu_bench_writes_json_and_table(tmp_path):
    out = tmp_path / "bench" / "kernels.json"
    buffer = io.StringIO()
    report = bench_kernels("cpu", shapes=[(64, 32, 3000), (17, 8, 500)], json_path=out,
                           console=Console(file=buffer, width=200))

    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(report))
    assert report["device"] == "cpu" and report["dtype"] == "float32"
    assert report["machine"]["cpu_count"] >= 1 and report["machine"]["torch"] == torch.__version__
    assert [r["shape"] for r in report["results"]] == [[64, 32, 3000], [17, 8, 500]]
    for result in report["results"]:
        for key in ("time_ratio", "peak_memory_ratio", "cpu_time_ratio", "naive_ms", "fused_ms", "naive_peak_mb",
                    "fused_peak_mb", "chunked_ms", "chunked_peak_mb", "chunked_time_ratio",
                    "chunked_peak_memory_ratio", "chunked_cpu_time_ratio"):
            assert isinstance(result[key], float) and result[key] > 0, key
        # naive holds at least the [N, V] fp32 logits at its peak
        n, _, v = result["shape"]
        assert result["naive_peak_mb"] >= n * v * 4 / 2**20
        # both compute the same log-probs and gradients
        assert result["max_abs_diff_logp"] < 1e-4
        assert result["max_abs_diff_grad_hidden"] < 1e-4 and result["max_abs_diff_grad_weight"] < 1e-4
        assert result["chunked_max_abs_diff_logp"] < 1e-4 and result["chunked_max_abs_diff_grad_hidden"] < 1e-4
    # the faster fused path over both shapes is the one a calibration records
    totals = {path: sum(r[key] for r in report["results"]) for path, key in (("tile", "fused_ms"),
                                                                              ("chunked", "chunked_ms"))}
    assert report["logprob_path"] == min(totals, key=totals.get)
    assert report["liger"] == "liger skipped: its kernels run on CUDA only"

    table = buffer.getvalue()
    assert "64x32x3000" in table and "memory ratio" in table and "time ratio" in table
    assert "fused (tile)" in table and "fused (chunked)" in table
    assert f"faster fused path here: {report['logprob_path']}" in table
    assert "liger skipped: its kernels run on CUDA only" in table


def test_the_winner_is_the_path_with_the_least_total_time():
    from lite_cpt.bench.kernels import winning_path

    results = [{"fused_ms": 10.0, "chunked_ms": 4.0}, {"fused_ms": 20.0, "chunked_ms": 27.0}]
    assert winning_path(results) == "tile"  # 30 ms against 31 ms
    assert winning_path(results[:1]) == "chunked"


def test_bad_device_and_dtype_are_user_errors():
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA GPU"):
            bench_kernels("cuda")
    with pytest.raises(UserError, match="cpu or cuda"):
        bench_kernels("meta")
    with pytest.raises(UserError, match="dtype"):
        bench_kernels("cpu", dtype="float8")
