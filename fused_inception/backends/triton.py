"""Triton backend: the whole eval-mode block in two launches (version 2).

1. fused_inception/triton/block_1x1.py: every 1x1 convolution over x in one GEMM (b1 into its
   slice, the reduced tensors r2 | r3 into a scratch of NHWC rows), and b4 from the max-pool
   taken while x is loaded; x is read by this launch only.
2. fused_inception/triton/block_kxk.py: b2 and b3, the kxk convolutions over r2 and r3 with
   their taps loaded by address, into their slices.
Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (how CI executes it).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from ..packing import BlockPacked, prepare_block
from ..reference import FoldedParams
from ..triton.block_1x1 import block_1x1
from ..triton.block_kxk import block_kxk
from .output import new_output, output_memory_format

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def prepare(p: FoldedParams) -> BlockPacked:
    """Pack folded parameters once (cached by the module until the weights change)."""
    return prepare_block(p)


def device_guard(x: Tensor) -> contextlib.AbstractContextManager:
    """x's CUDA device made current around the launches: Triton launches on the current
    device and its stream, so a tensor on cuda:1 while cuda:0 is current would otherwise be
    read by kernels running on cuda:0. A no-op for CPU tensors (the interpreter)."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def forward(x: Tensor, packed: BlockPacked) -> Tensor:
    """Fused eval forward in two launches.

    x:   [N, Cin, H, W] (NCHW or channels_last), float32/float16/bfloat16
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format (output_memory_format)

    The kernels run on NHWC rows, so NCHW input is converted once and the output back. The
    one temporary is the scratch r [N*H*W, c2r + c3r] of the reduced tensors.
    """
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"the triton backend supports float32, float16 and bfloat16, got {x.dtype}")
    n, _, h, w = x.shape
    c1, c2r = packed.c1, packed.c2r
    c2, c3, c4 = packed.b2.shape[0], packed.b3.shape[0], packed.b_pool.shape[0]
    x_rows = x.contiguous(memory_format=torch.channels_last)
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    if out.numel() != 0:
        r = new_output((n * h * w, packed.w_x.shape[1] - c1), x, torch.contiguous_format)
        with device_guard(x):
            block_1x1(
                x_rows, packed.w_x, packed.b_x, packed.w_pool, packed.b_pool, out, r, c1,
                c1 + c2 + c3,
            )  # fmt: skip
            block_kxk(r, packed.w2, packed.b2, packed.w3, packed.b3, out, c2r, c1, c1 + c2)
    if output_memory_format(x) == torch.channels_last:
        return out
    return out.contiguous()
