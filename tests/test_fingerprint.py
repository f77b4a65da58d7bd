"""The content fingerprint that keys FusedInception's packed-weight cache
(fused_inception/fingerprint.py, csrc/cpu/fingerprint.cpp): every single-word change shows."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from helpers import DTYPES, dtype_params, run_at_capability

from fused_inception import _ext
from fused_inception import fingerprint as fp


def _through_the_operator(tensors) -> int:
    """The operator fused_inception::fingerprint and item(), as fingerprint_cpu called it before
    its C function (fused_inception._C.fingerprint), which must give the same value."""
    return int(_ext.op("fingerprint")(tensors))


HASHES = {"cpp": fp.fingerprint_cpu, "operator": _through_the_operator, "torch-ops": fp._hash_torch}


def _tensor(dtype, numel, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        return torch.randint(-128, 127, (numel,), generator=gen, dtype=torch.int8)
    return torch.randn(numel, generator=gen).to(dtype)


@pytest.mark.parametrize("impl", list(HASHES))
@pytest.mark.parametrize("dtype", dtype_params(*DTYPES.values(), torch.int8))
def test_every_single_element_change_changes_the_hash(impl, dtype):
    # 70 KiB and an odd tail: several 64 KiB chunks of the C++ hash, lanes and trailing bytes.
    numel = (70 * 1024 + 13) // torch.empty(0, dtype=dtype).element_size()
    base = _tensor(dtype, numel)
    other = _tensor(dtype, 5, seed=1)
    hash_ = HASHES[impl]
    reference = hash_([other, base])
    positions = torch.randperm(numel - 4, generator=torch.Generator().manual_seed(2))[:200] + 2
    seen = {reference}
    for i in [0, 1, numel - 1, numel - 2, *positions.tolist()]:
        changed = base.clone()
        byte = i * base.element_size() + (i % base.element_size())
        changed.view(torch.uint8)[byte] ^= 1 << (i % 8)  # one bit of element i
        value = hash_([other, changed])
        assert value != reference, f"element {i}"
        seen.add(value)
    assert len(seen) > 200  # distinct changes give distinct hashes (no collision seen)


@pytest.mark.parametrize("impl", list(HASHES))
def test_order_and_boundaries_matter(impl):
    hash_ = HASHES[impl]
    a, b = torch.randn(64), torch.randn(64)
    assert hash_([a, b]) != hash_([b, a])
    swapped = a.clone()
    swapped[[3, 9]] = swapped[[9, 3]]
    assert hash_([swapped]) != hash_([a])
    assert hash_([a]) == hash_([a.clone()])


def test_the_cpp_hash_does_not_depend_on_the_thread_count():
    # Large and small tensors mixed (the threads take parts of about equal bytes), and a list
    # below the size that is hashed on the calling thread.
    tensors = [torch.randn(17, 3).half(), torch.randn(300_000), torch.randn(5), torch.randn(70_000)]
    tensors += [torch.randn(64) for _ in range(30)] + [torch.empty(0)]
    small = [torch.randn(64) for _ in range(30)]
    one, two = _at_one_and_two_threads(small)
    assert one == two
    one, two = _at_one_and_two_threads(tensors)
    assert one == two
    assert one == _reference_fingerprint(tensors, [5, 6, 6, 6] + [6] * 30 + [6])


def _at_one_and_two_threads(tensors) -> tuple[int, int]:
    """fingerprint_cpu(tensors) with 1 and with 2 torch threads."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fp.fingerprint_cpu(tensors)
        torch.set_num_threads(2)
        return one, fp.fingerprint_cpu(tensors)
    finally:
        torch.set_num_threads(previous)


def test_a_cpu_list_with_a_tensor_elsewhere_takes_the_general_path():
    # The C++ operator refuses a non-CPU tensor; fingerprint() then hashes by device.
    w, m = torch.randn(8, 4), torch.empty(3, device="meta")
    with pytest.raises(RuntimeError, match="tensor 1 is on meta"):
        fp.fingerprint_cpu([w, m])
    mixed = fp.fingerprint([w, m])
    assert mixed == fp.fingerprint([w.clone(), m])
    assert mixed != fp.fingerprint([w * 2, m])


