"""The block output every backend allocates, and its memory format: one rule for all.

Its own module (not the backends package's __init__, which loads the backends by name) so that
the backends and the operator import it without an import cycle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

_poison_outputs = False


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """While enabled, outputs that backends allocate are pre-filled with NaN.

    Tests use it so that an element a kernel forgets to write fails the parity check instead
    of passing on whatever memory happened to hold.
    """
    global _poison_outputs
    previous, _poison_outputs = _poison_outputs, enabled
    try:
        yield
    finally:
        _poison_outputs = previous


def output_poisoned() -> bool:
    """True while poison_outputs is on (for operators that allocate their output in C++)."""
    return _poison_outputs


def new_output(shape: tuple[int, ...], like: torch.Tensor, memory_format: torch.memory_format):
    """Allocate a backend's output (NaN-filled while poison_outputs is on)."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)
    if _poison_outputs:
        out.fill_(float("nan"))
    return out


def output_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format of the block's output for input x, on every backend and in the
    operator's fake kernel and backward: channels_last for strictly channels_last x (not also
    contiguous, as 1x1 images and single channels are), else NCHW (torch.contiguous_format)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
