"""A roofline MODEL of GPU time from counted work (fused_inception.report.work): no GPU measured it.

Every number here is an estimate from stated assumptions, to compare designs before a GPU can
time them. The assumptions (also written into the work report's JSON, `ASSUMPTIONS`):

- Peaks: fused_inception.bench.peaks (A100 SXM 80GB: 312 TFLOP/s dense fp16, 2039 GB/s; H100
  SXM: 989 TFLOP/s, 3350 GB/s); 108 / 132 SMs; L2 40 / 50 MB; boost clocks 1.41 / 1.98 GHz.
- Tensor-core work runs at MMA_EFFICIENCY of the dense fp16 peak (other dot work at that share
  of the FP32 peak); DRAM at DRAM_EFFICIENCY of its peak bandwidth.
- Waves (reported): programs / (SMs * C), C the CTAs per SM from the compile report's
  registers, shared memory and threads when given (--compile-json), else 1.
- Quantization (fused kernels' compute time): programs are spread evenly over the SMs and an
  SM's throughput is the same however many CTAs share it, so the busiest SM runs
  ceil(P / SMs) programs' work: the counted work times ceil(P / SMs) / (P / SMs). A launch of
  fewer programs than SMs leaves SMs idle (one CTA is assumed to reach an SM's share of the
  efficiency above).
- Gathers: each gathered element costs at least one warp-shuffle lane; an SM shuffles
  SHUFFLE_LANES_PER_CLOCK lanes per clock. Added to the MMA time (not overlapped): a lower bound
  on what tl.gather costs.
- L2 -> SM traffic: bytes loaded + stored at L2_GBPS (assumed effective bandwidths, not
  datasheet figures); pessimistic where re-loads hit L1.
- DRAM bytes (`dram_bytes`): within a launch each byte of a tensor crosses DRAM at most once (its
  unique bytes; every re-read an L2 hit); a tensor read by a later launch comes from L2 if it
  was touched since by at most L2-capacity bytes of distinct tensors (itself included: LRU on
  whole tensors), else from DRAM again; every written byte goes to DRAM once.
- A launch takes max(MMA + gather, L2, DRAM) + LAUNCH_OVERHEAD_US.
- The unfused sequence (cuDNN-class): BN folded; b1, r2, b2, r3, b3, b4 convolutions one kernel
  each (bias + ReLU fused) at MMA_EFFICIENCY with no tile or wave losses (optimistic for the
  baseline), the max-pool one kernel, and the concatenation a copy kernel (as torchvision's
  torch.cat: reads the four branch outputs, writes the block output); same DRAM rule and
  launch overhead.
- Batch 128 from a count at batch N: each launch's counted work (MACs, gathered elements,
  bytes loaded and stored, programs) is scaled tile by tile where its launcher said how its
  programs map to pixel rows (work_analysis.scaled_work: full row tiles by the ratio of full
  tiles, tail tiles by that of tail tiles, per-image programs by 128 / N; the Triton
  launchers say it), else by 128 / N; the unique bytes of activation tensors (DRAM) by
  128 / N; weights are read once per call. The GPU configs a launcher picks may depend on
  the batch: the scaled count keeps batch N's (the Triton launchers' do not).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from fused_inception.bench.peaks import Peak, gpu_peak
from fused_inception.configs import BlockConfig

MMA_EFFICIENCY = 0.75
DRAM_EFFICIENCY = 0.8
LAUNCH_OVERHEAD_US = 2.0
SHUFFLE_LANES_PER_CLOCK = 32


class Gpu(NamedTuple):
    """What the model knows of one GPU."""

    name: str
    peak: Peak
    sms: int
    l2_bytes: int
    clock_ghz: float
    l2_gbps: float
    shared_per_sm: int
    regs_per_sm: int = 65536
    max_threads_per_sm: int = 2048
    max_ctas_per_sm: int = 32


GPUS: dict[str, Gpu] = {
    "A100": Gpu("A100 SXM", gpu_peak("A100-SXM4-80GB"), 108, 40 * 2**20, 1.41, 5100.0, 164 * 1024),
    "H100": Gpu("H100 SXM", gpu_peak("H100 80GB HBM3"), 132, 50 * 2**20, 1.98, 7500.0, 228 * 1024),
}
ARCH_OF = {"A100": "sm_80", "H100": "sm_90"}

ASSUMPTIONS = {
    "kind": "MODEL (roofline estimate from counted work; not measured on a GPU)",
    "mma_efficiency": MMA_EFFICIENCY,
    "dram_efficiency": DRAM_EFFICIENCY,
    "launch_overhead_us": LAUNCH_OVERHEAD_US,
    "shuffle_lanes_per_clock_per_sm": SHUFFLE_LANES_PER_CLOCK,
    "gpus": {k: {**g._asdict(), "peak": g.peak._asdict()} for k, g in GPUS.items()},
    "occupancy": "waves = programs / (SMs x CTAs per SM), CTAs per SM from the compile report "
    "(registers, shared memory, threads) when --compile-json is given and a build matches the "
    "launch, else 1",
    "quantization": "compute time x ceil(programs / SMs) / (programs / SMs): the busiest SM",
    "dram_rule": "unique bytes per tensor per launch; a later launch's read hits L2 if at most "
    "L2-capacity bytes of distinct tensors were touched since (LRU on whole tensors); writes "
    "always reach DRAM",
    "unfused": "b1, r2, b2, r3, b3, b4 convolutions one kernel each (BN folded, bias+ReLU fused), "
    "max-pool one kernel, concatenation a copy kernel; no tile or wave losses",
    "batch_scaling": "counted work scaled tile by tile where the launcher gave its row tiles "
    "(full tiles by the ratio of full tiles, tail tiles by that of tail tiles, per-image "
    "programs by batch / N), else times batch / N; activations' unique bytes times batch / N; "
    "weights once per call",
}


def ctas_per_sm(gpu: Gpu, num_warps: int, registers: int, shared_bytes: int) -> int:
    """CTAs of one kernel resident per SM: the tightest of threads, registers (allocated per
    warp in units of 256) and shared memory (plus 1 KB the driver reserves per CTA)."""
    threads = num_warps * 32
    by_threads = gpu.max_threads_per_sm // threads
    regs_per_warp = math.ceil(max(registers, 1) * 32 / 256) * 256
    by_regs = gpu.regs_per_sm // (regs_per_warp * num_warps)
    by_shared = gpu.shared_per_sm // (shared_bytes + 1024)
    return max(1, min(by_threads, by_regs, by_shared, gpu.max_ctas_per_sm))


class Access(NamedTuple):
    """One launch's use of one tensor: its identity, bytes read and written, and its size."""

    key: object
    read: float
    written: float
    size: float


