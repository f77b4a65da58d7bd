"""Plain-PyTorch reference of the Inception block: the one source of truth for the function.

`inception_ref` computes docs/design.md section 2 from folded parameters (conv weight and bias
per unit, BatchNorm already folded in); `Inception` is the reference module in both forms
(torchvision's conv -> BN -> ReLU units, or the paper's conv+bias -> ReLU units), with the same
module names and state_dict keys as `torchvision.models.googlenet.Inception`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .units import BRANCHES

BN_EPS = 1e-3  # torchvision's BasicConv2d uses BatchNorm2d(eps=0.001)


class FoldedParams(NamedTuple):
    """Per-unit conv weights and biases of one block with BatchNorm folded in.

    w1:  [c1, Cin, 1, 1]          b1:  [c1]
    w2r: [c2r, Cin, 1, 1]         b2r: [c2r]
    w2:  [c2, c2r, 3, 3]          b2:  [c2]
    w3r: [c3r, Cin, 1, 1]         b3r: [c3r]
    w3:  [c3, c3r, K, K]          b3:  [c3]      (K = 5 in the paper, 3 in torchvision)
    w4:  [c4, Cin, 1, 1]          b4:  [c4]
    """

    w1: Tensor
    b1: Tensor
    w2r: Tensor
    b2r: Tensor
    w2: Tensor
    b2: Tensor
    w3r: Tensor
    b3r: Tensor
    w3: Tensor
    b3: Tensor
    w4: Tensor
    b4: Tensor


def inception_ref(x: Tensor, p: FoldedParams) -> Tensor:
    """Reference Inception block, straight from the formulas.

    x:   [N, Cin, H, W]
    p:   folded parameters (see FoldedParams)
    out: [N, c1 + c2 + c3 + c4, H, W], channel order b1 | b2 | b3 | b4

    Zero padding of the kxk convolutions applies to the reduced tensors r2/r3; the max-pool
    pads with -inf (F.max_pool2d's implicit padding).
    """
    b1 = F.relu(F.conv2d(x, p.w1, p.b1))
    r2 = F.relu(F.conv2d(x, p.w2r, p.b2r))
    b2 = F.relu(F.conv2d(r2, p.w2, p.b2, padding=p.w2.shape[-1] // 2))
    r3 = F.relu(F.conv2d(x, p.w3r, p.b3r))
    b3 = F.relu(F.conv2d(r3, p.w3, p.b3, padding=p.w3.shape[-1] // 2))
    pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    b4 = F.relu(F.conv2d(pooled, p.w4, p.b4))
    return torch.cat([b1, b2, b3, b4], dim=1)


class ConvUnit(nn.Module):
    """conv -> [BatchNorm] -> ReLU; state_dict-compatible with torchvision's BasicConv2d.

    norm=True: conv without bias, BatchNorm2d(eps=1e-3) (torchvision's form).
    norm=False: conv with bias, no BatchNorm (the paper's form).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        norm: bool,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            bias=(not norm) if bias is None else bias,
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=BN_EPS) if norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x)


class Inception(nn.Module):
    """Reference Inception block (eager PyTorch), both forms.

    Same constructor arguments and module names as torchvision's Inception, plus
    `branch3_kernel` (5 in the paper, 3 in torchvision) and `norm` (BN form or paper form).
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        branch3_kernel: int = 3,
        norm: bool = True,
    ) -> None:
        super().__init__()
        channels = (in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)
        _check_block_args(channels, branch3_kernel, norm)
        self.branch1 = ConvUnit(in_channels, ch1x1, 1, norm)
        self.branch2 = nn.Sequential(
            ConvUnit(in_channels, ch3x3red, 1, norm), ConvUnit(ch3x3red, ch3x3, 3, norm)
        )
        self.branch3 = nn.Sequential(
            ConvUnit(in_channels, ch5x5red, 1, norm),
            ConvUnit(ch5x5red, ch5x5, branch3_kernel, norm),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            ConvUnit(in_channels, pool_proj, 1, norm),
        )

    @classmethod
    def _around(cls, module: nn.Module):
        """A block of this class that holds `module`'s four branches themselves (no copy), in
        `module`'s training mode: how blocks are made from other blocks."""
        block = cls.__new__(cls)
        nn.Module.__init__(block)
        for name in BRANCHES:
            setattr(block, name, getattr(module, name))
        block.training = module.training
        return block

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


def _check_block_args(channels: tuple[int, ...], branch3_kernel: int, norm: bool) -> None:
    """ValueError/TypeError naming the first invalid constructor argument."""
    names = ("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")
    for name, value in zip(names, channels, strict=True):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if (
        not isinstance(branch3_kernel, int)
        or isinstance(branch3_kernel, bool)
        or branch3_kernel not in (3, 5)
    ):
        raise ValueError(f"branch3_kernel must be the int 3 or 5, got {branch3_kernel!r}")
    if not isinstance(norm, bool):
        raise TypeError(f"norm must be a bool, got {norm!r}")
