"""Training's Winograd F(4x4, 3x3) and F(4x4, 5x5) (csrc/cpu/winograd_training.cpp): the
convolution and the input gradient's convolution from the plain weight (fused_inception::
conv3x3_winograd_f4, conv5x5_winograd_f4), the weight gradient (conv3x3_weight_grad_winograd,
conv5x5_weight_grad_winograd) and the training backward's kxk helper around them
(cpu_winograd.kxk_backward), against float64 ATen."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close_rel

from fused_inception import _ext
from fused_inception.backends import cpu_winograd

_OPS = ("conv3x3_weight_grad_winograd", "conv3x3_winograd_f4", "conv5x5_weight_grad_winograd",
        "conv5x5_winograd_f4")  # fmt: skip
pytestmark = pytest.mark.skipif(
    not all(_ext.has_op(name) for name in _OPS),
    reason=f"fused_inception._C is not built: {_ext.extension_error()}",
)
KS = pytest.mark.parametrize("k", [3, 5])

CL = torch.channels_last


def _op(x, grad_out, tiles, channels_last=False, k=3):
    op = getattr(torch.ops.fused_inception, f"conv{k}x{k}_weight_grad_winograd")
    return op(x, grad_out, tiles, channels_last)


def _aten(x, grad_out, mask=(True, True, True), weight=None, k=3):
    """ATen's convolution_backward of convKxK(x, W, stride 1, pad k // 2) (float64 for a
    reference)."""
    c_out, c_in = grad_out.shape[1], x.shape[1]
    if weight is None:
        weight = torch.randn(c_out, c_in, k, k, dtype=x.dtype)
    k = weight.shape[-1]
    return torch.ops.aten.convolution_backward(
        grad_out, x, weight, [c_out], [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 1, list(mask)
    )


def _inputs(n, c_in, c_out, h, w, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=gen, dtype=torch.float64)
    grad_out = torch.randn(n, c_out, h, w, generator=gen, dtype=torch.float64)
    return x, grad_out


# (n, c_in, c_out, h, w): single pixels, images smaller than a tile, sizes not multiples of 4,
# one channel, wide channels, GoogLeNet's 14x14.
SHAPES = [
    (1, 1, 1, 1, 1),
    (1, 3, 4, 1, 5),
    (2, 5, 7, 9, 9),
    (3, 16, 32, 6, 7),
    (2, 8, 8, 5, 13),
    (1, 2, 3, 3, 2),
    (2, 96, 64, 14, 14),
]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("tiles", [1, 3, 196])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=str)
@KS
def test_against_float64(shape, tiles, layout, k):
    """Every chunking (one tile per chunk, a short last chunk, one chunk) and both layouts."""
    x64, g64 = _inputs(*shape)
    ref = _aten(x64, g64, (False, True, False), k=k)[1]
    x = x64.float().contiguous(memory_format=layout)
    grad_out = g64.float().contiguous(memory_format=layout)
    for channels_last in (False, True):
        got = _op(x, grad_out, tiles, channels_last, k)
        assert got.shape == ref.shape and got.dtype == torch.float32
        assert got.is_contiguous(memory_format=CL if channels_last else torch.contiguous_format)
        assert_close_rel(got, ref, torch.float32)


@KS
def test_strided_inputs(k):
    """A channel slice of a wider tensor (as the block's branch gradients are) for both
    operands."""
    x64, g64 = _inputs(2, 6, 10, 7, 9, seed=3)
    wide_x = torch.randn(2, 11, 7, 9).contiguous(memory_format=CL)
    wide_g = torch.randn(2, 17, 7, 9).contiguous(memory_format=CL)
    wide_x[:, 2:8] = x64.float()
    wide_g[:, 5:15] = g64.float()
    got = _op(wide_x[:, 2:8], wide_g[:, 5:15], 4, k=k)
    assert_close_rel(got, _aten(x64, g64, (False, True, False), k=k)[1], torch.float32)


@pytest.mark.parametrize(
    "shape", [(0, 3, 4, 5, 5), (2, 0, 4, 5, 5), (2, 3, 0, 5, 5)], ids=["n0", "cin0", "cout0"]
)
@KS
def test_empty_operands(shape, k):
    n, c_in, c_out, h, w = shape
    got = _op(torch.randn(n, c_in, h, w), torch.randn(n, c_out, h, w), 8, k=k)
    assert got.shape == (c_out, c_in, k, k)
    assert torch.equal(got, torch.zeros_like(got))


@KS
def test_errors(k):
    x, g = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match=f"conv{k}x{k}_weight_grad_winograd: expected a 4-D x"):
        _op(x[0], g, 8, k=k)
    with pytest.raises(RuntimeError, match="float32 CPU grad_out"):
        _op(x, g.double(), 8, k=k)
    with pytest.raises(ValueError, match="must have x's batch and image size"):
        _op(x, g[:, :, :4], 8, k=k)
    with pytest.raises(ValueError, match="must have x's batch and image size"):
        _op(x, g[:1], 8, k=k)
    with pytest.raises(ValueError, match="tiles must be positive"):
        _op(x, g, 0, k=k)


def _force_weight_grad(monkeypatch) -> list[int]:
    """The Winograd weight gradient for every 3x3 and 5x5 here; returns the list each call of
    either operator appends its kernel size to."""
    monkeypatch.setattr(cpu_winograd, "WEIGHT_GRAD_MIN_TILES", 0)
    monkeypatch.setattr(cpu_winograd, "WEIGHT_GRAD_MIN_IN_CHANNELS", 0)
    monkeypatch.setattr(cpu_winograd, "WEIGHT_GRAD_MIN_OUT_CHANNELS", 0)
    monkeypatch.setattr(cpu_winograd, "TRAINING_F4X5_MIN_TILES", 0)
    calls = []
    for attr, k in (("_WEIGHT_GRAD_OP", 3), ("_WEIGHT_GRAD_5X5_OP", 5)):
        real = getattr(cpu_winograd, attr)
        monkeypatch.setattr(
            cpu_winograd, attr, lambda *a, real=real, k=k: (calls.append(k), real(*a))[1]
        )
    return calls


@pytest.mark.parametrize("where", ["x", "grad_out"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@KS
def test_nonfinite_falls_back_to_aten(where, value, k, monkeypatch):
    """A NaN or inf reaches entries of the Winograd sum that the direct gradient keeps finite:
    weight_grad_winograd says so (None), and kxk_backward then returns ATen's gradients, NaN and
    inf where ATen has them."""
    x64, g64 = _inputs(2, 4, 6, 9, 9, seed=5)
    x, g = x64.float().contiguous(memory_format=CL), g64.float().contiguous(memory_format=CL)
    target = x if where == "x" else g
    target[1, 2, 4, 6] = float(value)
    assert cpu_winograd.weight_grad_winograd(x, g, k) is None
    weight = torch.randn(6, 4, k, k)
    calls = _force_weight_grad(monkeypatch)
    got = cpu_winograd.kxk_backward(g, x, weight, [False, True, True])
    want = _aten(x, g, (False, True, True), weight)
    assert calls == [k], "the Winograd weight gradient did not run"
    assert got[0] is None
    torch.testing.assert_close(got[1], want[1], equal_nan=True)
    torch.testing.assert_close(got[2], want[2], equal_nan=True)


@pytest.mark.parametrize(
    "mask",
    [(True, True, True), (False, True, True), (False, True, False), (True, False, True)],
    ids=str,
)
@KS
@pytest.mark.parametrize("forced", [True, False], ids=["winograd", "policy"])
def test_kxk_backward_against_float64(mask, k, forced, monkeypatch):
    """kxk_backward with the Winograd gradients forced on for every 3x3 and 5x5 (and as the
    policy has it: ATen for these few tiles): each gradient the mask asks for against float64
    ATen, None for the others."""
    calls = _force_weight_grad(monkeypatch) if forced else []
    if forced:
        for attr in ("TRAINING_F4_MIN_TILES", "TRAINING_F4_MIN_IN_CHANNELS"):
            monkeypatch.setattr(cpu_winograd, attr, 0)
        monkeypatch.setattr(cpu_winograd, "TRAINING_F4_MIN_OUT_CHANNELS", 0)
    x64, g64 = _inputs(2, 12, 20, 10, 11, seed=7)
    w64 = torch.randn(20, 12, k, k, dtype=torch.float64)
    want = torch.ops.aten.convolution_backward(
        g64, x64, w64, [20], [1, 1], [k // 2] * 2, [1, 1], False, [0, 0], 1, list(mask)
    )
    x, g = x64.float().contiguous(memory_format=CL), g64.float().contiguous(memory_format=CL)
    convs = []
    real = cpu_winograd.conv_winograd
    monkeypatch.setattr(
        cpu_winograd, "conv_winograd", lambda *a, **kw: (convs.append(1), real(*a, **kw))[1]
    )
    got = cpu_winograd.kxk_backward(g, x, w64.float(), list(mask))
    for name, need, a, b in zip(("input", "weight", "bias"), mask, got, want, strict=True):
        if need:
            assert_close_rel(a, b, torch.float32, what=name)
        else:
            assert a is None, name
    assert calls == ([k] if mask[1] and forced else [])
    assert len(convs) == int(mask[0] and forced)  # the input gradient by Winograd


def test_policy():
    """3x3: wide ones with 32 or more 4x4 tiles; not narrow channels, few tiles, float64. 5x5:
    from 256 4x4 tiles (28x28 at batch 8), any channels; float32 only."""
    w = torch.empty(128, 96, 3, 3)
    x = torch.empty(8, 96, 14, 14)
    assert cpu_winograd.weight_grad_f4_pays(w, x)
    assert cpu_winograd.weight_grad_f4_pays(w, torch.empty(8, 96, 7, 7))  # 32 tiles
    assert not cpu_winograd.weight_grad_f4_pays(w, torch.empty(1, 96, 14, 14))  # 16 tiles
    assert not cpu_winograd.weight_grad_f4_pays(torch.empty(128, 96, 5, 5), x)
    assert not cpu_winograd.weight_grad_f4_pays(torch.empty(32, 16, 3, 3), x[:, :16])
    assert not cpu_winograd.weight_grad_f4_pays(w.double(), x.double())
    w5, x5 = torch.empty(32, 16, 5, 5), torch.empty(8, 16, 28, 28)  # 3a's b3, 392 tiles
    for pays in (cpu_winograd.training_f4x5, cpu_winograd.training_winograd):
        assert pays(x5, w5)
        assert not pays(x5[:, :, :14, :14], w5)  # 14x14: 128 tiles
        assert not pays(x5.double(), w5.double())
    assert cpu_winograd.weight_grad_winograd_pays(w5, x5)
    assert not cpu_winograd.weight_grad_winograd_pays(w5, x5[:1])  # 49 tiles
    assert not cpu_winograd.training_f4x5(x, w)  # a 3x3


def _f4(x, weight, bias, tiles, relu, transposed):
    """conv3x3_winograd_f4 or conv5x5_winograd_f4 by the weight's kernel size."""
    k = weight.shape[-1]
    op = getattr(torch.ops.fused_inception, f"conv{k}x{k}_winograd_f4")
    return op(x, weight, bias, tiles, relu, transposed)


def _f4_reference(x64, w64, b64, relu, transposed):
    """The float64 convolution the operators compute (transposed: the input gradient's)."""
    padding = w64.shape[-1] // 2
    if transposed:
        w64 = w64.flip(2, 3).transpose(0, 1)
    y = F.conv2d(x64, w64, b64, padding=padding)
    return y.relu() if relu else y


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("tiles", [1, 3, 196])
@pytest.mark.parametrize("layout", [torch.contiguous_format, CL], ids=str)
@pytest.mark.parametrize(
    "relu,transposed,bias",
    [(True, False, True), (False, False, True), (False, True, False), (True, True, True)],
    ids=["relu", "linear", "transposed", "transposed-relu-bias"],
)
@KS
def test_conv_against_float64(shape, tiles, layout, relu, transposed, bias, k):
    """Every chunking and layout, with and without ReLU and bias, forward and transposed; the
    result channels_last."""
    n, c_in, c_out, h, w = shape
    gen = torch.Generator().manual_seed(11)
    w64 = torch.randn(c_out, c_in, k, k, generator=gen, dtype=torch.float64)
    c_x, c_y = (c_out, c_in) if transposed else (c_in, c_out)
    x64 = torch.randn(n, c_x, h, w, generator=gen, dtype=torch.float64)
    b64 = torch.randn(c_y, generator=gen, dtype=torch.float64) if bias else None
    x = x64.float().contiguous(memory_format=layout)
    b = None if b64 is None else b64.float()
    want = _f4_reference(x64, w64, b64, relu, transposed)
    # the weight contiguous, channels_last (read in place by the transform's own loop) and a
    # strided view (copied)
    wide = torch.randn(c_out, c_in + 2, k, k, generator=gen)
    wide[:, 1:-1] = w64.float()
    for weight in (w64.float(), w64.float().contiguous(memory_format=CL), wide[:, 1:-1]):
        got = _f4(x, weight, b, tiles, relu, transposed)
        assert got.is_contiguous(memory_format=CL) and got.dtype == torch.float32
        assert_close_rel(got, want, torch.float32)


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@KS
def test_conv_nonfinite_as_direct(transposed, value, k):
    """A NaN or inf in x: the direct convolution's result, NaN and inf exactly where it has them
    (Winograd's transforms would spread them to outputs whose window does not hold them)."""
    gen = torch.Generator().manual_seed(12)
    weight = torch.randn(6, 4, k, k, generator=gen)
    bias = torch.randn(4 if transposed else 6, generator=gen)
    x = torch.randn(2, 6 if transposed else 4, 9, 10, generator=gen)
    x[1, 2, 4, 6] = float(value)
    got = _f4(x, weight, bias, 3, True, transposed)
    w_eff = weight.flip(2, 3).transpose(0, 1) if transposed else weight
    want = torch.relu(F.conv2d(x, w_eff, bias, padding=k // 2))
    assert not torch.isfinite(want).all()
    torch.testing.assert_close(got, want, equal_nan=True, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("transposed", [False, True])
@KS
def test_conv_empty_operands(transposed, k):
    w = torch.randn(5, 3, k, k)
    c_x, c_y = (5, 3) if transposed else (3, 5)
    assert _f4(torch.randn(0, c_x, 4, 4), w, None, 8, True, transposed).shape == (0, c_y, 4, 4)
    bias = torch.randn(c_y)
    w0 = torch.randn(0, 3, k, k) if transposed else torch.randn(5, 0, k, k)
    got = _f4(torch.randn(2, 0, 4, 4), w0, bias if not transposed else torch.randn(3), 8, True,
              transposed)  # fmt: skip
    c = 3 if transposed else 5
    assert got.shape == (2, c, 4, 4)
    assert torch.equal(got, got[:, :, :1, :1].expand_as(got))  # the bias, everywhere
    assert (got >= 0).all()


@KS
def test_conv_errors(k):
    x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, k, k)
    op = getattr(torch.ops.fused_inception, f"conv{k}x{k}_winograd_f4")
    with pytest.raises(ValueError, match=f"conv{k}x{k}_winograd_f4: expected a 4-D x"):
        _f4(x[0], w, None, 8, True, False)
    other = 8 - k  # a 5x5 weight to the 3x3 operator, a 3x3 one to the 5x5
    with pytest.raises(ValueError, match=f"expected a {k}x{k} weight"):
        op(x, torch.randn(4, 3, other, other), None, 8, True, False)
    with pytest.raises(ValueError, match="x has 3 channels"):
        _f4(x, w, None, 8, True, True)
    with pytest.raises(RuntimeError, match="float32 CPU bias"):
        _f4(x, w, torch.randn(3), 8, True, False)
    with pytest.raises(RuntimeError, match="float32 CPU weight"):
        _f4(x, w.double(), None, 8, True, False)
    with pytest.raises(ValueError, match="tiles must be positive"):
        _f4(x, w, None, -1, True, False)
