"""fused_inception._C.call_op (csrc/call_op.cpp, _ext.direct_op): an operator called through
the C++ dispatcher without torch.ops' Python layer, as the eval fast paths replay their calls.
The same results as through torch.ops, defaults filled in, and clear errors."""

from __future__ import annotations

import pytest
import torch
from helpers import FunctionRecorder

from fused_inception import _ext
from fused_inception.backends import cpu_onednn

pytestmark = pytest.mark.skipif(
    _ext.c_function("call_op") is None, reason=f"no _C.call_op: {_ext.extension_error()}"
)


def _nhwc(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)


def test_pools_give_what_torch_ops_gives():
    x = _nhwc(2, 24, 11, 9)
    pool = _ext.direct_op("max_pool_nhwc")
    for args in ([3, 3], [2, 2], [0, 0], True), ((3, 2), (2, 1), (1, 0), False):
        want = _ext.op("max_pool_nhwc")(x, *(list(a) if isinstance(a, tuple) else a for a in args))
        got = pool(x, *args)
        assert torch.equal(got, want) and got.stride() == want.stride()
        k, st, pad, ceil = args
        assert torch.equal(got, torch.nn.functional.max_pool2d(x, k, st, pad, ceil_mode=ceil))
    pool3 = _ext.direct_op("max_pool3x3_nhwc")
    assert torch.equal(pool3(x), _ext.op("max_pool3x3_nhwc")(x))


@pytest.mark.skipif(not _ext.has_op("conv_bias_relu_nhwc"), reason="no conv_bias_relu_nhwc")
def test_the_own_kernel_with_defaults_left_out_and_given():
    x = _nhwc(1, 32, 9, 9, seed=1)
    w = torch.randn(40, 32, 3, 3, generator=torch.Generator().manual_seed(2))
    panels, bias = cpu_onednn.pack_panels(w), torch.randn(40)
    scale = torch.rand(40) + 0.5
    conv = _ext.direct_op("conv_bias_relu_nhwc")
    op = _ext.op("conv_bias_relu_nhwc")
    assert torch.equal(conv(x, panels, bias), op(x, panels, bias))  # stride, padding, ...
    assert torch.equal(conv(x, panels, bias, 2, 1), op(x, panels, bias, 2, 1))
    got = conv(x, panels, bias, 1, 1, scale, 0)  # every argument, streamed stores
    assert torch.equal(got, op(x, panels, bias, 1, 1, scale, 0))
    want = torch.relu(
        torch.nn.functional.conv2d(x.double(), w.double(), padding=1)
        * scale.double()[:, None, None]
        + bias.double()[:, None, None]
    )
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-4)


def test_autograd_and_inference_mode_are_the_dispatchers():
    x = _nhwc(1, 8, 5, 5)
    pool = _ext.direct_op("max_pool_nhwc")
    with torch.inference_mode():
        assert pool(x, [3, 3], [1, 1], [1, 1], False).is_inference()
    with torch.no_grad():
        assert not pool(x, [3, 3], [1, 1], [1, 1], False).is_inference()


def test_errors_name_the_problem():
    call, handle_of = _ext.c_function("call_op"), _ext.c_function("op_handle")
    pool = handle_of("max_pool_nhwc")
    x = _nhwc(1, 8, 5, 5)
    with pytest.raises(TypeError, match="handle must be an int"):
        call("max_pool_nhwc", x)
    with pytest.raises(ValueError, match="unknown handle"):
        call(10**6, x)
    with pytest.raises(RuntimeError, match="no_such_op"):
        handle_of("no_such_op")
    with pytest.raises(TypeError, match="argument kernel_size not given"):
        call(pool, x)
    with pytest.raises(TypeError, match="takes 5 arguments"):
        call(pool, x, [3, 3], [1, 1], [1, 1], False, 7)
    with pytest.raises(TypeError, match="cannot pass an argument of type str"):
        call(pool, x, "3", [1, 1], [1, 1], False)
    with pytest.raises(TypeError, match="lists must hold ints"):
        call(pool, x, [3.0, 3], [1, 1], [1, 1], False)
    # The operator's own checks, with their Python exception types (as through torch.ops).
    with pytest.raises(ValueError, match="max_pool_nhwc"):
        call(pool, torch.randn(8, 5, 5), [3, 3], [1, 1], [1, 1], False)
    with pytest.raises(RuntimeError):  # a wrong type for the schema: the dispatcher refuses it
        call(pool, x, [3, 3], [1, 1], [1, 1], 1.5)


@pytest.mark.parametrize("pool", ["stem", "branch4"])
def test_the_nhwc_pool_replays_directly_but_not_under_a_torch_function_mode(pool, monkeypatch):
    from fused_inception.backends import cpu_maxpool
    from fused_inception.nhwc_pool import NhwcMaxPool2d, NhwcMaxPool3x3

    if pool == "stem":
        module = NhwcMaxPool2d.from_module(torch.nn.MaxPool2d(3, 2, ceil_mode=True))
        name, direct_name = "max_pool_nhwc", "_MAX_POOL_DIRECT"
    else:
        module = NhwcMaxPool3x3.from_module(torch.nn.MaxPool2d(3, 1, 1))
        name, direct_name = "max_pool3x3_nhwc", "_MAX_POOL3X3_DIRECT"
    x = _nhwc(1, 16, 13, 13)
    want = torch.nn.functional.max_pool2d(
        x, 3, module.stride, module.padding, ceil_mode=module.ceil_mode
    )
    calls = []
    real = getattr(cpu_maxpool, direct_name)
    monkeypatch.setattr(cpu_maxpool, direct_name, lambda *a: (calls.append(1), real(*a))[1])
    with torch.no_grad():
        assert torch.equal(module(x), want)  # the first call keeps its call, for the replays
        assert torch.equal(module(x), want) and calls == [1]
        with FunctionRecorder() as mode:
            assert torch.equal(module(x), want)
    assert calls == [1] and _ext.op(name) in mode.seen
