"""Tile sizes by a roofline model: how block_1x1 and block_kxk pick BLOCK_M and BLOCK_N.

Each GEMM of a launch (M pixel rows x N output channels x K reduction) costs, for a tile of
BLOCK_M x BLOCK_N, the larger of
    compute:  2 * Mp * Np * Kp / PEAK_FLOPS               (the padded MACs the tensor cores run)
    loads:    bytes / LOAD_BYTES_PER_S, bytes = 2 * (reloads * Mp * Kp * Np / BLOCK_N
                                                     + Kp * Np * Mp / BLOCK_M)
(Mp, Np, Kp: the sizes padded to whole tiles; A is loaded once per column block, `reloads`
times for the pool's shifted A tiles and the kxk taps, B once per row block; 16-bit). Wide
tiles load fewer bytes per MAC, tiles that fit the channel counts run fewer padded MACs; the
model weighs the two. Its constants are an H100 SXM's (75% of the dense fp16 tensor-core peak;
an assumed 7.5 TB/s from L2 to the SMs, the figure fused_inception/report/work_model.py uses),
so the choice is a model's until a GPU measures it. The tiles a launch shares (BLOCK_M of
the GEMMs in one kernel) are chosen together; the accumulator of one program is at most
128 x 128 fp32 (BLOCK_M * BLOCK_N <= 16384: larger ones spill, measured by the compile report),
and no choice pads a GEMM's M x N by more than MAX_PADDING.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

PEAK_FLOPS = 0.75 * 989e12
LOAD_BYTES_PER_S = 7.5e12
MAX_ACCUMULATOR = 128 * 128
MAX_PADDING = 1.25
# 256-row tiles spill on sm_80 in both kernels (compile report), even at 256 x 64.
BLOCK_M = (128, 64)
BLOCK_N = (128, 64, 32)


class Gemm(NamedTuple):
    """One GEMM of a launch: m rows, n columns, k reduction (k_step: its padded step), and how
    many times each A element is loaded per column block (9 for the pool, K*K for the taps)."""

    n: int
    k: int
    k_step: int
    reloads: int = 1


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _cost(m: int, g: Gemm, block_m: int, block_n: int) -> float:
    mp, np_ = _cdiv(m, block_m) * block_m, _cdiv(g.n, block_n) * block_n
    kp = _cdiv(g.k, g.k_step) * g.k_step
    compute = 2 * mp * np_ * kp / PEAK_FLOPS
    loads = 2 * (g.reloads * mp * kp * np_ // block_n + kp * np_ * mp // block_m)
    return max(compute, loads / LOAD_BYTES_PER_S)


def _padding(m: int, n: int, block_m: int, block_n: int) -> float:
    return _cdiv(m, block_m) * block_m * _cdiv(n, block_n) * block_n / (m * n)


def choose(m: int, gemms: Sequence[Gemm]) -> tuple[int, tuple[int, ...]]:
    """(BLOCK_M, one BLOCK_N per GEMM) with the least modelled time for a launch of `gemms`
    over m rows (see the module docstring); padding is bounded by MAX_PADDING unless nothing
    meets it (m or n smaller than the smallest tile)."""
    return _choose(m, gemms, MAX_PADDING) or _choose(m, gemms, float("inf"))


def _choose(m: int, gemms: Sequence[Gemm], max_padding: float):
    best: tuple[float, int, tuple[int, ...]] | None = None
    for block_m in BLOCK_M:
        total, widths = 0.0, []
        for g in gemms:
            options = [
                (_cost(m, g, block_m, bn), -bn, bn)
                for bn in BLOCK_N
                if block_m * bn <= MAX_ACCUMULATOR and _padding(m, g.n, block_m, bn) <= max_padding
            ]
            if not options:
                break
            cost, _, bn = min(options)
            total += cost
            widths.append(bn)
        else:
            if best is None or total < best[0]:
                best = (total, block_m, tuple(widths))
    return None if best is None else (best[1], best[2])
