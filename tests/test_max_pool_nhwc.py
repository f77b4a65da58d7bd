"""fused_inception::max_pool_nhwc (its wrapper in fused_inception.backends.cpu_maxpool) against
torch.nn.functional.max_pool2d, and the NhwcMaxPool2d module prepare_for_inference puts in
GoogLeNet's stem (fused_inception/nhwc_pool.py).

Comparisons are bitwise (tests/helpers.assert_same_pool_bits): the operator must produce
max_pool2d's output size and pick the very element max_pool2d picks, NaN payloads and signed
zeros included (bfloat16 NaNs: only their positions, see there). The operator's opcheck is in
tests/test_ops.py with the other operators'.
"""

from __future__ import annotations

import copy
import itertools
import os
import textwrap
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import (
    BITS,
    assert_close_rel,
    assert_same_pool_bits,
    dtype_params,
    randomize_block,
    run_at_capability,
    script_and_onnx,
)
from torch import nn

from fused_inception import _ext, nhwc_pool, prepare_for_inference, unprepare_for_inference
from fused_inception.backends.cpu_maxpool import max_pool_nhwc
from fused_inception.nhwc_pool import NhwcMaxPool2d, NhwcMaxPool3x3

if not _ext.has_op("max_pool_nhwc"):
    _reason = f"fused_inception._C is not built: {_ext.extension_error()}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(_reason, pytrace=False)  # CI builds the extension first: a failure there
    pytest.skip(_reason, allow_module_level=True)

# GoogLeNet's pools at small sizes: (id, shape, kernel_size, stride, padding, ceil_mode).
GOOGLENET_POOLS = [
    ("maxpool1", (2, 64, 15, 13), 3, 2, 0, True),
    ("maxpool2", (2, 192, 9, 10), 3, 2, 0, True),
    ("maxpool3", (1, 480, 7, 7), 3, 2, 0, True),
    ("maxpool4", (2, 832, 5, 6), 2, 2, 0, True),
    ("branch4", (2, 96, 7, 5), 3, 1, 1, True),
]


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


