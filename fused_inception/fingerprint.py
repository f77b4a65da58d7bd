"""Content fingerprints of a block's weights and buffers: when to repack, whatever wrote them.

autograd's version counter misses writes through `.data` (`w.data.mul_(2)`, EMA loops written
that way), through numpy views and through other aliases with their own counter; tensors
created under `torch.inference_mode()` have no counter at all. So the packed-weight cache is
keyed on the bytes themselves: a 64-bit hash in which any single changed 32-bit word always
changes the result (and several changes collide with probability about 2^-64).

- CPU tensors: the C++ operator fused_inception::fingerprint (csrc/cpu/fingerprint.cpp):
  vectorised, parallel, one pass over the bytes.
- other devices (CUDA): a few torch operations on the device, then one synchronisation to
  read the 64-bit value: the sum modulo 2^64, over the int64 words of all tensors, of
  mix(word + i * GOLDEN), where mix is splitmix64's finaliser (odd multiplications and
  xor-shifts, a bijection). A single changed word changes its mixed value, hence the sum;
  two changes cancel with probability about 2^-64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from . import _ext

# splitmix64's constants, as signed int64 (torch has no uint64 arithmetic on every device).
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def fingerprint(tensors: Sequence[Tensor]) -> tuple:
    """A value that changes whenever the bytes, dtype, shape, strides or device of any tensor do.

    tensors: any tensors (a block's parameters and buffers), any devices, dtypes and strides.
    returns: a hashable tuple; equal tuples mean equal contents (up to a 2^-64 collision).
    """
    layout = tuple((t.dtype, t.device, tuple(t.shape), t.stride()) for t in tensors)
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    hashes = tuple((device, _hash(device, group)) for device, group in by_device.items())
    return layout, hashes


def _dense(t: Tensor) -> Tensor:
    """t itself if its elements fill its memory span (the C++ operator hashes that span)."""
    dense = t.is_contiguous() or (
        t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    )
    return t if dense else t.contiguous()


def _hash(device: torch.device, tensors: list[Tensor]) -> int | None:
    if device.type == "meta":
        return None  # no contents: shapes and dtypes are all there is
    return _hash_cpu(tensors) if device.type == "cpu" else _hash_torch(tensors)


def _hash_cpu(tensors: list[Tensor]) -> int:
    if _ext.has_extension():
        # .detach(): no autograd bookkeeping around the call; inference tensors are fine.
        return int(torch.ops.fused_inception.fingerprint([_dense(t).detach() for t in tensors]))
    return _hash_torch(tensors)


def _hash_torch(tensors: list[Tensor]) -> int:
    """The device-side hash (any device): sum of mixed int64 words, modulo 2^64."""
    with torch.no_grad():
        parts = [t.detach().reshape(-1).view(torch.uint8) for t in tensors if t.numel()]
        if not parts:
            return 0
        flat = torch.cat(parts)
        pad = (-flat.numel()) % 8
        if pad:
            flat = torch.cat([flat, flat.new_zeros(pad)])
        words = flat.view(torch.int64)
        z = torch.arange(words.numel(), device=words.device, dtype=torch.int64)
        z = z.mul_(_GOLDEN).add_(words)
        for shift, factor in ((30, _MIX1), (27, _MIX2), (31, None)):
            # z ^= z >>> shift (a logical shift: the arithmetic one, masked), then * factor
            z = z.bitwise_xor_(z.bitwise_right_shift(shift).bitwise_and_((1 << (64 - shift)) - 1))
            if factor is not None:
                z = z.mul_(factor)
        return int(z.sum())
