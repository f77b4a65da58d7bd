"""The roofline model (work, fewest bytes, bound) and the peak rates it is set against."""

from __future__ import annotations

import time

import pytest
import torch

from fused_inception import _ext
from fused_inception.bench import peaks
from fused_inception.bench.peaks import GPU_PEAKS, Peak, gpu_peak, measure_cpu_peak
from fused_inception.bench.roofline import (
    block_macs,
    block_traffic,
    inception_config,
    network_traffic,
    roofline,
)
from fused_inception.configs import GOOGLENET_BLOCKS

# Paper, Table 1 (5x5 branch3, M = 10^6): ops per block. 5a's printed 54M is not what its
# own widths give (51M; see tests/test_summary.py's PAPER_ERRATA), so 51 here.
PAPER_OPS_M = {
    "3a": 128, "3b": 304, "4a": 73, "4b": 88, "4c": 100, "4d": 119, "4e": 170, "5a": 51,
    "5b": 71,
}  # fmt: skip


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_block_macs_match_the_paper(name):
    macs = block_macs(GOOGLENET_BLOCKS[name], branch3_kernel=5)
    assert abs(macs / 1e6 - PAPER_OPS_M[name]) / PAPER_OPS_M[name] < 0.03


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_moves_fewer_bytes(name, dtype):
    traffic = block_traffic(GOOGLENET_BLOCKS[name])
    itemsize = dtype.itemsize
    for batch in (1, 8, 128):
        fused = traffic.bytes(batch, itemsize, fused=True)
        assert 0 < fused < traffic.bytes(batch, itemsize, fused=False)
    assert traffic.flops(8) == 2 * 8 * block_macs(GOOGLENET_BLOCKS[name])


def test_block_traffic_by_hand():
    # 3a at 28x28: x 192 ch, out 256 ch, r2 96 + r3 16 ch, pooled 192 ch.
    cfg = GOOGLENET_BLOCKS["3a"]
    t = block_traffic(cfg, branch3_kernel=3)
    px = 28 * 28
    assert t.act_elems_fused == (192 + 256) * px
    extra = 2 * (96 + 16) * px + 2 * 192 * px + 2 * 256 * px  # r2+r3, pooled x, branches
    assert t.act_elems_unfused == (192 + 256) * px + extra
    weights = 192 * (64 + 96 + 16 + 32) + 9 * 96 * 128 + 9 * 16 * 32
    assert t.weight_elems == weights + (64 + 96 + 128 + 16 + 32 + 32)
    assert t.bytes(2, 4, fused=True) == ((192 + 256) * px * 2 + t.weight_elems) * 4


def test_network_traffic_matches_the_summary_and_the_blocks():
    torchvision = pytest.importorskip("torchvision")
    from fused_inception.summary import layer_table, totals

    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    t = network_traffic(model)
    assert t.macs_per_image == totals(layer_table(model))["macs"]
    blocks = [m for m in model.modules() if type(m).__name__ == "Inception"]
    hws = [28, 28, 14, 14, 14, 14, 14, 7, 7]
    for block, hw, (name, cfg) in zip(blocks, hws, GOOGLENET_BLOCKS.items(), strict=True):
        assert inception_config(block, hw) == (cfg, 3), name
    extra = sum(
        block_traffic(cfg).act_elems_unfused - block_traffic(cfg).act_elems_fused
        for cfg in GOOGLENET_BLOCKS.values()
    )
    assert t.act_elems_unfused - t.act_elems_fused == extra
    assert t.weight_elems >= sum(p.numel() for p in model.parameters()) * 0.9


def test_roofline_bound():
    # Compute-bound: 1 TFLOP at 100 TFLOP/s is 10 ms; 1 GB at 1000 GB/s is 1 ms.
    b = roofline(10**12, 10**9, 100.0, 1000.0)
    assert b.ms == pytest.approx(10.0) and b.tflops == pytest.approx(100.0)
    # Memory-bound: attainable = intensity x bandwidth, below the peak.
    b = roofline(10**9, 10**9, 100.0, 1000.0)
    assert b.ms == pytest.approx(1.0) and b.tflops == pytest.approx(1.0)


