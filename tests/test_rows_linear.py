"""RowsLinear (fused_inception/rows_linear.py) and its kernel fused_inception::linear_rows
(csrc/cpu/linear_rows.cpp): x @ W.T + b for a few rows, against float64 and F.linear, the same
bits at every CPU capability, clear errors, and the module through every case where F.linear
must run instead (more rows, other dtypes and devices, autograd, tracing, scripting, ONNX
export, a torch function mode) and in a prepared GoogLeNet. Its opcheck is in tests/test_ops.py.
"""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import (
    CAPABILITY_PRELUDE,
    FunctionRecorder,
    assert_close_rel,
    outputs_at_every_capability,
    randomize_block,
    script_and_onnx,
)
from torch import nn

from fused_inception import _ext, prepare_for_inference, rows_linear, unprepare_for_inference
from fused_inception.rows_linear import MAX_ROWS, RowsLinear, linear_rows

pytestmark = pytest.mark.skipif(
    not _ext.has_op("linear_rows"), reason=f"no extension: {_ext.extension_error()}"
)


def _rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _want(x, w, b):
    y = x.double() @ w.double().T
    return y + b.double() if b is not None else y


@pytest.mark.parametrize(
    "m, k, n", [(1, 1024, 1000), (3, 13, 7), (16, 40, 33), (2, 8, 4), (5, 1, 3), (1, 3, 1)]
)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_against_float64(m, k, n, with_bias):
    x, w = _rand(m, k, seed=1) + 0.25, _rand(n, k, seed=2)  # not centred: a lost product shows
    b = _rand(n, seed=3) if with_bias else None
    out = linear_rows(x, w, b)
    assert out.shape == (m, n) and out.is_contiguous()
    assert_close_rel(out, _want(x, w, b), torch.float32)


def test_rows_further_apart_and_nan():
    big_x, big_w = _rand(4, 50, seed=4), _rand(30, 60, seed=5)
    x, w = big_x[:, 5:45], big_w[::2, 10:50]  # rows 50 and 120 floats apart
    b = _rand(15, seed=6)
    assert_close_rel(linear_rows(x, w, b), _want(x, w, b), torch.float32)
    x = x.clone()
    x[1, 3] = float("nan")
    out = linear_rows(x, w, b)
    assert torch.isnan(out[1]).all() and not torch.isnan(out[[0, 2, 3]]).any()


_CAPABILITY_CHECK = (
    CAPABILITY_PRELUDE
    + """
op = torch.ops.fused_inception.linear_rows
for name, (m, k, n) in {"a": (1, 1024, 37), "b": (3, 13, 9), "c": (16, 40, 5)}.items():
    x, w, b = rand(m, k), rand(n, k), rand(n)
    x[0, 2] = float("nan")
    out = op(x, w, b)
    print(out.view(torch.int32).flatten().tolist(), file=open(OUT_DIR + f"/{name}.txt", "w"))
print("ok")
"""
)


def test_the_same_bits_at_every_capability(tmp_path):
    """The AVX2 loop and the plain one (capability DEFAULT) take the same 8-lane sums with one
    fused multiply-add per product: the same bits, NaN included."""
    first, *others = outputs_at_every_capability(tmp_path, _CAPABILITY_CHECK).values()
    assert len(first) == 3 and all(other == first for other in others)


@pytest.mark.parametrize(
    "x, w, b, error, message",
    [
        (_rand(2, 3, 4), _rand(5, 4), None, ValueError, "expected x \\[M, K\\]"),
        (_rand(2, 4), _rand(5, 3), None, ValueError, "x has 4 features, weight 3"),
        (_rand(2, 4).double(), _rand(5, 4), None, TypeError, "float32"),
        (_rand(4, 2).T, _rand(5, 4), None, ValueError, "contiguous features"),
        (_rand(2, 4), _rand(5, 4), _rand(4), ValueError, "bias \\[5\\]"),
    ],
    ids=["rank", "features", "dtype", "strides", "bias"],
)
def test_errors_are_clear(x, w, b, error, message):
    with pytest.raises(error, match=message):
        linear_rows(x, w, b)


