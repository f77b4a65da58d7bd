"""Weights in the layouts the fused kernels want, built once per weight change.

The Triton kernels (fused_inception/triton/) and the CUDA kernels (csrc/cuda/) take the same
layouts: every GEMM's B operand is a row-major [K, N] matrix in the compute dtype, biases are
float32.
    prepare_conv1x1: w_kn  [Cin, Cout]                  (b1, b4)
    prepare_chain:   w_red [Cin, Cr], w_kxk [K, K, Cr, Cout]  (b2, b3; one [Cr, Cout] per tap)
    prepare_block:   the whole block for the two launches of the Triton backend (version 2):
                     w_x [Cin, c1 + c2r + c3r], w_pool [Cin, c4], w2 [9, c2r, c2],
                     w3 [K*K, c3r, c3]
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .reference import FoldedParams


def prepare_conv1x1(
    weight: Tensor, bias: Tensor | None, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Pack a (folded) 1x1 conv for conv1x1_slice; done once per weight change.

    weight:   [C_out, C_in, 1, 1]
    bias:     [C_out] or None (zeros)
    dtype:    compute dtype of the packed weight (default: weight.dtype)
    returns:  w_kn [C_in, C_out] contiguous (K-major rows, the GEMM's B operand),
              bias_fp32 [C_out] float32 contiguous
    """
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (1, 1):
        raise ValueError(f"weight must be [C_out, C_in, 1, 1], got {tuple(weight.shape)}")
    c_out = weight.shape[0]
    if bias is None:
        bias = torch.zeros(c_out, device=weight.device)
    if tuple(bias.shape) != (c_out,):
        raise ValueError(f"bias must be [C_out] = [{c_out}], got {tuple(bias.shape)}")
    w_kn = weight.detach().flatten(1).t().to(dtype or weight.dtype).contiguous()
    return w_kn, bias.detach().to(torch.float32).contiguous()


class ChainPacked(NamedTuple):
    """Weights of one chain in the kernel's layouts (see the module docstring)."""

    w_red: Tensor
    b_red: Tensor
    w_kxk: Tensor
    b_kxk: Tensor


def prepare_chain(
    w_red: Tensor, b_red: Tensor, w_kxk: Tensor, b_kxk: Tensor, dtype: torch.dtype | None = None
) -> ChainPacked:
    """Pack folded weights once.

    w_red: [Cr, Cin, 1, 1]   b_red: [Cr]
    w_kxk: [Cout, Cr, K, K]  b_kxk: [Cout]
    dtype: compute dtype of the packed weights (default: w_red's dtype); biases are float32.
    """
    if w_red.dim() != 4 or tuple(w_red.shape[2:]) != (1, 1):
        raise ValueError(f"w_red must be [Cr, Cin, 1, 1], got {tuple(w_red.shape)}")
    c_red = w_red.shape[0]
    if w_kxk.dim() != 4 or w_kxk.shape[1] != c_red or w_kxk.shape[2] != w_kxk.shape[3]:
        raise ValueError(f"w_kxk must be [Cout, {c_red}, K, K], got {tuple(w_kxk.shape)}")
    if w_kxk.shape[2] not in (3, 5):
        raise ValueError(f"kernel size must be 3 or 5, got {w_kxk.shape[2]}")
    if tuple(b_red.shape) != (c_red,) or tuple(b_kxk.shape) != (w_kxk.shape[0],):
        raise ValueError(
            f"biases must be [{c_red}] and [{w_kxk.shape[0]}], "
            f"got {tuple(b_red.shape)} and {tuple(b_kxk.shape)}"
        )
    dtype = dtype or w_red.dtype
    return ChainPacked(
        w_red=w_red.detach().flatten(1).t().to(dtype).contiguous(),
        b_red=b_red.detach().float().contiguous(),
        w_kxk=w_kxk.detach().permute(2, 3, 1, 0).to(dtype).contiguous(),
        b_kxk=b_kxk.detach().float().contiguous(),
    )


class BlockPacked(NamedTuple):
    """A whole block's weights for fused_inception/triton/block_1x1.py and block_kxk.py."""

    w_x: Tensor  # [Cin, c1 + c2r + c3r]: the three 1x1 convolutions over x, side by side
    b_x: Tensor  # [c1 + c2r + c3r] float32
    w_pool: Tensor  # [Cin, c4]
    b_pool: Tensor  # [c4] float32
    w2: Tensor  # [9, c2r, c2]: one [c2r, c2] matrix per tap, taps row-major
    b2: Tensor  # [c2] float32
    w3: Tensor  # [K*K, c3r, c3]
    b3: Tensor  # [c3] float32
    c1: int
    c2r: int


def prepare_block(p: FoldedParams, dtype: torch.dtype | None = None) -> BlockPacked:
    """Pack a block's folded weights once (per weight change) in the compute dtype `dtype`
    (default: the weights' own); biases become float32."""
    dtype = dtype or p.w1.dtype

    def gemm_b(*weights: Tensor) -> Tensor:  # [Cout, Cin, 1, 1]s -> [Cin, sum Cout]
        return torch.cat(weights).detach().flatten(1).t().to(dtype).contiguous()

    def taps(weight: Tensor) -> Tensor:  # [Cout, Cr, K, K] -> [K*K, Cr, Cout]
        k = weight.shape[-1]
        w = weight.detach().permute(2, 3, 1, 0).reshape(k * k, weight.shape[1], weight.shape[0])
        return w.to(dtype).contiguous()

    def fp32(*biases: Tensor) -> Tensor:
        return torch.cat(biases).detach().float().contiguous()

    return BlockPacked(
        w_x=gemm_b(p.w1, p.w2r, p.w3r),
        b_x=fp32(p.b1, p.b2r, p.b3r),
        w_pool=gemm_b(p.w4),
        b_pool=fp32(p.b4),
        w2=taps(p.w2),
        b2=fp32(p.b2),
        w3=taps(p.w3),
        b3=fp32(p.b3),
        c1=p.w1.shape[0],
        c2r=p.w2r.shape[0],
    )