def dram_bytes(launches: Sequence[Iterable[Access]], l2_bytes: float) -> list[float]:
    """DRAM bytes of each launch of a sequence, by the module's L2 rule."""
    recent: OrderedDict = OrderedDict()  # key -> bytes of it last known to be in L2
    out = []
    for accesses in launches:
        accesses = list(accesses)
        total = 0.0
        for a in accesses:
            miss = a.read
            if a.read and a.key in recent:
                keys = list(recent)
                since = sum(recent[k] for k in keys[keys.index(a.key) :])
                if since <= l2_bytes:
                    miss = max(0.0, a.read - recent[a.key])
            total += miss + a.written
        for a in accesses:
            held = recent.pop(a.key, 0.0)
            recent[a.key] = min(a.size, max(held, a.read) + a.written)
        out.append(total)
    return out


class LaunchWork(NamedTuple):
    """The work of one launch at the modelled batch (already scaled)."""

    mma_macs: float
    other_macs: float
    gathered: float
    l2_bytes: float
    programs: int
    ctas_per_sm: int


def launch_ms(gpu: Gpu, work: LaunchWork, dram: float, *, quantize: bool = True) -> dict:
    """MODEL time of one launch (ms) and its parts: compute (MMA + gather, quantized per SM),
    L2, DRAM, waves; see the module docstring."""
    waves = work.programs / (gpu.sms * work.ctas_per_sm) if work.programs else 0.0
    per_sm = work.programs / gpu.sms
    quant = math.ceil(per_sm) / per_sm if quantize and per_sm else 1.0
    peak = gpu.peak
    mma_s = 2 * work.mma_macs / (MMA_EFFICIENCY * peak.fp16_tflops * 1e12)
    other_s = 2 * work.other_macs / (MMA_EFFICIENCY * peak.fp32_tflops * 1e12)
    gather_s = work.gathered / (SHUFFLE_LANES_PER_CLOCK * gpu.sms * gpu.clock_ghz * 1e9)
    compute_s = (mma_s + other_s + gather_s) * quant
    l2_s = work.l2_bytes / (gpu.l2_gbps * 1e9)
    dram_s = dram / (DRAM_EFFICIENCY * peak.gbps * 1e9)
    ms = max(compute_s, l2_s, dram_s) * 1e3 + LAUNCH_OVERHEAD_US * 1e-3
    return {
        "ms": ms,
        "compute_ms": compute_s * 1e3,
        "l2_ms": l2_s * 1e3,
        "dram_ms": dram_s * 1e3,
        "dram_bytes": dram,
        "waves": waves,
        "ctas_per_sm": work.ctas_per_sm,
    }


