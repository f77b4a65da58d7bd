"""Tile sizes by a roofline model: how block_1x1 and block_kxk pick their tiles.

Pixel rows: tiles of BLOCK_M = 128 rows, and the rows that do not fill one (m mod 128) in tail
tiles of BLOCK_M_TAIL = 32 rows (as many as they need). A program's executed MACs are those of
its whole tile, so uniform 128-row tiles would pad 392 rows (5b at batch 8) to 512 (1.31x),
and 64-row tiles, which pad them to 448, load every weight twice as often; with 32-row tails
the 392 rows run as 3 x 128 + 32 (1.06x) and the weights are loaded four times. The number of
tail programs is a runtime value, so one build serves every batch size.

Output channels: each GEMM of a launch (M pixel rows x N output channels x K reduction) runs in
blocks of BLOCK_N columns and, where BLOCK_N does not divide N, a tail of the remainder
rounded up to a power of two (at least 16), which runs in the program of the last full block
with its own accumulator: both accumulators take their products from the same loaded A tile,
so 288 columns run as 128 + (128 + 32) with A loaded twice, instead of 3 x 128 (1.33x the
MACs), 5 x 64 (A loaded five times) or 128 + 128 + 32 in three programs (A loaded three
times). BLOCK_N is chosen per GEMM by the larger of
    compute:  2 * M * Np * Kp / PEAK_FLOPS               (the padded MACs the tensor cores run)
    loads:    bytes / LOAD_BYTES_PER_S, bytes = 2 * (reloads * M * Kp * column_programs
                                                     + Kp * Np * M / BLOCK_M)
(Np, Kp: the sizes padded to the tiles; A is loaded once per column program, `reloads` times
if a kernel loads it more than once, B once per row block; 16-bit), for a large M, so that the
choice depends on the channel counts only. Wide blocks load fewer bytes per MAC, blocks that
fit the channel counts run fewer padded MACs; the model weighs the two. Its constants are an
H100 SXM's (75% of the dense fp16 tensor-core peak; an assumed 7.5 TB/s from L2 to the SMs,
the figure fused_inception/report/work_model.py uses), so the choice is a model's until a GPU
measures it. A block's accumulator is at most 128 x 128 fp32 (BLOCK_M * BLOCK_N <= 16384;
larger ones, 256 x 64 included, spill on sm_80: compile report), the last block's with its
tail at most MAX_MERGED (else that width runs as uniform blocks, the last one masked), and no
choice pads N by more than MAX_PADDING when a candidate does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import triton

PEAK_FLOPS = 0.75 * 989e12
MODEL_ROWS = 1 << 20  # "a large M": the choice of BLOCK_N does not depend on the batch
LOAD_BYTES_PER_S = 7.5e12
MAX_ACCUMULATOR = 128 * 128
# The last full block and the tail merged into one program: both accumulators together.
MAX_MERGED = 128 * 192
MAX_PADDING = 1.25
# 256-row tiles spill on sm_80 in both kernels (compile report), even at 256 x 64.
BLOCK_M = 128
BLOCK_M_TAIL = 32
BLOCK_N = (128, 64, 32)
MIN_TAIL = 16  # tl.dot's smallest operand side


class Gemm(NamedTuple):
    """One GEMM of a launch: m rows, n columns, k reduction (k_step: its padded step), and how
    many times each A element is loaded per column block (K*K for the taps)."""

    n: int
    k: int
    k_step: int
    reloads: int = 1


class Columns(NamedTuple):
    """A GEMM's column blocks: `full` blocks of `block` columns and a tail of `tail` (0: none),
    run by the program of the last full block (merged) or by a program of its own."""

    block: int
    tail: int
    full: int
    merged: bool = True

    @property
    def padded(self) -> int:
        return self.full * self.block + self.tail

    @property
    def programs(self) -> int:
        return self.full + (self.tail > 0 and not self.merged)

    @property
    def widest(self) -> int:
        """The columns of the widest program's accumulators."""
        return self.block + (self.tail if self.merged else 0)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def tail_width(rem: int, block: int) -> int:
    """The tail block for `rem` leftover columns of `block`-wide blocks: a power of two of at
    least MIN_TAIL, or 0 where there is none or it would be a whole block."""
    if rem == 0:
        return 0
    tail = max(MIN_TAIL, triton.next_power_of_2(rem))
    return 0 if tail >= block else tail


def columns(n: int, block: int, tail: int | None = None, merged: bool = True) -> Columns:
    """n columns as blocks of `block` and the tail (`tail_width`, or as given: 0 for uniform
    blocks, the last one masked). A merged tail needs a full block to run with: n < block
    gives one masked block."""
    if tail is None:
        tail = tail_width(n % block, block) if n >= block or not merged else 0
    if tail and merged and n < block:
        raise ValueError(f"a merged {tail}-column tail needs a full block of {block}; n = {n}")
    full = n // block if tail else _cdiv(n, block)
    return Columns(block, tail, full, merged and tail > 0)


def fitting_columns(n: int, block: int, block_m: int, merge: bool = True) -> Columns:
    """columns(n, block) with its tail merged if `merge` and both accumulators fit MAX_MERGED
    with block_m rows, in a program of its own if not `merge`, else uniform blocks."""
    cols = columns(n, block, merged=merge)
    return columns(n, block, 0) if block_m * cols.widest > MAX_MERGED else cols


def row_programs(m: int, block_m: int, block_m_tail: int) -> tuple[int, int]:
    """(full row tiles, tail row tiles) for m rows (block_m_tail = block_m: uniform tiles)."""
    return m // block_m, _cdiv(m % block_m, block_m_tail)


def _cost(g: Gemm, block_m: int, cols: Columns) -> float:
    m = MODEL_ROWS
    kp = _cdiv(g.k, g.k_step) * g.k_step
    compute = 2 * m * cols.padded * kp / PEAK_FLOPS
    loads = 2 * (g.reloads * m * kp * cols.programs + kp * cols.padded * m // block_m)
    return max(compute, loads / LOAD_BYTES_PER_S)


def widths(block_m: int, gemms: Sequence[Gemm], merge: bool = True) -> tuple[Columns, ...]:
    """Column blocks per GEMM: the least modelled time (module docstring) among the widths
    whose accumulators fit and whose padding of N is within MAX_PADDING (any, if none is).
    merge: tails run with the last full block (where both accumulators fit MAX_MERGED, else
    that width runs uniform blocks); False: in programs of their own."""
    chosen = []
    for g in gemms:
        fits = [
            fitting_columns(g.n, bn, block_m, merge)
            for bn in BLOCK_N
            if block_m * bn <= MAX_ACCUMULATOR
        ]
        bounded = [c for c in fits if c.padded <= MAX_PADDING * g.n] or fits
        chosen.append(min(bounded, key=lambda c: (_cost(g, block_m, c), -c.block)))
    return tuple(chosen)
