"""NhwcMaxPool3x3: an nn.MaxPool2d(3, stride=1, padding=1) that runs the CPU backend's NHWC
max-pool (fused_inception::max_pool3x3_nhwc, bit-exact with F.max_pool2d) on channels_last CPU
input, ATen's max-pool otherwise.

prepare_for_inference(blocks="folded") swaps it in for the Inception blocks' branch4 pools:
ATen's channels_last 3x3/1 max-pool was 16% of the folded network's time on this project's CPU
(README "The whole network, prepared by prepare_for_inference"); the package's is 3-7x faster.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import _ext
from .backends.cpu_maxpool import max_pool3x3_nhwc

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def is_pool3x3(module: nn.Module) -> bool:
    """True for an nn.MaxPool2d computing a 3x3 max-pool with stride 1 and padding 1 (ceil_mode
    changes nothing at stride 1), without indices."""
    if type(module) is not nn.MaxPool2d or module.return_indices:
        return False
    fields = (module.kernel_size, module.stride, module.padding, module.dilation)
    pairs = [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in fields]
    return pairs == [(3, 3), (1, 1), (1, 1), (1, 1)]


class NhwcMaxPool3x3(nn.MaxPool2d):
    """nn.MaxPool2d(3, stride=1, padding=1), the package's NHWC kernel where it applies.

    x:   [N, C, H, W]
    out: [N, C, H, W], exactly F.max_pool2d(x, 3, 1, 1); channels_last from the package's
         kernel (CPU, channels_last-contiguous x, float32/float64/float16/bfloat16, no
         autograd recording), else whatever ATen's max-pool returns.
    """

    __jit_ignored_attributes__ = ["_source"]

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> NhwcMaxPool3x3:
        """The same pool (is_pool3x3(pool) must hold); to_unfused() gives `pool` back."""
        if not is_pool3x3(pool):
            raise ValueError(f"expected a 3x3 MaxPool2d with stride 1 and padding 1, got {pool}")
        new = cls(3, stride=1, padding=1, ceil_mode=pool.ceil_mode)
        new.training = pool.training
        new.__dict__["_source"] = pool
        return new

    def to_unfused(self) -> nn.MaxPool2d:
        """The pool this one was made from (or a plain one with the same arguments)."""
        source = self.__dict__.get("_source")
        if source is None:
            source = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=self.ceil_mode)
        source.training = self.training
        return source

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return super().forward(x)
        if self._kernel_fits(x):
            return max_pool3x3_nhwc(x)
        return super().forward(x)

    @torch.jit.unused
    def _kernel_fits(self, x: Tensor) -> bool:
        if not isinstance(x, Tensor) or isinstance(x, torch.fx.Proxy):
            return False
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return False
        if torch.compiler.is_compiling() or not _ext.has_extension():
            return False
        if torch.is_grad_enabled() and x.requires_grad:
            return False
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype in _DTYPES
            and x.is_contiguous(memory_format=torch.channels_last)
            and x.shape[2] > 0
            and x.shape[3] > 0
        )
