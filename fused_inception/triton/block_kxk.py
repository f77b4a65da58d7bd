"""The block's convolutions over the scratch rows: b2 (3x3 over r2), b3 (KxK over r3) and b4
(the pool projection, 1x1 over the pooled x p), in one launch.

    b2 = relu(conv3x3(r2; W2, pad 1) + B2),   b3 = relu(convKxK(r3; W3, pad K//2) + B3),
    b4 = relu(p @ W4 + B4)

r2 | r3 | p are the scratch rows [M = N*H*W, c2r + c3r + C_in] that block_1x1.py wrote. Each
program is an implicit GEMM over one pixel tile and one block of output channels of one
branch (b4's is a 1x1 convolution: one tap): for every tap (dy, dx) and chunk of reduced
channels it loads the A operand straight from the rows of the pixels (h + dy, w + dx), masked
to 0 outside the image (the kxk convolution's zero padding applies to r), and adds its
product with the tap's [c_red, c_out] weights. Taps are
taken by address, so no reduced value is recomputed and nothing is shuffled between lanes;
the 8 (or 24) shifted loads of a tile are mostly L1/L2 hits of its neighbours' rows.

Packed weights (`fused_inception.packing.prepare_block`): w2 [9, c2r, c2] and w3 [K*K, c3r,
c3] (one [c_red, c_out] GEMM B operand per tap, row-major taps) and w4 [C_in, c4] (the pool
projection's, one tap) in the compute dtype, biases float32.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import KernelBuild, autotune, common, tiles
from .block_1x1 import block_size


@triton.jit
def _branch(
    r_tile, r_row, r_col0, c_r, w_ptr, bias_ptr, c_out, n0, kernel, out_tile, out_row, c_off,
    h, w, height, width, mask_m, c_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, TAIL: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """out[:, c_off + n0 + j] = relu(kxk(r)[:, n0 + j] + bias[n0 + j]) for one tile, j <
    BLOCK_N + TAIL. TAIL > 0: the columns after the block's BLOCK_N run in a second fp32
    accumulator that shares every loaded A tile (the branch's tail block, merged into its last
    full block).

    Its own function so that the arms of block_kxk_kernel's `if`s share no variable (Triton
    requires a variable set in both arms of an `if` to have one type there).
    """
    pad = kernel // 2
    cols = n0 + tl.arange(0, BLOCK_N)
    mask_n = cols < c_out
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if TAIL > 0:
        cols_t = n0 + BLOCK_N + tl.arange(0, TAIL)
        mask_t = cols_t < c_out
        acc_t = tl.zeros((BLOCK_M, TAIL), dtype=tl.float32)
    # A runtime loop over the taps (K is 3 or 5 at run time): unrolled, 25 sets of tap
    # offsets would stay live across the channel loop.
    for tap in range(0, kernel * kernel):
        dy = tap // kernel - pad
        dx = tap % kernel - pad
        inside = mask_m & (h + dy >= 0) & (h + dy < height) & (w + dx >= 0) & (w + dx < width)
        tap_row = r_row + (dy * width + dx) * c_rows
        for c0 in range(0, c_r, BLOCK_R):
            c = c0 + offs_r
            mask_c = c < c_r
            a = tl.load(
                r_tile + tap_row[:, None] + (r_col0 + c)[None, :],
                mask=inside[:, None] & mask_c[None, :],
                other=0.0,
            )
            w_rows = w_ptr + (tap * c_r + c)[:, None] * c_out
            b = tl.load(w_rows + cols[None, :], mask=mask_c[:, None] & mask_n[None, :], other=0.0)
            acc = common.dot_acc(a, b, acc, DOT_IN_FP32)
            if TAIL > 0:
                b_t = tl.load(
                    w_rows + cols_t[None, :], mask=mask_c[:, None] & mask_t[None, :], other=0.0
                )
                acc_t = common.dot_acc(a, b_t, acc_t, DOT_IN_FP32)
    common.bias_relu_store(acc, bias_ptr, cols, mask_n, out_tile, out_row, c_off, mask_m)
    if TAIL > 0:
        common.bias_relu_store(acc_t, bias_ptr, cols_t, mask_t, out_tile, out_row, c_off, mask_m)


@triton.jit
def _branch_cols(
    r_tile, r_row, r_col0, c_r, w_ptr, bias_ptr, c_out, j, full, kernel, out_tile, out_row,
    c_off, h, w, height, width, mask_m, c_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_N_TAIL: tl.constexpr,
    BLOCK_R: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Column block j of one branch: one of `full` blocks of BLOCK_N, the last of them with the
    tail block of BLOCK_N_TAIL after it (0: uniform blocks, the last one masked)."""
    # No tail (BLOCK_N_TAIL == 0: uniform blocks, the last one masked): one copy of the tile.
    if BLOCK_N_TAIL == 0 or j < full - 1:
        _branch(
            r_tile, r_row, r_col0, c_r, w_ptr, bias_ptr, c_out, j * BLOCK_N, kernel, out_tile,
            out_row, c_off, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N, 0, BLOCK_R,
            DOT_IN_FP32,
        )  # fmt: skip
    else:
        _branch(
            r_tile, r_row, r_col0, c_r, w_ptr, bias_ptr, c_out, j * BLOCK_N, kernel, out_tile,
            out_row, c_off, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N, BLOCK_N_TAIL,
            BLOCK_R, DOT_IN_FP32,
        )  # fmt: skip


