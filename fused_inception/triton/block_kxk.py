"""The block's kxk convolutions, b2 (3x3 over r2) and b3 (KxK over r3), in one launch.

    b2 = relu(conv3x3(r2; W2, pad 1) + B2),   b3 = relu(convKxK(r3; W3, pad K//2) + B3)

r2 | r3 are the scratch rows [M = N*H*W, c2r + c3r] that block_1x1.py wrote. Each program is
an implicit GEMM over one BLOCK_M-pixel tile and BLOCK_N output channels of one branch: for
every tap (dy, dx) and chunk of reduced channels it loads the A operand straight from the rows
of the pixels (h + dy, w + dx), masked to 0 outside the image (the kxk convolution's zero
padding applies to r), and adds its product with the tap's [c_red, c_out] weights. Taps are
taken by address, so no reduced value is recomputed and nothing is shuffled between lanes;
the 8 (or 24) shifted loads of a tile are mostly L1/L2 hits of its neighbours' rows.

Packed weights (`fused_inception.packing.prepare_block`): w2 [9, c2r, c2] and w3 [K*K, c3r,
c3] (one [c_red, c_out] GEMM B operand per tap, row-major taps) in the compute dtype, biases
float32.
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
def _branch_taps(
    r_tile, r_row, r_col0, c_r, w_ptr, c_out, n0, kernel, h, w, height, width, mask_m, c_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """The fp32 accumulator [BLOCK_M, BLOCK_N] of one branch's kxk convolution over r."""
    pad = kernel // 2
    cols = n0 + tl.arange(0, BLOCK_N)
    mask_n = cols < c_out
    offs_r = tl.arange(0, BLOCK_R)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
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
            b = tl.load(
                w_ptr + (tap * c_r + c)[:, None] * c_out + cols[None, :],
                mask=mask_c[:, None] & mask_n[None, :],
                other=0.0,
            )
            acc = common.dot_acc(a, b, acc, DOT_IN_FP32)
    return acc