def test_the_c_function_gives_the_operators_value():
    c_fingerprint = _ext.c_function("fingerprint")
    if c_fingerprint is None:
        pytest.skip(f"no C fingerprint: {_ext.extension_error()}")
    w = torch.randn(8, 4, 3, 3)
    assert isinstance(c_fingerprint([]), int)  # (the operator cannot dispatch an empty list)
    cases = [
        [w],
        [w, torch.randn(5).half(), torch.empty(0), torch.tensor(3, dtype=torch.int64)],
        (w.transpose(0, 1), w.to(memory_format=torch.channels_last), w[:, ::2]),  # a tuple
        [torch.randn(300_000), *[torch.randn(64) for _ in range(30)]],  # threads, then serial
        [torch.nn.Parameter(w), torch.randn(3, requires_grad=True)],
    ]
    for tensors in cases:
        value = c_fingerprint(tensors)
        assert isinstance(value, int)
        assert value == _through_the_operator(list(tensors)) == fp.fingerprint_cpu(tensors)
    with torch.inference_mode():
        made = [torch.randn(16)]  # an inference tensor hashes like any other
        assert c_fingerprint(made) == _through_the_operator(made)
    # What only the operator can tell (and refuse or hash) is left to it: None.
    assert c_fingerprint([w, torch.empty(3, device="meta")]) is None
    assert c_fingerprint([w, 3.0]) is None
    assert c_fingerprint([w.to_sparse()]) is None
    with pytest.raises(TypeError, match="list or tuple of tensors"):
        c_fingerprint(w.sum())


def test_layout_dtype_device_and_strides_are_part_of_it():
    w = torch.randn(8, 4, 3, 3)
    base = fp.fingerprint([w])
    assert fp.fingerprint([w.clone()]) == base
    assert fp.fingerprint([w.reshape(4, 8, 3, 3)]) != base
    assert fp.fingerprint([w.to(memory_format=torch.channels_last)]) != base
    assert fp.fingerprint([w.double()]) != base
    assert fp.fingerprint([w.to("meta")]) != base
    transposed = w.transpose(0, 1)  # not dense in either contiguity: hashed as a copy
    assert fp.fingerprint([transposed]) != fp.fingerprint([transposed.contiguous() * 2])


def test_a_non_dense_tensor_is_hashed_by_its_elements():
    base = torch.randn(6, 8)
    view = base[:, ::2]
    value = fp.fingerprint_cpu([view])
    assert value != fp.fingerprint_cpu([view.contiguous()])  # other strides
    base[0, 1] += 1.0  # not an element of the view
    assert fp.fingerprint_cpu([view]) == value
    base[0, 2] += 1.0
    assert fp.fingerprint_cpu([view]) != value


def _c_version_key(tensors):
    from fused_inception import _ext

    c_key = _ext.c_function("version_key")
    if c_key is None:
        pytest.skip(f"no C version_key: {_ext.extension_error()}")
    key = c_key(tensors)
    assert isinstance(key, tuple) and len(key) == 3 * len(tensors)
    return key


VERSION_KEYS = {"c": _c_version_key, "python": fp._version_key_python}


@pytest.mark.parametrize("impl", list(VERSION_KEYS))
def test_version_key_sees_version_and_replacement_only(impl):
    version_key = VERSION_KEYS[impl]
    w = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.randn(6)[2:]  # a view: its address is the storage's plus the offset
    key = version_key([w, b])
    w.data.mul_(2.0)  # bypasses the version counter: not seen (what weight_check="content" is for)
    assert version_key([w, b]) == key
    with torch.no_grad():
        w.mul_(2.0)
    assert version_key([w, b]) != key
    key = version_key([w, b])
    w.data = torch.randn(4, 4)
    assert version_key([w, b]) != key
    key = version_key([w, b])
    w.data = w.data.double()  # the same values in another dtype
    assert version_key([w, b]) != key
    key = version_key([w, b])
    b.add_(1.0)  # a write through the view bumps the version its base shares
    assert version_key([w, b]) != key
    assert version_key([b, w]) != version_key([w, b])  # the order is part of it
    if impl == "c":
        assert key[3] == b.data_ptr() and key[5] == b._version - 1
    with torch.inference_mode():
        frozen = torch.randn(3)  # no version counter: only replacement is seen
    key = version_key([frozen])
    with torch.inference_mode():
        frozen.add_(1.0)
    assert version_key([frozen]) == key


def test_version_key_defers_what_c_cannot_read():
    """A tensor without storage or a non-tensor makes the C function answer None, and
    version_key then gives Python's answer (its error for a non-tensor)."""
    from fused_inception import _ext

    c_key = _ext.c_function("version_key")
    if c_key is None:
        pytest.skip(f"no C version_key: {_ext.extension_error()}")
    w = torch.randn(3)
    assert c_key([w, 3]) is None
    with pytest.raises(AttributeError):
        fp.version_key([w, 3])
    with pytest.raises(TypeError, match="list or tuple"):
        c_key(3)
    sparse = torch.eye(3).to_sparse()  # no storage of its own
    assert c_key([w, sparse]) is None
    assert c_key([]) == () and c_key((w,)) == c_key([w])
    meta = torch.empty(2, device="meta")
    assert fp.version_key([meta]) == c_key([meta])


