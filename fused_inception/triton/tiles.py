"""Tile sizes by a roofline model: how block_1x1 and block_kxk pick BLOCK_M and BLOCK_N.

BLOCK_M (pixel rows) is 128, or 64 where 128 would pad the m rows more (small images at small
batches: 392 rows of 5b at batch 8 make 448 in 64-row tiles, 512 in 128-row ones).

BLOCK_N (output channels) is chosen per GEMM of a launch (M pixel rows x N output channels x
K reduction) by the larger of
    compute:  2 * M * Np * Kp / PEAK_FLOPS               (the padded MACs the tensor cores run)
    loads:    bytes / LOAD_BYTES_PER_S, bytes = 2 * (reloads * M * Kp * Np / BLOCK_N
                                                     + Kp * Np * M / BLOCK_M)
(Np, Kp: the sizes padded to whole tiles; A is loaded once per column block, `reloads` times
for the pool's shifted A tiles, B once per row block; 16-bit), for a large M, so that the
choice depends on the channel counts only and every configuration a batch size can run is one
of the two (per BLOCK_M) that the compile report checks. Wide blocks load fewer bytes per MAC,
blocks that fit the channel counts run fewer padded MACs; the model weighs the two. Its
constants are an H100 SXM's (75% of the dense fp16 tensor-core peak; an assumed 7.5 TB/s from
L2 to the SMs, the figure fused_inception/report/work_model.py uses), so the choice is a
model's until a GPU measures it. A program's accumulator is at most 128 x 128 fp32
(BLOCK_M * BLOCK_N <= 16384; larger ones, 256 x 64 included, spill on sm_80: compile report),
and no choice pads N by more than MAX_PADDING[BLOCK_M] when a candidate does not: 1.25 with
128-row tiles, 1.10 with 64-row tiles, which tiles.block_m takes only where the pixel rows
already pad by several percent (7x7 images at small batches: 392 rows of batch 8 run as 448),
so that the executed MACs stay within 1.25x of the useful ones (5a at batch 8: 448 columns of
its 1x1 GEMM in 128-wide blocks would run 1.14 x 1.14 = 1.31x).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

PEAK_FLOPS = 0.75 * 989e12
MODEL_ROWS = 1 << 20  # "a large M": the choice of BLOCK_N does not depend on the batch
LOAD_BYTES_PER_S = 7.5e12
MAX_ACCUMULATOR = 128 * 128
MAX_PADDING = {128: 1.25, 64: 1.10}
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


def _cost(g: Gemm, block_m: int, block_n: int) -> float:
    m = MODEL_ROWS
    np_, kp = _cdiv(g.n, block_n) * block_n, _cdiv(g.k, g.k_step) * g.k_step
    compute = 2 * m * np_ * kp / PEAK_FLOPS
    loads = 2 * (g.reloads * m * kp * np_ // block_n + kp * np_ * m // block_m)
    return max(compute, loads / LOAD_BYTES_PER_S)


def block_m(m: int) -> int:
    """128 pixel rows per tile, or 64 where that pads the m rows at least 5% less."""
    padded = {b: _cdiv(m, b) * b for b in BLOCK_M}
    return 128 if padded[128] <= 1.05 * padded[64] else 64


def widths(block_m: int, gemms: Sequence[Gemm]) -> tuple[int, ...]:
    """One BLOCK_N per GEMM: the least modelled time (module docstring) among the candidates
    whose accumulator fits and whose padding of N is within MAX_PADDING[block_m] (any, if none
    is)."""
    chosen = []
    for g in gemms:
        fits = [bn for bn in BLOCK_N if block_m * bn <= MAX_ACCUMULATOR]
        limit = MAX_PADDING[block_m] * g.n
        bounded = [bn for bn in fits if _cdiv(g.n, bn) * bn <= limit] or fits
        chosen.append(min(bounded, key=lambda bn: (_cost(g, block_m, bn), -bn)))
    return tuple(chosen)
