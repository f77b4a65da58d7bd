"""Triton backend: the whole eval-mode block as four fused Triton kernels (backends/sliced.py).

Kernels: fused_inception/triton/conv1x1_slice.py (b1, and b4 with the max-pool fused) and
fused_inception/triton/chain_1x1_kxk.py (b2, b3). Runs on CUDA tensors, or on CPU tensors
under TRITON_INTERPRET=1 (how CI executes it).
"""

from __future__ import annotations

from torch import Tensor

from ..triton.chain_1x1_kxk import chain_1x1_kxk
from ..triton.conv1x1_slice import conv1x1_slice
from . import sliced
from .sliced import prepare  # noqa: F401  (the backend interface)


def forward(x: Tensor, packed: sliced.SlicedPacked) -> Tensor:
    """x [N, Cin, H, W] -> [N, Ctot, H, W] in x's memory format (see sliced.forward)."""
    return sliced.forward(x, packed, conv1x1_slice, chain_1x1_kxk, "triton")
