"""1x1 convolution as a GEMM + bias + ReLU, stored into a channel slice of the block output.

Branch 1 (b1) and branch 4 (b4) of the Inception block:

    out[n, c_off + j, h, w] = relu(bias[j] + sum_c A[n, c, h, w] * W[c, j]),  j in [0, C_out)

with A = x (b1), or A = maxpool3x3(x, stride 1, padding 1) computed while the A tile is loaded
(b4, POOL=True; nothing pooled is ever stored). In NHWC terms this is the GEMM
[N*H*W, Cin] x [Cin, C_out] whose result is the column block [c_off, c_off + C_out) of the
output rows [N*H*W, Ctot]. The kernel only sees base pointers and element strides, so NCHW
tensors and any channel slice of any output work as well; any C_out and c_off are allowed, so
the same kernel can later serve the horizontally fused 1x1 (b1 | r2 | r3 from one read of x).

Block sizes on a GPU come from `pick_config` (a rule on the GEMM shape, no autotuning). For
GoogLeNet's nine blocks at batch 32 it picks these tiles (BLOCK_M x BLOCK_N x BLOCK_K, every
dtype; warps and stages per tile and dtype in GPU_CONFIGS; a test keeps this table true):

| block | b1 (x -> #1x1) | b4 (pool -> pool proj) |
|-------|----------------|------------------------|
| 3a    | 128x64x32      | 128x32x32              |
| 3b    | 128x128x32     | 128x64x32              |
| 4a    | 128x64x32      | 128x64x32              |
| 4b    | 128x64x32      | 128x64x32              |
| 4c    | 128x128x32     | 128x64x32              |
| 4d    | 128x128x32     | 128x64x32              |
| 4e    | 128x128x32     | 128x64x32              |
| 5a    | 64x128x32      | 64x128x32              |
| 5b    | 64x128x32      | 64x128x32              |

Under TRITON_INTERPRET=1 one large tile (INTERPRETER_OVERRIDES) runs every shape. The naming
scheme shared with chain_1x1_kxk.py is described in fused_inception/triton/common.py.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..packing import prepare_conv1x1  # noqa: F401  (re-exported)
from . import KernelBuild, common


@triton.jit
def conv1x1_slice_kernel(
    x_ptr, w_ptr, bias_ptr, out_ptr,
    c_in, c_out, height, width, m,
    stride_xn, stride_xc, stride_xh, stride_xw, stride_on, stride_oc, stride_oh, stride_ow, c_off,
    POOL: tl.constexpr, DOT_IN_FP32: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):  # fmt: skip
    """out[pixel, c_off + j] = relu(bias[j] + sum_c A[pixel, c] * w_kn[c, j]) for one tile.

    Grid: (cdiv(m, BLOCK_M), cdiv(c_out, BLOCK_N)); m = N*H*W pixels in (n, h, w) order.
    Tile: BLOCK_M pixels x BLOCK_N output channels, K loop over c_in in BLOCK_K steps with an
    fp32 accumulator (tl.dot: tensor cores for fp16/bf16, exact fp32 FMAs for fp32).
    Reads:  x [N, C_in, H, W] by strides (the BLOCK_M x BLOCK_K A tile; with POOL its 3x3
            neighbourhood, out-of-image neighbours masked to -inf, i.e. ignored),
            w_kn [C_in, C_out] contiguous, bias [C_out] fp32.
    Writes: out[:, c_off : c_off + C_out] of the block output [N, Ctot, H, W] by strides, in
            the input dtype; nothing else.
    Why: a 1x1 conv in NHWC is a plain GEMM, so the epilogue can store straight into the
    concatenated output; fusing the stride-1 max-pool into the A load saves writing and
    re-reading the pooled tensor (9 loads per A tile, the 8 shifted ones mostly L1/L2 hits;
    each BLOCK_N column block recomputes its pool, hence wide BLOCK_N for the pool branch).
    DOT_IN_FP32 casts the operands to fp32 before tl.dot (common.dot_in_fp32).
    """
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)

    # 64-bit scalar bases per program (offsets past 2**31 elements in a large batch), 32-bit
    # offsets inside the tile: 64-bit offsets per element would hold two registers each and
    # spill. The launcher checks that every in-tile offset fits in int32 (_check_int32_tile).
    hw = height * width
    m0 = pid_m * BLOCK_M
    img0 = m0 // hw
    offs_m = m0 + tl.arange(0, BLOCK_M)  # pixel rows (n, h, w); m < 2**31
    mask_m = offs_m < m
    img = offs_m // hw
    h = (offs_m % hw) // width
    w = offs_m % width
    x_tile = x_ptr + img0.to(tl.int64) * stride_xn
    x_row = (img - img0) * stride_xn + h * stride_xh + w * stride_xw
    offs_k = tl.arange(0, BLOCK_K)
    n0 = pid_n * BLOCK_N
    offs_n = tl.arange(0, BLOCK_N)  # output channels n0 + offs_n of this branch
    mask_n = n0 + offs_n < c_out

    x_k = x_tile  # advanced by BLOCK_K channels per step, in 64-bit pointer arithmetic
    w_k = w_ptr + n0
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, c_in, BLOCK_K):
        mask_k = k0 + offs_k < c_in
        mask_mk = mask_m[:, None] & mask_k[None, :]
        x_col = offs_k * stride_xc
        # Masked (pixel, channel) entries load as 0 so that they add nothing to the dot.
        a = tl.load(x_k + x_row[:, None] + x_col[None, :], mask=mask_mk, other=0.0)
        if POOL:
            # Max over the 3x3 neighbourhood. The centre (a) is always inside the image, so
            # out-of-image neighbours load as -inf and never win: padding is ignored, and an
            # all-negative neighbourhood stays negative. Masked entries stay max(0, -inf) = 0.
            for dh in tl.static_range(-1, 2):
                for dw in tl.static_range(-1, 2):
                    if dh != 0 or dw != 0:
                        inside = (
                            (h + dh >= 0) & (h + dh < height) & (w + dw >= 0) & (w + dw < width)
                        )
                        tap_row = x_row + (dh * stride_xh + dw * stride_xw)
                        tap = tl.load(
                            x_k + tap_row[:, None] + x_col[None, :],
                            mask=mask_mk & inside[:, None],
                            other=float("-inf"),
                        )
                        a = tl.maximum(a, tap, propagate_nan=tl.PropagateNan.ALL)
            a = a.to(x_ptr.dtype.element_ty)  # tl.maximum computes bf16 in fp32 (exact)
        b = tl.load(
            w_k + offs_k[:, None] * c_out + offs_n[None, :],
            mask=mask_k[:, None] & mask_n[None, :],
            other=0.0,
        )
        acc = common.dot_acc(a, b, acc, DOT_IN_FP32)
        x_k += BLOCK_K * stride_xc
        w_k += BLOCK_K * c_out

    bias = tl.load(bias_ptr + n0 + offs_n, mask=mask_n, other=0.0)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    # Output offsets only now: computed before the loop they would hold registers throughout.
    out_tile = out_ptr + (img0.to(tl.int64) * stride_on + (c_off + n0).to(tl.int64) * stride_oc)
    out_row = (img - img0) * stride_on + h * stride_oh + w * stride_ow
    tl.store(
        out_tile + out_row[:, None] + (offs_n * stride_oc)[None, :],
        y.to(out_ptr.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


class Conv1x1Config(NamedTuple):
    """Tile sizes and launch options of one build of conv1x1_slice_kernel."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int


