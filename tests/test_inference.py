"""prepare_for_inference / unprepare_for_inference (fused_inception/inference.py) and the
FoldedConvUnit it puts in the stem and the auxiliary heads (fused_inception/folded_unit.py):
parity with torchvision's GoogLeNet, state_dict compatibility, weight changes, training mode,
the round trip and bad input."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torchvision
from helpers import assert_close_rel, layout_params, randomize_block
from torch import nn
from torchvision.models.googlenet import BasicConv2d
from torchvision.models.googlenet import Inception as TvInception

from fused_inception import (
    FoldedConvUnit,
    FusedInception,
    is_prepared,
    prepare_for_inference,
    unprepare_for_inference,
)
from fused_inception.backends import cpu_onednn
from fused_inception.models import googlenet
from fused_inception.nhwc_pool import NhwcMaxPool2d, NhwcMaxPool3x3

HW = 64  # the smallest size at which every pool of torchvision's GoogLeNet sees a real map


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FusedInception: BatchNorm in training mode")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _torchvision(seed=0, *, aux_logits=True, transform_input=False, dtype=torch.float32):
    """torchvision's GoogLeNet, random weights and BN statistics, eval mode, `dtype`."""
    torch.manual_seed(seed)
    model = torchvision.models.googlenet(
        weights=None, aux_logits=aux_logits, transform_input=transform_input, init_weights=True
    )
    return randomize_block(model, seed).to(dtype).eval()


def _input(dtype=torch.float32, seed=1, batch=2, fmt=torch.contiguous_format):
    x = torch.randn(batch, 3, HW, HW, generator=torch.Generator().manual_seed(seed))
    return x.to(dtype).contiguous(memory_format=fmt)


def _prepared(model, **kwargs):
    return prepare_for_inference(copy.deepcopy(model), backend="cpu", **kwargs)


