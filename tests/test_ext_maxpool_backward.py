"""fused_inception::max_pool3x3_nhwc_backward (its wrapper in fused_inception.backends.cpu_maxpool)
against ATen's max_pool2d_with_indices_backward for max_pool2d_with_indices(x, 3, 1, 1).

float32 and float64 compare bit for bit: the operator must send each output's gradient to the
element ATen's indices name (ties, NaN, infinities and all -inf windows included) and add an
element's gradients in ATen's order. float16 and bfloat16 accumulate in float32 here (ATen
rounds after every add), so they compare with the float64 gradient within their rounding.
Channel counts below, at and above the vector widths (8 and 16 floats) run the vector and scalar
loops; test_other_vector_widths_match_aten runs the AVX2 and scalar loops as well.
"""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from helpers import dtype_params, run_at_capability

from fused_inception import _ext
from fused_inception.backends.cpu_maxpool import (
    max_pool3x3_nhwc_backward,
    max_pool3x3_nhwc_backward_add_,
)

if not _ext.has_op("max_pool3x3_nhwc_backward"):
    _reason = f"fused_inception._C is not built or too old: {_ext.extension_error()}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(_reason, pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

_BITS = {torch.float32: torch.int32, torch.float64: torch.int64}
POOL_ARGS = ([3, 3], [1, 1], [1, 1], [1, 1], True)
SHAPES = [(2, 5, 4, 6), (1, 17, 1, 1), (3, 8, 1, 7), (1, 3, 9, 1), (2, 67, 14, 14), (8, 33, 7, 7)]


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last)


def _reference(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    _, indices = torch.ops.aten.max_pool2d_with_indices(x, *POOL_ARGS)
    return torch.ops.aten.max_pool2d_with_indices_backward(grad_out, x, *POOL_ARGS, indices)


def _check(grad_out: torch.Tensor, x: torch.Tensor) -> None:
    got = max_pool3x3_nhwc_backward(grad_out, x)
    where = f"shape {tuple(x.shape)}, dtype {x.dtype}"
    assert got.shape == x.shape and got.dtype == x.dtype, where
    assert got.is_contiguous(memory_format=torch.channels_last), where
    if x.dtype in _BITS:
        want = _channels_last(_reference(grad_out, x))
        same = got.view(_BITS[x.dtype]) == want.view(_BITS[x.dtype])
        assert bool(same.all()), f"{where}: {int((~same).sum())} elements differ in their bits"
    else:  # against the float64 gradient of the same (exactly representable) values
        want64 = _reference(grad_out.double(), x.double())
        scale = want64.abs().max().item()
        torch.testing.assert_close(got.double(), want64, rtol=1e-2, atol=1e-2 * scale)


def _inputs(shape, dtype, seed, kind):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    if kind == "ties":  # what a ReLU's output gives: many equal maxima (zeros), small integers
        x = torch.round(x * 2).clamp_min(0)
    grad_out = torch.randn(shape, generator=gen, dtype=torch.float64)
    return _channels_last(grad_out.to(dtype)), _channels_last(x.to(dtype))


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", dtype_params())
def test_matches_aten(dtype, shape, kind):
    _check(*_inputs(shape, dtype, 0, kind))


@pytest.mark.parametrize("channels", [3, 8, 19])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_nan_inf_and_all_minus_inf_windows(dtype, channels):
    """A NaN wins its windows (the last one in row-major order); +inf beats everything else;
    a window of -inf only selects its first element."""
    grad_out, x = _inputs((2, channels, 6, 5), dtype, 1, "random")
    x = x.clone()
    x[0, :, 2, 2] = float("nan")
    x[0, :, 2, 3] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 2, 4, 4] = float("-inf")
    x[1, 1] = float("-inf")  # a whole channel: every window all -inf
    x[1, 2, :, :2] = float("-inf")
    _check(grad_out, x)


def test_empty_batch():
    grad_out, x = _inputs((0, 3, 4, 4), torch.float32, 2, "random")
    assert max_pool3x3_nhwc_backward(grad_out, x).shape == x.shape


