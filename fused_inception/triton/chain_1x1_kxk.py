"""The b2/b3 chain: 1x1 reduction -> ReLU -> KxK conv (zero padding on r) -> bias -> ReLU.

out[n, c_off + j, h, w] = relu(B[j] + sum_{dy, dx, c} r[n, c, h + dy - K//2, w + dx - K//2]
                                                       * W[j, c, dy, dx])
r = relu(conv1x1(x; Wr) + Br), and r is 0 outside the image (the KxK conv's zero padding
applies to r, so a recomputed halo pixel outside the image is 0, not relu(Br)).

The reduced tensor r never goes to memory: each program recomputes the r pixels its output tile
needs (the tile plus a K//2 halo) from x and keeps them in registers (see
`chain_1x1_kxk_kernel`). The naming scheme shared with conv1x1_slice.py is described in
fused_inception/triton/common.py.

Packed weights (`prepare_chain`, built once per weight change; compute dtype = x's):
    w_red  [C_in, C_red]         the 1x1 weight, K-major (a GEMM's B operand), compute dtype
    b_red  [C_red]               float32
    w_kxk  [K, K, C_red, C_out]  the KxK weight, one [C_red, C_out] GEMM operand per tap
    b_kxk  [C_out]               float32
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..packing import ChainPacked, prepare_chain  # noqa: F401  (re-exported)
from . import KernelBuild, common


@triton.jit
def chain_1x1_kxk_kernel(
    x_ptr, w_red_ptr, b_red_ptr, w_kxk_ptr, b_kxk_ptr, out_ptr,
    c_in, c_red, c_out, height, width, tiles_w, tiles_per_image,
    stride_xn, stride_xc, stride_xh, stride_xw, stride_on, stride_oc, stride_oh, stride_ow, c_off,
    K: tl.constexpr, TH: tl.constexpr, TW: tl.constexpr, HALO_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr, DOT_IN_FP32: tl.constexpr,
):  # fmt: skip
    """Fused 1x1 -> ReLU -> KxK -> bias -> ReLU for one TH x TW output tile, BLOCK_N channels.

    Grid:   (N * tiles_h * tiles_w, cdiv(C_out, BLOCK_N)); axis 0 = (image, tile row, tile col).
    Reads:  x [N, C_in, H, W] by strides (the tile plus its halo), w_red [C_in, C_red],
            b_red [C_red], w_kxk [K, K, C_red, C_out], b_kxk [C_out]
    Writes: out[n, c_off + j, h, w] for the tile's pixels and j in the program's BLOCK_N block.

    Per chunk of BLOCK_R reduced channels: the haloed reduced tile r_halo [HALO_ROWS, BLOCK_R]
    ((TH+K-1) x (TW+K-1) pixels, row-major, padded to a power of two) is one GEMM over C_in in
    BLOCK_K steps (fp32 accumulate), + b_red, ReLU, then 0 where the halo pixel is outside the
    image or is padding. It stays in registers: each of the K*K taps gathers its shifted rows
    (tl.gather along the pixel axis) into a [TH*TW, BLOCK_R] operand and adds its GEMM with
    the tap's [BLOCK_R, BLOCK_N] weight into the fp32 output accumulator. Chunking C_red bounds
    the registers for GoogLeNet's large reductions (up to 192) and costs nothing extra: each
    chunk's r is computed once. Triton gives the gather a warp-local layout (each warp holds all
    halo rows of its columns), so it lowers to warp shuffles; shared memory holds only the
    tl.dot operands. DOT_IN_FP32 (common.dot_in_fp32) feeds fp32 to tl.dot.
    """
    HALO_W: tl.constexpr = TW + K - 1
    HALO_PIXELS: tl.constexpr = (TH + K - 1) * HALO_W
    PAD: tl.constexpr = K // 2

    pid_tile = tl.program_id(0)
    pid_n = tl.program_id(1)
    image = (pid_tile // tiles_per_image).to(tl.int64)
    tile = pid_tile % tiles_per_image
    h0 = (tile // tiles_w) * TH
    w0 = (tile % tiles_w) * TW

    # Halo pixels (rows of r_halo) and whether each is inside the image.
    halo = tl.arange(0, HALO_ROWS)
    halo_h = h0 - PAD + halo // HALO_W
    halo_w = w0 - PAD + halo % HALO_W
    halo_in = (
        (halo < HALO_PIXELS) & (halo_h >= 0) & (halo_h < height) & (halo_w >= 0) & (halo_w < width)
    )
    x_rows = (
        x_ptr
        + image * stride_xn
        + halo_h.to(tl.int64) * stride_xh
        + halo_w.to(tl.int64) * stride_xw
    )

    # Output pixels of the tile; tap (dy, dx) reads halo row (m_h + dy) * HALO_W + m_w + dx.
    m = tl.arange(0, TH * TW)
    m_h = m // TW
    m_w = m % TW
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_in = cols < c_out
    kk = tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)

    acc = tl.zeros((TH * TW, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, c_red, BLOCK_R):
        red = r0 + rr
        red_in = red < c_red
        r_acc = tl.zeros((HALO_ROWS, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, c_in, BLOCK_K):
            k = k0 + kk
            k_in = k < c_in
            x_tile = tl.load(
                x_rows[:, None] + k.to(tl.int64)[None, :] * stride_xc,
                mask=halo_in[:, None] & k_in[None, :],
                other=0.0,
            )
            w_tile = tl.load(
                w_red_ptr + k[:, None] * c_red + red[None, :],
                mask=k_in[:, None] & red_in[None, :],
                other=0.0,
            )
            r_acc = common.dot_acc(x_tile, w_tile, r_acc, DOT_IN_FP32)
        b_red = tl.load(b_red_ptr + red, mask=red_in, other=0.0)
        r_halo = tl.maximum(r_acc + b_red[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
        # The KxK conv's zero padding applies to r: outside the image r is 0, not relu(b_red).
        # Padding channels are 0 too: x (inf somewhere) times their zero weights can be NaN.
        r_halo = tl.where(halo_in[:, None] & red_in[None, :], r_halo, 0.0)
        r_halo = r_halo.to(x_ptr.dtype.element_ty)
        if DOT_IN_FP32:
            r_halo = r_halo.to(tl.float32)
        # A runtime loop over the taps: unrolled, the compiler hoists all K*K gather index
        # tiles out of the C_red loop and spills.
        for tap in range(K * K):
            rows = (m_h + tap // K) * HALO_W + m_w + tap % K
            a_tile = tl.gather(r_halo, tl.broadcast_to(rows[:, None], (TH * TW, BLOCK_R)), 0)
            w_tap = tl.load(
                w_kxk_ptr + (tap * c_red + red[:, None]) * c_out + cols[None, :],
                mask=red_in[:, None] & col_in[None, :],
                other=0.0,
            )
            acc = common.dot_acc(a_tile, w_tap, acc, DOT_IN_FP32)

    b_kxk = tl.load(b_kxk_ptr + cols, mask=col_in, other=0.0)
    y = tl.maximum(acc + b_kxk[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    out_h = h0 + m_h
    out_w = w0 + m_w
    pix_in = (out_h < height) & (out_w < width)
    out_ptrs = (
        out_ptr
        + image * stride_on
        + out_h.to(tl.int64)[:, None] * stride_oh
        + out_w.to(tl.int64)[:, None] * stride_ow
        + (c_off + cols).to(tl.int64)[None, :] * stride_oc
    )
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=pix_in[:, None] & col_in[None, :])


class ChainConfig(NamedTuple):
    """Tile of one launch: TH x TW output pixels, BLOCK_N output channels, C_red and C_in chunks."""

    th: int
    tw: int
    block_n: int
    block_r: int
    block_k: int
    num_warps: int
    num_stages: int


# The GPU configs pick_config chooses from (aot_builds compiles each), by (K, fp32): BLOCK_N 64
# for C_out <= 64, and 128 for wider 16-bit branches.
# 8x8 output tiles: the 1x1 recompute on the halo is 100/64 (3x3) or 144/64 (5x5) of the plain
# 1x1, padded to 128 or 256 rows for tl.dot. Each C_out block recomputes the haloed r, so wide
# branches take BLOCK_N = 128 (less recompute). r is chunked by BLOCK_R reduced channels so the
# r tile, the gathered operand, the x pointers and the accumulator fit in registers: all builds
# use 8 warps (4 warps spill on sm_80: each thread then holds 32 halo rows of x pointers).
# fp32 runs on FMAs (ieee), whose operands live in registers: smaller BLOCK_K / BLOCK_R and
# BLOCK_N = 64 are what compiles without spills (checked by tests/test_triton_chain_1x1_kxk.py).
GPU_CONFIGS: dict[tuple[int, bool], tuple[ChainConfig, ...]] = {
    (3, False): (ChainConfig(8, 8, 64, 32, 32, 8, 2), ChainConfig(8, 8, 128, 32, 32, 8, 2)),
    (5, False): (ChainConfig(8, 8, 64, 32, 32, 8, 2), ChainConfig(8, 8, 128, 32, 32, 8, 2)),
    (3, True): (ChainConfig(8, 8, 64, 32, 8, 8, 2),),
    (5, True): (ChainConfig(8, 8, 64, 16, 8, 8, 2),),
}

# Under the interpreter each (program x loop iteration) costs ~10 ms: same tiles, but larger
# C_in and C_red chunks.
INTERPRETER_OVERRIDES = {"block_k": 128, "block_r": 64}


def pick_config(dtype: torch.dtype, c_out: int, *, k: int) -> ChainConfig:
    """The GPU config for a KxK chain into c_out channels.

    For GoogLeNet's nine blocks (16-bit): BLOCK_N 128 for every b2 (C_out 128..384) and for b3
    of 3b, 4e, 5a, 5b; BLOCK_N 64 for b3 of 3a and 4a-4d; fp32 has one config per K.
    """
    fp32 = dtype == torch.float32
    block_n = 128 if c_out > 64 and not fp32 else 64
    for cfg in GPU_CONFIGS[k, fp32]:
        if cfg.block_n == block_n:
            return cfg
    raise AssertionError(f"no GPU config for K={k}, BLOCK_N={block_n} (fp32={fp32})")


def _halo_rows(k: int, cfg: ChainConfig) -> int:
    return triton.next_power_of_2((cfg.th + k - 1) * (cfg.tw + k - 1))


def chain_1x1_kxk(
    x: Tensor,
    w_red_packed: Tensor,
    b_red: Tensor,
    w_kxk_packed: Tensor,
    b_kxk: Tensor,
    out: Tensor,
    c_off: int,
) -> Tensor:
    """out[:, c_off:c_off+C_out] = relu(convKxK(relu(conv1x1(x; Wr) + Br); W, pad K//2) + B).

    x:            [N, C_in, H, W], float32/float16/bfloat16, any strides
    w_red_packed: [C_in, C_red], x's dtype, contiguous (prepare_chain)
    b_red:        [C_red], float32
    w_kxk_packed: [K, K, C_red, C_out], x's dtype, contiguous (prepare_chain), K 3 or 5
    b_kxk:        [C_out], float32
    out:          [N, Ctot, H, W], x's dtype, any strides (channels_last typical); only channels
                  [c_off, c_off + C_out) are written; must not overlap any input
    Returns out. Errors as fused_inception.checks says, before anything is written.
    """
    op = "chain_1x1_kxk"
    operands = [
        common.Operand("w_red_packed", w_red_packed, ("C_in", "C_red")),
        common.Operand("b_red", b_red, ("C_red",), True),
        common.Operand("w_kxk_packed", w_kxk_packed, ("K", "K", "C_red", "C_out")),
        common.Operand("b_kxk", b_kxk, ("C_out",), True),
    ]
    sizes, c_off = common.check_launch_args(op, x, out, c_off, operands)
    k, c_red, c_out = sizes["K"], sizes["C_red"], sizes["C_out"]
    if k not in (3, 5):
        raise ValueError(f"{op}: w_kxk_packed must have kernel size K = 3 or 5, got {k}")
    n, c_in, h, w = x.shape
    if n == 0 or c_out == 0 or h == 0 or w == 0:
        return out

    cfg = common.launch_config(pick_config(x.dtype, c_out, k=k), INTERPRETER_OVERRIDES)
    tiles_w = triton.cdiv(w, cfg.tw)
    tiles_per_image = triton.cdiv(h, cfg.th) * tiles_w
    grid = (n * tiles_per_image, triton.cdiv(c_out, cfg.block_n))
    common.check_grid(op, grid)
    common.launch(
        chain_1x1_kxk_kernel,
        grid,
        (
            x, w_red_packed, b_red, w_kxk_packed, b_kxk, out,
            c_in, c_red, c_out, h, w, tiles_w, tiles_per_image,
            *x.stride(), *out.stride(), c_off,
        ),
        dict(
            K=k, TH=cfg.th, TW=cfg.tw, HALO_ROWS=_halo_rows(k, cfg),
            BLOCK_N=cfg.block_n, BLOCK_R=cfg.block_r, BLOCK_K=cfg.block_k,
            DOT_IN_FP32=common.dot_in_fp32(x.dtype),
        ),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        op=op,
        useful_macs=n * h * w * c_red * (c_in + k * k * c_out),
    )  # fmt: skip
    return out


def aot_builds() -> list[KernelBuild]:
    """Every build chain_1x1_kxk launches on a GPU: dtype x K x GPU_CONFIGS[K, fp32].

    Strides and sizes are plain i32 arguments here; at run time Triton's JIT also specializes
    unit strides (channels_last x: stride_xc = 1) and 16-divisibility.
    """
    return [
        common.kernel_build(
            "chain_1x1_kxk",
            chain_1x1_kxk_kernel,
            dtype,
            cfg,
            {"K": k},
            {
                "TH": cfg.th,
                "TW": cfg.tw,
                "HALO_ROWS": _halo_rows(k, cfg),
                "BLOCK_N": cfg.block_n,
                "BLOCK_R": cfg.block_r,
                "BLOCK_K": cfg.block_k,
                "DOT_IN_FP32": False,
            },
            fp32_pointers=("b_red_ptr", "b_kxk_ptr"),
        )  # fmt: skip
        for dtype in common.TRITON_DTYPES
        for k in (3, 5)
        for cfg in GPU_CONFIGS[k, dtype == torch.float32]
    ]
