"""Folding a block's units into plain (weight, bias) pairs, and knowing when to refold.

Kernels never read nn.Module attributes: the module folds BatchNorm (eval statistics) into
each conv once with `fold_block`, hands the FoldedParams to a backend's `prepare`, and keeps
the result until `param_signature` says a weight or buffer changed.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from .reference import FoldedParams


def block_units(block: nn.Module) -> tuple[nn.Module, ...]:
    """The six conv units of an Inception-structured block, in FoldedParams order.

    branch1, branch2[0], branch2[1], branch3[0], branch3[1], branch4[1].
    """
    return (
        block.branch1,
        block.branch2[0],
        block.branch2[1],
        block.branch3[0],
        block.branch3[1],
        block.branch4[1],
    )


def fold_unit(unit: nn.Module, *, differentiable: bool = False) -> tuple[Tensor, Tensor]:
    """conv [-> BN(eval)] as one conv: returns (weight [Cout, Cin, k, k], bias [Cout]).

    W' = W * g / sqrt(v + eps), B' = beta + (b - m) * g / sqrt(v + eps), computed in float64
    and cast back to the weight's dtype so the fold adds no rounding of its own.

    differentiable=False (the cached eval path): no autograd, detached results.
    differentiable=True: plain torch ops on the parameters themselves, so gradients of the
    folded (weight, bias) reach the conv weight and bias and BN's gamma and beta (the running
    statistics are buffers), and torch.compile traces it as part of the graph.
    """
    if not differentiable:
        with torch.no_grad():
            weight, bias = fold_unit(unit, differentiable=True)
        return weight.detach(), bias.detach()
    conv = unit.conv
    weight, bias = conv.weight, conv.bias
    bn = getattr(unit, "bn", None)
    if bn is None:
        if bias is None:
            bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
        return weight, bias
    w64 = weight.double()
    b64 = bias.double() if bias is not None else torch.zeros_like(w64[:, 0, 0, 0])
    mean = bn.running_mean.double()
    var = bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + bn.eps)
    folded_w = (w64 * scale[:, None, None, None]).to(weight.dtype)
    folded_b = (beta + (b64 - mean) * scale).to(weight.dtype)
    return folded_w, folded_b


def fold_block(block: nn.Module, *, differentiable: bool = False) -> FoldedParams:
    """Fold all six units of an Inception-structured block (BN in eval form); see fold_unit."""
    pairs = [fold_unit(unit, differentiable=differentiable) for unit in block_units(block)]
    return FoldedParams(*(t for pair in pairs for t in pair))


def has_batch_norm(block: nn.Module) -> bool:
    """True if any unit of the block has a BatchNorm (torchvision's form)."""
    return any(getattr(unit, "bn", None) is not None for unit in block_units(block))


def _state_tensors(block: nn.Module) -> Iterator[Tensor]:
    yield from block.parameters()
    yield from block.buffers()


def param_signature(block: nn.Module) -> tuple:
    """Changes whenever any parameter or buffer of the block is replaced or modified in place.

    A tensor's `_version` counts in-place writes (optimizer steps, load_state_dict, .copy_());
    data_ptr, dtype and device catch replacement (.to(), .half(), assigning .data).
    """
    return tuple(
        (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape)) for t in _state_tensors(block)
    )
