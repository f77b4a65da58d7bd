"""Triton backend: the whole eval-mode block in two launches (version 2).

1. fused_inception/triton/block_1x1.py: every 1x1 convolution over x in one GEMM (b1 into its
   slice, the reduced tensors r2 | r3 into a scratch of NHWC rows), and x's max-pool streamed
   row by row into the same scratch rows; x is read by this launch only.
2. fused_inception/triton/block_kxk.py: b2 and b3, the kxk convolutions over r2 and r3 with
   their taps loaded by address, and b4, the pool projection over the pooled rows, into their
   slices.
Runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1 (how CI executes it).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..packing import BlockPacked, prepare_block
from ..reference import FoldedParams
from ..triton.block_1x1 import block_1x1
from ..triton.block_kxk import block_kxk
from . import blockwise
from .blockwise import device_guard  # noqa: F401  (tests check the guard here)

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def prepare(p: FoldedParams) -> BlockPacked:
    """Pack folded parameters once (cached by the module until the weights change)."""
    return prepare_block(p)


def _launch(x_rows: Tensor, packed: BlockPacked, out: Tensor, r: Tensor) -> None:
    """The two launches (blockwise.Launch); r also holds the pooled x."""
    off2, off3, off4 = blockwise.offsets(packed)
    block_1x1(x_rows, packed.w_x, packed.b_x, out, r, packed.c1)
    block_kxk(
        r, packed.w2, packed.b2, packed.w3, packed.b3, packed.w_pool, packed.b_pool, out, off2,
        off3, off4,
    )  # fmt: skip


def forward(x: Tensor, packed: BlockPacked) -> Tensor:
    """x [N, Cin, H, W] -> [N, Ctot, H, W] in x's memory format (blockwise.forward)."""
    args = (x, packed, _launch, "triton", SUPPORTED_DTYPES)
    return blockwise.forward(*args, pooled_in_scratch=True)


def forward_saving(x: Tensor, packed: BlockPacked) -> tuple[Tensor, Tensor, Tensor]:
    """forward, also returning r2 and r3 (blockwise.forward's keep_reduced)."""
    args = (x, packed, _launch, "triton", SUPPORTED_DTYPES)
    return blockwise.forward(*args, keep_reduced=True, pooled_in_scratch=True)
