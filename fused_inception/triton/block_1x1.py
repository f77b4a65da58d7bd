"""The block's 1x1 convolutions, all of which read x: one GEMM over x and its max-pool.

    [b1 | r2 | r3] = relu(x @ [W1 | W2r | W3r] + [B1 | B2r | B3r])      (horizontal fusion)
    b4             = relu(maxpool3x3(x, stride 1, pad 1) @ W4 + B4)

In NHWC a 1x1 convolution is the GEMM [M = N*H*W, C_in] x [C_in, C_out], and a branch's
channel slice of the block output is a column block of the output rows [M, C_tot]. One launch
reads x once for all of them: programs of the first kind (pid_n < tiles_x) run the fused GEMM
over the columns of [W1 | W2r | W3r] and store b1 into out's channels [0, c1) and the reduced
tensors r2 | r3 into the scratch rows r [M, c2r + c3r] that block_kxk.py reads; programs of the
second kind take the 3x3/1 max-pool of each x tile as it is loaded (-inf padding) and store b4
into out's last c4 channels. The pooled tensor is never stored.

Why a scratch for r2 | r3 instead of recomputing them next to the kxk taps (version 1): every
reduced value is then computed exactly once, the kxk convolution reads its taps by address
(no register shuffles) from rows that stay in L2 between the two launches, and x is read by
one launch instead of four. docs/design.md section 4 has the numbers.

Packed weights (`fused_inception.packing.prepare_block`): w_x [C_in, c1 + c2r + c3r] and
w_pool [C_in, c4] in the compute dtype (GEMM B operands, K-major rows), biases float32.
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
    c1, c_red, n0,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Columns [n0, n0 + BLOCK_N) of relu(x @ w_x + b_x): b1's into out, the rest into r."""
    cols = n0 + tl.arange(0, BLOCK_N)
    mask_n = cols < n_x
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
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
    bias = tl.load(b_x_ptr + cols, mask=mask_n, other=0.0)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    y = y.to(out_tile.dtype.element_ty)
    # b1's columns into the output slice, the reductions' into the scratch rows.
    is_b1 = cols < c1
    tl.store(out_tile + out_row[:, None] + cols[None, :], y, mask=mask_m[:, None] & is_b1[None, :])
    r_tile = r_ptr + m0.to(tl.int64) * c_red
    tl.store(
        r_tile + (offs_m * c_red)[:, None] + (cols - c1)[None, :],
        y,
        mask=mask_m[:, None] & (mask_n & ~is_b1)[None, :],
    )