@triton.jit
def _branch(
    r_tile, r_row, r_col0, c_r, w_ptr, bias_ptr, c_out, n0, kernel, out_tile, out_row, c_off,
    h, w, height, width, mask_m, c_rows,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr,
    DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """out[:, c_off + n0 + j] = relu(kxk(r)[:, n0 + j] + bias[n0 + j]) for one tile.

    Its own function so that the two branches of block_kxk_kernel's `if` share no variable
    (Triton requires a variable set in both arms of an `if` to have one type there).
    """
    acc = _branch_taps(
        r_tile, r_row, r_col0, c_r, w_ptr, c_out, n0, kernel, h, w, height, width, mask_m,
        c_rows, BLOCK_M, BLOCK_N, BLOCK_R, DOT_IN_FP32,
    )  # fmt: skip
    cols = n0 + tl.arange(0, BLOCK_N)
    common.bias_relu_store(acc, bias_ptr, cols, cols < c_out, out_tile, out_row, c_off, mask_m)


# m (N*H*W) only bounds the masks: not specializing it on divisibility by 16 keeps one build
# per configuration for every batch size (fused_inception/report/specialization.py).
@triton.jit(do_not_specialize=["m"])
def block_kxk_kernel(
    r_ptr, w2_ptr, b2_ptr, w3_ptr, b3_ptr, out_ptr,
    m, height, width, c2r, c3r, c2, c3, k3, stride_om, off2, off3, tiles2,
    BLOCK_M: tl.constexpr, BLOCK_N2: tl.constexpr, BLOCK_R2: tl.constexpr,
    BLOCK_N3: tl.constexpr, BLOCK_R3: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """One BLOCK_M-pixel tile x one block of output channels of b2 (pid_n < tiles2) or b3.

    Grid:   (cdiv(m, BLOCK_M), tiles2 + tiles3), pid_n fastest (a tile's programs share its
            r rows in L2).
    Reads:  r [m, c2r + c3r] (r2 in columns [0, c2r), r3 after), w2 [9, c2r, c2],
            w3 [k3*k3, c3r, c3], b2, b3 float32.
    Writes: out[:, off2:off2 + c2] (b2) or out[:, off3:off3 + c3] (b3); out is the block
            output as NHWC rows (stride_om elements apart).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    m0 = pid_m * BLOCK_M
    offs_m = tl.arange(0, BLOCK_M)
    mask_m = m0 + offs_m < m
    hw = height * width
    h = ((m0 + offs_m) % hw) // width
    w = (m0 + offs_m) % width
    c_rows = c2r + c3r
    r_tile = r_ptr + m0.to(tl.int64) * c_rows
    r_row = offs_m * c_rows
    out_tile = out_ptr + m0.to(tl.int64) * stride_om
    out_row = offs_m * stride_om
    if pid_n < tiles2:
        _branch(
            r_tile, r_row, 0, c2r, w2_ptr, b2_ptr, c2, pid_n * BLOCK_N2, 3, out_tile, out_row,
            off2, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N2, BLOCK_R2, DOT_IN_FP32,
        )  # fmt: skip
    else:
        _branch(
            r_tile, r_row, c2r, c3r, w3_ptr, b3_ptr, c3, (pid_n - tiles2) * BLOCK_N3, k3,
            out_tile, out_row, off3, h, w, height, width, mask_m, c_rows, BLOCK_M, BLOCK_N3,
            BLOCK_R3, DOT_IN_FP32,
        )  # fmt: skip


class BlockKxkConfig(NamedTuple):
    """Tile sizes and launch options of one build of block_kxk_kernel."""

    block_m: int
    block_n2: int
    block_r2: int
    block_n3: int
    block_r3: int
    num_warps: int
    num_stages: int


# Reduction chunks: the least padding (they do not change the bytes per MAC). Pixel rows and
# output blocks: fused_inception/triton/tiles.py.
_BLOCK_R = (64, 32, 16)
# Under the interpreter each program x loop iteration costs ~10 ms: larger channel chunks.
INTERPRETER_OVERRIDES = {"block_r2": 64, "block_r3": 64}


def pick_config(
    dtype: torch.dtype,
    *,
    m: int,
    c2r: int,
    c2: int,
    c3r: int,
    c3: int,
    k3: int,
    block_m: int | None = None,
) -> BlockKxkConfig:
    """The GPU config of the kxk launch over m pixel rows, by shape and dtype (block_m: the
    pixel rows per tile, by default tiles.block_m(m)).

    16-bit: pixel rows and output blocks by the roofline model of tiles.py (both branches'
    implicit GEMMs, K = taps x reduced channels), reduction chunks by least padding, 8 warps,
    3 stages; fp32 (FMAs, operands in registers): 64 x 64 tiles, 16-channel chunks.
    """
    if dtype == torch.float32:
        return BlockKxkConfig(64, 64, 16, 64, 16, 8, 2)
    block_r2, block_r3 = (block_size(c, _BLOCK_R) for c in (c2r, c3r))
    block_m = tiles.block_m(m) if block_m is None else block_m
    block_n2, block_n3 = tiles.widths(
        block_m,
        [
            tiles.Gemm(c2, 9 * _padded(c2r, block_r2), 1),
            tiles.Gemm(c3, k3 * k3 * _padded(c3r, block_r3), 1),
        ],
    )
    # A 128 x 128 accumulator with 64-channel chunks of A spills on sm_80 (255 registers).
    if block_n2 == 128 and block_r2 == 64:
        block_r2 = block_size(c2r, _BLOCK_R[1:])
    if block_n3 == 128 and block_r3 == 64:
        block_r3 = block_size(c3r, _BLOCK_R[1:])
    return BlockKxkConfig(block_m, block_n2, block_r2, block_n3, block_r3, 8, 3)


def _padded(size: int, block: int) -> int:
    return -(-size // block) * block


def tuning_candidates(
    dtype: torch.dtype, *, m: int, c2r: int, c2: int, c3r: int, c3: int, k3: int
) -> list[BlockKxkConfig]:
    """The configs autotuning times on a GPU (fused_inception/triton/autotune.py), the pick
    first: the other pixel-row tile (its own output blocks), half-width output blocks for b2
    or for b3, 4 warps, 2 or 4 pipeline stages. fp32: the pick only."""
    shape = {"m": m, "c2r": c2r, "c2": c2, "c3r": c3r, "c3": c3, "k3": k3}
    pick = pick_config(dtype, **shape)
    if dtype == torch.float32:
        return [pick]
    other = pick_config(dtype, **shape, block_m=64 if pick.block_m == 128 else 128)
    return common.tuning_neighbours(pick, other, ("block_n2", "block_n3"))


def _grid(cfg: BlockKxkConfig, m: int, c2: int, c3: int) -> tuple[int, int]:
    """(pixel tiles, column tiles of b2 + those of b3)."""
    tiles2 = triton.cdiv(c2, cfg.block_n2)
    return triton.cdiv(m, cfg.block_m), tiles2 + triton.cdiv(c3, cfg.block_n3)


def _check_config(
    cfg: BlockKxkConfig, m: int, width: int, c_red: int, c2: int, c3: int, stride_om: int
) -> None:
    """The launcher's checks of one config for this shape (ValueError if it cannot launch)."""
    common.check_int32_tile("block_kxk", cfg.block_m, c_red, stride_om, width=2 * width + 2)
    common.check_grid("block_kxk", _grid(cfg, m, c2, c3))


def block_kxk(
    r: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3: Tensor,
    b3: Tensor,
    out: Tensor,
    c2r: int,
    off2: int,
    off3: int,
) -> Tensor:
    """b2 -> out[:, off2:off2 + c2], b3 -> out[:, off3:off3 + c3]; one launch.

    r:   [N*H*W, c2r + c3r]  the reduced tensors r2 | r3 as NHWC rows (block_1x1's scratch)
    w2:  [9, c2r, c2]        r's dtype, contiguous; b2 [c2] float32
    w3:  [K*K, c3r, c3]      r's dtype, contiguous, K = 3 or 5; b3 [c3] float32
    out: [N, C_tot, H, W]    r's dtype, NHWC rows (channels contiguous, one pixel stride); only
                             the two slices written
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
    ]
    sizes = common.check_scratch_launch(op, r, out, operands)
    c2, c3 = sizes["C2"], sizes["C3"]
    c2r = common.check_column_split(op, "c2r", c2r, r.shape[1])
    c3r = r.shape[1] - c2r
    if (sizes["T2"], sizes["C2r"], sizes["C3r"]) != (9, c2r, c3r) or sizes["T3"] not in (9, 25):
        raise ValueError(
            f"{op}: w2 must be [9, {c2r}, C2] and w3 [9 or 25, {c3r}, C3] for r's c2r = {c2r} "
            f"and c3r = {c3r} columns, got {tuple(w2.shape)} and {tuple(w3.shape)}"
        )
    k3 = 3 if sizes["T3"] == 9 else 5
    off2 = common.check_slice(op, "off2", off2, c2, c_tot)
    off3 = common.check_slice(op, "off3", off3, c3, c_tot)
    if off2 < off3 + c3 and off3 < off2 + c2:
        raise ValueError(f"{op}: the slices [{off2}, +{c2}) and [{off3}, +{c3}) overlap")
    m = n * h * w
    if m == 0:
        return out
    shape = {"m": m, "c2r": c2r, "c2": c2, "c3r": c3r, "c3": c3, "k3": k3}
    pick = common.launch_config(pick_config(r.dtype, **shape), INTERPRETER_OVERRIDES)
    stride_om = common.pixel_stride(op, "out", out)

    def check(cfg: BlockKxkConfig) -> None:
        _check_config(cfg, m, w, c2r + c3r, c2, c3, stride_om)

    check(pick)  # raises for the caller; a candidate that fails it is left out

    def run(cfg: BlockKxkConfig) -> None:
        tiles2 = triton.cdiv(c2, cfg.block_n2)
        args = (
            r,
            w2,
            b2,
            w3,
            b3,
            out,
            m,
            h,
            w,
            c2r,
            c3r,
            c2,
            c3,
            k3,
            stride_om,
            off2,
            off3,
            tiles2,
        )
        macs = m * (9 * c2r * c2 + k3 * k3 * c3r * c3)
        common.launch_with(
            block_kxk_kernel, _grid(cfg, m, c2, c3), args, cfg, r.dtype, op=op, useful_macs=macs
        )

    def candidates() -> list[BlockKxkConfig]:
        found = tuning_candidates(r.dtype, **shape)
        return [common.launch_config(c, INTERPRETER_OVERRIDES) for c in found]

    key = (m, h, w, c2r, c3r, c2, c3, k3, stride_om, off2, off3)
    cfg = autotune.choose(
        "block_kxk", key, r.device, common.dtype_name(r.dtype), pick, candidates, check, run
    )
    run(cfg)
    return out


def aot_builds() -> list[KernelBuild]:
    """Every build block_kxk can launch for GoogLeNet's nine blocks on a GPU (any batch)."""
    from ..configs import GOOGLENET_BLOCKS
    from .block_1x1 import AOT_ROWS

    configs = {
        (dtype, pick_config(dtype, m=m, c2r=c.ch3x3red, c2=c.ch3x3,
                            c3r=c.ch5x5red, c3=c.ch5x5, k3=k3))
        for dtype in common.TRITON_DTYPES
        for c in GOOGLENET_BLOCKS.values()
        for m in AOT_ROWS
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
                "BLOCK_N2": cfg.block_n2,
                "BLOCK_R2": cfg.block_r2,
                "BLOCK_N3": cfg.block_n3,
                "BLOCK_R3": cfg.block_r3,
            },
            fp32_pointers=("b2_ptr", "b3_ptr"),
            divisible=(
                "r_ptr",
                "w2_ptr",
                "b2_ptr",
                "w3_ptr",
                "b3_ptr",
                "out_ptr",
                "c2r",
                "c2",
                "c3",
                "stride_om",
                "off2",
                "off3",
            ),
        )  # fmt: skip
        for dtype, cfg in sorted(configs, key=lambda dc: (str(dc[0]), dc[1]))
    ]
