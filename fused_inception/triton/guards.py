"""Argument checks shared by the Triton launchers, for what the kernels cannot see themselves.

- `check_no_overlap`: an `out` that is, or overlaps, an input. The kernels load x and the
  weights while other programs already store into out, so such a call gives wrong results
  silently. ATen's own test (at::get_overlap_status, `torch._C._overlaps`) gives up on
  non-dense tensors such as a channel slice, and compares addresses only within one storage
  (two storages over the same memory, e.g. from numpy views, pass it), so this check is
  conservative instead, like csrc/overlap.h for the C++ operators: two non-empty tensors may
  overlap if they share a storage or the byte ranges they can address intersect.
- `as_channel_offset`: c_off must be an integer, not a bool or a float, which the launch would
  pass on as something else (a float c_off becomes an fp32 kernel argument).
"""

from __future__ import annotations

import operator

from torch import Tensor


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
    """False only if a and b provably address disjoint memory."""
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.device.type == "meta" or b.device.type == "meta" or a.device != b.device:
        return False  # meta tensors have no memory; other devices, another address space
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr():
        return True  # one storage (even where these views happen to be disjoint)
    a_first, a_end = _byte_range(a)
    b_first, b_end = _byte_range(b)
    return a_first < b_end and b_first < a_end


def check_no_overlap(op: str, out: Tensor, **inputs: Tensor) -> None:
    """ValueError naming out and the input if out may overlap any of `inputs`."""
    for name, t in inputs.items():
        if may_overlap(out, t):
            raise ValueError(
                f"{op}: out overlaps {name} in memory (expected out not to share storage with "
                f"{name}, got out with shape {tuple(out.shape)} and strides {out.stride()} at "
                f"{out.data_ptr():#x}, {name} with shape {tuple(t.shape)} and strides "
                f"{t.stride()} at {t.data_ptr():#x}); the kernel would read values it has "
                f"already overwritten"
            )


def as_channel_offset(op: str, c_off: object) -> int:
    """c_off as a Python int; TypeError for a bool, a float or anything else not an integer.

    (The launchers then check that [c_off, c_off + C_out) lies within out's channels.)
    """
    if isinstance(c_off, bool):
        raise TypeError(f"{op}: c_off must be an int, got the bool {c_off}")
    try:
        return operator.index(c_off)  # int, numpy and torch integers; not floats
    except TypeError:
        raise TypeError(f"{op}: c_off must be an int, got {type(c_off).__name__}") from None
