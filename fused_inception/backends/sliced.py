"""The block as four fused kernels writing into channel slices of one output.

The cuda backend runs float32 this way (version 1; 16-bit and the triton backend run
backends/blockwise.py, version 2):
- b1: a conv1x1_slice kernel (GEMM + bias + ReLU) into channels [0, c1);
- b2, b3: a chain_1x1_kxk kernel (1x1 reduction + kxk conv + ReLU, the reduced tile with its
  halo kept on chip) into [c1, c1 + c2) and [c1 + c2, c1 + c2 + c3);
- b4: conv1x1_slice with the 3x3/1 max-pool applied while loading, into the last c4 channels.
Nothing else is allocated and no reduced tensor reaches memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ..packing import ChainPacked, prepare_chain, prepare_conv1x1
from ..reference import FoldedParams
from .output import new_output, output_memory_format

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# conv1x1(x_nhwc, w [Cin, Cout], bias [Cout], out, c0, pool) and
# chain(x_nhwc, w_red, b_red, w_kxk, b_kxk, out, c0): each writes out[:, c0 : c0 + Cout] (the
# Triton launchers and the C++ operators take their arguments in this order; what they return
# is not used).
Conv1x1Launcher = Callable[[Tensor, Tensor, Tensor, Tensor, int, bool], object]
ChainLauncher = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int], object]


class SlicedPacked(NamedTuple):
    """Per-branch parameters in the kernels' layouts (fused_inception.packing)."""

    b1: tuple[Tensor, Tensor]
    b2: ChainPacked
    b3: ChainPacked
    b4: tuple[Tensor, Tensor]
    widths: tuple[int, int, int, int]


def prepare(p: FoldedParams) -> SlicedPacked:
    """Pack folded parameters once (cached by the module until the weights change)."""
    return SlicedPacked(
        b1=prepare_conv1x1(p.w1, p.b1),
        b2=prepare_chain(p.w2r, p.b2r, p.w2, p.b2),
        b3=prepare_chain(p.w3r, p.b3r, p.w3, p.b3),
        b4=prepare_conv1x1(p.w4, p.b4),
        widths=(p.w1.shape[0], p.w2.shape[0], p.w3.shape[0], p.w4.shape[0]),
    )


def forward(
    x: Tensor, packed: SlicedPacked, conv1x1: Conv1x1Launcher, chain: ChainLauncher, name: str
) -> Tensor:
    """Fused eval forward with four kernel launches.

    x:   [N, Cin, H, W] (NCHW or channels_last), float32/float16/bfloat16
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format

    The kernels run on NHWC memory, so NCHW input is converted once and the output converted
    back.
    """
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the {name} backend supports float32, float16 and bfloat16, got {x.dtype}")
    n, _, h, w = x.shape
    c1, c2, c3, c4 = packed.widths
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    if out.numel() > 0:
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        conv1x1(x_nhwc, *packed.b1, out, 0, False)
        chain(x_nhwc, *packed.b2, out, c1)
        chain(x_nhwc, *packed.b3, out, c1 + c2)
        conv1x1(x_nhwc, *packed.b4, out, c1 + c2 + c3, True)
    return out.contiguous(memory_format=output_memory_format(x))
