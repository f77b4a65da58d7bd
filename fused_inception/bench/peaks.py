"""Peak rates of the device the benchmark runs on: a datasheet table for NVIDIA GPUs, a
measurement for the CPU.

GPU figures are dense (without 2:4 sparsity), at boost clock, from NVIDIA's product
datasheets (nvidia.com/en-us/data-center/: a100, h100 -- its "H100 SXM / H100 NVL / H100 PCIe"
table quotes tensor rates with sparsity, halved here --, l4, l40s, products/a10-gpu, v100,
tesla-t4). GeForce cards have no datasheet: RTX 3090 from NVIDIA's Ampere GA102 GPU
architecture whitepaper, RTX 4090 from NVIDIA's Ada GPU architecture whitepaper, at FP32
accumulation (what these kernels and cuDNN use; GeForce tensor cores run it at half the
FP16-accumulate rate). fp16/bf16 are the dense tensor-core rates; fp32 is the non-tensor FP32
rate (cuDNN may use TF32 tensor cores for fp32 convolutions, which can beat it). V100 and T4
have no bf16 tensor cores: bf16 falls back to the FP32 rate there.
"""

from __future__ import annotations

import re
import time
from typing import NamedTuple

import torch


class Peak(NamedTuple):
    """A device's peak rates: TFLOP/s per dtype and memory bandwidth in GB/s."""

    name: str
    fp32_tflops: float
    fp16_tflops: float
    bf16_tflops: float | None
    gbps: float

    def tflops(self, dtype: torch.dtype) -> float:
        """Peak TFLOP/s for math in `dtype` (bf16 without tensor cores: the fp32 rate)."""
        if dtype == torch.float16:
            return self.fp16_tflops
        if dtype == torch.bfloat16:
            return self.bf16_tflops or self.fp32_tflops
        return self.fp32_tflops


def _datasheet(name: str, fp32: float, tensor: float, gbps: float, bf16: bool = True) -> Peak:
    """A GPU's Peak: one dense tensor-core rate serves fp16 and, where the tensor cores take
    bf16 (Ampere and newer), bf16; without them bf16 falls back to the FP32 rate."""
    return Peak(name, fp32, tensor, tensor if bf16 else None, gbps)


# Every A100 has the same FP32 and tensor-core rates; its four versions differ in bandwidth.
_A100 = (19.5, 312.0)

# Matched in order against torch.cuda.get_device_name() (case-insensitive); first match wins,
# so the more specific patterns (PCIe, 40GB, NVL) come before their family's default.
# Columns: name, FP32 TFLOP/s, fp16/bf16 tensor-core TFLOP/s (dense), memory GB/s.
GPU_PEAKS: tuple[tuple[str, Peak], ...] = (
    (r"H100.*NVL", _datasheet("H100 NVL", 60.0, 835.0, 3900.0)),
    (r"H100.*PCIe", _datasheet("H100 PCIe", 51.0, 756.0, 2000.0)),
    (r"H100", _datasheet("H100 SXM", 67.0, 989.0, 3350.0)),
    (r"A100.*PCIe.*40GB|A100.*40GB.*PCIe", _datasheet("A100 PCIe 40GB", *_A100, 1555.0)),
    (r"A100.*PCIe", _datasheet("A100 PCIe 80GB", *_A100, 1935.0)),
    (r"A100.*40GB", _datasheet("A100 SXM 40GB", *_A100, 1555.0)),
    (r"A100", _datasheet("A100 SXM 80GB", *_A100, 2039.0)),
    (r"L40S", _datasheet("L40S", 91.6, 362.0, 864.0)),
    (r"\bL4\b", _datasheet("L4", 30.3, 121.0, 300.0)),
    (r"\bA10\b", _datasheet("A10", 31.2, 125.0, 600.0)),
    (r"RTX 4090", _datasheet("GeForce RTX 4090", 82.6, 165.2, 1008.0)),
    (r"RTX 3090(?! Ti)", _datasheet("GeForce RTX 3090", 35.6, 71.0, 936.0)),
    (r"V100.*PCIe", _datasheet("V100 PCIe", 14.0, 112.0, 900.0, bf16=False)),
    (r"V100", _datasheet("V100 SXM2", 15.7, 125.0, 900.0, bf16=False)),
    (r"\bT4\b", _datasheet("T4", 8.1, 65.0, 320.0, bf16=False)),
)


def gpu_peak(device_name: str) -> Peak | None:
    """The datasheet peak rates for a GPU name as torch.cuda.get_device_name() returns it.

    None for a GPU not in the table (the roofline fields are then left empty).
    """
    for pattern, peak in GPU_PEAKS:
        if re.search(pattern, device_name, flags=re.IGNORECASE):
            return peak
    return None


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocation, thread pool, oneDNN/BLAS kernel selection
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


