"""Content fingerprints of a block's weights and buffers: when to repack, whatever wrote them.

autograd's version counter misses writes through `.data` (`w.data.mul_(2)`, EMA loops written
that way), through numpy views and through other aliases with their own counter; tensors
created under `torch.inference_mode()` have no counter at all. So the packed-weight cache is
keyed on the bytes themselves: a 64-bit hash in which any single changed 32-bit word always
changes the result (and several changes collide with probability about 2^-64).

- CPU tensors: the C++ operator fused_inception::fingerprint (csrc/cpu/fingerprint.cpp):
  vectorised, parallel, one pass over the bytes (its typed wrapper `fingerprint_cpu`, which
  calls the same function through the C function fused_inception._C.fingerprint, and its fake
  kernel are here).
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


def fingerprint(tensors: Sequence[Tensor]) -> object:
    """A value that changes whenever the bytes, dtype, shape, strides or device of any tensor do.

    tensors: any tensors (a block's parameters and buffers), any devices, dtypes and strides.
    returns: a hashable value; equal values mean equal contents (up to a 2^-64 collision).
    """
    if tensors and tensors[0].device.type == "cpu" and _ext.has_extension():
        # One C++ call, which hashes the layouts too (the common case: a CPU model). It refuses
        # a tensor on another device before hashing anything; asking each tensor its device here
        # first would cost about 10 us per block forward (0.3 us per parameter).
        try:
            return fingerprint_cpu(tensors)
        except (RuntimeError, NotImplementedError):  # NotImplementedError: a CUDA tensor
            if all(t.device.type == "cpu" for t in tensors):
                raise
    layout = tuple((t.dtype, t.device, tuple(t.shape), t.stride()) for t in tensors)
    by_device: dict[torch.device, list[Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    return layout, tuple((device, _hash(device, group)) for device, group in by_device.items())


def fingerprint_cpu(tensors: Sequence[Tensor]) -> int:
    """The C++ operator fused_inception::fingerprint: a 64-bit hash (a signed Python int) of the
    bytes, dtypes, sizes and strides of CPU tensors. RuntimeError for a tensor on another
    device or a missing extension.

    For CPU tensors, one C call (fused_inception._C.fingerprint, csrc/fingerprint_int.cpp: the
    operator's function, its value as an int) instead of the operator and item(): inside a
    network each check runs with cold caches: 91 -> 38 us for 30 small tensors after a 32 MB write.
    """
    if _FINGERPRINT is not None:
        value = _FINGERPRINT(tensors)
        if value is not None:
            return value
    return int(_ext.op("fingerprint")(tensors))


_FINGERPRINT = _ext.c_function("fingerprint")


@_ext.register_fake("fingerprint")
def _fingerprint_fake(tensors: list[Tensor]) -> Tensor:
    # The dispatcher runs this for a list with any meta tensor in it, CPU ones included: refuse
    # what the CPU kernel refuses rather than return an empty value.
    device = tensors[0].device
    for i, t in enumerate(tensors):
        if t.device != device:
            raise RuntimeError(
                f"fused_inception::fingerprint: tensor {i} is on {t.device}; this operator "
                "hashes CPU tensors"
            )
    return torch.empty((), dtype=torch.int64, device=device)


def version_key(tensors: Sequence[Tensor]) -> tuple:
    """What autograd's version counters and the storages' addresses say about `tensors`.

    Cheaper than `fingerprint` (no pass over the bytes) but blind to writes that bypass the
    version counter: through `.data`, numpy views or other aliases with their own counter, and
    any in-place write to a tensor created under inference_mode (it has no counter).

    With the extension, one C call (fused_inception._C.version_key: a flat tuple of data
    pointer, scalar type and version, or -1, per tensor; 15 us -> 1.3 us for a block's 36
    tensors); `_version_key_python` otherwise, and for what the C one leaves to it.
    """
    if _VERSION_KEY is not None:
        key = _VERSION_KEY(tensors)
        if key is not None:
            return key
    return _version_key_python(tensors)


def _version_key_python(tensors: Sequence[Tensor]) -> tuple:
    """version_key as Python (the C function's specification)."""
    return tuple((t.data_ptr(), t.dtype, None if t.is_inference() else t._version) for t in tensors)


_VERSION_KEY = _ext.c_function("version_key")


def _hash(device: torch.device, tensors: list[Tensor]) -> int | None:
    if device.type == "meta":
        return None  # no contents: shapes and dtypes are all there is
    if device.type == "cpu" and _ext.has_extension():
        return fingerprint_cpu(tensors)
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
