"""The benchmark CLI runs and writes rows with the documented fields."""

from __future__ import annotations

import json

from fused_inception import bench

FIELDS = {
    "block", "batch", "dtype", "device", "layout", "impl",
    "median_ms", "images_per_s", "speedup", "gflops",
}  # fmt: skip


def test_quick_run_writes_json(tmp_path, capsys):
    path = tmp_path / "rows.json"
    assert bench.main(["--device", "cpu", "--blocks", "5b", "--quick", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    assert {(r["layout"], r["impl"]) for r in rows} == {
        (layout, impl)
        for layout in ("nchw", "channels_last")
        for impl in ("torchvision_eager", "fused_cpu")
    }
    for r in rows:
        assert set(r) == FIELDS
        assert r["median_ms"] > 0 and r["images_per_s"] > 0 and r["gflops"] > 0
        assert r["block"] == "5b" and r["batch"] == 1 and r["dtype"] == "float32"
    eager = [r for r in rows if r["impl"] == "torchvision_eager"]
    assert all(r["speedup"] == 1.0 for r in eager)
    printed = capsys.readouterr().out
    assert "speedup vs eager: geomean" in printed and "torch " in printed


def test_block_macs_matches_paper_table():
    # Table 1 of the paper (5x5 branch): inception 3a has 128M ops.
    macs = bench.block_macs(bench.GOOGLENET_BLOCKS["3a"], branch3_kernel=5)
    assert abs(macs / 1e6 - 128) / 128 < 0.03
