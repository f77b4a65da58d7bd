"""NhwcMaxPool2d: an nn.MaxPool2d that runs the CPU backend's NHWC max-pool
(fused_inception::max_pool_nhwc, bit-exact with F.max_pool2d) on channels_last CPU input,
ATen's max-pool otherwise; NhwcMaxPool3x3, the same made only from 3x3/1 pools;
NhwcAdaptiveAvgPool2d, a global average pool (nn.AdaptiveAvgPool2d(1)) by an NHWC kernel.

prepare_for_inference swaps them in for every nn.MaxPool2d outside the fused blocks (nhwc_pool):
GoogLeNet's stem pools (maxpool1-3: 3x3 stride 2, maxpool4: 2x2 stride 2, ceil_mode) and, with
blocks="folded", the blocks' branch4 pools (3x3/1). ATen's channels_last max-pool computes int64
indices it then drops; the 3x3/1 pools were 16% of the folded network's time on this project's
CPU (docs/measurements.md, "The whole network, prepared by `prepare_for_inference`"), the stem
pools 5-9 ms of a 74 ms batch-8 forward. The package's pools are about 2x faster (same section).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _ext
from .backends.cpu_maxpool import (
    global_avg_pool_nhwc,
    max_pool3x3_nhwc,
    max_pool_nhwc,
    pooled_size,
    replay_call,
)

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _pairs(pool: nn.MaxPool2d) -> list[tuple[int, int]]:
    """kernel_size, stride, padding, dilation of `pool`, each as (height, width)."""
    fields = (pool.kernel_size, pool.stride, pool.padding, pool.dilation)
    return [tuple(v) if isinstance(v, (tuple, list)) else (v, v) for v in fields]


def _arguments_fit(pool: nn.MaxPool2d, pairs: list[tuple[int, int]] | None = None) -> bool:
    """True if the package's kernel computes `pool`'s arguments: no indices, dilation 1, padding
    at most half the kernel (F.max_pool2d's own limit). pairs: _pairs(pool) if already taken."""
    if pool.return_indices:
        return False
    kernel, _, padding, dilation = _pairs(pool) if pairs is None else pairs
    halves = all(0 <= p <= k // 2 for k, p in zip(kernel, padding, strict=True))
    return dilation == (1, 1) and halves


def fits_nhwc_pool(module: nn.Module) -> bool:
    """True for an nn.MaxPool2d (that exact type) computing what NhwcMaxPool2d does: no indices,
    dilation 1, padding at most half the kernel (F.max_pool2d's own limit)."""
    return type(module) is nn.MaxPool2d and _arguments_fit(module)


def is_pool3x3(module: nn.Module) -> bool:
    """True for an nn.MaxPool2d computing a 3x3 max-pool with stride 1 and padding 1 (ceil_mode
    changes nothing at stride 1), without indices."""
    return fits_nhwc_pool(module) and _pairs(module) == [(3, 3), (1, 1), (1, 1), (1, 1)]


def _replay_allowed(x: Tensor) -> bool:
    """Whether a pool may make its last call (`_fast`, a direct operator call) again on x, as far
    as the call's own conditions go: _ext.direct_calls_allowed, no autograd recording."""
    return _ext.direct_calls_allowed() and not (x.requires_grad and torch.is_grad_enabled())


def _eager_cpu_call(x, op: str) -> bool:
    """Whether a pool may call the operator fused_inception::<op> on x at all: a tensor (not an
    fx proxy) outside tracing, ONNX export and torch.compile, in a build with the operator, and
    no autograd to record (the pools' operators have no backward)."""
    if not isinstance(x, Tensor) or isinstance(x, torch.fx.Proxy):
        return False
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling() or not _ext.has_op(op):
        return False
    return not (torch.is_grad_enabled() and x.requires_grad)


def _adopt(new: nn.Module, pool: nn.Module) -> nn.Module:
    """`new`, made from `pool`: its training flag, and `pool` kept for to_unfused."""
    new.training = pool.training
    new.__dict__["_source"] = pool
    return new


def _state_without_fast(module: nn.Module) -> dict:
    """__getstate__ of a pool: its last call (`_fast`) is derived, rebuilt on the next call."""
    state = module.__dict__.copy()
    state.pop("_fast", None)
    return state


def fits_global_avg_pool(module: nn.Module) -> bool:
    """True for an nn.AdaptiveAvgPool2d (that exact type) with a 1x1 output: the mean over H and
    W (GoogLeNet's avgpool before its classifier)."""
    return type(module) is nn.AdaptiveAvgPool2d and _is_one(module.output_size)


def _is_one(size) -> bool:
    return size == 1 or (isinstance(size, (tuple, list)) and tuple(size) == (1, 1))


def nhwc_pool(module: nn.Module) -> NhwcMaxPool2d | NhwcAdaptiveAvgPool2d | None:
    """The NHWC pool that replaces `module` (NhwcMaxPool3x3 for a 3x3/1 pool, NhwcMaxPool2d for
    any other that fits_nhwc_pool, NhwcAdaptiveAvgPool2d for a global average pool), or None
    where it stays as it is."""
    if is_pool3x3(module):
        return NhwcMaxPool3x3.from_module(module)
    if fits_nhwc_pool(module):
        return NhwcMaxPool2d.from_module(module)
    if fits_global_avg_pool(module):
        return NhwcAdaptiveAvgPool2d.from_module(module)
    return None


class NhwcMaxPool2d(nn.MaxPool2d):
    """nn.MaxPool2d (dilation 1, no indices), the package's NHWC kernel where it applies.

    x:   [N, C, H, W]
    out: [N, C, OH, OW], exactly F.max_pool2d(x, kernel_size, stride, padding,
         ceil_mode=ceil_mode); channels_last from the package's kernel (CPU, channels_last-
         contiguous x, float32/float64/float16/bfloat16, no autograd recording, eager mode),
         else whatever ATen's max-pool returns (also under TorchScript, tracing, ONNX export,
         torch.fx and torch.compile).
    """

    __jit_ignored_attributes__ = ["_source", "_fast"]

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> NhwcMaxPool2d:
        """The same pool (fits_nhwc_pool(pool) must hold); to_unfused() gives `pool` back."""
        if not fits_nhwc_pool(pool):
            raise ValueError(
                "expected an nn.MaxPool2d without indices, with dilation 1 and padding at most "
                f"half the kernel, got {pool}"
            )
        new = cls(
            pool.kernel_size, pool.stride, pool.padding, pool.dilation, ceil_mode=pool.ceil_mode
        )
        return _adopt(new, pool)

    def to_unfused(self) -> nn.MaxPool2d:
        """The pool this one was made from (or a plain one with the same arguments)."""
        source = self.__dict__.get("_source")
        if source is None:
            source = nn.MaxPool2d(
                self.kernel_size,
                self.stride,
                self.padding,
                self.dilation,
                return_indices=self.return_indices,
                ceil_mode=self.ceil_mode,
            )
        source.training = self.training
        return source

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._aten(x)
        return self._forward_python(x)

    def _aten(self, x: Tensor) -> Tensor:
        """nn.MaxPool2d's forward (F.max_pool2d: super().forward does not script)."""
        return F.max_pool2d(
            x,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        # The last call's decision for a CPU tensor, kept with what it rests on (x's layout,
        # dtype and the pool's arguments): _kernel_fits's other conditions (autograd, tracing,
        # compiling) are asked again here; about 50 us less per call inside a batch-1 network.
        if type(x) is Tensor and x.is_cpu:
            fast = self.__dict__.get("_fast")
            if fast is not None and fast[0] == self._fast_key(x) and _replay_allowed(x):
                return fast[1](x, *fast[2])
        if not self._kernel_fits(x):
            return self._aten(x)
        op, args = self._nhwc_call()
        if type(x) is Tensor and x.is_cpu:
            self.__dict__["_fast"] = (self._fast_key(x), *replay_call(op, args))
        return op(x, *args)

    def __getstate__(self):
        return _state_without_fast(self)

    def _fast_key(self, x: Tensor) -> tuple:
        return (
            x.shape,
            x.stride(),
            x.dtype,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.ceil_mode,
            self.return_indices,
        )

    @torch.jit.unused
    def _nhwc_call(self) -> tuple:
        """The package's pool as (function, its arguments after x) for this pool's arguments."""
        return max_pool_nhwc, (self.kernel_size, self.stride, self.padding, self.ceil_mode)

    @torch.jit.unused
    def _kernel_fits(self, x: Tensor) -> bool:
        if not _eager_cpu_call(x, "max_pool_nhwc"):
            return False
        if not (
            x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype in _DTYPES
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return False
        # Arguments changed since from_module, or an input too small: ATen's pool (and errors).
        pairs = _pairs(self)
        (kh, kw), (sh, sw), (ph, pw), _ = pairs
        if not _arguments_fit(self, pairs) or min(sh, sw) < 1:
            return False
        return (
            pooled_size(x.shape[2], kh, sh, ph, self.ceil_mode) >= 1
            and pooled_size(x.shape[3], kw, sw, pw, self.ceil_mode) >= 1
        )


class NhwcMaxPool3x3(NhwcMaxPool2d):
    """nn.MaxPool2d(3, stride=1, padding=1), the package's NHWC kernel where it applies: the
    Inception blocks' branch4 pool, NhwcMaxPool2d made only from such pools.

    x:   [N, C, H, W]
    out: [N, C, H, W], exactly F.max_pool2d(x, 3, 1, 1), as NhwcMaxPool2d computes it; by
         max_pool3x3_nhwc while its arguments stay 3x3/1/1 (the operator the cpu backend's
         blocks run: 1-10% faster than max_pool_nhwc at GoogLeNet's branch4 shapes at batch 8,
         about 3 us at batch 1, 2 threads, on this project's CPU, interleaved; the same bits).
    """

    @torch.jit.unused
    def _nhwc_call(self) -> tuple:
        if _pairs(self)[:3] == [(3, 3), (1, 1), (1, 1)]:
            return max_pool3x3_nhwc, ()
        return super()._nhwc_call()

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> NhwcMaxPool3x3:
        """The same pool (is_pool3x3(pool) must hold); to_unfused() gives `pool` back."""
        if not is_pool3x3(pool):
            raise ValueError(f"expected a 3x3 MaxPool2d with stride 1 and padding 1, got {pool}")
        return super().from_module(pool)


class NhwcAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """nn.AdaptiveAvgPool2d with a 1x1 output (the mean over H and W), the package's NHWC kernel
    where it applies.

    x:   [N, C, H, W]
    out: [N, C, 1, 1], the mean over H and W. By fused_inception::global_avg_pool_nhwc (CPU,
         channels_last-contiguous float32 or float64 x, no autograd recording, eager mode,
         output_size still 1x1): channels_last, each channel summed in pixel order, so it
         equals F.adaptive_avg_pool2d(x, 1) (ATen's mean, summed in cascades) up to float
         rounding; else F.adaptive_avg_pool2d itself (also under TorchScript, tracing, ONNX
         export, torch.fx and torch.compile). In a batch-1 GoogLeNet ATen's reduction took
         110-200 us with cold caches, mostly its setup.
    """

    __jit_ignored_attributes__ = ["_source", "_fast"]

    @classmethod
    def from_module(cls, pool: nn.AdaptiveAvgPool2d) -> NhwcAdaptiveAvgPool2d:
        """The same pool (fits_global_avg_pool(pool) must hold); to_unfused() gives `pool`
        back."""
        if not fits_global_avg_pool(pool):
            raise ValueError(f"expected an nn.AdaptiveAvgPool2d with a 1x1 output, got {pool}")
        return _adopt(cls(pool.output_size), pool)

    def to_unfused(self) -> nn.AdaptiveAvgPool2d:
        """The pool this one was made from (or a plain one with the same output size)."""
        source = self.__dict__.get("_source")
        if source is None:
            source = nn.AdaptiveAvgPool2d(self.output_size)
        source.training = self.training
        return source

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return F.adaptive_avg_pool2d(x, self.output_size)
        return self._forward_python(x)

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        # The last call's decision for a CPU tensor, kept with what it rests on (x's layout and
        # dtype, the output size); the other conditions are asked again, as NhwcMaxPool2d does.
        if type(x) is Tensor and x.is_cpu:
            fast = self.__dict__.get("_fast")
            if fast == (x.shape, x.stride(), x.dtype, self.output_size) and _replay_allowed(x):
                return _GLOBAL_AVG_DIRECT(x)
        if not self._kernel_fits(x):
            return F.adaptive_avg_pool2d(x, self.output_size)
        if type(x) is Tensor and x.is_cpu and _GLOBAL_AVG_DIRECT is not None:
            self.__dict__["_fast"] = (x.shape, x.stride(), x.dtype, self.output_size)
        return global_avg_pool_nhwc(x)

    def __getstate__(self):
        return _state_without_fast(self)

    @torch.jit.unused
    def _kernel_fits(self, x: Tensor) -> bool:
        return (
            _eager_cpu_call(x, "global_avg_pool_nhwc")
            and _is_one(self.output_size)
            and x.device.type == "cpu"
            and x.dim() == 4
            and x.dtype in (torch.float32, torch.float64)
            and x.shape[2] * x.shape[3] > 0
            and x.is_contiguous(memory_format=torch.channels_last)
        )


# The operator called without torch.ops' Python layer (_ext.direct_op), for the replays.
_GLOBAL_AVG_DIRECT = _ext.direct_op("global_avg_pool_nhwc")
