"""Counting the cuda backend's launches on the SIMT shim (fused_inception.report.shim_counting,
the cuda rows of python -m fused_inception.report --work).

The counts of a whole launch (every CTA, through the extension) are checked against the
torch-free driver's (tests/cpp/block_1x1_parity.cpp counters: one CTA per kind of tile, scaled
by the number of CTAs of that kind), two independent ways to the same numbers; and the
counting's life cycle: nothing counted outside the block, off again after an error, no nesting.
"""

from __future__ import annotations

import re

import native
import pytest
import torch
from helpers import CUDA_OPS_DEVICE, needs_cuda_ops

from fused_inception import FusedInception
from fused_inception.backends import cuda as cuda_backend
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report.shim_counting import count_shim

pytestmark = [
    needs_cuda_ops,
    pytest.mark.skipif(CUDA_OPS_DEVICE.type != "cpu", reason="counting runs on the shim (CPU)"),
]

MMA_MACS = 16 * 8 * 16  # one warp-wide mma.sync m16n8k16


def _tiny():
    """A small block (16 channels in, 6x6 images), for the life-cycle tests."""
    torch.manual_seed(0)
    module = FusedInception(16, 8, 8, 16, 8, 8, 8, branch3_kernel=3, norm=False, backend="cuda")
    x = torch.randn(1, 16, 6, 6).to(torch.float16).contiguous(memory_format=torch.channels_last)
    return module.eval().to(torch.float16), x


def _block(name: str, batch: int, k: int = 3):
    cfg = GOOGLENET_BLOCKS[name]
    torch.manual_seed(0)
    module = FusedInception(*cfg.args(), branch3_kernel=k, norm=False, backend="cuda")
    module = module.eval().to(torch.float16)
    x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw).to(torch.float16)
    return cfg, module, x.contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(native.missing_reason() is not None, reason=native.missing_reason() or "")
def test_counts_of_5b_equal_the_drivers_and_add_up():
    cfg, module, x = _block("5b", 2)
    with torch.no_grad():
        plain = module(x)
        with count_shim() as log:
            counted = module(x)
    assert torch.equal(plain, counted)  # counting changes nothing
    assert log.listener_calls == 2
    assert [launch["kernel"] for launch in log.launches] == ["block_1x1", "block_kxk"]
    b1x1, kxk = log.launches
    m = x.shape[0] * cfg.hw * cfg.hw
    n_x = cfg.ch1x1 + cfg.ch3x3red + cfg.ch5x5red

    # The driver counts the same launch from one CTA per kind of tile.
    shape = (2, cfg.hw, cfg.hw, cfg.in_channels, cfg.ch1x1, cfg.ch3x3red, cfg.ch5x5red)
    exe = native.build("block_1x1_parity.cpp")
    result = native.run(exe, "counters", "5b", *map(str, (*shape, cfg.pool_proj)), timeout=300)
    assert result.returncode == 0, native.explain(result)
    line = re.search(r"executed/useful MACs ([\d.]+), cp.async bytes (\d+)", result.stdout)
    assert line is not None, native.explain(result)
    assert b1x1["useful_macs"] == m * cfg.in_channels * (n_x + cfg.pool_proj)
    assert b1x1["mma_macs"] / b1x1["useful_macs"] == pytest.approx(float(line.group(1)), abs=1e-4)
    assert b1x1["loaded_bytes"] == int(line.group(2))

    for launch in log.launches:
        assert launch["mma_macs"] % MMA_MACS == 0 and launch["mma_macs"] >= launch["useful_macs"]
        assert launch["unattributed_bytes"] == 0  # every cp.async byte read one of the inputs
        assert launch["bank_conflict_degree"]["ldmatrix"] == 1
        assert set(launch["bank_conflict_degree"].values()) == {1}
        assert launch["programs"] >= 1 and launch["num_warps"] >= 1
    # Every input loaded at least once in all; its unique bytes (the DRAM model's) at most
    # its size.
    for launch, names in ((b1x1, ("x", "w_x", "w_pool")), (kxk, ("r", "w2", "w3"))):
        for name in names:
            t = launch["tensors"][name]
            assert t["loaded_bytes"] >= t["span_bytes"] > 0, (launch["kernel"], name)
            assert t["read_bytes"] == t["span_bytes"], (launch["kernel"], name)
    assert kxk["useful_macs"] == m * 9 * (cfg.ch3x3red * cfg.ch3x3 + cfg.ch5x5red * cfg.ch5x5)
    # Every output element stored once: b1 and b4 by block_1x1, b2 and b3 by block_kxk.
    out_bytes = sum(launch["tensors"]["out"]["written_bytes"] for launch in log.launches)
    assert out_bytes == counted.numel() * counted.element_size()
    assert b1x1["tensors"]["r"]["written_bytes"] == kxk["tensors"]["r"]["span_bytes"]


def test_counting_is_off_outside_the_block_and_after_an_error():
    module, x = _tiny()
    with torch.no_grad():
        with pytest.raises(ValueError, match="deliberate"), count_shim():
            module(x)
            raise ValueError("deliberate")
        assert cuda_backend.launch_listener is None
        module(x)  # not counted: the log of the next block starts empty
        with count_shim() as log:
            module(x)
    assert len(log.launches) == 2 == log.listener_calls
    launches, _, _ = torch.ops.fused_inception.emulated_counters_stop()
    assert launches == []  # counting was off


def test_a_failing_launch_is_not_counted_and_counting_ends():
    module, x = _tiny()
    bad = x[:, :-1]  # wrong channel count: refused before any kernel runs
    with torch.no_grad(), pytest.raises((ValueError, RuntimeError)), count_shim():
        module(bad.contiguous(memory_format=torch.channels_last))
    assert cuda_backend.launch_listener is None
    launches, _, _ = torch.ops.fused_inception.emulated_counters_stop()
    assert launches == []


def test_nested_counting_is_refused():
    with count_shim(), pytest.raises(RuntimeError, match="already installed"), count_shim():
        pass
    assert cuda_backend.launch_listener is None


def test_the_operators_log_their_regions():
    module, x = _tiny()
    torch.ops.fused_inception.emulated_counters_start()
    with torch.no_grad():
        module(x)
    launches, names, values = torch.ops.fused_inception.emulated_counters_stop()
    assert launches == [
        "fused_inception::block_1x1_|x,w_x,w_pool",
        "fused_inception::block_kxk_|r,w2,w3",
    ]
    assert len(values) == 2 * len(names) and names[:4] == [
        "blocks", "threads_per_block", "dynamic_shared_bytes", "mma_macs",
    ]  # fmt: skip
    row = dict(zip(names, values[: len(names)], strict=True))
    regions = sum(row[f"region{i}_bytes"] for i in range(8))
    assert row["cp_async_bytes"] == regions > 0
    assert row["region0_bytes"] >= x.numel() * x.element_size()  # x, read at least once
    assert row["region3_bytes"] == 0  # no fourth region