@triton.jit
def _pool_projection(
    x_tile, x_row, w_pool_ptr, b_pool_ptr, out_tile, out_row, m0, offs_m, mask_m, c_in,
    stride_xm, height, width, c_pool, pool_off, n0,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Columns [n0, n0 + BLOCK_N) of b4 = relu(maxpool3x3(x) @ w_pool + b_pool) into out."""
    cols = n0 + tl.arange(0, BLOCK_N)
    mask_n = cols < c_pool
    offs_k = tl.arange(0, BLOCK_K)
    hw = height * width
    h = ((m0 + offs_m) % hw) // width
    w = (m0 + offs_m) % width
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    # Not software-pipelined: nine A tiles per step in flight, times the stages, would not fit
    # in shared memory (and their registers spill); the eight shifted ones are L1/L2 hits.
    for k0 in tl.range(0, c_in, BLOCK_K, num_stages=1):
        k = k0 + offs_k
        mask_k = k < c_in
        mask_mk = mask_m[:, None] & mask_k[None, :]
        a = tl.load(x_tile + x_row[:, None] + k[None, :], mask=mask_mk, other=0.0)
        # Max over the 3x3 neighbourhood. The centre is inside the image, so neighbours outside
        # it load as -inf and never win (an all-negative window stays negative); masked (pixel,
        # channel) entries stay max(0, -inf) = 0 and add nothing to the dot.
        for dh in tl.static_range(-1, 2):
            for dw in tl.static_range(-1, 2):
                if dh != 0 or dw != 0:
                    inside = (h + dh >= 0) & (h + dh < height) & (w + dw >= 0) & (w + dw < width)
                    tap = tl.load(
                        x_tile + (x_row + (dh * width + dw) * stride_xm)[:, None] + k[None, :],
                        mask=mask_mk & inside[:, None],
                        other=float("-inf"),
                    )
                    a = tl.maximum(a, tap, propagate_nan=tl.PropagateNan.ALL)
        a = a.to(x_tile.dtype.element_ty)  # tl.maximum computes bf16 in fp32 (exact)
        b = tl.load(
            w_pool_ptr + k[:, None] * c_pool + cols[None, :],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        acc = common.dot_acc(a, b, acc, DOT_IN_FP32)
    common.bias_relu_store(acc, b_pool_ptr, cols, mask_n, out_tile, out_row, pool_off, mask_m)


# m (N*H*W) only bounds the masks: not specializing it on divisibility by 16 keeps one build
# per configuration for every batch size (fused_inception/report/specialization.py).
@triton.jit(do_not_specialize=["m"])
def block_1x1_kernel(
    x_ptr, w_x_ptr, b_x_ptr, w_pool_ptr, b_pool_ptr, out_ptr, r_ptr,
    m, c_in, height, width, n_x, c1, c_red, c_pool, stride_xm, stride_om, pool_off, tiles_x,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_N_POOL: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_K_POOL: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M-pixel tile of the fused 1x1 GEMM (pid_n < tiles_x) or of the pool branch.

    Grid:   (cdiv(m, BLOCK_M), tiles_x + tiles_pool); m = N*H*W pixels in (n, h, w) order;
            pid_n fastest, so the programs of one pixel tile run together and share x in L2.
    Reads:  x [m, c_in] (NHWC rows, stride_xm elements apart), w_x [c_in, n_x], b_x [n_x] fp32,
            w_pool [c_in, c_pool], b_pool [c_pool] fp32.
    Writes: out[:, 0:c1] (b1) and r[:, 0:c_red] (r2 | r3, c_red = n_x - c1) from the fused
            GEMM; out[:, pool_off:pool_off + c_pool] (b4) from the pool programs. out is the
            block output as NHWC rows (stride_om elements apart).
    Offsets: a 64-bit base per program (m0 rows in), 32-bit offsets inside the tile (the
    launcher checks they fit): 64-bit offsets per element would double their registers. The
    two kinds of program are separate functions: the arms of an `if` share no variable.
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    m0 = pid_m * BLOCK_M
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = m0 + offs_m < m
    x_tile = x_ptr + m0.to(tl.int64) * stride_xm
    x_row = offs_m * stride_xm
    out_tile = out_ptr + m0.to(tl.int64) * stride_om
    out_row = offs_m * stride_om
    if pid_n < tiles_x:
        _gemm_x(
            x_tile, x_row, w_x_ptr, b_x_ptr, out_tile, out_row, r_ptr, m0, offs_m, mask_m, c_in,
            n_x, c1, c_red, pid_n * BLOCK_N, BLOCK_M, BLOCK_N, BLOCK_K, DOT_IN_FP32,
        )  # fmt: skip
    else:
        _pool_projection(
            x_tile, x_row, w_pool_ptr, b_pool_ptr, out_tile, out_row, m0, offs_m, mask_m, c_in,
            stride_xm, height, width, c_pool, pool_off, (pid_n - tiles_x) * BLOCK_N_POOL, BLOCK_M,
            BLOCK_N_POOL, BLOCK_K_POOL, DOT_IN_FP32,
        )  # fmt: skip


class Block1x1Config(NamedTuple):
    """Tile sizes and launch options of one build of block_1x1_kernel."""

    block_m: int
    block_n: int
    block_n_pool: int
    block_k: int
    block_k_pool: int
    num_warps: int
    num_stages: int


# Channel steps (16-bit): the least-padding candidate. The pool programs take 16-channel
# steps: their nine shifted A tiles and the masks of the eight neighbours stay live across the
# step, and wider steps spill (measured by the compile report for sm_80 and sm_90). Pixel
# rows and output blocks: fused_inception/triton/tiles.py.
_BLOCK_K = (64, 32, 16)
_BLOCK_K_POOL = 16
# Under the interpreter each program x loop iteration costs ~10 ms: larger C_in chunks.
INTERPRETER_OVERRIDES = {"block_k": 128, "block_k_pool": 128}


def block_size(size: int, candidates: tuple[int, ...], slack: float = 0.0) -> int:
    """The largest candidate whose padding of `size` is within `slack` of the least padding."""
    least = min(triton.cdiv(size, b) * b for b in candidates)
    return max(b for b in candidates if triton.cdiv(size, b) * b <= least * (1 + slack))


def pick_config(
    dtype: torch.dtype, *, m: int, c_in: int, n_x: int, c_pool: int, block_m: int | None = None
) -> Block1x1Config:
    """The GPU config for the block's 1x1 GEMMs over m pixel rows, by shape and dtype
    (block_m: the pixel rows per tile, by default tiles.block_m(m)).

    16-bit: pixel rows and output blocks by the roofline model of tiles.py (the GEMM over x and
    the pool's, whose A tile is loaded nine times), channel steps by least padding, 8 warps,
    3 stages for the GEMM over x (the pool's loop is not pipelined); fp32 runs tl.dot on FMAs
    with its operands in registers: 64 x 64 tiles and 16-channel steps compile without spills.
    """
    if dtype == torch.float32:
        return Block1x1Config(64, 64, 64, 16, 16, 8, 2)
    block_k = block_size(c_in, _BLOCK_K)
    block_m = tiles.block_m(m) if block_m is None else block_m
    block_n, block_n_pool = tiles.widths(
        block_m,
        [tiles.Gemm(n_x, c_in, block_k), tiles.Gemm(c_pool, c_in, _BLOCK_K_POOL, reloads=9)],
    )
    if max(block_n, block_n_pool) == 128 and block_k == 64:
        # 128 x 128 accumulators with 64-channel steps spill on sm_80 (measured): 32 at most.
        block_k = block_size(c_in, _BLOCK_K[1:])
    return Block1x1Config(block_m, block_n, block_n_pool, block_k, _BLOCK_K_POOL, 8, 3)


def tuning_candidates(
    dtype: torch.dtype, *, m: int, c_in: int, n_x: int, c_pool: int
) -> list[Block1x1Config]:
    """The configs autotuning times on a GPU (fused_inception/triton/autotune.py), the pick
    first: the other pixel-row tile (its own output blocks), half-width output blocks for the
    GEMM over x or for the pool's, 4 warps, 2 or 4 pipeline stages. fp32: the pick only."""
    pick = pick_config(dtype, m=m, c_in=c_in, n_x=n_x, c_pool=c_pool)
    if dtype == torch.float32:
        return [pick]
    other_m = 64 if pick.block_m == 128 else 128
    other = pick_config(dtype, m=m, c_in=c_in, n_x=n_x, c_pool=c_pool, block_m=other_m)
    return common.tuning_neighbours(pick, other, ("block_n", "block_n_pool"))


def _grid(cfg: Block1x1Config, m: int, n_x: int, c_pool: int) -> tuple[int, int]:
    """(pixel tiles, column tiles of the GEMM over x + those of the pool's)."""
    tiles_x = triton.cdiv(n_x, cfg.block_n)
    return triton.cdiv(m, cfg.block_m), tiles_x + triton.cdiv(c_pool, cfg.block_n_pool)


def _check_config(
    cfg: Block1x1Config, m: int, width: int, n_x: int, c_red: int, c_pool: int,
    stride_xm: int, stride_om: int,
) -> None:  # fmt: skip
    """The launcher's checks of one config for this shape (ValueError if it cannot launch)."""
    common.check_int32_tile("block_1x1", cfg.block_m, stride_xm, stride_om, c_red, width=width)
    common.check_grid("block_1x1", _grid(cfg, m, n_x, c_pool))


def block_1x1(
    x: Tensor,
    w_x: Tensor,
    b_x: Tensor,
    w_pool: Tensor,
    b_pool: Tensor,
    out: Tensor,
    r: Tensor,
    c1: int,
    pool_off: int,
) -> Tensor:
    """b1 -> out[:, :c1], r2 | r3 -> r, b4 -> out[:, pool_off:]; one launch.

    x:      [N, C_in, H, W]   fp32/fp16/bf16, NHWC rows: channels contiguous, one pixel stride
                              (channels_last-contiguous, or a channel slice of such a tensor)
    w_x:    [C_in, n_x]       x's dtype, contiguous; columns [0, c1) give b1, the rest r2 | r3
    b_x:    [n_x]             float32
    w_pool: [C_in, c4]        x's dtype, contiguous
    b_pool: [c4]              float32
    out:    [N, C_tot, H, W]  x's dtype, NHWC rows like x; channels [0, c1) and
                              [pool_off, pool_off + c4) are written
    r:      [N*H*W, n_x - c1] x's dtype, contiguous scratch rows (the reduced tensors)
    Returns out. Errors as fused_inception.checks says, before anything is written.
    """
    op = "block_1x1"
    operands = [
        common.Operand("w_x", w_x, ("C_in", "N_x")),
        common.Operand("b_x", b_x, ("N_x",), True),
        common.Operand("w_pool", w_pool, ("C_in", "C_out")),
        common.Operand("b_pool", b_pool, ("C_out",), True),
    ]
    sizes, pool_off = common.check_launch_args(op, x, out, pool_off, operands)
    n, c_in, h, w = x.shape
    n_x, c_pool, m = sizes["N_x"], sizes["C_out"], n * h * w
    c1 = common.check_column_split(op, "c1", c1, min(n_x, pool_off))
    stride_xm, stride_om = common.pixel_stride(op, "x", x), common.pixel_stride(op, "out", out)
    common.check_scratch(op, r, (m, n_x - c1), x, out, operands)
    if m == 0:
        return out
    shape = {"m": m, "c_in": c_in, "n_x": n_x, "c_pool": c_pool}
    pick = common.launch_config(pick_config(x.dtype, **shape), INTERPRETER_OVERRIDES)

    def check(cfg: Block1x1Config) -> None:
        _check_config(cfg, m, w, n_x, n_x - c1, c_pool, stride_xm, stride_om)

    check(pick)  # raises for the caller; a candidate that fails it is left out

    def run(cfg: Block1x1Config) -> None:
        tiles_x = triton.cdiv(n_x, cfg.block_n)
        scalars = (m, c_in, h, w, n_x, c1, n_x - c1, c_pool, stride_xm, stride_om, pool_off)
        args = (x, w_x, b_x, w_pool, b_pool, out, r, *scalars, tiles_x)
        grid = _grid(cfg, m, n_x, c_pool)
        common.launch_with(
            block_1x1_kernel, grid, args, cfg, x.dtype, op=op, useful_macs=m * c_in * (n_x + c_pool)
        )

    def candidates() -> list[Block1x1Config]:
        found = tuning_candidates(x.dtype, **shape)
        return [common.launch_config(c, INTERPRETER_OVERRIDES) for c in found]

    key = (m, c_in, h, w, n_x, c1, c_pool, stride_xm, stride_om, pool_off)
    cfg = autotune.choose(
        "block_1x1", key, x.device, common.dtype_name(x.dtype), pick, candidates, check, run
    )
    run(cfg)
    return out


# Pixel-row counts that make pick_config take each of its two BLOCK_M (tiles.block_m): every
# configuration any batch size runs is among those the compile report checks.
AOT_ROWS = (1 << 20, 392)


def aot_builds() -> list[KernelBuild]:
    """Every build block_1x1 can launch for GoogLeNet's nine blocks on a GPU (any batch)."""
    from ..configs import GOOGLENET_BLOCKS

    configs = {
        (dtype, pick_config(dtype, m=m, c_in=c.in_channels,
                            n_x=c.ch1x1 + c.ch3x3red + c.ch5x5red, c_pool=c.pool_proj))
        for dtype in common.TRITON_DTYPES
        for c in GOOGLENET_BLOCKS.values()
        for m in AOT_ROWS
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
                "BLOCK_N": cfg.block_n,
                "BLOCK_N_POOL": cfg.block_n_pool,
                "BLOCK_K": cfg.block_k,
                "BLOCK_K_POOL": cfg.block_k_pool,
            },
            fp32_pointers=("b_x_ptr", "b_pool_ptr"),
            divisible=(
                "x_ptr",
                "w_x_ptr",
                "b_x_ptr",
                "w_pool_ptr",
                "b_pool_ptr",
                "out_ptr",
                "r_ptr",
                "c_in",
                "c1",
                "c_pool",
                "stride_xm",
                "stride_om",
                "pool_off",
            ),
        )  # fmt: skip
        for dtype, cfg in sorted(configs, key=lambda dc: (str(dc[0]), dc[1]))
    ]