@pytest.mark.parametrize(
    "device_name, expected",
    [
        ("NVIDIA A100-SXM4-80GB", "A100 SXM 80GB"),
        ("NVIDIA A100-SXM4-40GB", "A100 SXM 40GB"),
        ("NVIDIA A100-PCIE-40GB", "A100 PCIe 40GB"),
        ("NVIDIA A100 80GB PCIe", "A100 PCIe 80GB"),
        ("NVIDIA H100 80GB HBM3", "H100 SXM"),
        ("NVIDIA H100 PCIe", "H100 PCIe"),
        ("NVIDIA H100 NVL", "H100 NVL"),
        ("NVIDIA L4", "L4"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA A10", "A10"),
        ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
        ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090"),
        ("Tesla V100-SXM2-16GB", "V100 SXM2"),
        ("Tesla V100-PCIE-32GB", "V100 PCIe"),
        ("Tesla T4", "T4"),
        ("NVIDIA A10G", None),
        ("NVIDIA L40", None),
        ("NVIDIA GeForce RTX 3090 Ti", None),
        ("NVIDIA B200", None),
    ],
)
def test_gpu_peak_matches_device_names(device_name, expected):
    peak = gpu_peak(device_name)
    assert (peak.name if peak else None) == expected


def test_gpu_peak_table_is_sane():
    for _, peak in GPU_PEAKS:
        assert 0 < peak.fp32_tflops < peak.fp16_tflops and 100 < peak.gbps < 5000
        assert peak.tflops(torch.float32) == peak.fp32_tflops
        assert peak.tflops(torch.float16) == peak.fp16_tflops
        assert peak.tflops(torch.bfloat16) == (peak.bf16_tflops or peak.fp32_tflops)
    assert gpu_peak("Tesla T4").tflops(torch.bfloat16) == 8.1  # no bf16 tensor cores


def test_measure_cpu_peak_is_positive():
    peak = measure_cpu_peak((torch.float32, torch.bfloat16), matmul_n=256, copy_mib=8)
    assert isinstance(peak, Peak)
    assert peak.fp32_tflops > 0 and peak.bf16_tflops > 0 and peak.gbps > 0
    assert peak.fp16_tflops == peak.fp32_tflops  # not measured: falls back to fp32


def test_cpu_fp32_peak_is_the_faster_of_torch_mm_and_the_own_kernel(monkeypatch):
    """float32's peak is the faster product: torch.mm's where the own kernel is slower or
    absent, the own kernel's where torch's sgemm is slower (MKL's AVX2 code on AMD CPUs);
    bfloat16 keeps torch.mm's own figure."""
    own = peaks._own_gemm_tflops(2, torch.Generator().manual_seed(0))
    if not _ext.has_op("conv_bias_relu_nhwc"):
        assert own is None
        pytest.skip("no own CPU kernel in this build")
    assert own > 0
    for mm, own in ((1e-6, 2.0), (3.0, 2.0), (3.0, None)):
        monkeypatch.setattr(
            peaks, "_matmul_tflops", lambda dtype, *a, m=mm: m * (1 + (dtype == torch.bfloat16))
        )
        monkeypatch.setattr(peaks, "_own_gemm_tflops", lambda *a, o=own: o)
        peak = measure_cpu_peak((torch.float32, torch.bfloat16), matmul_n=256, copy_mib=8)
        assert peak.fp32_tflops == max(mm, own or 0.0)
        assert peak.bf16_tflops == 2 * mm


def test_a_slow_matmul_is_measured_on_a_small_product(monkeypatch):
    """A dtype whose matmul is slow (bf16 without a CPU kernel for it) stops growing n once one
    product takes _MATMUL_TARGET_S; a fast one is measured at matmul_n."""
    sizes = []

    def slow_mm(a, b):  # 2 ms at n = 256, 16 ms at 512
        sizes.append(a.shape[0])
        time.sleep(0.002 * (a.shape[0] / 256) ** 3)
        return a

    monkeypatch.setattr(peaks, "_MATMUL_TARGET_S", 0.01)
    monkeypatch.setattr(peaks.torch, "mm", slow_mm)
    tflops = peaks._matmul_tflops(torch.bfloat16, 2048, 3, torch.Generator())
    assert sizes == [256, 256, 512, 512] + [512] * 4  # (warm-up, one) per size; then 1 + 3
    assert 0.5 < tflops / (2 * 512**3 / 0.016 / 1e12) <= 1.0
    sizes.clear()
    monkeypatch.setattr(peaks, "_MATMUL_TARGET_S", 1e9)  # every product fast: up to matmul_n
    peaks._matmul_tflops(torch.float32, 1024, 2, torch.Generator())
    assert sizes == [256, 256, 512, 512, 1024, 1024, 1024]
