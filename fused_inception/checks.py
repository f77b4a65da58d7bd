"""Argument checks shared by the operators' Python side: the Triton launchers and the fake
kernels of the C++ operators.

Error types, the same in every operator of this package (Python here, C++ in csrc/cuda_ops.cpp
and csrc/cpu/*.cpp, and the block operator's own `ops.check_block_args`), one per kind of
mistake, so that a caller can tell them apart without reading the message:

- TypeError:    a wrong dtype, or an argument of the wrong Python type (TORCH_CHECK_TYPE);
- ValueError:   a wrong shape, layout (strides, contiguity) or value, and an `out` that
                overlaps an input (TORCH_CHECK_VALUE);
- RuntimeError: tensors on different devices, or a device that this build or backend cannot
                run on (TORCH_CHECK); a launch that fails on the device is one too.

Messages name the operator, the argument, what was expected and what was given. One deliberate
exception: inception_block (like FusedInception) refuses an image with H or W = 0 with a
RuntimeError, because torchvision's block does.
"""

from __future__ import annotations

import operator

from torch import Tensor


def check_same_device(op: str, **tensors: Tensor) -> None:
    """RuntimeError listing every tensor's device unless all of `tensors` share one.

    The fake kernels call it too: a fake kernel also runs for real when one operand is a meta
    tensor (Meta outranks CPU and CUDA in dispatch), and must not silently do nothing there.
    """
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise RuntimeError(f"{op}: all tensors must be on one device, got {listed}")


def _byte_range(t: Tensor) -> tuple[int, int]:
    """[first, one past the last) byte t can address (Python ints: no overflow)."""
    low = high = 0
    for size, stride in zip(t.shape, t.stride(), strict=True):
        extent = stride * (size - 1)
        if extent < 0:
            low += extent
        else:
            high += extent
    base, item = t.data_ptr(), t.element_size()
    return base + low * item, base + (high + 1) * item


def may_overlap(a: Tensor, b: Tensor) -> bool:
    """False only if a and b provably address disjoint memory.

    Conservative, like csrc/overlap.h for the C++ operators: two non-empty tensors may overlap
    if they share a storage or the byte ranges they can address intersect. ATen's own test
    (at::get_overlap_status, `torch._C._overlaps`) gives up on non-dense tensors such as a
    channel slice, and compares addresses only within one storage (two storages over the same
    memory, e.g. from numpy views, pass it).
    """
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.device.type == "meta" or b.device.type == "meta" or a.device != b.device:
        return False  # meta tensors have no memory; other devices, another address space
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr():
        return True  # one storage (even where these views happen to be disjoint)
    a_first, a_end = _byte_range(a)
    b_first, b_end = _byte_range(b)
    return a_first < b_end and b_first < a_end


def check_no_overlap(op: str, out: Tensor, /, *, written: str = "out", **inputs: Tensor) -> None:
    """ValueError naming out (or the `written` name) and the input if out may overlap any of
    `inputs`.

    Why: the kernels load x and the weights while other programs already store into out, so
    such a call gives wrong results silently.
    """
    for name, t in inputs.items():
        if may_overlap(out, t):
            raise ValueError(
                f"{op}: {written} overlaps {name} in memory (expected {written} not to share "
                f"storage with {name}, got {written} with shape {tuple(out.shape)} and strides "
                f"{out.stride()} at {out.data_ptr():#x}, {name} with shape {tuple(t.shape)} and "
                f"strides {t.stride()} at {t.data_ptr():#x}); the kernel would read values it has "
                f"already overwritten"
            )


def as_channel_offset(op: str, c_off: object) -> int:
    """c_off as a Python int; TypeError for a bool, a float or anything else not an integer.

    A float c_off would reach a Triton kernel as an fp32 argument, a 0-d tensor as a pointer.
    """
    if isinstance(c_off, bool):
        raise TypeError(f"{op}: c_off must be an int, got the bool {c_off}")
    try:
        return operator.index(c_off)  # int, numpy and torch integers; not floats
    except TypeError:
        raise TypeError(f"{op}: c_off must be an int, got {type(c_off).__name__}") from None