@triton.jit
def _row_tile(
    r_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, b4_ptr, out_ptr, m, m0, pid_n,
    height, width, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4,
    full2, tiles2, full3, tiles23, full4,
    BLOCK_M: tl.constexpr, BLOCK_N2: tl.constexpr, BLOCK_N2_TAIL: tl.constexpr,
    BLOCK_R2: tl.constexpr, BLOCK_N3: tl.constexpr, BLOCK_N3_TAIL: tl.constexpr,
    BLOCK_R3: tl.constexpr, BLOCK_N4: tl.constexpr, BLOCK_N4_TAIL: tl.constexpr,
    BLOCK_R4: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """The program of rows [m0, m0 + BLOCK_M) and column block pid_n of b2, b3 or b4."""
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = m0 + offs_m < m
    hw = height * width
    h = ((m0 + offs_m) % hw) // width
    w = (m0 + offs_m) % width
    c_rows = c2r + c3r + c4r
    r_tile = r_ptr + m0.to(tl.int64) * c_rows
    r_row = offs_m * c_rows
    out_tile = out_ptr + m0.to(tl.int64) * stride_om
    out_row = offs_m * stride_om
    if pid_n < tiles2:
        _branch_cols(
            r_tile, r_row, 0, c2r, w2_ptr, b2_ptr, c2, pid_n, full2, 3, out_tile, out_row, off2,
            h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N2, BLOCK_N2_TAIL, BLOCK_R2,
            DOT_IN_FP32,
        )  # fmt: skip
    elif pid_n < tiles23:
        _branch_cols(
            r_tile, r_row, c2r, c3r, w3_ptr, b3_ptr, c3, pid_n - tiles2, full3, k3, out_tile,
            out_row, off3, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N3,
            BLOCK_N3_TAIL, BLOCK_R3, DOT_IN_FP32,
        )  # fmt: skip
    else:
        _branch_cols(
            r_tile, r_row, c2r + c3r, c4r, w4_ptr, b4_ptr, c4, pid_n - tiles23, full4, 1,
            out_tile, out_row, off4, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N4,
            BLOCK_N4_TAIL, BLOCK_R4, DOT_IN_FP32,
        )  # fmt: skip


# m (N*H*W) only bounds the masks and places the tail tiles: not specializing it keeps one
# build per configuration for every batch size (fused_inception/report/specialization.py).
@triton.jit(do_not_specialize=["m"])
def block_kxk_kernel(
    r_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, b4_ptr, out_ptr,
    m, height, width, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4,
    full2, tiles2, full3, tiles23, full4,
    BLOCK_M: tl.constexpr, BLOCK_M_TAIL: tl.constexpr, BLOCK_N2: tl.constexpr,
    BLOCK_N2_TAIL: tl.constexpr, BLOCK_R2: tl.constexpr, BLOCK_N3: tl.constexpr,
    BLOCK_N3_TAIL: tl.constexpr, BLOCK_R3: tl.constexpr, BLOCK_N4: tl.constexpr,
    BLOCK_N4_TAIL: tl.constexpr, BLOCK_R4: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """One pixel tile x one column block of b2 (pid_n < tiles2), b3 (pid_n < tiles23) or b4.

    Grid:   (row tiles, column blocks of b2 + those of b3 + those of b4), pid_n fastest (a
            tile's programs share its r rows in L2). Row tiles of BLOCK_M rows, then tiles of
            BLOCK_M_TAIL for the m mod BLOCK_M rows left (the last one masked); each branch's
            column blocks: full* of BLOCK_N*, then one of BLOCK_N*_TAIL if that is not 0.
    Reads:  r [m, c2r + c3r + c4r] (r2 in columns [0, c2r), r3 after, then the pooled x),
            w2 [9, c2r, c2], w3 [k3*k3, c3r, c3], w4 [c4r, c4], b2, b3, b4 float32.
    Writes: out[:, off2:off2 + c2] (b2), out[:, off3:off3 + c3] (b3) or out[:, off4:off4 + c4]
            (b4); out is the block output as NHWC rows (stride_om elements apart).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    full_m = m // BLOCK_M
    # Uniform tiles (BLOCK_M_TAIL == BLOCK_M, fp32) compile one copy of the tile.
    if BLOCK_M_TAIL == BLOCK_M or pid_m < full_m:
        _row_tile(
            r_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, b4_ptr, out_ptr, m, pid_m * BLOCK_M,
            pid_n, height, width, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4,
            full2, tiles2, full3, tiles23, full4, BLOCK_M, BLOCK_N2, BLOCK_N2_TAIL, BLOCK_R2,
            BLOCK_N3, BLOCK_N3_TAIL, BLOCK_R3, BLOCK_N4, BLOCK_N4_TAIL, BLOCK_R4, DOT_IN_FP32,
        )  # fmt: skip
    else:
        m0 = full_m * BLOCK_M + (pid_m - full_m) * BLOCK_M_TAIL
        _row_tile(
            r_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, w4_ptr, b4_ptr, out_ptr, m, m0, pid_n,
            height, width, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4, full2,
            tiles2, full3, tiles23, full4, BLOCK_M_TAIL, BLOCK_N2, BLOCK_N2_TAIL, BLOCK_R2,
            BLOCK_N3, BLOCK_N3_TAIL, BLOCK_R3, BLOCK_N4, BLOCK_N4_TAIL, BLOCK_R4, DOT_IN_FP32,
        )  # fmt: skip


class BlockKxkConfig(NamedTuple):
    """Tile sizes and launch options of one build of block_kxk_kernel (column tails: 0 for
    none)."""

    block_m: int
    block_m_tail: int
    block_n2: int
    block_n2_tail: int
    block_r2: int
    block_n3: int
    block_n3_tail: int
    block_r3: int
    block_n4: int
    block_n4_tail: int
    block_r4: int
    num_warps: int
    num_stages: int


# Reduction chunks: the least padding (they do not change the bytes per MAC). Pixel rows and
# output blocks: fused_inception/triton/tiles.py.
_BLOCK_R = (64, 32, 16)
# Under the interpreter each program x loop iteration costs ~10 ms: larger channel chunks.
INTERPRETER_OVERRIDES = {"block_r2": 64, "block_r3": 64, "block_r4": 128}


def pick_config(
    dtype: torch.dtype,
    *,
    c2r: int,
    c2: int,
    c3r: int,
    c3: int,
    k3: int,
    c4r: int,
    c4: int,
    block_m: int = tiles.BLOCK_M,
) -> BlockKxkConfig:
    """The GPU config of the launch, by shape and dtype (block_m: the pixel rows per full
    tile); the same for every batch size.

    16-bit: row tiles and column blocks (with their tails) by the roofline model of tiles.py
    (the three branches' implicit GEMMs, K = taps x reduced channels), reduction chunks by
    least padding, 8 warps, 3 stages; fp32 (FMAs, operands in registers): uniform 64 x 64
    tiles (the tail tiles of the rows as large as the others), 16-channel chunks.
    """
    if dtype == torch.float32:
        return BlockKxkConfig(64, 64, 64, 0, 16, 64, 0, 16, 64, 0, 16, 8, 2)
    reductions = (c2r, c3r, c4r)
    block_r = [block_size(c, _BLOCK_R) for c in reductions]
    cols = tiles.widths(
        block_m,
        [
            tiles.Gemm(c2, 9 * _padded(c2r, block_r[0]), 1),
            tiles.Gemm(c3, k3 * k3 * _padded(c3r, block_r[1]), 1),
            tiles.Gemm(c4, _padded(c4r, block_r[2]), 1),
        ],
    )
    return _config(block_m, cols, reductions)


def _config(
    block_m: int, cols: tuple[tiles.Columns, ...], reductions: tuple[int, int, int]
) -> BlockKxkConfig:
    fields = []
    for c, c_red in zip(cols, reductions, strict=True):
        block_r = block_size(c_red, _BLOCK_R)
        # A 128 x 128 accumulator with 64-channel chunks of A spills on sm_80 (255 registers).
        if c.block == 128 and block_r == 64:
            block_r = block_size(c_red, _BLOCK_R[1:])
        # With the tail's accumulator beside it, 32-channel chunks spill (compile report).
        if c.block == 128 and c.merged:
            block_r = block_size(c_red, _BLOCK_R[2:])
        fields += [c.block, c.tail, block_r]
    return BlockKxkConfig(block_m, tiles.BLOCK_M_TAIL, *fields, 8, 3)


def _padded(size: int, block: int) -> int:
    return -(-size // block) * block


def _columns(cfg: BlockKxkConfig, c2: int, c3: int, c4: int) -> tuple[tiles.Columns, ...]:
    """The column blocks of b2, b3 and b4."""
    return (
        tiles.columns(c2, cfg.block_n2, cfg.block_n2_tail),
        tiles.columns(c3, cfg.block_n3, cfg.block_n3_tail),
        tiles.columns(c4, cfg.block_n4, cfg.block_n4_tail),
    )


def tuning_candidates(
    dtype: torch.dtype, *, c2r: int, c2: int, c3r: int, c3: int, k3: int, c4r: int, c4: int
) -> list[BlockKxkConfig]:
    """The configs autotuning times on a GPU (fused_inception/triton/autotune.py), the pick
    first: 64-row tiles (their own column blocks), half-width column blocks for b2, b3 or b4,
    4 warps, 2 or 4 pipeline stages. fp32: the pick only."""
    shape = {"c2r": c2r, "c2": c2, "c3r": c3r, "c3": c3, "k3": k3, "c4r": c4r, "c4": c4}
    pick = pick_config(dtype, **shape)
    if dtype == torch.float32:
        return [pick]
    other = pick_config(dtype, **shape, block_m=64)
    cols = _columns(pick, c2, c3, c4)
    narrower = []
    for i, n in enumerate((c2, c3, c4)):
        if cols[i].block > 32:
            halved = list(cols)
            halved[i] = tiles.fitting_columns(n, cols[i].block // 2, pick.block_m)
            narrower.append(_config(pick.block_m, tuple(halved), (c2r, c3r, c4r)))
    return common.tuning_neighbours(pick, other, narrower)


def _grid(cfg: BlockKxkConfig, m: int, c2: int, c3: int, c4: int) -> tuple[int, int]:
    """(row tiles, column blocks of b2 + those of b3 + those of b4)."""
    full, tail = tiles.row_programs(m, cfg.block_m, cfg.block_m_tail)
    return full + tail, sum(c.programs for c in _columns(cfg, c2, c3, c4))


def _check_config(
    cfg: BlockKxkConfig, m: int, width: int, c_rows: int, c2: int, c3: int, c4: int,
    stride_om: int,
) -> None:  # fmt: skip
    """The launcher's checks of one config for this shape (ValueError if it cannot launch)."""
    common.check_int32_tile("block_kxk", cfg.block_m, c_rows, stride_om, width=2 * width + 2)
    common.check_grid("block_kxk", _grid(cfg, m, c2, c3, c4))


def block_kxk(
    r: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
    w4: Tensor,
    b4: Tensor,
    out: Tensor,
    off2: int,
    off3: int,
    off4: int,
) -> Tensor:
    """b2 -> out[:, off2:off2 + c2], b3 -> out[:, off3:off3 + c3], b4 -> out[:, off4:off4 + c4];
    one launch.

    r:   [N*H*W, c2r + c3r + C_in]  the reduced tensors r2 | r3 and the pooled x as NHWC rows
                             (block_1x1's scratch)
    w2:  [9, c2r, c2]        r's dtype, contiguous; b2 [c2] float32
    w3:  [K*K, c3r, c3]      r's dtype, contiguous, K = 3 or 5; b3 [c3] float32
    w4:  [C_in, c4]          r's dtype, contiguous; b4 [c4] float32
    out: [N, C_tot, H, W]    r's dtype, NHWC rows (channels contiguous, one pixel stride); only
                             the three slices written
    Returns out. Errors as fused_inception.checks says, before anything is written.
    """
    op = "block_kxk"
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise ValueError(f"{op}: out must be a 4-D tensor [N, C_tot, H, W]")
    n, c_tot, h, w = out.shape
    operands = [
        common.Operand("w2", w2, ("T2", "C2r", "C2")),
        common.Operand("b2", b2, ("C2",), True),
        common.Operand("w3", w3, ("T3", "C3r", "C3")),
        common.Operand("b3", b3, ("C3",), True),
        common.Operand("w4", w4, ("C4r", "C4")),
        common.Operand("b4", b4, ("C4",), True),
    ]
    sizes = common.check_scratch_launch(op, r, out, operands)
    c2, c3, c4 = sizes["C2"], sizes["C3"], sizes["C4"]
    c2r, c3r, c4r = sizes["C2r"], sizes["C3r"], sizes["C4r"]
    if sizes["T2"] != 9 or sizes["T3"] not in (9, 25) or r.shape[1] != c2r + c3r + c4r:
        raise ValueError(
            f"{op}: w2 must be [9, c2r, C2], w3 [9 or 25, c3r, C3] and w4 [C_in, C4] with "
            f"c2r + c3r + C_in = r's {r.shape[1]} columns, got {tuple(w2.shape)}, "
            f"{tuple(w3.shape)} and {tuple(w4.shape)}"
        )
    k3 = 3 if sizes["T3"] == 9 else 5
    slices = {
        "off2": (common.check_slice(op, "off2", off2, c2, c_tot), c2),
        "off3": (common.check_slice(op, "off3", off3, c3, c_tot), c3),
        "off4": (common.check_slice(op, "off4", off4, c4, c_tot), c4),
    }
    names = list(slices)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            (oa, ca), (ob, cb) = slices[a], slices[b]
            if oa < ob + cb and ob < oa + ca:
                raise ValueError(f"{op}: the slices [{oa}, +{ca}) and [{ob}, +{cb}) overlap")
    (off2, _), (off3, _), (off4, _) = slices.values()
    m = n * h * w
    if m == 0:
        return out
    shape = {"c2r": c2r, "c2": c2, "c3r": c3r, "c3": c3, "k3": k3, "c4r": c4r, "c4": c4}
    pick = common.launch_config(pick_config(r.dtype, **shape), INTERPRETER_OVERRIDES)
    stride_om = common.pixel_stride(op, "out", out)

    def check(cfg: BlockKxkConfig) -> None:
        _check_config(cfg, m, w, r.shape[1], c2, c3, c4, stride_om)

    check(pick)  # raises for the caller; a candidate that fails it is left out

    def run(cfg: BlockKxkConfig) -> None:
        cols2, cols3, cols4 = _columns(cfg, c2, c3, c4)
        tiles2 = cols2.programs
        args = (
            r, w2, b2, w3, b3, w4, b4, out,
            m, h, w, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4,
            cols2.full, tiles2, cols3.full, tiles2 + cols3.programs, cols4.full,
        )  # fmt: skip
        macs = m * (9 * c2r * c2 + k3 * k3 * c3r * c3 + c4r * c4)
        grid = _grid(cfg, m, c2, c3, c4)
        full_m = m // cfg.block_m
        rows = common.RowTiles(
            m, cfg.block_m, cfg.block_m_tail, n, lambda pid: "full" if pid[0] < full_m else "tail"
        )
        common.launch_with(
            block_kxk_kernel, grid, args, cfg, r.dtype, op=op, useful_macs=macs, rows=rows
        )

    def candidates() -> list[BlockKxkConfig]:
        found = tuning_candidates(r.dtype, **shape)
        return [common.launch_config(c, INTERPRETER_OVERRIDES) for c in found]

    key = (m, h, w, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4)
    cfg = autotune.choose(
        "block_kxk", key, r.device, common.dtype_name(r.dtype), pick, candidates, check, run
    )
    run(cfg)
    return out


def aot_builds() -> list[KernelBuild]:
    """Every build block_kxk can launch for GoogLeNet's nine blocks on a GPU (any batch)."""
    from ..configs import GOOGLENET_BLOCKS

    configs = {
        (dtype, pick_config(dtype, c2r=c.ch3x3red, c2=c.ch3x3, c3r=c.ch5x5red, c3=c.ch5x5,
                            k3=k3, c4r=c.in_channels, c4=c.pool_proj))
        for dtype in common.TRITON_DTYPES
        for c in GOOGLENET_BLOCKS.values()
        for k3 in (3, 5)
    }  # fmt: skip
    return [
        common.kernel_build(
            "block_kxk",
            block_kxk_kernel,
            dtype,
            cfg,
            {},
            {
                "DOT_IN_FP32": False,
                "BLOCK_M": cfg.block_m,
                "BLOCK_M_TAIL": cfg.block_m_tail,
                "BLOCK_N2": cfg.block_n2,
                "BLOCK_N2_TAIL": cfg.block_n2_tail,
                "BLOCK_R2": cfg.block_r2,
                "BLOCK_N3": cfg.block_n3,
                "BLOCK_N3_TAIL": cfg.block_n3_tail,
                "BLOCK_R3": cfg.block_r3,
                "BLOCK_N4": cfg.block_n4,
                "BLOCK_N4_TAIL": cfg.block_n4_tail,
                "BLOCK_R4": cfg.block_r4,
            },
            fp32_pointers=("b2_ptr", "b3_ptr", "b4_ptr"),
            divisible=(
                "r_ptr",
                "w2_ptr",
                "b2_ptr",
                "w3_ptr",
                "b3_ptr",
                "w4_ptr",
                "b4_ptr",
                "out_ptr",
                "c2r",
                "c2",
                "c3",
                "c4r",
                "c4",
                "stride_om",
                "off2",
                "off3",
                "off4",
            ),
        )  # fmt: skip
        for dtype, cfg in sorted(configs, key=lambda dc: (str(dc[0]), dc[1]))
    ]