# A matmul size is doubled from _MATMUL_START_N towards matmul_n while one product takes less
# than this, so a dtype without a fast CPU kernel is measured on a small product. (torch's bf16
# and fp16 matmuls on an AVX2-only Zen 3 core run 1.0-1.4 GFLOP/s at n = 256-1024: a 2048
# product takes about 17 s, and the fixed-size measurement took minutes per call.)
_MATMUL_TARGET_S = 0.05
_MATMUL_START_N = 256


def _matmul_tflops(dtype: torch.dtype, max_n: int, repeats: int, gen: torch.Generator) -> float:
    """TFLOP/s of the best of `repeats` n x n products: n doubles from _MATMUL_START_N (or
    max_n, when smaller) up to max_n while one product takes less than _MATMUL_TARGET_S."""

    def product(n: int):
        a = torch.randn(n, n, generator=gen).to(dtype)
        b = torch.randn(n, n, generator=gen).to(dtype)
        return lambda: torch.mm(a, b)

    n = min(_MATMUL_START_N, max_n)
    mm = product(n)
    while n < max_n and _best_seconds(mm, 1) < _MATMUL_TARGET_S:
        n = min(2 * n, max_n)
        mm = product(n)
    return 2 * n**3 / _best_seconds(mm, repeats) / 1e12


# The own kernel's product for the fp32 peak (_own_gemm_tflops): a 1x1 convolution of a
# channels_last [1, _OWN_GEMM_C, _OWN_GEMM_HW, _OWN_GEMM_HW] input to _OWN_GEMM_C channels, a
# [4096, 512] x [512, 512] product (2.1 GFLOP, 8 MiB of input; about 5 ms on two Zen 5 cores).
_OWN_GEMM_C = 512
_OWN_GEMM_HW = 64


def _own_gemm_tflops(repeats: int, gen: torch.Generator) -> float | None:
    """TFLOP/s of the best of `repeats` float32 products on the package's own CPU kernel
    (fused_inception::conv_bias_relu_nhwc, bias and ReLU included), or None in a build without
    it. Where torch's sgemm runs below the cores' rate (MKL on AMD CPUs runs its AVX2 code:
    0.19 TFLOP/s against the own kernel's 0.43 on two Zen 5 cores, 2026-12-08), torch.mm alone
    would put the benchmark's blocks at 200-300% of a roofline."""
    from fused_inception import _ext

    if not _ext.has_op("conv_bias_relu_nhwc"):
        return None
    from fused_inception.backends.cpu_onednn import pack_panels

    c, hw = _OWN_GEMM_C, _OWN_GEMM_HW
    x = torch.randn(1, c, hw, hw, generator=gen).contiguous(memory_format=torch.channels_last)
    panels = pack_panels(torch.randn(c, c, generator=gen))
    bias = torch.randn(c, generator=gen)
    op = torch.ops.fused_inception.conv_bias_relu_nhwc
    seconds = _best_seconds(lambda: op(x, panels, bias), repeats)
    return 2 * hw * hw * c * c / seconds / 1e12


def measure_cpu_peak(
    dtypes: tuple[torch.dtype, ...] = (torch.float32,),
    *,
    matmul_n: int = 2048,
    copy_mib: int = 128,
    repeats: int = 5,
) -> Peak:
    """Measured CPU peaks with torch's current thread count (about a second in all).

    dtypes:   matmul dtypes to measure (the others fall back to the fp32 figure)
    matmul_n: the largest n of the n x n @ n x n matmul (2 n^3 FLOPs), the best of `repeats`
              runs; smaller where one product takes over _MATMUL_TARGET_S. float32's figure is
              the faster of that and the own kernel's product (_own_gemm_tflops)
    copy_mib: a copy of that many MiB (far beyond the last-level cache), counted as read +
              write; the best of `repeats` runs

    What another process uses of the cores at the time is missing from the figures: on a
    shared machine they are what this process could get, not the hardware's.
    """
    gen = torch.Generator().manual_seed(0)
    rates: dict[torch.dtype, float] = {}
    for dtype in (torch.float32,) + tuple(d for d in dtypes if d != torch.float32):
        rates[dtype] = _matmul_tflops(dtype, matmul_n, repeats, gen)
    own = _own_gemm_tflops(repeats, gen)
    rates[torch.float32] = max(rates[torch.float32], own or 0.0)
    src = torch.ones(copy_mib * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), repeats)
    gbps = 2 * src.numel() * src.element_size() / seconds / 1e9
    fp32 = rates[torch.float32]
    return Peak(
        "CPU (measured)",
        fp32,
        rates.get(torch.float16, fp32),
        rates.get(torch.bfloat16, fp32),
        gbps,
    )


def device_peak(device: torch.device, dtypes: tuple[torch.dtype, ...]) -> tuple[Peak | None, str]:
    """Peak rates for `device` and where they come from (for the header and the rows)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name)
        if peak is None:
            return None, f"{name}: not in fused_inception.bench.peaks.GPU_PEAKS, no roofline"
        return peak, f"datasheet ({peak.name})"
    peak = measure_cpu_peak(dtypes)
    return peak, "measured (the faster fp32 product of torch.mm and the own kernel; copy)"
