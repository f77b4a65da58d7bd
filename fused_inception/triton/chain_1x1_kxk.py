"""The b2/b3 chain: 1x1 reduction -> ReLU -> KxK conv (zero padding on r) -> bias -> ReLU.

out[n, c_off + j, h, w] = relu(B[j] + sum_{dy, dx, c} r[n, c, h + dy - K//2, w + dx - K//2]
                                                       * W[j, c, dy, dx])
r = relu(conv1x1(x; Wr) + Br), and r is 0 outside the image (the KxK conv's zero padding
applies to r, so a recomputed halo pixel outside the image is 0, not relu(Br)).

The reduced tensor r never goes to memory: each program recomputes the r pixels its output tile
needs (the tile plus a K//2 halo) from x and keeps them in registers (see `_chain_kernel`).

Packed weights (`prepare_chain`, built once per weight change):
    w_red  [Cin, Cr]         the 1x1 weight, K-major (a GEMM's B operand), compute dtype
    b_red  [Cr]              float32
    w_kxk  [K, K, Cr, Cout]  the KxK weight, one [Cr, Cout] GEMM operand per tap, compute dtype
    b_kxk  [Cout]            float32
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..packing import ChainPacked, prepare_chain  # noqa: F401  (re-exported)
from . import INTERPRETER, KernelBuild, launch_guard
from .guards import as_channel_offset, check_no_overlap


@triton.jit
def _chain_kernel(
    x_ptr,
    w_red_ptr,
    b_red_ptr,
    w_kxk_ptr,
    b_kxk_ptr,
    out_ptr,
    H,
    W,
    C_IN,
    C_RED,
    C_OUT,
    TILES_W,
    TILES_PER_IMAGE,
    stride_xn,
    stride_xh,
    stride_xw,
    stride_xc,
    stride_on,
    stride_oh,
    stride_ow,
    stride_oc,
    c_off,
    K: tl.constexpr,
    TH: tl.constexpr,
    TW: tl.constexpr,
    HALO_ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
):
    """Fused 1x1 -> ReLU -> KxK -> bias -> ReLU for one TH x TW output tile, BLOCK_N channels.

    grid:   (N * tiles_h * tiles_w, cdiv(Cout, BLOCK_N)); axis 0 = (image, tile row, tile col).
    reads:  x [N, Cin, H, W] by strides (the tile plus its halo), w_red [Cin, Cr],
            b_red [Cr], w_kxk [K, K, Cr, Cout], b_kxk [Cout]
    writes: out[n, c_off + j, h, w] for the tile's pixels and j in the program's BLOCK_N block.

    Per chunk of BLOCK_R reduced channels: the haloed reduced tile r_halo [HALO_ROWS, BLOCK_R]
    ((TH+K-1) x (TW+K-1) pixels, row-major, padded to a power of two) is one GEMM over Cin in
    BLOCK_K steps (fp32 accumulate), + b_red, ReLU, then 0 where the halo pixel is outside the
    image or is padding. It stays in registers: each of the K*K taps gathers its shifted rows
    (tl.gather along the pixel axis) into a [TH*TW, BLOCK_R] operand and adds its GEMM with
    the tap's [BLOCK_R, BLOCK_N] weight into the fp32 output accumulator. Chunking Cr bounds
    the registers for GoogLeNet's large reductions (up to 192) and costs nothing extra: each
    chunk's r is computed once. Triton gives the gather a warp-local layout (each warp holds all
    halo rows of its columns), so it lowers to warp shuffles; shared memory holds only the
    tl.dot operands. UPCAST (bf16 under the interpreter only) feeds fp32 to tl.dot.
    """
    HALO_W: tl.constexpr = TW + K - 1
    HALO_PIXELS: tl.constexpr = (TH + K - 1) * HALO_W
    PAD: tl.constexpr = K // 2

    pid_tile = tl.program_id(0)
    pid_n = tl.program_id(1)
    image = (pid_tile // TILES_PER_IMAGE).to(tl.int64)
    tile = pid_tile % TILES_PER_IMAGE
    h0 = (tile // TILES_W) * TH
    w0 = (tile % TILES_W) * TW

    # Halo pixels (rows of r_halo) and whether each is inside the image.
    halo = tl.arange(0, HALO_ROWS)
    halo_h = h0 - PAD + halo // HALO_W
    halo_w = w0 - PAD + halo % HALO_W
    halo_in = (halo < HALO_PIXELS) & (halo_h >= 0) & (halo_h < H) & (halo_w >= 0) & (halo_w < W)
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
    col_in = cols < C_OUT
    kk = tl.arange(0, BLOCK_K)
    rr = tl.arange(0, BLOCK_R)

    acc = tl.zeros((TH * TW, BLOCK_N), dtype=tl.float32)
    for r0 in range(0, C_RED, BLOCK_R):
        red = r0 + rr
        red_in = red < C_RED
        r_acc = tl.zeros((HALO_ROWS, BLOCK_R), dtype=tl.float32)
        for k0 in range(0, C_IN, BLOCK_K):
            k = k0 + kk
            k_in = k < C_IN
            x_tile = tl.load(
                x_rows[:, None] + k.to(tl.int64)[None, :] * stride_xc,
                mask=halo_in[:, None] & k_in[None, :],
                other=0.0,
            )
            w_tile = tl.load(
                w_red_ptr + k[:, None] * C_RED + red[None, :],
                mask=k_in[:, None] & red_in[None, :],
                other=0.0,
            )
            if UPCAST:
                x_tile = x_tile.to(tl.float32)
                w_tile = w_tile.to(tl.float32)
            r_acc = tl.dot(x_tile, w_tile, r_acc, input_precision="ieee")
        b_red = tl.load(b_red_ptr + red, mask=red_in, other=0.0)
        r_halo = tl.maximum(r_acc + b_red[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
        # The KxK conv's zero padding applies to r: outside the image r is 0, not relu(b_red).
        # Padding channels are 0 too: x (inf somewhere) times their zero weights can be NaN.
        r_halo = tl.where(halo_in[:, None] & red_in[None, :], r_halo, 0.0)
        r_halo = r_halo.to(x_ptr.dtype.element_ty)
        if UPCAST:
            r_halo = r_halo.to(tl.float32)
        # A runtime loop over the taps: unrolled, the compiler hoists all K*K gather index
        # tiles out of the Cr loop and spills.
        for tap in range(K * K):
            rows = (m_h + tap // K) * HALO_W + m_w + tap % K
            a_tile = tl.gather(r_halo, tl.broadcast_to(rows[:, None], (TH * TW, BLOCK_R)), 0)
            w_tap = tl.load(
                w_kxk_ptr + (tap * C_RED + red[:, None]) * C_OUT + cols[None, :],
                mask=red_in[:, None] & col_in[None, :],
                other=0.0,
            )
            if UPCAST:
                w_tap = w_tap.to(tl.float32)
            acc = tl.dot(a_tile, w_tap, acc, input_precision="ieee")

    b_kxk = tl.load(b_kxk_ptr + cols, mask=col_in, other=0.0)
    y = tl.maximum(acc + b_kxk[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    out_h = h0 + m_h
    out_w = w0 + m_w
    pix_in = (out_h < H) & (out_w < W)
    out_ptrs = (
        out_ptr
        + image * stride_on
        + out_h.to(tl.int64)[:, None] * stride_oh
        + out_w.to(tl.int64)[:, None] * stride_ow
        + (c_off + cols).to(tl.int64)[None, :] * stride_oc
    )
    tl.store(out_ptrs, y.to(out_ptr.dtype.element_ty), mask=pix_in[:, None] & col_in[None, :])


class ChainConfig(NamedTuple):
    """Tile of one launch: TH x TW output pixels, BLOCK_N output channels, Cr and Cin chunks."""

    th: int
    tw: int
    block_n: int
    block_r: int
    block_k: int
    num_warps: int
    num_stages: int = 2


# GPU configs by (K, class), class = "16-bit" (Cout <= 64), "16-bit wide" (Cout > 64) or "fp32".
# 8x8 output tiles: the 1x1 recompute on the halo is 100/64 (3x3) or 144/64 (5x5) of the plain
# 1x1, padded to 128 or 256 rows for tl.dot. Each Cout block recomputes the haloed r, so wide
# branches take BLOCK_N = 128 (less recompute). r is chunked by BLOCK_R reduced channels so the
# r tile, the gathered operand, the x pointers and the accumulator fit in registers: all builds
# use 8 warps (4 warps spill on sm_80: each thread then holds 32 halo rows of x pointers).
# fp32 runs on FMAs (ieee), whose operands live in registers: smaller BLOCK_K / BLOCK_R and
# BLOCK_N = 64 are what compiles without spills (checked by tests/test_triton_chain_1x1_kxk.py).
_GPU_CONFIGS: dict[tuple[int, str], ChainConfig] = {
    (3, "16-bit"): ChainConfig(8, 8, 64, 32, 32, 8),
    (3, "16-bit wide"): ChainConfig(8, 8, 128, 32, 32, 8),
    (5, "16-bit"): ChainConfig(8, 8, 64, 32, 32, 8),
    (5, "16-bit wide"): ChainConfig(8, 8, 128, 32, 32, 8),
    (3, "fp32"): ChainConfig(8, 8, 64, 32, 8, 8),
    (5, "fp32"): ChainConfig(8, 8, 64, 16, 8, 8),
}

# Under the interpreter each (program x loop iteration) costs ~10 ms: same tiles, but larger
# Cin and Cr chunks (one fixed config per (K, class)).
_INTERPRETER_BLOCK_K = 128
_INTERPRETER_BLOCK_R = 64

_TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


def _config_class(dtype: torch.dtype, c_out: int) -> str:
    if dtype == torch.float32:
        return "fp32"
    return "16-bit wide" if c_out > 64 else "16-bit"


def pick_config(k: int, dtype: torch.dtype, c_out: int) -> ChainConfig:
    """Block sizes for one launch (the GoogLeNet table is `googlenet_configs()`)."""
    cfg = _GPU_CONFIGS[(k, _config_class(dtype, c_out))]
    if INTERPRETER:
        cfg = cfg._replace(block_k=_INTERPRETER_BLOCK_K, block_r=_INTERPRETER_BLOCK_R)
    return cfg


def googlenet_configs() -> dict[str, dict[str, ChainConfig]]:
    """The block sizes used for GoogLeNet's nine blocks (fp16; K = 5 for b3 as in the paper).

    The table, from the channel counts in fused_inception.configs (GPU, 16-bit):
        b2 (3x3):        "16-bit wide" (BLOCK_N 128) in all nine blocks (Cout 128..384)
        b3 (5x5 or 3x3): "16-bit wide" in 3b, 4e, 5a, 5b; "16-bit" (BLOCK_N 64) in 3a, 4a-4d
        fp32:            the "fp32" config of K everywhere
    """
    from ..configs import GOOGLENET_BLOCKS

    return {
        name: {
            "b2": pick_config(3, torch.float16, cfg.ch3x3),
            "b3": pick_config(5, torch.float16, cfg.ch5x5),
        }
        for name, cfg in GOOGLENET_BLOCKS.items()
    }


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
    """out[:, c_off:c_off+Cout] = relu(convKxK(relu(conv1x1(x; Wr) + Br); W, pad K//2) + B).

    x:            [N, Cin, H, W], float32/float16/bfloat16, any strides
    w_red_packed: [Cin, Cr], x's dtype, contiguous (prepare_chain)
    b_red:        [Cr], float32
    w_kxk_packed: [K, K, Cr, Cout], x's dtype, contiguous (prepare_chain)
    b_kxk:        [Cout], float32
    out:          [N, Ctot, H, W], x's dtype, any strides (channels_last typical); only channels
                  [c_off, c_off + Cout) are written; must not overlap any input
    Returns out.
    """
    if x.dtype not in _TRITON_DTYPES:
        raise TypeError(f"x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4 or out.dim() != 4:
        raise ValueError(f"x and out must be 4-D, got {x.dim()}-D and {out.dim()}-D")
    n, c_in, h, w = x.shape
    if w_red_packed.dim() != 2 or w_red_packed.shape[0] != c_in:
        raise ValueError(f"w_red_packed must be [{c_in}, Cr], got {tuple(w_red_packed.shape)}")
    c_red = w_red_packed.shape[1]
    k = w_kxk_packed.shape[0] if w_kxk_packed.dim() == 4 else -1
    if k not in (3, 5) or tuple(w_kxk_packed.shape[1:3]) != (k, c_red):
        raise ValueError(
            f"w_kxk_packed must be [K, K, {c_red}, Cout] with K in (3, 5), "
            f"got {tuple(w_kxk_packed.shape)}"
        )
    c_out = w_kxk_packed.shape[3]
    if tuple(b_red.shape) != (c_red,) or tuple(b_kxk.shape) != (c_out,):
        raise ValueError(
            f"b_red must be [{c_red}] and b_kxk [{c_out}], "
            f"got {tuple(b_red.shape)} and {tuple(b_kxk.shape)}"
        )
    if out.shape[0] != n or tuple(out.shape[2:]) != (h, w):
        raise ValueError(f"out must be [{n}, Ctot, {h}, {w}], got {tuple(out.shape)}")
    c_off = as_channel_offset("chain_1x1_kxk", c_off)
    if not 0 <= c_off <= out.shape[1] - c_out:
        raise ValueError(f"channels [{c_off}, {c_off + c_out}) exceed out's {out.shape[1]}")
    for name, t, dtype in (
        ("w_red_packed", w_red_packed, x.dtype),
        ("w_kxk_packed", w_kxk_packed, x.dtype),
        ("out", out, x.dtype),
        ("b_red", b_red, torch.float32),
        ("b_kxk", b_kxk, torch.float32),
    ):
        if t.dtype != dtype:
            raise TypeError(f"{name} must be {dtype}, got {t.dtype}")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    for name, t in (("w_red_packed", w_red_packed), ("w_kxk_packed", w_kxk_packed)):
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous (use prepare_chain)")
    if x.device.type != "cuda" and not INTERPRETER:
        raise ValueError(f"x is on {x.device}; Triton kernels need CUDA (or TRITON_INTERPRET=1)")
    check_no_overlap(
        "chain_1x1_kxk", out, x=x, w_red_packed=w_red_packed, b_red=b_red,
        w_kxk_packed=w_kxk_packed, b_kxk=b_kxk,
    )  # fmt: skip
    if n == 0 or c_out == 0 or h == 0 or w == 0:
        return out

    cfg = pick_config(k, x.dtype, c_out)
    tiles_w = triton.cdiv(w, cfg.tw)
    tiles_per_image = triton.cdiv(h, cfg.th) * tiles_w
    grid = (n * tiles_per_image, triton.cdiv(c_out, cfg.block_n))
    if grid[0] >= 2**31 or grid[1] > 65535:
        raise ValueError(f"the launch grid {grid} exceeds CUDA's (2**31 - 1, 65535)")
    with launch_guard():
        _chain_kernel[grid](
            x, w_red_packed, b_red, w_kxk_packed, b_kxk, out,
            h, w, c_in, c_red, c_out, tiles_w, tiles_per_image,
            *_nhwc_strides(x), *_nhwc_strides(out), c_off,
            K=k, TH=cfg.th, TW=cfg.tw, HALO_ROWS=_halo_rows(k, cfg),
            BLOCK_N=cfg.block_n, BLOCK_R=cfg.block_r, BLOCK_K=cfg.block_k,
            UPCAST=INTERPRETER and x.dtype == torch.bfloat16,
            num_warps=cfg.num_warps, num_stages=cfg.num_stages,
        )  # fmt: skip
    return out


def _nhwc_strides(t: Tensor) -> tuple[int, int, int, int]:
    """Element strides of a [N, C, H, W] tensor in the kernel's order (n, h, w, c)."""
    s_n, s_c, s_h, s_w = t.stride()
    return s_n, s_h, s_w, s_c


def aot_builds() -> list[KernelBuild]:
    """Every GPU configuration the launcher can use: each dtype x each (K, class) config.

    Strides and sizes are plain i32 arguments here; at run time Triton's JIT also specializes
    unit strides (channels_last x: stride_xc = 1) and 16-divisibility.
    """
    builds = []
    for dtype, ty in _TRITON_DTYPES.items():
        dtype_name = str(dtype).removeprefix("torch.")
        for (k, cls), cfg in _GPU_CONFIGS.items():
            if (cls == "fp32") != (dtype == torch.float32):
                continue
            constexprs = {
                "K": k,
                "TH": cfg.th,
                "TW": cfg.tw,
                "HALO_ROWS": _halo_rows(k, cfg),
                "BLOCK_N": cfg.block_n,
                "BLOCK_R": cfg.block_r,
                "BLOCK_K": cfg.block_k,
                "UPCAST": False,
            }
            signature = {
                "x_ptr": f"*{ty}",
                "w_red_ptr": f"*{ty}",
                "b_red_ptr": "*fp32",
                "w_kxk_ptr": f"*{ty}",
                "b_kxk_ptr": "*fp32",
                "out_ptr": f"*{ty}",
            }
            signature.update({name: "i32" for name in _INT_ARGS})
            signature.update({name: "constexpr" for name in constexprs})
            builds.append(
                KernelBuild(
                    kernel=f"chain_1x1_kxk[{dtype_name},K={k},TH={cfg.th},TW={cfg.tw},"
                    f"BN={cfg.block_n},BR={cfg.block_r},BK={cfg.block_k}]",
                    fn=_chain_kernel,
                    signature=signature,
                    constexprs=constexprs,
                    dtype=dtype_name,
                    num_warps=cfg.num_warps,
                    num_stages=cfg.num_stages,
                )
            )
    return builds


_INT_ARGS = (
    "H", "W", "C_IN", "C_RED", "C_OUT", "TILES_W", "TILES_PER_IMAGE",
    "stride_xn", "stride_xh", "stride_xw", "stride_xc",
    "stride_on", "stride_oh", "stride_ow", "stride_oc", "c_off",
)  # fmt: skip