# Pool arguments (kernel_size, stride, padding): kernels 1-3 and non-square, strides 1-3 and
# non-square, padding 0 and 1 where max_pool2d allows it (at most half the kernel).
ARGUMENTS = [
    (k, s, p)
    for k, s, p in itertools.product(
        [1, 2, 3, (2, 3), (3, 1)], [1, 2, 3, (1, 2), (3, 2)], [0, 1, (1, 0)]
    )
    if all(pi <= ki // 2 for ki, pi in zip(_pair(k), _pair(p), strict=True))
]
# Odd and even sizes, sizes equal to or below the kernel, a single row or column.
SPATIAL = [(7, 5), (6, 9), (3, 2), (1, 4), (5, 1)]
# Channels below, at and above the vector widths (8 and 16 floats, 4 doubles, 16 halves).
CHANNELS = [1, 3, 17, 64]


def randn_cl(shape, dtype, gen) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


def check(x: torch.Tensor, kernel_size, stride, padding, ceil_mode: bool) -> torch.Tensor:
    """max_pool_nhwc(x, ...) is max_pool2d's output bit for bit, a new channels_last tensor."""
    where = (
        f"shape {tuple(x.shape)}, {x.dtype}, kernel {kernel_size}, stride {stride}, "
        f"padding {padding}, ceil_mode {ceil_mode}"
    )
    out = max_pool_nhwc(x, kernel_size, stride, padding, ceil_mode)
    ref = F.max_pool2d(x, kernel_size, stride, padding, ceil_mode=ceil_mode)
    assert out.is_contiguous(memory_format=torch.channels_last), where
    assert out.numel() == 0 or out.data_ptr() != x.data_ptr(), where
    assert_same_pool_bits(out, ref, where)
    return out


def _fits_output(shape, kernel_size, stride, padding, ceil_mode) -> bool:
    try:
        F.max_pool2d(torch.empty(shape), kernel_size, stride, padding, ceil_mode=ceil_mode)
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("channels", CHANNELS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("dtype", dtype_params())
def test_every_argument_matches_max_pool2d_bitwise(dtype, channels):
    gen = torch.Generator().manual_seed(channels)
    checked = 0
    for (kernel, stride, padding), (h, w), ceil_mode in itertools.product(
        ARGUMENTS, SPATIAL, [False, True]
    ):
        shape = (2, channels, h, w)
        if not _fits_output(shape, kernel, stride, padding, ceil_mode):
            continue  # an empty output: test_errors_are_clear
        check(randn_cl(shape, dtype, gen), kernel, stride, padding, ceil_mode)
        checked += 1
    assert checked > 400  # of the 600 combinations


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(
    "name,shape,kernel,stride,padding,ceil_mode",
    GOOGLENET_POOLS,
    ids=[case[0] for case in GOOGLENET_POOLS],
)
def test_googlenet_pools_match_bitwise(name, shape, kernel, stride, padding, ceil_mode, dtype):
    # Several images and enough rows for two parallel tasks, whose rows cross image boundaries.
    gen = torch.Generator().manual_seed(len(name) + shape[1])
    check(randn_cl(shape, dtype, gen), kernel, stride, padding, ceil_mode)


@pytest.mark.parametrize("dtype", dtype_params())
def test_kernels_larger_than_3_match_bitwise(dtype):
    # More than three runs per window row or column: folded into the output three, then two,
    # at a time.
    gen = torch.Generator().manual_seed(9)
    for kernel, stride, padding, ceil_mode in itertools.product(
        [4, 5, (5, 2), (1, 6)], [1, 2, 3], [0, 1, (2, 0)], [False, True]
    ):
        if any(p > k // 2 for k, p in zip(_pair(kernel), _pair(padding), strict=True)):
            continue
        check(randn_cl((2, 9, 9, 11), dtype, gen), kernel, stride, padding, ceil_mode)


@pytest.mark.parametrize(
    "shape,kernel,stride,padding",
    [((3, 64, 41, 40), 3, 2, 0), ((2, 832, 14, 14), 2, 2, 0), ((5, 67, 20, 19), 3, 2, 1)],
    ids=["64ch_3x3s2", "832ch_2x2s2", "67ch_3x3s2p1"],
)
def test_parallel_tasks_match_bitwise(shape, kernel, stride, padding):
    # Enough output rows for several parallel tasks, whose boundaries fall inside an image (each
    # task starts its ring empty).
    gen = torch.Generator().manual_seed(10)
    check(randn_cl(shape, torch.float32, gen), kernel, stride, padding, True)


def _with_specials(x: torch.Tensor) -> torch.Tensor:
    """NaN, +inf, -inf on a grid that puts several in some windows and none in others, ties of
    -0.0 and +0.0, and a channel that is all -inf."""
    x = x.clone()
    c = x.shape[1]
    x[:, 0::3, ::3, ::2] = float("nan")
    x[:, 1::3, 1::3, ::3] = float("inf")
    x[:, 2::3, ::2, 1::3] = float("-inf")
    x[:, 1::4, 2::4, :] = -0.0
    x[:, 1::4, 2::4, 1::2] = 0.0
    x[:, c // 2] = float("-inf")
    return x


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("channels", [3, 17, 64], ids=lambda c: f"c{c}")
def test_nan_inf_and_signed_zeros(dtype, channels):
    gen = torch.Generator().manual_seed(3)
    x = _with_specials(randn_cl((2, channels, 9, 7), dtype, gen))
    for kernel, stride, padding, ceil_mode in [
        (3, 2, 0, True),
        (2, 2, 0, True),
        (3, 2, 1, False),
        ((3, 2), (1, 2), (1, 1), True),
        (3, 3, 1, True),
    ]:
        out = check(x, kernel, stride, padding, ceil_mode)
        assert torch.isneginf(out[:, channels // 2]).all()


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float64, torch.float16))
def test_which_nan_and_which_zero_is_kept(dtype):
    # One 3x3 window (stride 2): of several NaNs the last in row-major order wins, of equal
    # maxima (-0.0, +0.0) the first. Payloads and signs make the choice visible in the bits.
    int_t = BITS[dtype]
    nan_bits = torch.tensor(float("nan"), dtype=dtype).view(int_t)
    x = torch.full((1, 2, 3, 3), -1.0, dtype=dtype)
    bits = x.view(int_t)
    bits[0, 0, 2, 0] = nan_bits + 1  # later in row-major order, earlier in column-major
    bits[0, 0, 0, 2] = nan_bits + 2
    x[0, 1, 0, 2] = -0.0  # earlier in row-major order, later in column-major
    x[0, 1, 1, 0] = 0.0
    x = x.contiguous(memory_format=torch.channels_last)
    out = check(x, 3, 2, 0, True)
    assert out[0, 0, 0, 0].view(int_t) == nan_bits + 1
    assert torch.signbit(out[0, 1, 0, 0])


@pytest.mark.parametrize("dtype", dtype_params())
def test_all_negative_windows_stay_negative(dtype):
    # The padding is never selected: windows at the edges keep their (negative) maximum.
    gen = torch.Generator().manual_seed(4)
    x = -(randn_cl((2, 17, 6, 5), dtype, gen).abs() + 1)
    out = check(x, 3, 2, 1, True)
    assert (out <= -1).all()


def test_empty_batch_and_channels():
    for shape in [(0, 8, 5, 5), (2, 0, 5, 5)]:
        x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
        out = max_pool_nhwc(x, 3, 2, 0, True)
        assert out.shape == (shape[0], shape[1], 2, 2)
        assert out.is_contiguous(memory_format=torch.channels_last)


def _x(shape=(2, 8, 5, 5), dtype=torch.float32) -> torch.Tensor:
    return torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "x,args,error,message",
    [
        (
            torch.randn(8, 5, 5),
            (3, 2),
            ValueError,
            r"expected a 4-D tensor \[N, C, H, W\], got 3-D",
        ),
        (torch.randn(2, 8, 5, 5), (3, 2), ValueError, r"channels_last-contiguous.*memory_format="),
        (
            _x(dtype=torch.int64),
            (3, 2),
            TypeError,
            r"expected dtype float32, float64, float16 or bfloat16, got Long",
        ),
        (_x(), ((0, 3), 1), ValueError, r"expected kernel_size >= 1, got \[0, 3\]"),
        (_x(), (3, (1, 0)), ValueError, r"expected stride >= 1, got \[1, 0\]"),
        (
            _x(),
            (3, 1, 2),
            ValueError,
            r"padding >= 0 and at most half the kernel size \(kernel_size // 2 = \[1, 1\]\), got "
            r"padding \[2, 2\]",
        ),
        (_x(), (3, 1, (0, -1)), ValueError, r"padding >= 0 .* got padding \[0, -1\]"),
        (
            _x(),
            (7, 1),
            ValueError,
            r"input size \[H, W\] = \[5, 5\] with kernel_size \[7, 7\], stride \[1, 1\], padding "
            r"\[0, 0\] and ceil_mode=False gives the output size \[-1, -1\]; expected at least 1x1",
        ),
        (_x(), ((3, 3, 3), 1), ValueError, r"expected kernel_size as an int or 2 ints"),
    ],
    ids=[
        "3d",
        "nchw",
        "int64",
        "kernel0",
        "stride0",
        "padding_too_large",
        "padding_negative",
        "output_empty",
        "kernel_3_values",
    ],
)
def test_errors_are_clear(x, args, error, message):
    with pytest.raises(error, match=message):
        max_pool_nhwc(x, *args)


def test_the_operator_checks_the_argument_lengths():
    with pytest.raises(
        ValueError,
        match=r"of 2 values each \(height, width\), got kernel_size="
        r"\[3, 3, 3\], stride=\[1, 1\], padding=\[0, 0\]",
    ):
        torch.ops.fused_inception.max_pool_nhwc(_x(), [3, 3, 3], [1, 1], [0, 0], False)


_CAPABILITY_CHECK = textwrap.dedent(
    """
    import sys, torch, torch.nn.functional as F
    from fused_inception.backends.cpu_maxpool import max_pool_nhwc
    assert torch.backends.cpu.get_cpu_capability() == sys.argv[1]
    bits = {torch.float32: torch.int32, torch.float64: torch.int64,
            torch.float16: torch.int16, torch.bfloat16: torch.int16}
    gen = torch.Generator().manual_seed(5)
    cases = [((3, 2, 0, True), (2, 17, 9, 8)), ((2, 2, 0, True), (2, 33, 7, 7)),
             ((3, 1, 1, False), (1, 67, 6, 5)), (((3, 2), (2, 1), (1, 0), True), (2, 5, 5, 4)),
             ((5, 3, 2, True), (1, 9, 11, 10))]
    for dtype, int_t in bits.items():
        for (k, s, p, ceil), shape in cases:
            x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
            x[:, ::4, ::3, ::2] = float("nan")
            x[:, 1::4, 1::3, :] = float("inf")
            x[:, 2::4, :, 1::2] = -0.0
            x = x.contiguous(memory_format=torch.channels_last)
            out, ref = max_pool_nhwc(x, k, s, p, ceil), F.max_pool2d(x, k, s, p, ceil_mode=ceil)
            if dtype == torch.bfloat16 and sys.argv[1] != "DEFAULT":  # torch's NaN bits vary
                both = out.isnan() & ref.isnan()
                assert torch.equal(out.isnan(), ref.isnan()), (dtype, shape)
                out, ref = out.masked_fill(both, 0), ref.masked_fill(both, 0)
            assert torch.equal(out.view(int_t), ref.view(int_t)), (dtype, k, s, p, shape)
    print("ok")
    """
)


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2"])
def test_other_vector_widths_match_max_pool2d(capability):
    # float32 runs AVX-512 loops where torch runs its AVX-512 kernels (as here and on CI); torch's
    # capability setting selects the AVX2 loops and the scalar ones (at DEFAULT torch's bfloat16
    # NaN bits match too).
    run_at_capability(_CAPABILITY_CHECK, capability)


# --- the module -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.MaxPool2d(2, stride=2, ceil_mode=True),
        nn.MaxPool2d((3, 2), stride=(1, 2), padding=(1, 0)),
        nn.MaxPool2d(3, stride=1, padding=1),
    ],
    ids=["3x3s2_ceil", "2x2s2_ceil", "3x2_s1x2_pad1x0", "3x3s1p1"],
)
def test_module_is_torchs_pool(pool, monkeypatch):
    calls = []
    for name in ("max_pool_nhwc", "max_pool3x3_nhwc"):  # (NhwcMaxPool3x3 runs the latter)
        real = getattr(nhwc_pool, name)
        monkeypatch.setattr(
            nhwc_pool, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a)
        )
    fast = nhwc_pool.nhwc_pool(pool)
    assert isinstance(fast, NhwcMaxPool2d)
    assert isinstance(fast, NhwcMaxPool3x3) == (pool.stride == 1 and pool.kernel_size == 3)
    x = torch.randn(2, 5, 7, 6).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert_same_pool_bits(fast(x), pool(x), str(pool))
        # the package's kernel ran: the 3x3/1 operator for a 3x3/1 pool, else the general one
        kernel = "max_pool3x3_nhwc" if isinstance(fast, NhwcMaxPool3x3) else "max_pool_nhwc"
        assert calls == [kernel]
        fast(x.contiguous())  # NCHW input: ATen's pool
        assert len(calls) == 1
    x.requires_grad_()
    fast(x).sum().backward()  # with autograd recording: ATen's pool
    assert x.grad is not None and len(calls) == 1
    assert fast.to_unfused() is pool


