"""The CPU backend's NHWC max-pools: the C++ operators fused_inception::max_pool3x3_nhwc
(csrc/cpu/max_pool3x3.cpp, the 3x3/1 pool of the Inception block), its index-free backward
(csrc/cpu/max_pool3x3_backward.cpp) and max_pool_nhwc (csrc/cpu/max_pool_nhwc.cpp, any kernel,
stride, padding and ceil_mode: GoogLeNet's stem pools), their typed wrappers and fake kernels.

Separable and vectorised over the channels of NHWC memory; bit-exact with F.max_pool2d.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext


def max_pool3x3_nhwc(x: Tensor) -> Tensor:
    """3x3 max-pool with stride 1 and padding 1 (padding counts as -inf) of an NHWC tensor.

    Computes exactly `torch.nn.functional.max_pool2d(x, 3, 1, 1)` on the CPU, NaN and infinities
    included: a window holding a NaN gives its last NaN in row-major order, and of equal maxima
    (-0.0 and +0.0) the first one. The one difference is in the bits of bfloat16 NaNs: this keeps
    the input NaN's bits, while torch's vectorised kernels rewrite some of them as 0xFFFF.

    Arguments:
        x: [N, C, H, W], float32, float64, float16 or bfloat16, on the CPU, channels_last-
            contiguous (`x.contiguous(memory_format=torch.channels_last)` makes it so).
    Returns:
        out: [N, C, H, W], channels_last, same dtype; a new tensor.
    Raises (fused_inception.checks): TypeError for another dtype, ValueError for another rank
    or layout, RuntimeError for a tensor not on the CPU or a missing extension.
    """
    return _ext.op("max_pool3x3_nhwc")(x)


@_ext.register_fake("max_pool3x3_nhwc")
def _max_pool3x3_nhwc_fake(x: Tensor) -> Tensor:
    torch._check(x.dim() == 4, lambda: f"max_pool3x3_nhwc: expected 4-D x, got {x.dim()}-D")
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _pair(value: int | Sequence[int], name: str) -> list[int]:
    """(height, width) from an int or a pair of ints, as F.max_pool2d takes them."""
    pair = [value, value] if isinstance(value, int) else list(value)
    if len(pair) != 2 or not all(isinstance(v, int) for v in pair):
        raise ValueError(f"max_pool_nhwc: expected {name} as an int or 2 ints, got {value!r}")
    return pair


def pooled_size(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """Output length of a max-pool along one dimension (dilation 1): ATen's
    pooling_output_shape, which with ceil_mode drops a last window that would start in the
    right padding."""
    out = (size + 2 * padding - kernel + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool_nhwc(
    x: Tensor,
    kernel_size: int | Sequence[int],
    stride: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
    ceil_mode: bool = False,
) -> Tensor:
    """Max-pool of an NHWC tensor with any kernel, stride and padding (dilation 1, no indices).

    Computes exactly `torch.nn.functional.max_pool2d(x, kernel_size, stride, padding,
    ceil_mode=ceil_mode)` on the CPU, output size, NaN and infinities included: padding is never
    selected, a window holding a NaN gives its last NaN in row-major order, and of equal maxima
    (-0.0 and +0.0) the first one. As for max_pool3x3_nhwc, bfloat16 NaNs keep the input NaN's
    bits where torch's vectorised kernels may write 0xFFFF.

    Arguments:
        x:           [N, C, H, W], float32, float64, float16 or bfloat16, on the CPU,
                     channels_last-contiguous.
        kernel_size: int or (kH, kW), >= 1.
        stride:      int or (sH, sW), >= 1; None (default): kernel_size, as F.max_pool2d.
        padding:     int or (pH, pW), 0 <= p <= k // 2 (-inf padding).
        ceil_mode:   round the output size up (the last window still starts inside the input or
                     its left padding).
    Returns:
        out: [N, C, OH, OW] (pooled_size of each dimension), channels_last, x's dtype; a new
             tensor.
    Raises: TypeError for another dtype, ValueError for another rank or layout, bad pool
    arguments or an empty output, RuntimeError for a tensor not on the CPU or a missing
    extension.
    """
    return _ext.op("max_pool_nhwc")(x, *_max_pool_args(kernel_size, stride, padding, ceil_mode))


def _max_pool_args(kernel_size, stride, padding, ceil_mode: bool) -> tuple:
    """max_pool_nhwc's arguments after x as the operator takes them (pairs as lists)."""
    kernel = _pair(kernel_size, "kernel_size")
    strides = kernel if stride is None else _pair(stride, "stride")
    return kernel, strides, _pair(padding, "padding"), ceil_mode


def global_avg_pool_nhwc(x: Tensor) -> Tensor:
    """The mean over H and W of a channels_last CPU tensor [N, C, H, W] (float32 or float64,
    H * W >= 1) as a channels_last [N, C, 1, 1] (fused_inception::global_avg_pool_nhwc,
    csrc/cpu/global_avg_pool.cpp): F.adaptive_avg_pool2d(x, 1) up to float rounding (each
    channel summed in pixel order). ValueError for another rank or layout or an empty image,
    TypeError for another dtype, RuntimeError off the CPU or without the extension."""
    return _ext.op("global_avg_pool_nhwc")(x)


