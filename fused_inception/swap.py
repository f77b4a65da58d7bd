"""Swapping FusedInception in and out of existing models, in place.

    fuse_inception(model)    every Inception block that computes the Inception function
    unfuse_inception(model)  back to the eager blocks (the same parameters)

Kept apart from the module (module.py), as Liger-Kernel keeps its model patching apart from its
kernels: this is the only code that edits a user's model.
"""

from __future__ import annotations

import warnings

from torch import nn

from .backends import check_backend_name
from .module import FusedInception, check_recompute, check_weight_check
from .structure import inception_error
from .units import has_branches


def fuse_inception(
    model: nn.Module,
    backend: str = "auto",
    *,
    weight_check: str = "auto",
    recompute: bool | None = None,
) -> nn.Module:
    """Swap every Inception block inside `model` for a FusedInception, in place.

    A block is a module with branch1..branch4; it is swapped only if it computes the
    Inception block (FusedInception.from_module's checks), else left alone with a warning that
    says why. A model without any such block gets a warning too. The state_dict is unchanged
    (the fused blocks hold the original branch modules). Returns the model, or a
    FusedInception if `model` itself is an Inception block. `backend`, `weight_check` and
    `recompute` are those of FusedInception.
    """
    check_backend_name(backend)
    check_weight_check(weight_check)
    check_recompute(recompute)
    options = (backend, weight_check, recompute)
    if isinstance(model, FusedInception):
        return model
    if _is_candidate(model):
        return _fuse_one(model, options, "model") or model
    found = 0
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, FusedInception):
                found += 1
            elif _is_candidate(child):
                found += 1
                name = f"{parent_name}.{child_name}" if parent_name else child_name
                fused = _fuse_one(child, options, name)
                if fused is not None:
                    setattr(parent, child_name, fused)
    if not found:
        warnings.warn(
            f"fuse_inception: found no Inception block (a module with branch1..branch4) in "
            f"{type(model).__name__}; nothing was fused",
            stacklevel=2,
        )
    return model


def unfuse_inception(model: nn.Module) -> nn.Module:
    """Reverse fuse_inception: put the eager blocks back (sharing the same parameters)."""
    if isinstance(model, FusedInception):
        return model.to_unfused()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, FusedInception):
                setattr(parent, child_name, child.to_unfused())
    return model


def _is_candidate(module: nn.Module) -> bool:
    return not isinstance(module, FusedInception) and has_branches(module)


def _fuse_one(module: nn.Module, options: tuple, name: str) -> FusedInception | None:
    problem = inception_error(module)
    if problem is not None:
        warnings.warn(
            f"fuse_inception: left {name} ({type(module).__name__}) as is: {problem}", stacklevel=3
        )
        return None
    return FusedInception._from_checked(module, *options)
