"""Folding a block's units into plain (weight, bias) pairs, and knowing when to refold.

Kernels never read nn.Module attributes: the module folds BatchNorm (eval statistics) into
each conv once with `fold_block`, hands the FoldedParams to a backend's `prepare`, and keeps
the result until a weight, buffer or attribute changes (FusedInception keys its cache on
fingerprint.fingerprint and structure.structure_key).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .reference import FoldedParams
from .units import UNIT_NAMES, block_units


def fold_unit(unit: nn.Module, *, differentiable: bool = False) -> tuple[Tensor, Tensor]:
    """conv [-> BN(eval)] as one conv: returns (weight [Cout, Cin, k, k], bias [Cout]).

    W' = W * g / sqrt(v + eps), B' = beta + (b - m) * g / sqrt(v + eps), computed in float64
    and cast back to the weight's dtype so the fold adds no rounding of its own (a folded value
    beyond the dtype's range becomes inf there: see `fold_overflow`).

    differentiable=False (the cached eval path): no autograd, detached results.
    differentiable=True: plain torch ops on the parameters themselves, so gradients of the
    folded (weight, bias) reach the conv weight and bias and BN's gamma and beta (the running
    statistics are buffers), and torch.compile traces it as part of the graph.
    """
    if not differentiable:
        with torch.no_grad():
            weight, bias = fold_unit(unit, differentiable=True)
        return weight.detach(), bias.detach()
    weight = unit.conv.weight
    if getattr(unit, "bn", None) is None:
        bias = unit.conv.bias
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return weight, bias
    w64, b64 = _fold64(unit)
    return w64.to(weight.dtype), b64.to(weight.dtype)


def _fold64(unit: nn.Module) -> tuple[Tensor, Tensor]:
    """The folded (weight, bias) of a unit with BN, in float64 (differentiable torch ops)."""
    conv, bn = unit.conv, unit.bn
    w64 = conv.weight.double()
    b64 = conv.bias.double() if conv.bias is not None else torch.zeros_like(w64[:, 0, 0, 0])
    mean = bn.running_mean.double()
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    return w64 * scale[:, None, None, None], beta + (b64 - mean) * scale


def fold_overflow(block: nn.Module, dtype: torch.dtype) -> str | None:
    """None if every BN-folded weight and bias of `block` is finite in `dtype`, else where not.

    Extreme BN statistics (a tiny running_var) can fold a weight past float16's 65504 although
    torchvision's unfolded conv -> BN computes finite outputs: such a block must not run the
    fused kernels in that dtype. Values already non-finite in float64 are not counted (the
    unfolded block has them too).
    """
    with torch.no_grad():
        for i, unit in enumerate(block_units(block)):
            if getattr(unit, "bn", None) is None:
                continue
            for name, t64 in zip(("weight", "bias"), _fold64(unit), strict=True):
                lost = torch.isfinite(t64) & ~torch.isfinite(t64.to(dtype))
                if bool(lost.any()):
                    peak = t64[lost].abs().max().item()
                    return (
                        f"{UNIT_NAMES[i]}: its BatchNorm-folded {name} reaches "
                        f"{peak:.3g}, beyond {dtype}'s range"
                    )
    return None


def fold_block(block: nn.Module, *, differentiable: bool = False) -> FoldedParams:
    """Fold all six units of an Inception-structured block (BN in eval form); see fold_unit."""
    pairs = [fold_unit(unit, differentiable=differentiable) for unit in block_units(block)]
    return FoldedParams(*(t for pair in pairs for t in pair))