def test_rejects_bad_arguments():
    grad_out, x = _inputs((1, 3, 4, 4), torch.float32, 3, "random")
    with pytest.raises(ValueError, match="channels_last"):
        max_pool3x3_nhwc_backward(grad_out.contiguous(), x.contiguous())
    with pytest.raises(ValueError, match="shape"):
        max_pool3x3_nhwc_backward(grad_out[:, :2], x)
    with pytest.raises(TypeError, match="grad_out is"):
        max_pool3x3_nhwc_backward(grad_out.double(), x)


@pytest.mark.parametrize("kind", ["random", "ties"])
@pytest.mark.parametrize("shape", SHAPES[:2] + SHAPES[4:], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", dtype_params())
def test_add_is_the_backward_plus_the_accumulator(dtype, shape, kind):
    # grad_in += backward(grad_out, x) in place: the same bits as computing the pool's gradient
    # (rounded to the dtype) and adding it with torch, in every dtype.
    grad_out, x = _inputs(shape, dtype, 4, kind)
    acc = _channels_last(torch.randn(shape, generator=torch.Generator().manual_seed(5)).to(dtype))
    want = acc + max_pool3x3_nhwc_backward(grad_out, x)
    address = acc.data_ptr()
    max_pool3x3_nhwc_backward_add_(acc, grad_out, x)
    assert acc.data_ptr() == address
    bits = [t.permute(0, 2, 3, 1).view(torch.uint8) for t in (acc, want)]  # NaN-safe, exact
    assert torch.equal(*bits)


def test_add_rejects_bad_accumulators_before_writing():
    grad_out, x = _inputs((1, 3, 4, 4), torch.float32, 6, "random")
    acc = _channels_last(torch.randn(1, 3, 4, 4))
    before = acc.clone()
    for bad, error, match in [
        (acc.contiguous(), ValueError, "channels_last"),
        (acc[:, :2], ValueError, "grad_in must have x's shape"),
        (acc.double(), TypeError, "grad_in is"),
    ]:
        with pytest.raises(error, match=match):
            max_pool3x3_nhwc_backward_add_(bad, grad_out, x)
    with pytest.raises(ValueError, match="share memory"):
        max_pool3x3_nhwc_backward_add_(grad_out, grad_out, x)
    assert torch.equal(acc, before)


_CAPABILITY_CHECK = textwrap.dedent(
    """
    import sys, torch
    from fused_inception.backends.cpu_maxpool import (
        max_pool3x3_nhwc_backward, max_pool3x3_nhwc_backward_add_)
    assert torch.backends.cpu.get_cpu_capability() == sys.argv[1], (
        torch.backends.cpu.get_cpu_capability())
    args = ([3, 3], [1, 1], [1, 1], [1, 1], True)
    gen = torch.Generator().manual_seed(7)
    for shape in [(2, 67, 14, 13), (3, 17, 5, 3), (1, 40, 1, 9), (2, 33, 7, 1), (1, 3, 1, 2)]:
        for kind in ("random", "ties"):
            x = torch.randn(shape, generator=gen)
            if kind == "ties":
                x = torch.round(x * 2).clamp_min(0)
            x[:, ::5, 0, 0] = float("nan")
            x[:, 1::5, -1, -1] = float("inf")
            x[:, 2::5] = float("-inf")
            x = x.contiguous(memory_format=torch.channels_last)
            g = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
            _, idx = torch.ops.aten.max_pool2d_with_indices(x, *args)
            want = torch.ops.aten.max_pool2d_with_indices_backward(g, x, *args, idx)
            got = max_pool3x3_nhwc_backward(g, x)
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (shape, kind)
            acc = torch.randn(shape, generator=gen).contiguous(memory_format=torch.channels_last)
            expected = acc + got
            max_pool3x3_nhwc_backward_add_(acc, g, x)
            assert torch.equal(acc.view(torch.int32), expected.view(torch.int32)), (shape, kind)
    print("ok")
    """
)


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2"])
def test_other_vector_widths_match_aten(capability):
    # The float32 loops are AVX-512 (16 lanes) where torch runs its AVX-512 kernels, as on CI;
    # torch's capability setting selects the AVX2 (8 lanes) and scalar loops, which must give the
    # same bits (ties, NaN, infinities, -inf channels; widths below, at and above 8 and 16).
    run_at_capability(_CAPABILITY_CHECK, capability)
