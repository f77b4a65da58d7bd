"""Preparing a whole model for inference in one call, and undoing it.

    prepare_for_inference(model)    fused Inception blocks, BN folded into the other conv units
                                    (GoogLeNet's stem and auxiliary heads), NHWC max-pools,
                                    channels_last, eval;
                                    blocks="folded": the blocks' units folded instead of fused
    unprepare_for_inference(model)  back to the original modules, NCHW parameters

Both edit the model in place, as fuse_inception does (swap.py), and keep its state_dict: the
same keys and the same tensors (values), before, during and after.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import torch
from torch import nn

from . import network_replay
from .backends import check_backend_name
from .folded_unit import FoldedConvUnit, unit_error
from .module import FusedInception, check_weight_check
from .nhwc_pool import NhwcAdaptiveAvgPool2d, NhwcMaxPool2d, nhwc_pool
from .plain_layout import make_dense, relayout_block, relayout_fits
from .rows_linear import RowsLinear, fits_rows_linear
from .swap import fuse_inception, unfuse_inception
from .units import has_branches

MEMORY_FORMATS = (torch.channels_last, torch.contiguous_format)
# What the Inception blocks become: FusedInception, or eager blocks of folded units.
BLOCK_MODES = ("fused", "folded")
# The modules prepare_for_inference swaps in outside the fused blocks (each has to_unfused).
_SWAPPED = (FoldedConvUnit, NhwcMaxPool2d, NhwcAdaptiveAvgPool2d, RowsLinear)
# Where a prepared model keeps what unprepare_for_inference restores (outside state_dict).
_PREPARED = "_fused_inception_prepared"


class _Prepared(NamedTuple):
    """What the first prepare_for_inference call found: the model's training flag."""

    training: bool


def prepare_for_inference(
    model: nn.Module,
    *,
    device: torch.device | str | None = None,
    memory_format: torch.memory_format = torch.channels_last,
    backend: str = "auto",
    weight_check: str = "auto",
    blocks: str = "fused",
) -> nn.Module:
    """Prepare `model` (e.g. torchvision's GoogLeNet) for CPU or GPU inference, in place.

    1. blocks="fused" (default): every Inception block becomes a FusedInception on `backend`
       (fuse_inception; blocks it cannot fuse stay as they are, with a warning saying why).
       blocks="folded": the blocks stay eager modules (FusedInception blocks are unfused) and
       their six units are folded as in 2., so each runs one convolution with BatchNorm and
       ReLU fused (oneDNN on the CPU: ONNX Runtime's treatment of the block), and their 3x3/1
       max-pools become NhwcMaxPool3x3 (the cpu backend's NHWC pool, bit-exact);
    2. every other conv -> BatchNorm -> ReLU unit (torchvision's BasicConv2d: GoogLeNet's
       conv1/conv2/conv3 stem and the auxiliary heads' conv) becomes a FoldedConvUnit, which
       computes one convolution with BatchNorm folded in (eval statistics, cached until a weight
       or buffer changes). Units without BatchNorm (the paper's conv + bias) stay as they are:
       there is nothing to fold. Every other nn.MaxPool2d without indices, dilation 1
       (GoogLeNet's maxpool1..4: 3x3 and 2x2, stride 2, ceil_mode) becomes an NhwcMaxPool2d:
       the cpu backend's NHWC pool on channels_last CPU input, bit-exact with ATen's; and every
       nn.AdaptiveAvgPool2d with a 1x1 output (GoogLeNet's avgpool) an NhwcAdaptiveAvgPool2d:
       the same mean by an NHWC kernel, equal up to float rounding; every nn.Linear (GoogLeNet's
       fc, the auxiliary heads' fc1/fc2) a RowsLinear (the same parameters; at most 16 rows on
       the CPU by the package's kernel, equal up to float rounding);
    3. the model moves to `device` (None: where it is) and its 4-D parameters and buffers to
       `memory_format` (default channels_last). The model still takes NCHW input: the first
       convolution produces channels_last from it (channels_last input works too), and the
       outputs are the unprepared model's (logits [N, num_classes] for GoogLeNet).
       With channels_last, the conv weights of the fused blocks that run on the cpu backend
       (float32, on the CPU) then take the plain layout (plain_layout.py: output channels
       contiguous, the three 1x1s over x side by side in one buffer), which the backend's own
       kernel reads in place: no packed copy of the 1x1s and direct KxKs, and no content
       check of the weights by the block (a KxK's Winograd form is checked where it is used);
    4. the model is put in eval mode (model.eval()).

    state_dict() keeps exactly its keys and values (the new modules hold the original
    parameters and buffers; only their memory layout changes), and load_state_dict on the
    prepared model takes effect on the next forward. model.train() gives back torchvision's
    exact training semantics (BatchNorm batch statistics: the fused blocks and folded units
    then run the original computation). Calling it again is harmless (it fuses and folds only
    what is not yet, and may change device or memory format); unprepare_for_inference undoes it.

    model:         an nn.Module; a model without any Inception block is prepared all the same
                   (folding and memory format) with a warning
    device:        torch.device or string, or None
    memory_format: torch.channels_last or torch.contiguous_format
    backend:       FusedInception backend ("auto", "cpu", "triton", "cuda")
    weight_check:  how fused blocks and folded units see weight changes (FusedInception's)
    blocks:        "fused" or "folded" (see 1.)
    returns:       the prepared model (`model` itself, or the new module when `model` is itself
                   an Inception block or a conv unit)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"prepare_for_inference expects an nn.Module, got {type(model).__name__}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError(
            "prepare_for_inference expects an eager nn.Module, got a TorchScript module; "
            "prepare the model before scripting it"
        )
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(
            "memory_format must be torch.channels_last or torch.contiguous_format, got "
            f"{memory_format!r}"
        )
    check_backend_name(backend)
    check_weight_check(weight_check)
    if blocks not in BLOCK_MODES:
        raise ValueError(f"blocks must be one of {BLOCK_MODES}, got {blocks!r}")
    device = None if device is None else torch.device(device)
    info = model.__dict__.get(_PREPARED) or _Prepared(training=model.training)
    if not any(isinstance(m, FusedInception) or has_branches(m) for m in model.modules()):
        warnings.warn(
            f"prepare_for_inference: {type(model).__name__} has no Inception block (a module "
            "with branch1..branch4); only BatchNorm folding, the NHWC max-pools and the memory "
            "format apply",
            stacklevel=2,
        )
    elif blocks == "fused":
        model = fuse_inception(model, backend, weight_check=weight_check)
    else:
        model = unfuse_inception(model)
    model = _fold_units(model, weight_check)
    make_dense(model, memory_format)
    model.to(device=device, memory_format=memory_format)
    if memory_format == torch.channels_last:
        _relayout_blocks(model)
    model.eval()
    model.__dict__[_PREPARED] = info
    network_replay.attach(model)
    return model


def unprepare_for_inference(
    model: nn.Module, *, memory_format: torch.memory_format = torch.contiguous_format
) -> nn.Module:
    """Undo prepare_for_inference, in place: the original modules back (torchvision's blocks
    and units, holding the same parameters), 4-D parameters in `memory_format` (default NCHW),
    the training flag the model had before it was first prepared. The device stays.

    model:   a model returned by prepare_for_inference (ValueError for any other)
    returns: the model (the original module when the prepared one was a block or a unit)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"unprepare_for_inference expects an nn.Module, got {type(model).__name__}")
    info = model.__dict__.get(_PREPARED)
    if info is None:
        raise ValueError(
            f"unprepare_for_inference: this {type(model).__name__} was not prepared by "
            "prepare_for_inference"
        )
    if memory_format not in MEMORY_FORMATS:
        raise ValueError(
            "memory_format must be torch.channels_last or torch.contiguous_format, got "
            f"{memory_format!r}"
        )
    del model.__dict__[_PREPARED]
    network_replay.detach(model)
    model = unfuse_inception(model)
    if isinstance(model, FoldedConvUnit):
        model = model.to_unfused()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _SWAPPED):
                setattr(parent, name, child.to_unfused())
    make_dense(model, memory_format)
    model.to(memory_format=memory_format)
    return model.train(info.training)


