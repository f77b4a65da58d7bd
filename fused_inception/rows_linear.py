"""RowsLinear: an nn.Linear whose forward on a few rows (a classifier at small batch, e.g.
GoogLeNet's fc at batch 1-16) runs the package's kernel fused_inception::linear_rows on the CPU,
F.linear otherwise.

At batch 1 torch's linear is MKL's sgemv on one thread; inside a prepared GoogLeNet its fc
(1024 -> 1000, a 4 MB weight read from memory) took 0.4-0.5 ms. linear_rows streams the weight
as nn.Linear holds it (row-major [N, K], read in place: nothing to pack or check) on every
thread: measured after a 48 MB write on a 2-core Zen 2 EPYC (2026-12-05), 188 against 502 us at
1 row, 444 against 1050 us at 8, 701 against 1191 us at 16; from 32 rows MKL's GEMM is level
or faster, so more rows take F.linear. prepare_for_inference swaps it in for every nn.Linear
outside the fused blocks (unprepare_for_inference gives the modules back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _ext

# At most this many rows run on linear_rows (see the module docstring).
MAX_ROWS = 16


def linear_rows(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """x [M, K] @ weight[N, K].T + bias [N] (or no bias), float32 CPU tensors whose rows hold
    contiguous features: a new [M, N] tensor, F.linear up to float rounding (each output's
    products summed in 8 lanes, csrc/cpu/linear_rows.cpp). ValueError for other shapes or
    strides, TypeError for another dtype, RuntimeError off the CPU or without the extension."""
    return _ext.op("linear_rows")(x, weight, bias)


@_ext.register_fake("linear_rows")
def _linear_rows_fake(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    torch._check(x.dim() == 2 and weight.dim() == 2, lambda: "linear_rows: expected 2-D x, weight")
    return x.new_empty((x.shape[0], weight.shape[0]))


_DIRECT = _ext.direct_op("linear_rows")  # without torch.ops' Python layer (_ext.direct_op)


def fits_rows_linear(module: nn.Module) -> bool:
    """True for an nn.Linear (that exact type)."""
    return type(module) is nn.Linear


class RowsLinear(nn.Linear):
    """nn.Linear (same parameters, same state_dict) that runs fused_inception::linear_rows where
    it applies: float32 CPU x [M, K] with M <= MAX_ROWS and contiguous features, float32 CPU
    weight (rows of contiguous features) and bias, no autograd recording, eager mode, no torch
    function mode; F.linear otherwise (also under TorchScript, tracing, ONNX export, torch.fx
    and torch.compile). The same result up to float rounding."""

    __jit_ignored_attributes__ = ["_source"]

    @classmethod
    def from_module(cls, linear: nn.Linear) -> RowsLinear:
        """A RowsLinear holding `linear`'s parameters (fits_rows_linear(linear) must hold);
        to_unfused() gives `linear` back, holding this module's parameters then."""
        if not fits_rows_linear(linear):
            raise ValueError(f"expected an nn.Linear, got {type(linear).__name__}")
        new = cls(linear.in_features, linear.out_features, bias=False, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.training = linear.training
        new.__dict__["_source"] = linear
        return new

    def to_unfused(self) -> nn.Linear:
        """The nn.Linear this one was made from (or a new one), holding this one's parameters."""
        source = self.__dict__.get("_source")
        if source is None:
            source = nn.Linear(self.in_features, self.out_features, bias=False, device="meta")
        source.weight = self.weight
        source.bias = self.bias
        source.training = self.training
        return source

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return F.linear(x, self.weight, self.bias)
        return self._forward_python(x)

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        if self._kernel_fits(x):
            return _DIRECT(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    @torch.jit.unused
    def _kernel_fits(self, x: Tensor) -> bool:
        w, b = self.weight, self.bias
        if type(x) is not Tensor or _DIRECT is None:  # (fx proxies, subclasses)
            return False
        if not (
            x.is_cpu
            and x.dtype == torch.float32
            and x.dim() == 2
            and x.shape[0] <= MAX_ROWS
            and (x.shape[1] <= 1 or x.stride(1) == 1)
            and w.is_cpu
            and w.dtype == torch.float32
            and w.dim() == 2
            and (w.shape[1] <= 1 or w.stride(1) == 1)
            and (b is None or (b.is_cpu and b.dtype == torch.float32 and b.dim() == 1))
        ):
            return False
        if torch.is_grad_enabled() and (
            x.requires_grad or w.requires_grad or (b is not None and b.requires_grad)
        ):
            return False
        return _ext.direct_calls_allowed()
