"""The Inception block's anatomy, in one place: its branches and its six conv units.

Every module that needs to find the parts of an Inception-structured block (torchvision's,
this package's reference or fused one, or a lookalike) asks here: folding (BN into the convs),
structure checks, the model swappers, the summary table and the roofline.
"""

from __future__ import annotations

from torch import nn

# The four branches, in the order of the output's channel slices: b1 | b2 | b3 | b4.
BRANCHES = ("branch1", "branch2", "branch3", "branch4")

# The six conv units by their module paths in the block, in FoldedParams order: b1's 1x1, b2's
# 1x1 reduction and 3x3, b3's 1x1 reduction and kxk, b4's 1x1 projection (after the max-pool).
UNIT_NAMES = ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")

# FoldedParams indices of the units whose outputs are the four branches' channels.
OUTPUT_UNITS = (0, 2, 4, 5)


def has_branches(module: nn.Module) -> bool:
    """True if `module` has the four branch attributes of an Inception block (a candidate)."""
    return all(hasattr(module, name) for name in BRANCHES)


def block_units(block: nn.Module) -> tuple[nn.Module, ...]:
    """The six conv units of an Inception-structured block, in UNIT_NAMES order."""
    return (
        block.branch1,
        block.branch2[0],
        block.branch2[1],
        block.branch3[0],
        block.branch3[1],
        block.branch4[1],
    )


def has_batch_norm(block: nn.Module) -> bool:
    """True if any unit of the block has a BatchNorm (torchvision's form)."""
    return any(getattr(unit, "bn", None) is not None for unit in block_units(block))