def _f64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The eval output of a float64 copy of `model` on x in float64 (the reference)."""
    return copy.deepcopy(model).double().eval()(x.double())


def _assert_same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


# --- parity -------------------------------------------------------------------------------------
# Preparing checks each block's function on a float64 probe (about 0.1 s a block): the tests
# that only read a prepared model share one per dtype.


@pytest.fixture(scope="module")
def googlenets():
    """dtype -> (torchvision's GoogLeNet with aux heads, a prepared copy), float64 and float32."""
    pairs = {}
    for dtype in (torch.float64, torch.float32):
        model = _torchvision(seed=0, dtype=dtype)
        pairs[dtype] = model, _prepared(model)
    return pairs


@pytest.mark.parametrize("transform_input", [False, True], ids=["plain", "transform_input"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_prepared_googlenet_matches_torchvision(googlenets, dtype, transform_input):
    model, prepared = googlenets[dtype]
    assert isinstance(prepared.conv1, FoldedConvUnit) and isinstance(prepared.conv3, FoldedConvUnit)
    assert isinstance(prepared.aux1.conv, FoldedConvUnit)
    assert sum(isinstance(m, FusedInception) for m in prepared.modules()) == 9
    assert prepared.conv3.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not prepared.training
    x = _input(dtype)
    with torch.no_grad():
        model.transform_input = prepared.transform_input = transform_input
        try:
            expected = _f64(model, x)
            out = prepared(x)
        finally:
            model.transform_input = prepared.transform_input = False
    assert out.dtype == dtype and out.shape == (2, 1000)
    assert_close_rel(out, expected, dtype)


@pytest.mark.parametrize("fmt", layout_params())
def test_both_input_layouts_and_inference_mode(googlenets, fmt):
    model, prepared = googlenets[torch.float32]
    x = _input(fmt=fmt, seed=3)
    with torch.inference_mode():
        assert_close_rel(prepared(x), _f64(model, x), torch.float32)


def test_nchw_memory_format_and_the_paper_variant():
    # The paper's units have no BatchNorm: nothing to fold, the blocks are fused all the same.
    torch.manual_seed(4)
    model = googlenet("paper").eval()
    prepared = _prepared(model, memory_format=torch.contiguous_format)
    assert not any(isinstance(m, FoldedConvUnit) for m in prepared.modules())
    assert sum(isinstance(m, FusedInception) for m in prepared.modules()) == 9
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        out = prepared(x)
        assert_close_rel(out, _f64(model, x), torch.float32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_folded_blocks_mode(dtype):
    model = _torchvision(seed=25, dtype=dtype)
    prepared = _prepared(model, blocks="folded")
    assert not any(isinstance(m, FusedInception) for m in prepared.modules())
    units = [m for m in prepared.modules() if isinstance(m, FoldedConvUnit)]
    assert len(units) == 3 + 9 * 6 + 2  # stem, blocks, auxiliary heads
    assert isinstance(prepared.inception4e.branch2[1], FoldedConvUnit)
    assert isinstance(prepared.inception3a.branch4[0], NhwcMaxPool3x3)
    assert type(prepared.maxpool1) is NhwcMaxPool2d  # the stem's 3x3 stride-2 pool
    _assert_same_state(prepared, model)
    x = _input(dtype, seed=26, fmt=torch.channels_last)
    with torch.no_grad():
        assert_close_rel(prepared(x), _f64(model, x), dtype)
    restored = unprepare_for_inference(prepared)
    assert type(restored.inception4e.branch2[1]) is BasicConv2d
    assert type(restored.inception3a.branch4[0]) is nn.MaxPool2d
    _assert_same_state(restored, model)


# --- state_dict and weight changes --------------------------------------------------------------


def test_state_dict_is_unchanged_and_loading_one_takes_effect():
    model = _torchvision(seed=6)
    prepared = _prepared(model)
    _assert_same_state(prepared, model)
    x = _input(seed=7)
    with torch.no_grad():
        prepared(x)  # folds and packs the weights first
        clone = copy.deepcopy(prepared)  # (the packed weights are not copied: rebuilt)
        assert_close_rel(clone(x), _f64(model, x), torch.float32)
        other = _torchvision(seed=8)
        prepared.load_state_dict(other.state_dict())
        assert_close_rel(prepared(x), _f64(other, x), torch.float32)
        # a write that autograd's version counters do not see (the default CPU check does)
        prepared.conv1.bn.running_var.data.mul_(4.0)
        other.conv1.bn.running_var.mul_(4.0)
        assert_close_rel(prepared(x), _f64(other, x), torch.float32)
    _assert_same_state(prepared, other)


def test_round_trip_restores_torchvision_modules():
    model = _torchvision(seed=9).train()
    prepared = _prepared(model)
    assert is_prepared(prepared) and not prepared.training
    stem, block = prepared.conv2, prepared.inception5a
    again = prepare_for_inference(prepared, backend="cpu")  # a second call changes nothing
    assert again is prepared and again.conv2 is stem and again.inception5a is block
    x = _input(seed=10)
    with torch.no_grad():
        assert_close_rel(again(x), _f64(model, x), torch.float32)
    restored = unprepare_for_inference(again)
    assert not is_prepared(restored) and restored.training  # the flag it had before
    assert type(restored.conv1) is BasicConv2d and type(restored.aux2.conv) is BasicConv2d
    assert type(restored.inception4c) is TvInception
    assert type(restored.maxpool4) is nn.MaxPool2d
    assert not any(isinstance(m, (FoldedConvUnit, FusedInception)) for m in restored.modules())
    assert all(p.is_contiguous() for p in restored.parameters())
    _assert_same_state(restored, model)
    with torch.no_grad():
        assert_close_rel(restored.eval()(x), _f64(model, x), torch.float32)
    with pytest.raises(ValueError, match="was not prepared"):
        unprepare_for_inference(restored)


# --- training mode and other paths --------------------------------------------------------------


def test_train_after_prepare_is_torchvisions_training():
    model = _torchvision(seed=13, dtype=torch.float64).train()
    prepared = _prepared(model).train()
    x = _input(torch.float64, seed=14, batch=3)
    torch.manual_seed(15)  # the same dropout masks in both
    expected = model(x)
    torch.manual_seed(15)
    out = prepared(x)
    for got, ref in zip(out, expected, strict=True):  # logits, aux_logits2, aux_logits1
        assert_close_rel(got, ref, torch.float64)
    _assert_close_state(prepared, model)  # the same running-statistics updates
    loss = out.logits.square().mean() + out.aux_logits1.mean()
    loss.backward()
    assert prepared.conv1.bn.weight.grad is not None


def _assert_close_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        if sa[key].is_floating_point():
            assert_close_rel(sa[key], sb[key], torch.float64, key)


def test_eval_with_autograd_gives_gradients(googlenets):
    model, prepared = googlenets[torch.float32]
    x = _input(seed=17).requires_grad_()
    out = prepared(x)
    out.sum().backward()
    assert x.grad is not None and prepared.conv3.bn.weight.grad is not None
    with torch.no_grad():
        assert_close_rel(out.detach(), _f64(model, x.detach()), torch.float32)


def test_trace_of_a_prepared_googlenet(googlenets):
    model, prepared = googlenets[torch.float32]
    x = _input(seed=19)
    with torch.no_grad():
        traced = torch.jit.trace(prepared, x)
        assert_close_rel(traced(x), _f64(model, x), torch.float32)


def test_hooks_on_a_folded_units_conv_fire(googlenets):
    model, prepared = googlenets[torch.float32]
    seen = []
    handle = prepared.conv1.conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    x = _input(seed=21)
    with torch.no_grad():
        assert_close_rel(prepared(x), _f64(model, x), torch.float32)
    assert seen == [(2, 64, HW // 2, HW // 2)]
    handle.remove()


UNIT_CASES = [
    pytest.param({"kernel_size": 7, "stride": 2, "padding": 3}, id="7x7-stride2"),
    pytest.param({"kernel_size": 1}, id="1x1"),
    pytest.param({"kernel_size": 3, "padding": "same", "dilation": 2}, id="3x3-same-dilated"),
    pytest.param({"kernel_size": 3, "padding": 1, "groups": 2}, id="3x3-groups2"),
]


@pytest.mark.parametrize("fmt", layout_params())
@pytest.mark.parametrize("kwargs", UNIT_CASES)
def test_folded_unit_matches_basicconv2d(kwargs, fmt):
    torch.manual_seed(24)
    unit = randomize_block(BasicConv2d(6, 10, **kwargs)).eval().to(memory_format=fmt)
    x = torch.randn(3, 6, 11, 9).contiguous(memory_format=fmt)
    for dtype in (torch.float32, torch.float64):  # (oneDNN's conv + ReLU, then ATen's conv)
        folded = FoldedConvUnit.from_module(copy.deepcopy(unit).to(dtype))
        with torch.no_grad():
            assert_close_rel(folded(x.to(dtype)), _f64(unit, x), dtype)


@pytest.mark.parametrize("fmt", layout_params())
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("mkl", [False, True], ids=["onednn", "mkl"])
def test_folded_unit_runs_a_wide_3x3_as_winograd(fmt, tile, mkl, monkeypatch):
    """A 3x3/1/1 unit of 64+ channels in and out (GoogLeNet's conv3) runs as Winograd F(2x2, 3x3)
    or F(4x4, 3x3) (forced here) on a grouped oneDNN GEMM or MKL's batched one, in chunks of 7
    tiles here (a padded or short last one): float64 parity, NaN where torchvision's unit has it
    (F(4x4, 3x3) recomputes directly), the direct path's output layout; a narrow or strided 3x3
    stays on the direct convolution."""
    from fused_inception import folded_unit
    from fused_inception.backends import cpu_winograd

    if folded_unit._WINOGRAD_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no conv3x3_relu_winograd operator or no oneDNN in this build")
    monkeypatch.setattr(cpu_winograd, "ONEDNN_TILES_PER_CHUNK", 7)
    monkeypatch.setattr(cpu_winograd, "MKL_TILES_PER_CHUNK", 7)
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", False)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", mkl)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", tile == 4)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_MIN_TILES", 0)
    calls, tiles = [], []
    real = folded_unit._WINOGRAD_OP
    # the GEMMs' groups: MKL's matrices [P, 64, 72] or oneDNN's grouped weight [P * 72, ...]
    groups = (lambda w: w.shape[0] if w.dim() == 3 else 0) if mkl else (lambda w: w.shape[0] // 72)
    monkeypatch.setattr(
        folded_unit,
        "_WINOGRAD_OP",
        lambda *a: (calls.append(a[3]), tiles.append(groups(a[1])), real(*a))[2],
    )
    unit, x = _unit_and_nan_input(64, 72, (2, 64, 9, 11), (1, 5, 4, 4), fmt, seed=26)
    folded = FoldedConvUnit.from_module(copy.deepcopy(unit))
    with torch.no_grad():
        got = [folded(x) for _ in range(2)]  # packed on the first call, reused on the second
        want = unit(x)
    assert calls == [7, 7]
    assert tiles == [(tile + 2) ** 2] * 2  # 16 or 36 groups of 72
    monkeypatch.setattr(cpu_winograd, "ONEDNN_ENABLED", False)
    with torch.no_grad():
        direct = FoldedConvUnit.from_module(copy.deepcopy(unit))(x)
    assert len(calls) == 2
    for out in got:
        assert torch.equal(torch.isnan(out), torch.isnan(want)) and bool(torch.isnan(want).any())
        finite = want.isfinite()
        assert_close_rel(out[finite], _f64(unit, x)[finite], torch.float32)
        assert out.stride() == direct.stride()
    monkeypatch.setattr(cpu_winograd, "ONEDNN_ENABLED", True)
    narrow = BasicConv2d(16, 72, kernel_size=3, padding=1)
    strided = BasicConv2d(64, 72, kernel_size=3, padding=1, stride=2)
    for module in (narrow, strided):
        x = torch.randn(1, module.conv.in_channels, 8, 8)
        with torch.no_grad():
            FoldedConvUnit.from_module(randomize_block(module).eval())(x)
    assert len(calls) == 2


def _unit_and_nan_input(c_in, c_out, shape, nan_at, fmt, seed):
    """A random 3x3/1/1 BasicConv2d in eval mode and an input with one NaN, both in fmt."""
    torch.manual_seed(seed)
    unit = randomize_block(BasicConv2d(c_in, c_out, kernel_size=3, padding=1)).eval()
    x = torch.randn(*shape)
    x[nan_at] = float("nan")
    return unit.to(memory_format=fmt), x.contiguous(memory_format=fmt)


@pytest.mark.parametrize("fmt", layout_params())
def test_folded_unit_keeps_nan_as_torchvisions_unit_does(fmt):
    """oneDNN's fused ReLU maps NaN to 0; the unit's ReLU is torch's, which keeps it."""
    unit, x = _unit_and_nan_input(3, 4, (1, 3, 5, 5), (0, 0, 2, 2), fmt, seed=25)
    folded = FoldedConvUnit.from_module(copy.deepcopy(unit))
    with torch.no_grad():
        want, got = unit(x), folded(x)
    assert torch.equal(torch.isnan(got), torch.isnan(want)) and bool(torch.isnan(want).any())


@pytest.mark.parametrize("fmt", layout_params())
def test_nhwc_pool_is_torchs_pool(fmt):
    pool = nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True)
    fast = NhwcMaxPool3x3.from_module(pool)
    x = torch.randn(2, 5, 7, 6).contiguous(memory_format=fmt).requires_grad_()
    with torch.no_grad():
        assert torch.equal(fast(x), pool(x))
    fast(x).sum().backward()  # with autograd recording: ATen's pool
    assert x.grad is not None
    assert fast.to_unfused() is pool
    with pytest.raises(ValueError, match="3x3 MaxPool2d"):
        NhwcMaxPool3x3.from_module(nn.MaxPool2d(3, stride=2))


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly():
    with pytest.raises(TypeError, match="expects an nn.Module, got dict"):
        prepare_for_inference({})
    with pytest.raises(ValueError, match="memory_format must be"):
        prepare_for_inference(nn.Conv2d(1, 1, 1), memory_format=torch.channels_last_3d)
    with pytest.raises(ValueError, match="blocks must be one of"):
        prepare_for_inference(nn.Conv2d(1, 1, 1), blocks="all")
    with pytest.raises(ValueError, match="unknown backend"):
        prepare_for_inference(nn.Conv2d(1, 1, 1), backend="fast")
    with pytest.raises(ValueError, match="was not prepared"):
        unprepare_for_inference(nn.Conv2d(1, 1, 1))


def test_a_model_without_blocks_is_folded_with_a_warning():
    torch.manual_seed(22)
    unit = randomize_block(BasicConv2d(3, 8, kernel_size=3, padding=1)).eval()
    model = nn.Sequential(unit, nn.Flatten())
    reference = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="has no Inception block"):
        prepared = prepare_for_inference(model)
    assert isinstance(prepared[0], FoldedConvUnit)
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        assert_close_rel(prepared(x), _f64(reference, x), torch.float32)


class _Residual(BasicConv2d):
    def forward(self, x):
        return super().forward(x) + x


def test_a_unit_with_another_forward_is_left_unfolded():
    torch.manual_seed(23)
    model = nn.Sequential(randomize_block(_Residual(4, 4, kernel_size=1)).eval())
    with pytest.warns(UserWarning, match="another function than relu"):
        prepared = prepare_for_inference(model)
    assert type(prepared[0]) is _Residual
    with pytest.raises(ValueError, match="cannot fold"):
        FoldedConvUnit.from_module(prepared[0])
