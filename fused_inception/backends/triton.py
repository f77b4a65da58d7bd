"""Triton backend: the whole eval-mode block as four fused Triton kernels.

- b1: conv1x1_slice (GEMM + bias + ReLU) into columns [0, c1);
- b2, b3: chain_1x1_kxk (1x1 reduction + kxk conv + ReLU, the reduced tile with its halo kept
  on chip) into columns [c1, c1 + c2) and [c1 + c2, c1 + c2 + c3);
- b4: conv1x1_slice with the 3x3/1 max-pool applied while loading A, into the last c4 columns.
Every kernel writes straight into its slice of one channels_last output, so nothing else is
allocated and no reduced tensor reaches memory.
Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (how CI executes it).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..reference import FoldedParams
from ..triton.chain_1x1_kxk import chain_1x1_kxk, prepare_chain
from ..triton.conv1x1_slice import conv1x1_slice, prepare_conv1x1
from . import new_output


class TritonPacked(NamedTuple):
    """Per-branch parameters in the layouts the kernels want (see each prepare_* helper)."""

    b1: tuple
    b2: tuple
    b3: tuple
    b4: tuple
    widths: tuple[int, int, int, int]


def prepare(p: FoldedParams) -> TritonPacked:
    """Pack folded parameters once (cached by the module until the weights change)."""
    return TritonPacked(
        b1=tuple(prepare_conv1x1(p.w1, p.b1)),
        b2=tuple(prepare_chain(p.w2r, p.b2r, p.w2, p.b2)),
        b3=tuple(prepare_chain(p.w3r, p.b3r, p.w3, p.b3)),
        b4=tuple(prepare_conv1x1(p.w4, p.b4)),
        widths=(p.w1.shape[0], p.w2.shape[0], p.w3.shape[0], p.w4.shape[0]),
    )


_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def forward(x: Tensor, packed: TritonPacked) -> Tensor:
    """Fused eval forward with Triton kernels.

    x:   [N, Cin, H, W] (NCHW or channels_last), float32/float16/bfloat16
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format

    The kernels run on NHWC memory: channels_last is what they are compiled and tuned for
    (other strides are correct but defeat the compiler's vectorisation hints and spill), so
    NCHW input is converted once and the output converted back.
    """
    if x.dtype not in _DTYPES:
        raise TypeError(f"the triton backend supports float32, float16 and bfloat16, got {x.dtype}")
    n, _, h, w = x.shape
    c1, c2, c3, c4 = packed.widths
    channels_last_in = x.is_contiguous(memory_format=torch.channels_last)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    if out.numel() == 0:
        return out if channels_last_in else out.contiguous()
    conv1x1_slice(x_nhwc, *packed.b1, out, 0)
    chain_1x1_kxk(x_nhwc, *packed.b2, out, c1)
    chain_1x1_kxk(x_nhwc, *packed.b3, out, c1 + c2)
    conv1x1_slice(x_nhwc, *packed.b4, out, c1 + c2 + c3, pool=True)
    if channels_last_in and not x.is_contiguous():
        return out
    return out.contiguous()