def test_empty_rows_and_outputs():
    assert linear_rows(_rand(0, 8), _rand(5, 8), None).shape == (0, 5)
    assert linear_rows(_rand(3, 8), _rand(0, 8), None).shape == (3, 0)


def test_the_module_is_torchs_linear_in_every_case(monkeypatch):
    calls = []
    real = rows_linear._DIRECT
    monkeypatch.setattr(rows_linear, "_DIRECT", lambda *a: (calls.append(1), real(*a))[1])
    source = nn.Linear(24, 10)
    module = RowsLinear.from_module(source)
    assert module.weight is source.weight and module.bias is source.bias
    assert list(module.state_dict()) == list(source.state_dict())
    x = _rand(3, 24, seed=7)

    def check(x, kernel, grad=False):
        calls.clear()
        with torch.set_grad_enabled(grad):
            got = module(x)
        want = F.linear(x, module.weight, module.bias)
        assert_close_rel(got, _want(x, module.weight, module.bias), x.dtype)
        torch.testing.assert_close(got, want)
        assert calls == ([1] if kernel else []), (tuple(x.shape), x.dtype, grad)
        return got

    check(x, True)
    check(_rand(MAX_ROWS, 24), True)
    check(_rand(MAX_ROWS + 1, 24), False)  # more rows: MKL's GEMM
    module.double()
    check(x.double(), False)  # float64: F.linear
    module.float()
    check(_rand(2, 3, 24), False)  # 3-D input: F.linear
    check(_rand(24, 3).T, False)  # features not contiguous
    out = check(x, False, grad=True)  # autograd records: F.linear, which it can differentiate
    out.sum().backward()
    assert module.weight.grad is not None
    with torch.no_grad():
        module.bias = None  # no bias
    check(x, True)
    module.bias = source.bias
    with FunctionRecorder() as mode:
        check(x, False)  # a torch function mode sees F.linear
    assert F.linear in mode.seen
    with torch.no_grad():
        traced = torch.jit.trace(module, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "fused_inception::" not in graph and "aten::linear" in graph
    assert b"Gemm" in script_and_onnx(module.eval(), x, exact=False)  # scripted: F.linear
    copied = pickle.loads(pickle.dumps(module))
    with torch.no_grad():
        assert torch.equal(copied(x), module(x))
    replaced = nn.Parameter(_rand(10, 24, seed=8))
    module.weight = replaced  # a new weight is read as it is
    check(x, True)
    restored = module.to_unfused()
    assert restored is source and source.weight is replaced


def test_other_modules_are_refused():
    class MyLinear(nn.Linear):
        pass

    with pytest.raises(ValueError, match="expected an nn.Linear"):
        RowsLinear.from_module(MyLinear(3, 4))


def test_a_prepared_googlenet_runs_it_and_unprepare_gives_fc_back():
    torch.manual_seed(12)
    model = torchvision.models.googlenet(weights=None, init_weights=True, aux_logits=True)
    model = randomize_block(model, 12).eval()
    work = copy.deepcopy(model)
    linears = {"fc": work.fc, "aux1.fc1": work.aux1.fc1, "aux2.fc2": work.aux2.fc2}
    keys = list(work.state_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_for_inference(work, backend="cpu")
    assert type(prepared.fc) is RowsLinear and type(prepared.aux1.fc1) is RowsLinear
    assert list(prepared.state_dict()) == keys
    x = _rand(2, 3, 96, 96, seed=13)
    with torch.no_grad():
        for _ in range(2):
            assert_close_rel(prepared(x), copy.deepcopy(model).double()(x.double()), torch.float32)
    restored = unprepare_for_inference(prepared)
    assert restored.fc is linears["fc"] and restored.aux1.fc1 is linears["aux1.fc1"]
    assert restored.aux2.fc2 is linears["aux2.fc2"] and type(restored.fc) is nn.Linear
