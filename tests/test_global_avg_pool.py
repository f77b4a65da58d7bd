"""The global average pool of a prepared network (fused_inception::global_avg_pool_nhwc,
csrc/cpu/global_avg_pool.cpp; NhwcAdaptiveAvgPool2d, fused_inception/nhwc_pool.py): the mean over
H and W of channels_last CPU tensors, against float64 and F.adaptive_avg_pool2d, NaN and
infinities, errors, and the module through every change, autograd, tracing, scripting and ONNX
export. The operator's opcheck is in tests/test_ops.py."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import FunctionRecorder, assert_close_rel, randomize_block, script_and_onnx
from torch import nn

from fused_inception import _ext, nhwc_pool, prepare_for_inference, unprepare_for_inference
from fused_inception.backends.cpu_maxpool import global_avg_pool_nhwc
from fused_inception.nhwc_pool import NhwcAdaptiveAvgPool2d

pytestmark = pytest.mark.skipif(
    not _ext.has_op("global_avg_pool_nhwc"), reason=f"no extension: {_ext.extension_error()}"
)


def _nhwc(*shape, dtype=torch.float32, seed=0):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.to(dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "shape", [(1, 1024, 7, 7), (3, 13, 5, 4), (2, 200, 1, 1), (1, 1, 9, 2), (8, 640, 7, 7)]
)
def test_the_mean_over_h_and_w(shape, dtype):
    x = _nhwc(*shape, dtype=dtype) + 0.5  # not centred: a wrong count or a lost pixel shows
    out = global_avg_pool_nhwc(x)
    assert out.shape == (shape[0], shape[1], 1, 1) and out.dtype == dtype
    assert out.is_contiguous(memory_format=torch.channels_last)
    want = x.double().mean((2, 3), keepdim=True)
    assert_close_rel(out, want, dtype)
    assert_close_rel(out, F.adaptive_avg_pool2d(x, 1).double(), dtype)


def test_a_channel_slice_with_pixels_further_apart():
    big = _nhwc(2, 40, 6, 5, seed=1)
    x = big[:, 8:30]  # channels contiguous, pixels 40 floats apart
    assert_close_rel(global_avg_pool_nhwc(x), x.double().mean((2, 3), keepdim=True), torch.float32)


def test_nan_and_infinities_reach_their_channel_only():
    x = _nhwc(2, 9, 4, 4, seed=2)
    x[0, 1, 2, 3] = float("nan")
    x[1, 4, 0, 0] = float("inf")
    x[1, 5, 1, 1], x[1, 5, 2, 2] = float("inf"), float("-inf")
    out = global_avg_pool_nhwc(x).flatten(1)
    want = x.double().mean((2, 3))
    assert torch.isnan(out[0, 1]) and out[1, 4] == float("inf") and torch.isnan(out[1, 5])
    finite = torch.isfinite(want)
    assert torch.isfinite(out[finite]).all() and not torch.isfinite(out[~finite]).any()
    torch.testing.assert_close(out[finite].double(), want[finite], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.randn(4, 5, 6), ValueError, "expected a 4-D x"),
        (torch.randn(1, 8, 3, 3), ValueError, "expected a channels_last x"),
        (torch.randn(1, 8, 3, 3).half().contiguous(memory_format=torch.channels_last), TypeError,
         "float32 or float64"),
        (torch.randn(1, 8, 0, 3).contiguous(memory_format=torch.channels_last), ValueError,
         "non-empty image"),
    ],
    ids=["rank", "layout", "dtype", "empty"],
)  # fmt: skip
def test_errors_are_clear(x, error, message):
    with pytest.raises(error, match=message):
        global_avg_pool_nhwc(x)


def test_an_empty_batch():
    out = global_avg_pool_nhwc(_nhwc(0, 6, 3, 3))
    assert out.shape == (0, 6, 1, 1)


def test_the_module_is_torchs_pool_through_every_change(monkeypatch):
    """NhwcAdaptiveAvgPool2d keeps its last call's decision for the same input layout, dtype and
    output size; each change is computed as nn.AdaptiveAvgPool2d computes it."""
    calls = []
    real = nhwc_pool._GLOBAL_AVG_DIRECT
    monkeypatch.setattr(
        nhwc_pool, "_GLOBAL_AVG_DIRECT", lambda *a: (calls.append("direct"), real(*a))[1]
    )
    full = nhwc_pool.global_avg_pool_nhwc
    monkeypatch.setattr(
        nhwc_pool, "global_avg_pool_nhwc", lambda *a: (calls.append("op"), full(*a))[1]
    )
    source = nn.AdaptiveAvgPool2d((1, 1))
    pool = nhwc_pool.nhwc_pool(source)
    assert type(pool) is NhwcAdaptiveAvgPool2d and pool.to_unfused() is source
    x = _nhwc(2, 24, 7, 7, seed=3)

    def check(x, expected, **changes):
        for name, value in changes.items():
            setattr(pool, name, value)
        with torch.no_grad():
            got, want = pool(x), F.adaptive_avg_pool2d(x, pool.output_size)
        assert got.shape == want.shape
        assert_close_rel(got, want.double(), x.dtype)
        assert calls[-1:] == expected, changes
        calls.clear()

    check(x, ["op"])
    check(x, ["direct"])
    check(x, [], output_size=2)  # ATen's pool
    check(x, ["op"], output_size=1)
    check(x, ["op"], output_size=(1, 1))  # another output size key: the full path once
    check(x, ["direct"])
    check(x.contiguous(), [])  # NCHW: ATen's
    check(x.half(), [])
    check(x.double(), ["op"])
    check(x[:1], ["op"])
    check(x, ["op"])
    grad = x.clone().requires_grad_()
    out = pool(grad)  # autograd: ATen's pool, whose backward runs
    out.sum().backward()
    assert grad.grad is not None and calls == []
    with FunctionRecorder() as mode, torch.no_grad():
        pool(x)  # a torch function mode sees the operator: the full path, not the replay
    assert calls == ["op"] and any("global_avg_pool_nhwc" in str(f) for f in mode.seen)
    calls.clear()
    with torch.no_grad():
        traced = torch.jit.trace(pool, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "fused_inception::" not in graph and "aten::adaptive_avg_pool2d" in graph
    copied = pickle.loads(pickle.dumps(pool))
    assert "_fast" not in copied.__dict__
    with torch.no_grad():
        assert torch.equal(copied(x), pool(x))


def test_other_pools_stay():
    for module in (nn.AdaptiveAvgPool2d(2), nn.AdaptiveAvgPool2d((1, 2)), nn.AvgPool2d(7)):
        assert nhwc_pool.nhwc_pool(module) is None
    with pytest.raises(ValueError, match="1x1 output"):
        NhwcAdaptiveAvgPool2d.from_module(nn.AdaptiveAvgPool2d(4))


def test_the_module_scripts_and_exports_to_onnx():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), NhwcAdaptiveAvgPool2d.from_module(nn.AdaptiveAvgPool2d(1))
    ).eval()
    exported = script_and_onnx(model, torch.randn(1, 3, 9, 8))
    assert b"GlobalAveragePool" in exported or b"ReduceMean" in exported


def test_a_prepared_googlenet_runs_it_and_unprepare_gives_the_pool_back():
    torch.manual_seed(9)
    model = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=False)
    model = randomize_block(model, 9).eval()
    work = copy.deepcopy(model)
    source = work.avgpool
    keys = list(work.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_for_inference(work, backend="cpu")
    assert type(prepared.avgpool) is NhwcAdaptiveAvgPool2d
    assert list(prepared.state_dict()) == keys
    seen = []
    prepared.avgpool.register_forward_hook(lambda m, args, out: seen.append((args[0], out)))
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        for _ in range(3):  # the full path, then replays
            assert_close_rel(prepared(x), copy.deepcopy(model).double()(x.double()), torch.float32)
    for pool_in, pool_out in seen:
        assert pool_in.is_contiguous(memory_format=torch.channels_last)
        assert_close_rel(pool_out, pool_in.double().mean((2, 3), keepdim=True), torch.float32)
    restored = unprepare_for_inference(prepared)
    assert restored.avgpool is source
