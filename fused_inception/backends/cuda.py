"""CUDA C++ backend: the whole eval-mode block as four launches of the kernels in csrc/cuda/.

The operators fused_inception::conv1x1_slice_ (b1, and b4 with the max-pool fused) and
fused_inception::chain_1x1_kxk_ (b2, b3) are bound in csrc/cuda_ops.cpp, which checks every
argument before a kernel runs. CUDA tensors run the nvcc build; CPU tensors run the same
sources compiled as plain C++ against the SIMT shim (csrc/simt/), which is how CI executes
them; that needs FUSED_INCEPTION_EMULATE_CUDA=1, because it is slow and only meant for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import sliced
from .sliced import prepare  # noqa: F401  (the backend interface)


def _conv1x1(x: Tensor, w: Tensor, bias: Tensor, out: Tensor, c0: int, pool: bool) -> None:
    torch.ops.fused_inception.conv1x1_slice_(x, w, bias, out, c0, pool)


def _chain(
    x: Tensor, w_red: Tensor, b_red: Tensor, w_kxk: Tensor, b_kxk: Tensor, out: Tensor, c0: int
) -> None:
    torch.ops.fused_inception.chain_1x1_kxk_(x, w_red, b_red, w_kxk, b_kxk, out, c0)


def forward(x: Tensor, packed: sliced.SlicedPacked) -> Tensor:
    """x [N, Cin, H, W] -> [N, Ctot, H, W] in x's memory format (see sliced.forward)."""
    return sliced.forward(x, packed, _conv1x1, _chain, "cuda")
