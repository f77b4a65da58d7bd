"""CPU backend: the fused eval-mode block on ATen's CPU primitives (oneDNN / BLAS).

What makes it faster than the eager block (measured by `python -m fused_inception.bench`):
- BatchNorm is folded into the convs once (fold_block), so no BN passes over memory;
- the three 1x1 convolutions that read x run as one GEMM [N*H*W, Cin] x [Cin, c1 + c2r + c3r];
- everything runs in NHWC (channels_last), where a 1x1 conv is a plain GEMM and a branch's
  channel slice of the output is a strided column block [N*H*W, c] with row stride Ctot;
- each branch's bias+ReLU epilogue writes straight into its slice of one preallocated output
  (no torch.cat); the pool branch's GEMM writes into its slice directly;
- the 3x3 convolutions run as Winograd F(2x2, 3x3) where that pays (cpu_winograd.py), 2.25x
  fewer multiply-adds; the GEMMs and direct convolutions already run near the FMA peak here;
- the pool branch's max-pool is this package's separable C++ operator.
NCHW input is converted once; the output has the input's memory format.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..reference import FoldedParams
from . import cpu_winograd as winograd
from .cpu_maxpool import max_pool3x3
from .output import new_output, output_memory_format


class CpuPacked(NamedTuple):
    """Folded parameters in the layouts the CPU path wants.

    w_x:  [Cin, c1 + c2r + c3r]  the three 1x1 convs that read x, K-major for addmm
    b_x:  [c1 + c2r + c3r]
    w2:   [c2, c2r, 3, 3] channels_last       b2: [c2]
    w3:   [c3, c3r, K, K] channels_last       b3: [c3]
    w4:   [Cin, c4]                           b4: [c4]
    u2, u3: [16, c_red, c] Winograd-transformed w2/w3 where that path exists (3x3, float32),
            else None
    """

    w_x: Tensor
    b_x: Tensor
    w2: Tensor
    b2: Tensor
    w3: Tensor
    b3: Tensor
    w4: Tensor
    b4: Tensor
    c1: int
    c2r: int
    c3r: int
    u2: Tensor | None
    u3: Tensor | None


def prepare(p: FoldedParams) -> CpuPacked:
    """Pack folded parameters once (cached by the module until the weights change)."""
    w_x = torch.cat([p.w1, p.w2r, p.w3r]).flatten(1).t().contiguous()
    b_x = torch.cat([p.b1, p.b2r, p.b3r]).contiguous()
    return CpuPacked(
        w_x=w_x,
        b_x=b_x,
        w2=p.w2.contiguous(memory_format=torch.channels_last),
        b2=p.b2.contiguous(),
        w3=p.w3.contiguous(memory_format=torch.channels_last),
        b3=p.b3.contiguous(),
        w4=p.w4.flatten(1).t().contiguous(),
        b4=p.b4.contiguous(),
        c1=p.w1.shape[0],
        c2r=p.w2r.shape[0],
        c3r=p.w3r.shape[0],
        u2=winograd.transform_weight(p.w2) if winograd.available_for(p.w2) else None,
        u3=winograd.transform_weight(p.w3) if winograd.available_for(p.w3) else None,
    )


def forward(x: Tensor, packed: CpuPacked) -> Tensor:
    """Fused eval forward on the CPU.

    x:   [N, Cin, H, W], any memory format
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format (channels_last or contiguous)

    Peak memory: besides x and out, at most one whole-tensor temporary at a time next to the
    NHWC copy of x (NCHW input only): first the pooled x, then the GEMM output y = b1 | r2 | r3
    (with the NHWC copy already freed), then, for NCHW input, the NCHW copy of out. Each is
    released as soon as it has been read (`del`); the Winograd workspace is bounded by tiles.
    At 1x192x1024x1024 into block 3a, peak growth over x: 2.5 GiB for NCHW input and 1.9 GiB
    for channels_last, where torchvision's eager block takes 3.1 GiB (it was 5.9 and 5.2 GiB).
    """
    n, c_in, h, w = x.shape
    c1 = packed.c1
    c2, c3, c4 = packed.w2.shape[0], packed.w3.shape[0], packed.w4.shape[1]
    rows = n * h * w
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    out_rows = out.permute(0, 2, 3, 1).view(rows, out.shape[1])

    x_nhwc = x.contiguous(memory_format=torch.channels_last)  # x itself if channels_last
    # b4 first, so the pooled tensor is gone before the GEMM output exists: 3x3/1 max-pool
    # (-inf padding), then the 1x1 projection GEMM straight into its slice.
    pooled = max_pool3x3(x_nhwc)
    b4_slice = out_rows[:, c1 + c2 + c3 :]
    torch.addmm(packed.b4, _rows(pooled), packed.w4, out=b4_slice)
    b4_slice.relu_()
    del pooled

    # b1 | r2 | r3 from one GEMM over x; b1's ReLU epilogue stores into its output slice.
    y = torch.addmm(packed.b_x, _rows(x_nhwc), packed.w_x)
    del x_nhwc  # frees the NHWC copy of an NCHW x
    torch.clamp_min(y[:, :c1], 0, out=out_rows[:, :c1])
    reduced = y[:, c1:].relu_()
    del y
    _kxk_into(reduced, packed, out_rows, n, h, w)
    del reduced

    return out.contiguous(memory_format=output_memory_format(x))


def _rows(t_nhwc: Tensor) -> Tensor:
    """[N, C, H, W] channels_last -> its [N*H*W, C] rows (a view)."""
    n, c, h, w = t_nhwc.shape
    return t_nhwc.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _kxk_into(reduced: Tensor, packed: CpuPacked, out_rows: Tensor, n: int, h: int, w: int) -> None:
    """b2 and b3: relu(convKxK(r) + b) into their slices of out_rows. r2 | r3 = reduced.

    The kxk convolutions read the reduced tensors as NHWC views (zero padding applies to r):
    Winograd F(2,3) where it pays, which stores relu(conv + bias) into the slice itself;
    oneDNN's direct convolution otherwise, with the ReLU applied while storing. A function of
    its own so that each branch's temporaries are freed when it returns.
    """
    c2r, c3r = packed.c2r, packed.c3r
    col = packed.c1
    for c_red, red_off, weight, u, bias in (
        (c2r, 0, packed.w2, packed.u2, packed.b2),
        (c3r, c2r, packed.w3, packed.u3, packed.b3),
    ):
        c_b = weight.shape[0]
        r_rows = reduced[:, red_off : red_off + c_red]
        out_slice = out_rows[:, col : col + c_b]
        if u is not None and winograd.winograd_pays(h, w, c_red, c_b):
            winograd.conv3x3_relu_into(r_rows, u, bias, out_slice, n, h, w)
        else:
            r_nchw = r_rows.reshape(n, h, w, c_red).permute(0, 3, 1, 2)
            z = F.conv2d(r_nchw, weight, bias, padding=weight.shape[-1] // 2)
            torch.clamp_min(z.permute(0, 2, 3, 1).reshape(n * h * w, c_b), 0, out=out_slice)
            del z
        col += c_b
