"""The block's 1x1 convolutions over x and its max-pool: every part of the block that reads x.

    [b1 | r2 | r3] = relu(x @ [W1 | W2r | W3r] + [B1 | B2r | B3r])      (horizontal fusion)
    p              = maxpool3x3(x, stride 1, pad 1)

In NHWC a 1x1 convolution is the GEMM [M = N*H*W, C_in] x [C_in, C_out], and a branch's
channel slice of the block output is a column block of the output rows [M, C_tot]. One launch
reads x once for all of it: GEMM programs run the fused GEMM over the columns of
[W1 | W2r | W3r] and store b1 into out's channels [0, c1) and the reduced tensors r2 | r3
into the scratch rows r [M, c2r + c3r + C_in] that block_kxk.py reads; pool programs stream a
band of image rows through x's 3x3/1 max-pool and store the pooled rows p into r's last C_in
columns, where block_kxk.py's pool-projection programs read them (b4 = relu(p @ W4 + B4)).

Why a scratch for r2 | r3 instead of recomputing them next to the kxk taps (version 1): every
reduced value is then computed exactly once, the kxk convolution reads its taps by address
(no register shuffles) from rows that stay in L2 between the two launches, and x is read by
one launch instead of four.

Why the pool is streamed row by row into the scratch instead of taken per GEMM tile: a tile's
3x3 window needs its neighbours' rows, and Triton cannot shift a tile held in registers, so
taking the pool per tile costs nine loads of every x element (one per tap). Streaming image
rows, a program keeps the horizontal maxima of the previous two rows in registers and loads
each new row three times (its left, centre and right taps): 3 * (rows + 2) / rows loads per
element for a band of rows, plus one load of p by the projection (docs/design.md section 4).

Packed weights (`fused_inception.packing.prepare_block`): w_x [C_in, c1 + c2r + c3r] in the
compute dtype (the GEMM's B operand, K-major rows), b_x float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import KernelBuild, autotune, common, tiles


@triton.jit
def _gemm_x(
    x_tile, x_row, w_x_ptr, b_x_ptr, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c_in, n_x,
    c1, c_rows, n0,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Columns [n0, n0 + BLOCK_N + TAIL) of relu(x @ w_x + b_x): b1's into out, the rest into
    r. TAIL > 0: the columns after the block's BLOCK_N run in a second accumulator that shares
    every loaded A tile (the GEMM's tail block, merged into its last full block)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    mask_n = cols < n_x
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if TAIL > 0:
        cols_t = n0 + BLOCK_N + tl.arange(0, TAIL)
        mask_t = cols_t < n_x
        acc_t = tl.zeros((BLOCK_M, TAIL), dtype=tl.float32)
    for k0 in range(0, c_in, BLOCK_K):
        k = k0 + offs_k
        mask_k = k < c_in
        a = tl.load(
            x_tile + x_row[:, None] + k[None, :], mask=mask_m[:, None] & mask_k[None, :], other=0.0
        )
        b = tl.load(
            w_x_ptr + k[:, None] * n_x + cols[None, :],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        acc = common.dot_acc(a, b, acc, DOT_IN_FP32)
        if TAIL > 0:
            b_t = tl.load(
                w_x_ptr + k[:, None] * n_x + cols_t[None, :],
                mask=mask_k[:, None] & mask_t[None, :],
                other=0.0,
            )
            acc_t = common.dot_acc(a, b_t, acc_t, DOT_IN_FP32)
    _store_x(acc, b_x_ptr, cols, mask_n, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c1, c_rows)
    if TAIL > 0:
        _store_x(
            acc_t, b_x_ptr, cols_t, mask_t, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c1,
            c_rows,
        )  # fmt: skip


@triton.jit
def _store_x(acc, b_x_ptr, cols, mask_n, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c1, c_rows):
    """relu(acc + b_x[cols]): b1's columns into the output slice, the reductions' into the
    scratch rows."""
    bias = tl.load(b_x_ptr + cols, mask=mask_n, other=0.0)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    y = y.to(out_tile.dtype.element_ty)
    is_b1 = cols < c1
    tl.store(out_tile + out_row[:, None] + cols[None, :], y, mask=mask_m[:, None] & is_b1[None, :])
    r_tile = r_ptr + m0.to(tl.int64) * c_rows
    tl.store(
        r_tile + (offs_m * c_rows)[:, None] + (cols - c1)[None, :],
        y,
        mask=mask_m[:, None] & (mask_n & ~is_b1)[None, :],
    )


@triton.jit
def _row_max(x_ptr, pix0, hh, cols, ch, mask_c, height, width, stride_xm):
    """max(x[hh, w - 1], x[hh, w], x[hh, w + 1]) for w in cols, channels ch, of the image whose
    first pixel is pix0 (int64), in float32 (exact for every input dtype); -inf where a tap,
    or the whole row hh, is outside the image."""
    row_ok = (hh >= 0) & (hh < height)
    row = x_ptr + (pix0 + hh * width) * stride_xm
    mx = tl.load(
        row + (cols * stride_xm)[:, None] + ch[None, :],
        mask=(row_ok & (cols < width))[:, None] & mask_c[None, :],
        other=float("-inf"),
    ).to(tl.float32)
    for dw in tl.static_range(-1, 2, 2):
        tap = cols + dw
        inside = row_ok & (tap >= 0) & (tap < width)
        v = tl.load(
            row + (tap * stride_xm)[:, None] + ch[None, :],
            mask=inside[:, None] & mask_c[None, :],
            other=float("-inf"),
        )
        mx = tl.maximum(mx, v.to(tl.float32), propagate_nan=tl.PropagateNan.ALL)
    return mx


@triton.jit
def _pool_rows(
    x_ptr, r_ptr, q, c_in, height, width, stride_xm, c_rows, p_col0, n_seg, seg_rows, n_wband,
    n_cblk,
    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    """Pool program q: p = maxpool3x3(x) (stride 1, pad 1) for one band of seg_rows image rows
    x BLOCK_W columns x BLOCK_C channels, stored into r's columns [p_col0, p_col0 + c_in).

    The rows are streamed top to bottom: each image row's horizontal maxima are loaded once
    (three taps) and kept for the two output rows below it. Neighbours outside the image are
    -inf and never win: every output's centre is inside, so an all-negative window stays
    negative; NaN propagates as in torch's max_pool2d.
    """
    cb = q % n_cblk
    t = q // n_cblk
    wb = t % n_wband
    t = t // n_wband
    h0 = (t % n_seg) * seg_rows
    h1 = tl.minimum(h0 + seg_rows, height)
    cols = wb * BLOCK_W + tl.arange(0, BLOCK_W)
    ch = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = ch < c_in
    mask_store = (cols < width)[:, None] & mask_c[None, :]
    pix0 = (t // n_seg).to(tl.int64) * height * width  # the image's first pixel
    above = _row_max(x_ptr, pix0, h0 - 1, cols, ch, mask_c, height, width, stride_xm)
    here = _row_max(x_ptr, pix0, h0, cols, ch, mask_c, height, width, stride_xm)
    # Not software-pipelined: each row's loads are three independent tiles already.
    for hh in tl.range(h0, h1, num_stages=1):
        below = _row_max(x_ptr, pix0, hh + 1, cols, ch, mask_c, height, width, stride_xm)
        p = tl.maximum(above, here, propagate_nan=tl.PropagateNan.ALL)
        p = tl.maximum(p, below, propagate_nan=tl.PropagateNan.ALL)
        tl.store(
            r_ptr + (pix0 + hh * width) * c_rows + p_col0 + (cols * c_rows)[:, None] + ch[None, :],
            p.to(r_ptr.dtype.element_ty),
            mask=mask_store,
        )
        above = here
        here = below


@triton.jit
def _gemm_x_tile(
    x_ptr, w_x_ptr, b_x_ptr, out_ptr, r_ptr, m, m0, pid_n, full_n, c_in, n_x, c1, c_rows,
    stride_xm, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_N_TAIL: tl.constexpr,
    MERGE_TAIL: tl.constexpr, BLOCK_K: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """The GEMM program of rows [m0, m0 + BLOCK_M) and column block pid_n: one of full_n blocks
    of BLOCK_N columns, the last of them with the tail of BLOCK_N_TAIL after it (MERGE_TAIL),
    or the tail block alone (pid_n = full_n, MERGE_TAIL = 0)."""
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = m0 + offs_m < m
    x_tile = x_ptr + m0.to(tl.int64) * stride_xm
    out_tile = out_ptr + m0.to(tl.int64) * stride_om
    x_row, out_row = offs_m * stride_xm, offs_m * stride_om
    # No tail (BLOCK_N_TAIL == 0: uniform blocks, the last one masked): one copy of the tile.
    if BLOCK_N_TAIL == 0 or pid_n < full_n - MERGE_TAIL:
        _gemm_x(
            x_tile, x_row, w_x_ptr, b_x_ptr, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c_in,
            n_x, c1, c_rows, pid_n * BLOCK_N, BLOCK_M, BLOCK_N, 0, BLOCK_K, DOT_IN_FP32,
        )  # fmt: skip
    elif MERGE_TAIL:
        # The last full block and the tail after it, one A tile for both.
        _gemm_x(
            x_tile, x_row, w_x_ptr, b_x_ptr, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c_in,
            n_x, c1, c_rows, pid_n * BLOCK_N, BLOCK_M, BLOCK_N, BLOCK_N_TAIL, BLOCK_K,
            DOT_IN_FP32,
        )  # fmt: skip
    else:
        _gemm_x(
            x_tile, x_row, w_x_ptr, b_x_ptr, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c_in,
            n_x, c1, c_rows, full_n * BLOCK_N, BLOCK_M, BLOCK_N_TAIL, 0, BLOCK_K, DOT_IN_FP32,
        )  # fmt: skip


# m (N*H*W) only bounds the masks and counts the programs: not specializing it keeps one build
# per configuration for every batch size (fused_inception/report/specialization.py).
@triton.jit(do_not_specialize=["m"])
def block_1x1_kernel(
    x_ptr, w_x_ptr, b_x_ptr, out_ptr, r_ptr,
    m, c_in, height, width, n_x, c1, c_rows, stride_xm, stride_om, full_n, tiles_x,
    n_seg, seg_rows, n_wband, n_cblk,
    BLOCK_M: tl.constexpr, BLOCK_M_TAIL: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_N_TAIL: tl.constexpr, MERGE_TAIL: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """A pool program or one pixel tile x column block of the fused 1x1 GEMM.

    Grid:   (pool programs + row tiles * tiles_x,); m = N*H*W pixels in (n, h, w) order. Pool
            programs first (latency-bound row streams: started first, they overlap the GEMM),
            N * n_seg * n_wband * n_cblk of them. Then the GEMM's: row tiles of BLOCK_M rows,
            then tiles of BLOCK_M_TAIL for the m mod BLOCK_M rows left (the last one masked);
            tiles_x column blocks per row tile
            (full_n of BLOCK_N, and a tail of BLOCK_N_TAIL if that is not 0: in the last of
            them if MERGE_TAIL, else a block after them), the column
            block fastest, so the programs of one pixel tile run together and share x in L2.
    Reads:  x [m, c_in] (NHWC rows, stride_xm elements apart), w_x [c_in, n_x], b_x [n_x] fp32.
    Writes: out[:, 0:c1] (b1); r [m, c_rows] (r2 | r3 in columns [0, n_x - c1), the pooled x
            in the c_in columns after them). out is the block output as NHWC rows (stride_om
            elements apart).
    Offsets: a 64-bit base per program (m0 rows in) or image row, 32-bit offsets inside the
    tile or row (the launcher checks they fit): 64-bit offsets per element would double their
    registers. The kinds of program are separate functions: the arms of an `if` share no
    variable.
    """
    pid = tl.program_id(0)
    pool_programs = (m // (height * width)) * n_seg * n_wband * n_cblk
    if pid < pool_programs:
        _pool_rows(
            x_ptr, r_ptr, pid, c_in, height, width, stride_xm, c_rows, n_x - c1, n_seg,
            seg_rows, n_wband, n_cblk, BLOCK_W, BLOCK_C,
        )  # fmt: skip
    else:
        g = pid - pool_programs
        pid_m = g // tiles_x
        pid_n = g % tiles_x
        full_m = m // BLOCK_M
        # Uniform tiles (BLOCK_M_TAIL == BLOCK_M, fp32) compile one copy of the tile.
        if BLOCK_M_TAIL == BLOCK_M or pid_m < full_m:
            _gemm_x_tile(
                x_ptr, w_x_ptr, b_x_ptr, out_ptr, r_ptr, m, pid_m * BLOCK_M, pid_n, full_n,
                c_in, n_x, c1, c_rows, stride_xm, stride_om, BLOCK_M, BLOCK_N, BLOCK_N_TAIL,
                MERGE_TAIL, BLOCK_K, DOT_IN_FP32,
            )  # fmt: skip
        else:
            m0 = full_m * BLOCK_M + (pid_m - full_m) * BLOCK_M_TAIL
            _gemm_x_tile(
                x_ptr, w_x_ptr, b_x_ptr, out_ptr, r_ptr, m, m0, pid_n, full_n, c_in, n_x, c1,
                c_rows, stride_xm, stride_om, BLOCK_M_TAIL, BLOCK_N, BLOCK_N_TAIL, MERGE_TAIL,
                BLOCK_K, DOT_IN_FP32,
            )  # fmt: skip


class Block1x1Config(NamedTuple):
    """Tile sizes and launch options of one build of block_1x1_kernel (column tail: 0 for
    none; merge_tail: 1 if the tail runs in the last full block's program; block_w, block_c: a
    pool program's columns and channels)."""

    block_m: int
    block_m_tail: int
    block_n: int
    block_n_tail: int
    merge_tail: int
    block_k: int
    block_w: int
    block_c: int
    num_warps: int
    num_stages: int


# Channel steps (16-bit): the least-padding candidate. Pixel rows and output blocks:
# fused_inception/triton/tiles.py. Pool programs: up to 32 columns x 64 channels a row (a
# 28-wide row in one band), bands of at most POOL_ROWS image rows (pool_grid).
_BLOCK_K = (64, 32, 16)
_POOL_WIDTH = 32
_POOL_CHANNELS = 64
POOL_ROWS = 16
# Under the interpreter each program x loop iteration costs ~10 ms: larger C_in chunks.
INTERPRETER_OVERRIDES = {"block_k": 128, "block_c": 128}


def block_size(size: int, candidates: tuple[int, ...], slack: float = 0.0) -> int:
    """The largest candidate whose padding of `size` is within `slack` of the least padding."""
    least = min(triton.cdiv(size, b) * b for b in candidates)
    return max(b for b in candidates if triton.cdiv(size, b) * b <= least * (1 + slack))


def pool_width(width: int) -> int:
    """A pool program's columns: the image width as a power of two, at most _POOL_WIDTH."""
    return min(_POOL_WIDTH, triton.next_power_of_2(max(width, 1)))


def pick_config(
    dtype: torch.dtype, *, c_in: int, n_x: int, width: int, block_m: int = tiles.BLOCK_M
) -> Block1x1Config:
    """The GPU config for the block's 1x1 GEMM over x (C_in -> n_x columns) of `width`-pixel
    images, by shape and dtype (block_m: the pixel rows per full tile); the same for every
    batch size.

    16-bit: row tiles and column blocks (with their tails) by the roofline model of tiles.py,
    channel steps by least padding, 8 warps, 3 stages; fp32 runs tl.dot on FMAs with its
    operands in registers: uniform 64 x 64 tiles (the rows' tail tiles as large as the others)
    and 16-channel steps compile without spills.
    Pool programs: pool_width(width) columns x 64 channels (32 for fp32).
    """
    block_w = pool_width(width)
    if dtype == torch.float32:
        return Block1x1Config(64, 64, 64, 0, 0, 16, block_w, 32, 8, 2)
    block_k = block_size(c_in, _BLOCK_K)
    (cols,) = tiles.widths(block_m, [tiles.Gemm(n_x, c_in, block_k)], merge=_merges(n_x))
    return _config(block_m, cols, block_k, c_in, block_w)


def _config(
    block_m: int, cols: tiles.Columns, block_k: int, c_in: int, block_w: int
) -> Block1x1Config:
    if cols.block == 128 and block_k == 64:
        # 128 x 128 accumulators with 64-channel steps spill on sm_80 (measured): 32 at most.
        block_k = block_size(c_in, _BLOCK_K[1:])
    if cols.block == 128 and cols.merged:
        # With the tail's accumulator beside it, 32-channel steps spill (compile report).
        block_k = block_size(c_in, _BLOCK_K[2:])
    return Block1x1Config(
        block_m,
        tiles.BLOCK_M_TAIL,
        cols.block,
        cols.tail,
        int(cols.merged),
        block_k,
        block_w,
        _POOL_CHANNELS,
        8,
        3,
    )


def _merges(n_x: int) -> bool:
    """Whether the GEMM's column tail runs with its last full block: only where n_x is a
    multiple of 16. Otherwise the scratch rows' unaligned addresses take more registers and the
    merged tail spills on sm_80 and sm_90 (4b's 296 and 4c's 280 columns: compile report)."""
    return n_x % 16 == 0


def tuning_candidates(
    dtype: torch.dtype, *, c_in: int, n_x: int, width: int
) -> list[Block1x1Config]:
    """The configs autotuning times on a GPU (fused_inception/triton/autotune.py), the pick
    first: 64-row tiles (their own column blocks), half-width column blocks, 4 warps, 2 or 4
    pipeline stages. fp32: the pick only."""
    shape = {"c_in": c_in, "n_x": n_x, "width": width}
    pick = pick_config(dtype, **shape)
    if dtype == torch.float32:
        return [pick]
    other = pick_config(dtype, **shape, block_m=64)
    narrower = []
    if pick.block_n > 32:
        cols = tiles.fitting_columns(n_x, pick.block_n // 2, pick.block_m, _merges(n_x))
        narrower.append(_config(pick.block_m, cols, block_size(c_in, _BLOCK_K), c_in, pick.block_w))
    return common.tuning_neighbours(pick, other, narrower)


class PoolGrid(NamedTuple):
    """The pool programs of a launch: n images x n_seg bands of seg_rows image rows x n_wband
    column bands x n_cblk channel blocks."""

    programs: int
    n_seg: int
    seg_rows: int
    n_wband: int
    n_cblk: int


def pool_grid(cfg: Block1x1Config, n: int, c_in: int, h: int, w: int) -> PoolGrid:
    """Bands of at most POOL_ROWS rows, evenly split (28 rows: 2 x 14; 14 and 7: whole images).

    A band reloads the row above and below it (rows outside the image are masked, not
    loaded): whole images load each x element 3 times, 14-row bands 3 x 16 / 14. Shorter
    bands would start more programs for the GPU's SMs at small batches, each with a shorter
    chain of dependent rows."""
    n_seg = triton.cdiv(h, POOL_ROWS)
    seg_rows = triton.cdiv(h, n_seg)
    n_wband, n_cblk = triton.cdiv(w, cfg.block_w), triton.cdiv(c_in, cfg.block_c)
    return PoolGrid(n * n_seg * n_wband * n_cblk, n_seg, seg_rows, n_wband, n_cblk)


def _columns(cfg: Block1x1Config, n_x: int) -> tiles.Columns:
    """The column blocks of the GEMM over x."""
    return tiles.columns(n_x, cfg.block_n, cfg.block_n_tail, bool(cfg.merge_tail))


def _gemm_programs(cfg: Block1x1Config, m: int, n_x: int) -> tuple[int, int]:
    """(row tiles, column blocks per row tile) of the GEMM over x."""
    full, tail = tiles.row_programs(m, cfg.block_m, cfg.block_m_tail)
    cols = _columns(cfg, n_x)
    return full + tail, cols.programs


def _grid(cfg: Block1x1Config, m: int, n_x: int, pool: PoolGrid) -> tuple[int]:
    """(pool programs + row tiles x column blocks of the GEMM over x,)."""
    rows, cols = _gemm_programs(cfg, m, n_x)
    return (pool.programs + rows * cols,)


def _check_config(
    cfg: Block1x1Config, shape: tuple[int, int, int, int], n_x: int, c_rows: int,
    stride_xm: int, stride_om: int,
) -> None:  # fmt: skip
    """The launcher's checks of one config for this shape (ValueError if it cannot launch)."""
    n, c_in, h, w = shape
    common.check_int32_tile("block_1x1", cfg.block_m, stride_xm, stride_om, c_rows, width=0)
    # A pool program's offsets inside an image row.
    common.check_int32_tile("block_1x1", w, stride_xm, c_rows, width=0)
    pool = pool_grid(cfg, n, c_in, h, w)
    common.check_grid("block_1x1", (*_grid(cfg, n * h * w, n_x, pool), 1))


def block_1x1(x: Tensor, w_x: Tensor, b_x: Tensor, out: Tensor, r: Tensor, c1: int) -> Tensor:
    """b1 -> out[:, :c1], r2 | r3 -> r[:, :n_x - c1], maxpool3x3(x) -> r[:, n_x - c1:]; one
    launch.

    x:   [N, C_in, H, W]   fp32/fp16/bf16, NHWC rows: channels contiguous, one pixel stride
                           (channels_last-contiguous, or a channel slice of such a tensor)
    w_x: [C_in, n_x]       x's dtype, contiguous; columns [0, c1) give b1, the rest r2 | r3
    b_x: [n_x]             float32
    out: [N, C_tot, H, W]  x's dtype, NHWC rows like x; channels [0, c1) are written
    r:   [N*H*W, n_x - c1 + C_in]  x's dtype, contiguous scratch rows: the reduced tensors,
                           then x's 3x3/1 max-pool (block_kxk's pool projection reads it)
    Returns out. Errors as fused_inception.checks says, before anything is written.
    """
    op = "block_1x1"
    operands = [
        common.Operand("w_x", w_x, ("C_in", "N_x")),
        common.Operand("b_x", b_x, ("N_x",), True),
    ]
    sizes, _ = common.check_launch_args(op, x, out, None, operands)
    n, c_in, h, w = x.shape
    n_x, m = sizes["N_x"], n * h * w
    c1 = common.check_column_split(op, "c1", c1, min(n_x, out.shape[1]))
    stride_xm, stride_om = common.pixel_stride(op, "x", x), common.pixel_stride(op, "out", out)
    c_rows = n_x - c1 + c_in
    common.check_scratch(op, r, (m, c_rows), x, out, operands)
    if m == 0:
        return out
    shape = {"c_in": c_in, "n_x": n_x, "width": w}
    pick = common.launch_config(pick_config(x.dtype, **shape), INTERPRETER_OVERRIDES)

    def check(cfg: Block1x1Config) -> None:
        _check_config(cfg, (n, c_in, h, w), n_x, c_rows, stride_xm, stride_om)

    check(pick)  # raises for the caller; a candidate that fails it is left out

    def run(cfg: Block1x1Config) -> None:
        pool = pool_grid(cfg, n, c_in, h, w)
        cols = _columns(cfg, n_x)
        scalars = (m, c_in, h, w, n_x, c1, c_rows, stride_xm, stride_om, cols.full, cols.programs)
        args = (x, w_x, b_x, out, r, *scalars, *pool[1:])
        full_m = m // cfg.block_m

        def kind(pid: tuple[int, int, int]) -> str:
            if pid[0] < pool.programs:
                return "image"
            return "full" if (pid[0] - pool.programs) // cols.programs < full_m else "tail"

        common.launch_with(
            block_1x1_kernel,
            _grid(cfg, m, n_x, pool),
            args,
            cfg,
            x.dtype,
            op=op,
            useful_macs=m * c_in * n_x,
            rows=common.RowTiles(m, cfg.block_m, cfg.block_m_tail, n, kind),
        )

    def candidates() -> list[Block1x1Config]:
        found = tuning_candidates(x.dtype, **shape)
        return [common.launch_config(c, INTERPRETER_OVERRIDES) for c in found]

    key = (m, c_in, h, w, n_x, c1, stride_xm, stride_om)
    cfg = autotune.choose(
        "block_1x1", key, x.device, common.dtype_name(x.dtype), pick, candidates, check, run
    )
    run(cfg)
    return out


def aot_builds() -> list[KernelBuild]:
    """Every build block_1x1 can launch for GoogLeNet's nine blocks on a GPU (any batch)."""
    from ..configs import GOOGLENET_BLOCKS

    configs = {
        (dtype, pick_config(dtype, c_in=c.in_channels, n_x=c.ch1x1 + c.ch3x3red + c.ch5x5red,
                            width=c.hw))
        for dtype in common.TRITON_DTYPES
        for c in GOOGLENET_BLOCKS.values()
    }  # fmt: skip
    return [
        common.kernel_build(
            "block_1x1",
            block_1x1_kernel,
            dtype,
            cfg,
            {},
            {
                "DOT_IN_FP32": False,
                "BLOCK_M": cfg.block_m,
                "BLOCK_M_TAIL": cfg.block_m_tail,
                "BLOCK_N": cfg.block_n,
                "BLOCK_N_TAIL": cfg.block_n_tail,
                "MERGE_TAIL": cfg.merge_tail,
                "BLOCK_K": cfg.block_k,
                "BLOCK_W": cfg.block_w,
                "BLOCK_C": cfg.block_c,
            },
            fp32_pointers=("b_x_ptr",),
            divisible=(
                "x_ptr",
                "w_x_ptr",
                "b_x_ptr",
                "out_ptr",
                "r_ptr",
                "c_in",
                "c1",
                "stride_xm",
                "stride_om",
            ),
        )  # fmt: skip
        for dtype, cfg in sorted(configs, key=lambda dc: (str(dc[0]), dc[1]))
    ]