# A transcription of csrc/cpu/fingerprint.cpp's function in numpy (uint32 lanes, Python ints
# for the 64-bit mixing): the C++ operator, whichever of its AVX-512 / AVX2 / baseline builds
# this CPU runs, must compute exactly this value.
_M64 = 2**64 - 1
_P1, _P2, _P3 = 0x9E3779B1, 0x85EBCA77, 0xC2B2AE3D
_CHUNK, _LANES = 64 * 1024, 64
_GOLDEN = 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _chunk_hash(data: bytes) -> int:
    np = pytest.importorskip("numpy")
    lanes = np.arange(_LANES, dtype=np.uint32)
    a, b = np.uint32(_P1) + lanes, np.uint32(_P3) - lanes
    words = np.frombuffer(data[: len(data) // 4 * 4], dtype="<u4")
    tail = len(data) % 4
    if tail:
        words = np.append(words, np.uint32(int.from_bytes(data[-tail:], "little")))
    with np.errstate(over="ignore"):
        for start in range(0, len(words), _LANES):
            w = words[start : start + _LANES]
            if start + _LANES > len(words) - (1 if tail else 0) and tail:
                # the trailing-bytes word goes to lane 0, after the whole and partial rows
                whole = w[:-1]
                a[: len(whole)], b[: len(whole)] = _round(a[: len(whole)], b[: len(whole)], whole)
                a[:1], b[:1] = _round(a[:1], b[:1], w[-1:])
            else:
                a[: len(w)], b[: len(w)] = _round(a[: len(w)], b[: len(w)], w)
    h = _mix64(len(data))
    for j in range(_LANES):
        h ^= _mix64((((int(a[j]) << 32) | int(b[j])) + j * _GOLDEN) & _M64)
    return h


def _round(a, b, w):
    np = pytest.importorskip("numpy")
    acc = a + w * np.uint32(_P2)
    acc = ((acc << np.uint32(13)) | (acc >> np.uint32(19))) * np.uint32(_P1)
    return acc, b + acc


def _layout_hash(t: torch.Tensor, dtype_code: int) -> int:
    h = _mix64(dtype_code + 1)
    for d in range(t.dim()):
        h = _mix64(h ^ (t.size(d) & _M64))
        h = _mix64(h ^ ((t.stride(d) + 0x51ED) & _M64))
    return h


def _reference_fingerprint(tensors: list[torch.Tensor], dtype_codes: list[int]) -> int:
    result = _mix64(len(tensors))
    for i, (t, code) in enumerate(zip(tensors, dtype_codes, strict=True)):
        result ^= _mix64(_layout_hash(t, code) ^ (i << 48))
        data = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        chunks = [data[o : o + _CHUNK] for o in range(0, len(data), _CHUNK)] or [b""]
        for c, chunk in enumerate(chunks):
            h = _chunk_hash(chunk) if chunk else 0x5EED
            result ^= _mix64(h ^ _mix64((i << 40) ^ c))
    return result - 2**64 if result >= 2**63 else result


def _documented_case() -> tuple[list[torch.Tensor], list[int]]:
    """Tensors and their c10 ScalarType codes (Float 6, Half 5, Byte 0): several 64 KiB chunks,
    a chunk of 8 rows of 64 words, one of 17 rows (past one 16-row block of the AVX2 loop) and a
    partial row, partial lane rows and a 3-byte tail, an empty tensor."""
    tensors = [
        _tensor(torch.float32, (130 * 1024 + 44) // 4, seed=3),
        _tensor(torch.float16, 77, seed=4),
        torch.randint(0, 255, (3,), generator=torch.Generator().manual_seed(5), dtype=torch.uint8),
        torch.empty(0),
        _tensor(torch.float32, 17 * 64 + 29, seed=6),
    ]
    return tensors, [6, 5, 0, 6, 6]


def test_the_cpp_hash_is_the_documented_function():
    tensors, codes = _documented_case()
    assert fp.fingerprint_cpu(tensors) == _reference_fingerprint(tensors, codes)


_AT_CAPABILITY = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, "TESTS")
    import test_fingerprint as t
    from fused_inception import fingerprint as fp
    assert torch.backends.cpu.get_cpu_capability() == sys.argv[1]
    tensors, codes = t._documented_case()
    assert fp.fingerprint_cpu(tensors) == t._reference_fingerprint(tensors, codes)
    big = t._tensor(torch.float32, 300_000, seed=7)  # several chunks hashed in parallel
    changed = big.clone()
    changed.view(torch.int32)[123_457] ^= 1 << 31
    assert fp.fingerprint_cpu([big]) != fp.fingerprint_cpu([changed])
    print("ok")
    """
)


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2", "AVX512"])
def test_each_build_is_the_documented_function(capability):
    # The operator picks its loop from torch's capability: the plain loop at DEFAULT, the
    # AVX2 intrinsics at AVX2, the AVX-512 vectorisation at AVX512. CI's machine runs only one
    # of them in-process; these subprocesses run the others against the numpy transcription.
    current = torch.backends.cpu.get_cpu_capability()
    if capability == "AVX512" and current != "AVX512":
        pytest.skip(f"this CPU runs torch at capability {current}")
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    run_at_capability(_AT_CAPABILITY.replace("TESTS", tests_dir), capability)