# The GPU configs pick_config chooses from (aot_builds compiles each), by (POOL, fp32). Warps
# and stages are the ones that compile without spills for sm_80 and sm_90 in the JIT's NHWC
# specialisation (tests/test_triton_conv1x1_slice.py): fp32 runs the dot on FMAs (more
# registers: 8 warps); the pool variant keeps nine A tiles in flight (8 warps, and 2 stages at
# most, 1 for fp32 and BLOCK_N = 32: more stages spill or exceed sm_80's 163 KB of shared).
_TILES = ((128, 128), (128, 64), (128, 32), (64, 128), (64, 64), (64, 32))
_POOL_TILES = _TILES[1:]  # a 128x128 pool tile spills
GPU_CONFIGS: dict[tuple[bool, bool], tuple[Conv1x1Config, ...]] = {
    (False, False): tuple(Conv1x1Config(m, n, 32, 8 if m * n > 8192 else 4, 3) for m, n in _TILES),
    (True, False): tuple(Conv1x1Config(m, n, 32, 8, 1 if n == 32 else 2) for m, n in _POOL_TILES),
    (False, True): tuple(Conv1x1Config(m, n, 32, 8, 3) for m, n in _TILES),
    (True, True): tuple(Conv1x1Config(m, n, 32, 8, 1) for m, n in _POOL_TILES),
}
# Interpreter cost is per program x loop iteration: one large tile for every shape.
INTERPRETER_OVERRIDES = {
    "block_m": 128,
    "block_n": 128,
    "block_k": 32,
    "num_warps": 4,
    "num_stages": 1,
}

# Below this many pixel rows, 64-row tiles (more programs for the SMs; 7x7 blocks).
_LARGE_M = 4096
# Largest BLOCK_N whose padding wastes at most this share of C_out.
_MAX_N_WASTE = 0.25


def pick_config(dtype: torch.dtype, c_out: int, *, m: int, pool: bool) -> Conv1x1Config:
    """The GPU config for the GEMM [m, C_in] x [C_in, c_out] (tile by shape, warps by dtype)."""
    block_m = 128 if m >= _LARGE_M else 64
    block_n = 32
    for cand in (128, 64):
        if triton.cdiv(c_out, cand) * cand - c_out <= _MAX_N_WASTE * c_out:
            block_n = cand
            break
    if pool and block_m == 128:
        block_n = min(block_n, 64)
    for cfg in GPU_CONFIGS[pool, dtype == torch.float32]:
        if (cfg.block_m, cfg.block_n) == (block_m, block_n):
            return cfg
    raise AssertionError(f"no GPU config for {block_m}x{block_n} (pool={pool})")