def unfused_sequence(cfg: BlockConfig, k: int, batch: int, itemsize: int) -> list[tuple]:
    """The unfused block as (name, MACs, accesses): six convolutions, the pool, the concat."""
    px = cfg.hw * cfg.hw * batch

    def act(name: str, channels: int) -> tuple[str, float]:
        return name, float(px * channels * itemsize)

    def weights(name: str, cin: int, cout: int, kk: int = 1) -> tuple[str, float]:
        return name, float(cin * cout * kk * kk * itemsize + cout * 4)

    x, out = act("x", cfg.in_channels), act("out", cfg.out_channels)
    y1, y2, y3, y4 = (act(f"y{i}", c) for i, c in enumerate(cfg[1:7:2] + (cfg.pool_proj,), 1))
    r2, r3, p = act("r2", cfg.ch3x3red), act("r3", cfg.ch5x5red), act("pool", cfg.in_channels)
    convs = [
        ("conv b1", x, weights("w1", cfg.in_channels, cfg.ch1x1), y1, 1),
        ("conv r2", x, weights("w2r", cfg.in_channels, cfg.ch3x3red), r2, 1),
        ("conv b2", r2, weights("w2", cfg.ch3x3red, cfg.ch3x3, 3), y2, 9),
        ("conv r3", x, weights("w3r", cfg.in_channels, cfg.ch5x5red), r3, 1),
        ("conv b3", r3, weights("w3", cfg.ch5x5red, cfg.ch5x5, k), y3, k * k),
    ]
    seq = []
    for name, src, w, dst, taps in convs:
        cin = src[1] / (px * itemsize)
        cout = dst[1] / (px * itemsize)
        macs = px * cin * cout * taps
        seq.append((name, macs, [_rd(src), _rd(w), _wr(dst)]))
    seq.append(("maxpool", 0.0, [_rd(x), _wr(p)]))
    macs4 = px * cfg.in_channels * cfg.pool_proj
    seq.append(
        ("conv b4", macs4, [_rd(p), _rd(weights("w4", cfg.in_channels, cfg.pool_proj)), _wr(y4)])
    )
    seq.append(("concat (copy)", 0.0, [_rd(y1), _rd(y2), _rd(y3), _rd(y4), _wr(out)]))
    return seq


def _rd(t: tuple[str, float]) -> Access:
    return Access(t[0], t[1], 0.0, t[1])


def _wr(t: tuple[str, float]) -> Access:
    return Access(t[0], 0.0, t[1], t[1])


def unfused_ms(gpu: Gpu, cfg: BlockConfig, k: int, batch: int, itemsize: int = 2) -> dict:
    """MODEL time (ms) of the unfused cuDNN-class sequence, with its launches and DRAM bytes."""
    seq = unfused_sequence(cfg, k, batch, itemsize)
    drams = dram_bytes([acc for _, _, acc in seq], gpu.l2_bytes)
    total, parts = 0.0, []
    for (name, macs, _), dram in zip(seq, drams, strict=True):
        t = launch_ms(gpu, LaunchWork(macs, 0.0, 0.0, 0.0, 0, 1), dram, quantize=False)
        parts.append({"kernel": name, **t})
        total += t["ms"]
    compute = sum(p["compute_ms"] for p in parts)
    dram = sum(p["dram_ms"] for p in parts)
    return {
        "ms": total,
        "launches": len(seq),
        "dram_bytes": sum(drams),
        "compute_ms": compute,
        "dram_ms": dram,
        "bound": "compute" if compute >= dram else "DRAM",
        "parts": parts,
    }