def test_pool3x3_module_follows_changed_arguments():
    """An NhwcMaxPool3x3 whose stride is changed after from_module stops running the 3x3/1
    operator and computes the new pool (the general one), as nn.MaxPool2d would."""
    pool = nn.MaxPool2d(3, stride=1, padding=1)
    fast = NhwcMaxPool3x3.from_module(pool)
    x = torch.randn(2, 4, 9, 8).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        fast.stride = pool.stride = 2
        assert_same_pool_bits(fast(x), pool(x), "stride 2")
        assert fast(x).shape[2:] == (5, 4)


def test_module_refuses_other_pools():
    for pool in [
        nn.MaxPool2d(3, dilation=2),
        nn.MaxPool2d(3, return_indices=True),
        nn.MaxPool2d(3, padding=2),
        nn.AvgPool2d(3),
    ]:
        assert nhwc_pool.nhwc_pool(pool) is None, pool
        with pytest.raises(ValueError, match="expected an nn.MaxPool2d without indices"):
            NhwcMaxPool2d.from_module(pool)


def test_modules_script_and_export_to_onnx():
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        NhwcMaxPool2d.from_module(nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        NhwcMaxPool3x3.from_module(nn.MaxPool2d(3, stride=1, padding=1)),
    ).eval()
    assert b"MaxPool" in script_and_onnx(model, torch.randn(1, 3, 9, 8))