def _relayout_blocks(model: nn.Module) -> None:
    """The conv weights of the fused blocks that run on the cpu backend (float32 CPU weights,
    backend "auto" or "cpu") in the plain layout, which its own kernel reads in place
    (plain_layout.py)."""
    for module in model.modules():
        if (
            isinstance(module, FusedInception)
            and module.backend in ("auto", "cpu")
            and relayout_fits(module)
        ):
            relayout_block(module)


def is_prepared(model: nn.Module) -> bool:
    """True if `model` was returned by prepare_for_inference and not unprepared since."""
    return _PREPARED in model.__dict__


def _fold_units(model: nn.Module, weight_check: str) -> nn.Module:
    """Swap every conv -> BN -> ReLU unit outside the fused blocks for a FoldedConvUnit (a
    candidate, a module with .conv and .bn, whose forward computes something else stays as it
    is, with a warning), every pool there that nhwc_pool takes (GoogLeNet's stem pools and
    avgpool; the folded blocks' branch4 pools) for the package's NHWC pool, and every nn.Linear
    for a RowsLinear."""
    if _is_candidate(model):
        return _fold_one(model, weight_check, "model") or model
    stack = [("", model)]
    while stack:
        prefix, parent = stack.pop()
        for name, child in list(parent.named_children()):
            path = f"{prefix}{name}"
            if isinstance(child, (FusedInception, FoldedConvUnit)):
                continue  # their units are theirs
            pool = nhwc_pool(child)
            if pool is not None:
                setattr(parent, name, pool)
                continue
            if fits_rows_linear(child):
                setattr(parent, name, RowsLinear.from_module(child))
                continue
            if _is_candidate(child):
                folded = _fold_one(child, weight_check, path)
                if folded is not None:
                    setattr(parent, name, folded)
                    continue
            stack.append((f"{path}.", child))
    return model


def _is_candidate(module: nn.Module) -> bool:
    return (
        not isinstance(module, FoldedConvUnit)
        and isinstance(getattr(module, "conv", None), nn.Conv2d)
        and isinstance(getattr(module, "bn", None), nn.BatchNorm2d)
    )


def _fold_one(module: nn.Module, weight_check: str, path: str) -> FoldedConvUnit | None:
    problem = unit_error(module)
    if problem is not None:
        warnings.warn(
            f"prepare_for_inference: left {path} ({type(module).__name__}) unfolded: {problem}",
            stacklevel=4,
        )
        return None
    return FoldedConvUnit.from_module(module, weight_check=weight_check)