@_ext.register_fake("global_avg_pool_nhwc")
def _global_avg_pool_nhwc_fake(x: Tensor) -> Tensor:
    torch._check(x.dim() == 4, lambda: f"global_avg_pool_nhwc: expected 4-D x, got {x.dim()}-D")
    return torch.empty(
        (x.shape[0], x.shape[1], 1, 1),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )


# The pools' operators called without torch.ops' Python layer (_ext.direct_op; None without
# them), for NhwcMaxPool2d's replays of its last call.
_MAX_POOL_DIRECT = _ext.direct_op("max_pool_nhwc")
_MAX_POOL3X3_DIRECT = _ext.direct_op("max_pool3x3_nhwc")


def replay_call(function: Callable, args: tuple) -> tuple[Callable, tuple]:
    """A call (max_pool_nhwc or max_pool3x3_nhwc, its arguments after x) as a replay makes it:
    the operator called directly, the arguments as the operator takes them (pairs), where the
    build allows; else the call unchanged. (The arguments were checked when the call was first
    made.)"""
    if function is max_pool_nhwc and _MAX_POOL_DIRECT is not None:
        return _MAX_POOL_DIRECT, _max_pool_args(*args)
    if function is max_pool3x3_nhwc and _MAX_POOL3X3_DIRECT is not None:
        return _MAX_POOL3X3_DIRECT, args
    return function, args


@_ext.register_fake("max_pool_nhwc")
def _max_pool_nhwc_fake(
    x: Tensor, kernel_size: list[int], stride: list[int], padding: list[int], ceil_mode: bool
) -> Tensor:
    torch._check(x.dim() == 4, lambda: f"max_pool_nhwc: expected 4-D x, got {x.dim()}-D")
    out_h, out_w = (
        pooled_size(x.shape[2 + i], kernel_size[i], stride[i], padding[i], ceil_mode)
        for i in range(2)
    )
    return torch.empty(
        (x.shape[0], x.shape[1], out_h, out_w),
        dtype=x.dtype,
        device=x.device,
        memory_format=torch.channels_last,
    )


def max_pool3x3_nhwc_backward(grad_out: Tensor, x: Tensor) -> Tensor:
    """The gradient of max_pool3x3_nhwc(x) with respect to x, without stored indices.

    What `max_pool2d_with_indices_backward` returns for the indices of
    `max_pool2d_with_indices(x, 3, 1, 1)` on the CPU (float32 and float64 bit for bit; 16-bit
    dtypes accumulate in float32): each output's gradient goes to the element its window
    selects (row-major scan; a NaN replaces the running max, another value only if strictly
    greater), an element's gradient is the sum of those that selected it, in row-major order.
    float32 runs AVX-512 or AVX2 loops as torch's CPU capability allows (the scalar loops at
    capability `default`; all give the same bits).

    Arguments:
        grad_out: [N, C, H, W], x's dtype, channels_last-contiguous.
        x:        [N, C, H, W], as for max_pool3x3_nhwc.
    Returns:
        grad_x: [N, C, H, W], channels_last, a new tensor.
    Raises: TypeError for another dtype (or grad_out's differing), ValueError for another rank,
    shape or layout, RuntimeError for tensors not on the CPU.
    """
    return _ext.op("max_pool3x3_nhwc_backward")(grad_out, x)


@_ext.register_fake("max_pool3x3_nhwc_backward")
def _max_pool3x3_nhwc_backward_fake(grad_out: Tensor, x: Tensor) -> Tensor:
    torch._check(
        x.dim() == 4, lambda: f"max_pool3x3_nhwc_backward: expected 4-D x, got {x.dim()}-D"
    )
    return torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def max_pool3x3_nhwc_backward_add_(grad_in: Tensor, grad_out: Tensor, x: Tensor) -> None:
    """grad_in += max_pool3x3_nhwc_backward(grad_out, x), in one pass and in place (the same
    values as the two operations: the pool's gradient is rounded to x's dtype, then added).

    Arguments:
        grad_in:  [N, C, H, W], x's dtype, channels_last-contiguous, sharing no memory with
                  grad_out or x; updated in place.
        grad_out: [N, C, H, W], x's dtype, channels_last-contiguous.
        x:        [N, C, H, W], as for max_pool3x3_nhwc.
    Raises: as max_pool3x3_nhwc_backward, and ValueError for a grad_in of another shape or
    layout or one that shares memory with the others.
    """
    _ext.op("max_pool3x3_nhwc_backward_add_")(grad_in, grad_out, x)


@_ext.register_fake("max_pool3x3_nhwc_backward_add_")
def _max_pool3x3_nhwc_backward_add_fake(grad_in: Tensor, grad_out: Tensor, x: Tensor) -> None:
    torch._check(
        x.dim() == 4, lambda: f"max_pool3x3_nhwc_backward_add_: expected 4-D x, got {x.dim()}-D"
    )


def max_pool3x3(x_nhwc: Tensor) -> Tensor:
    """max_pool2d(x, 3, stride 1, padding 1) of a channels_last tensor, channels_last: the C++
    operator on the CPU when the extension loaded, F.max_pool2d otherwise."""
    if x_nhwc.device.type == "cpu" and _ext.has_extension():
        return max_pool3x3_nhwc(x_nhwc)
    return F.max_pool2d(x_nhwc, kernel_size=3, stride=1, padding=1)