def test_prepared_googlenet_runs_the_nhwc_pools(monkeypatch):
    torch.manual_seed(7)
    model = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    model = randomize_block(model, 7).eval()
    work = copy.deepcopy(model)
    pools = {name: getattr(work, name) for name in ("maxpool1", "maxpool2", "maxpool3", "maxpool4")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_for_inference(work, backend="cpu")
    for name in pools:
        assert type(getattr(prepared, name)) is NhwcMaxPool2d, name
    seen = {}
    for name in pools:  # each pool's output against max_pool2d of its input, bit for bit
        getattr(prepared, name).register_forward_hook(
            lambda m, args, out, _name=name: seen.__setitem__(_name, (m, args[0], out))
        )
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        out = prepared(x)
        assert_close_rel(out, copy.deepcopy(model).double()(x.double()), torch.float32)
    assert set(seen) == set(pools)
    for name, (module, pool_in, pool_out) in seen.items():
        assert pool_in.is_contiguous(memory_format=torch.channels_last), name
        ref = F.max_pool2d(pool_in, module.kernel_size, module.stride, ceil_mode=True)
        assert_same_pool_bits(pool_out, ref, name)
    restored = unprepare_for_inference(prepared)
    for name, pool in pools.items():
        assert getattr(restored, name) is pool, name  # the very modules, nn.MaxPool2d


def test_module_follows_every_change_after_its_fast_path(monkeypatch):
    """NhwcMaxPool2d keeps its last call's decision (the package's kernel or ATen's pool) for
    the same input layout and pool arguments: each change of an argument, of the input's
    layout, dtype or shape, autograd and tracing is computed as torch's pool computes it."""
    calls = []
    real = nhwc_pool.max_pool_nhwc
    monkeypatch.setattr(nhwc_pool, "max_pool_nhwc", lambda *a: calls.append(1) or real(*a))
    fast = nhwc_pool.nhwc_pool(nn.MaxPool2d(3, stride=2, ceil_mode=True))
    x = torch.randn(2, 5, 9, 8).contiguous(memory_format=torch.channels_last)

    def check(x, n_calls, **changes):
        for name, value in changes.items():
            setattr(fast, name, value)
        ref = nn.MaxPool2d(
            fast.kernel_size, fast.stride, fast.padding, fast.dilation,
            return_indices=fast.return_indices, ceil_mode=fast.ceil_mode,
        )  # fmt: skip
        with torch.no_grad():
            got, want = fast(x), ref(x)
        if fast.return_indices:
            assert torch.equal(got[1], want[1])
            got, want = got[0], want[0]
        assert_same_pool_bits(got, want, str(changes))
        assert len(calls) == n_calls, changes

    for _ in range(3):
        check(x, len(calls) + 1)  # the package's kernel, then its fast path
    check(x, 4, ceil_mode=False)
    check(x, 5, kernel_size=2)
    check(x, 6, stride=1)
    check(x, 7, padding=1)
    check(x, 7, dilation=2)  # ATen's pool
    check(x, 7, return_indices=True)  # ATen's pool
    check(x, 8, dilation=1, return_indices=False)
    check(x.contiguous(), 8)  # NCHW: ATen's pool
    check(x.double(), 9)
    check(x[:1], 10)
    check(x, 11)  # x's layout again, kept for what follows
    grad = x.clone().requires_grad_()
    out = fast(grad)  # autograd: ATen's pool, whose backward runs
    out.sum().backward()
    assert grad.grad is not None and len(calls) == 11
    with torch.no_grad():
        traced = torch.jit.trace(fast, x, check_trace=False)
    assert "fused_inception::" not in str(traced.inlined_graph) and len(calls) == 11
    check(x, 12)