def _check_int32_tile(op: str, t: Tensor, block_m: int, block_c: int) -> None:
    """The kernel's in-tile offsets are int32: the span of one tile of t must fit."""
    n, _, h, w = t.shape
    s_n, s_c, s_h, s_w = (abs(s) for s in t.stride())
    span = ((block_m - 1) // (h * w) + 1) * s_n + h * s_h + w * s_w + block_c * s_c
    if span >= 2**31:
        raise ValueError(
            f"{op}: a {block_m}-pixel tile of a tensor with shape {tuple(t.shape)} and strides "
            f"{t.stride()} spans {span} elements, more than the kernel's int32 tile offsets"
        )


def conv1x1_slice(
    x: Tensor, w_packed: Tensor, bias: Tensor, out: Tensor, c_off: int, pool: bool = False
) -> Tensor:
    """out[:, c_off : c_off + C_out] = relu(conv1x1(maxpool3x3(x) if pool else x) + bias).

    x:         [N, C_in, H, W]     fp32/fp16/bf16, any strides (channels_last typical)
    w_packed:  [C_in, C_out]       x's dtype, contiguous (from prepare_conv1x1)
    bias:      [C_out]             float32, contiguous
    out:       [N, Ctot, H, W]     x's dtype, any strides; only channels [c_off, c_off + C_out)
                                   are written; must not overlap x, w_packed or bias
    pool:      apply max_pool2d(kernel 3, stride 1, padding 1) to x first (branch 4)
    Returns out. Errors as fused_inception.checks says, before anything is written.
    """
    op = "conv1x1_slice"
    operands = [
        common.Operand("w_packed", w_packed, ("C_in", "C_out")),
        common.Operand("bias", bias, ("C_out",), True),
    ]
    sizes, c_off = common.check_launch_args(op, x, out, c_off, operands)
    n, c_in, h, w = x.shape
    c_out, m = sizes["C_out"], n * h * w
    if m == 0 or c_out == 0:
        return out
    if m >= 2**31:
        raise ValueError(f"{op}: N*H*W = {m} pixels exceeds the kernel's int32 row index")

    cfg = common.launch_config(pick_config(x.dtype, c_out, m=m, pool=pool), INTERPRETER_OVERRIDES)
    _check_int32_tile(op, x, cfg.block_m, cfg.block_k)
    _check_int32_tile(op, out, cfg.block_m, cfg.block_n)
    if w_packed.numel() >= 2**31:
        raise ValueError(f"{op}: w_packed has {w_packed.numel()} elements, more than int32 offsets")
    grid = (triton.cdiv(m, cfg.block_m), triton.cdiv(c_out, cfg.block_n))
    common.check_grid(op, grid)
    common.launch(
        conv1x1_slice_kernel,
        grid,
        (
            x, w_packed, bias, out,
            c_in, c_out, h, w, m,
            *x.stride(), *out.stride(), c_off,
        ),
        dict(
            POOL=pool, DOT_IN_FP32=common.dot_in_fp32(x.dtype),
            BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k,
        ),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        op=op,
        useful_macs=m * c_in * c_out,
    )  # fmt: skip
    return out


# Integer and pointer arguments that the JIT specialises as multiples of 16 for GoogLeNet's
# blocks in channels_last (16-byte aligned tensors, channel counts and strides multiples of 16).
AOT_DIVISIBLE_ARGS = (
    "x_ptr", "w_ptr", "bias_ptr", "out_ptr", "c_in", "c_out", "c_off",
    "stride_xn", "stride_xh", "stride_xw", "stride_on", "stride_oh", "stride_ow",
)  # fmt: skip


def aot_builds() -> list[KernelBuild]:
    """Every build conv1x1_slice launches on a GPU: dtype x POOL x GPU_CONFIGS[POOL, fp32].

    The build is the JIT's specialisation for channels_last x and out: unit channel strides
    (stride_xc = stride_oc = 1 as constexprs) and the 16-divisibility of AOT_DIVISIBLE_ARGS.
    Without it the loads are not vectorised and the 128-row tiles spill.
    """
    return [
        common.kernel_build(
            "conv1x1_slice",
            conv1x1_slice_kernel,
            dtype,
            cfg,
            {"POOL": pool},
            {
                "stride_xc": 1,
                "stride_oc": 1,
                "DOT_IN_FP32": False,
                "BLOCK_M": cfg.block_m,
                "BLOCK_N": cfg.block_n,
                "BLOCK_K": cfg.block_k,
            },
            fp32_pointers=("bias_ptr",),
            divisible=AOT_DIVISIBLE_ARGS,
        )  # fmt: skip
        for dtype in common.TRITON_DTYPES
        for pool in (False, True)
        for cfg in GPU_CONFIGS[pool, dtype == torch.float32]
    ]
