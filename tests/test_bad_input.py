"""Bad input is refused with a clear exception before any kernel runs: the module's input (on
every backend, helpers.EVERY_BACKEND), its constructor's arguments, the inception_block
operator's arguments, and the C++ operators' arguments that test_cuda_ops.py does not already
cover (out is never written before the error).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    EVERY_BACKEND,
    OPS,
    SMALL,
    backend_device,
    nan_channels_last,
    needs_emulated_ops,
    randn_channels_last,
    randomize_block,
)

import fused_inception.module as module_mod
from fused_inception import FusedInception
from fused_inception.backends import available_backends
from fused_inception.folding import fold_block
from fused_inception.ops import inception_block
from fused_inception.packing import prepare_chain, prepare_conv1x1

# ---------------------------------------------------------------------------------------------
# The module and the inception_block operator, on every backend.


def _no_kernels(monkeypatch) -> None:
    """Make reaching a backend (fused path) or the operator (autograd path) fail the test."""

    def reached(*args, **kwargs):
        raise AssertionError("a kernel path was reached before the input was refused")

    monkeypatch.setattr(module_mod, "resolve_backend", reached)
    monkeypatch.setattr(module_mod, "inception_block", reached)


BAD_INPUTS = [
    ("rank-3", lambda: torch.randn(5, 4, 4), ValueError, "4-D"),
    ("rank-5", lambda: torch.randn(1, 5, 4, 4, 1), ValueError, "4-D"),
    ("channels", lambda: torch.randn(1, 6, 4, 4), ValueError, "expects 5 input channels, got 6"),
    ("int", lambda: torch.ones(1, 5, 4, 4, dtype=torch.int64), TypeError, "floating-point"),
    ("bool", lambda: torch.ones(1, 5, 4, 4, dtype=torch.bool), TypeError, "floating-point"),
    ("complex", lambda: torch.ones(1, 5, 4, 4, dtype=torch.complex64), TypeError, "floating"),
    ("float64", lambda: torch.randn(1, 5, 4, 4, dtype=torch.float64), TypeError, "does not match"),
    ("float16", lambda: torch.randn(1, 5, 4, 4).half(), TypeError, "does not match"),
    ("numpy", lambda: torch.randn(1, 5, 4, 4).numpy(), TypeError, "torch.Tensor"),
]


@pytest.mark.parametrize("mode", ["eval", "train-paper"])
@pytest.mark.parametrize("make,exc,match", [pytest.param(*c[1:], id=c[0]) for c in BAD_INPUTS])
@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_bad_input_is_refused_before_any_kernel(backend, make, exc, match, mode, monkeypatch):
    block = FusedInception(*SMALL.args(), norm=mode == "eval", backend=backend)
    block.train(mode != "eval")
    _no_kernels(monkeypatch)
    with pytest.raises(exc, match=match):
        block(make())


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_input_and_weights_on_different_devices(backend, monkeypatch):
    block = FusedInception(*SMALL.args(), backend=backend).eval()
    _no_kernels(monkeypatch)
    with pytest.raises(RuntimeError, match="input is on meta but the block's parameters are on"):
        block(torch.randn(1, 5, 4, 4, device="meta"))
    block.to("meta")
    with pytest.raises(
        RuntimeError, match="input is on cpu but the block's parameters are on meta"
    ):
        block(torch.randn(1, 5, 4, 4))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_backend_refuses_a_device_it_cannot_run_on(backend):
    block = FusedInception(*SMALL.args(), backend=backend).eval().to("meta")
    with pytest.raises(RuntimeError, match=f"backend '{backend}'.*meta"), torch.no_grad():
        block(torch.randn(1, 5, 4, 4, device="meta"))


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_backend_refuses_float64(backend):
    if backend not in available_backends():
        pytest.skip(f"no {backend}")
    device = backend_device(backend)
    block = FusedInception(*SMALL.args(), backend=backend).eval().double().to(device)
    x = torch.randn(1, 5, 4, 4, dtype=torch.float64, device=device)
    with pytest.raises(TypeError, match="float32, float16 and bfloat16, got torch.float64"):
        with torch.no_grad():
            block(x)


CHANNEL_NAMES = ("in_channels", "ch1x1", "ch3x3red", "ch3x3", "ch5x5red", "ch5x5", "pool_proj")


@pytest.mark.parametrize("bad", [0, -1, True, 4.0, "4", None], ids=repr)
@pytest.mark.parametrize("position", range(7), ids=CHANNEL_NAMES)
def test_every_channel_argument_is_checked(position, bad):
    args = [8, 4, 4, 4, 4, 4, 4]
    args[position] = bad
    with pytest.raises(ValueError, match=f"{CHANNEL_NAMES[position]} must be a positive int"):
        FusedInception(*args)


@pytest.mark.parametrize("k", [1, 2, 4, 6, 7, 3.0, True, "3", None], ids=repr)
def test_unsupported_branch3_kernel(k):
    with pytest.raises(ValueError, match="branch3_kernel must be the int 3 or 5"):
        FusedInception(8, 4, 4, 4, 4, 4, 4, branch3_kernel=k)


def test_norm_must_be_a_bool():
    with pytest.raises(TypeError, match="norm must be a bool"):
        FusedInception(8, 4, 4, 4, 4, 4, 4, norm="no")


def _folded(dtype=torch.float32) -> list[torch.Tensor]:
    block = randomize_block(FusedInception(*SMALL.args(), norm=False, branch3_kernel=5))
    return [t.to(dtype) for t in fold_block(block)]


def _replace(params, index, value):
    params = list(params)
    params[index] = value
    return params


# FoldedParams order: w1 b1 w2r b2r w2 b2 w3r b3r w3 b3 w4 b4
OP_ERRORS = [
    ("w1-cin", lambda p: _replace(p, 0, p[0][:, :4]), ValueError, r"w1 must be \[C, 5, K, K\]"),
    ("w2r-rank", lambda p: _replace(p, 2, p[2][..., 0]), ValueError, r"w2r must be \[C, 5"),
    ("w2-reads", lambda p: _replace(p, 4, p[4][:, :3]), ValueError, r"w2 must be \[C, 7, K, K\]"),
    ("w2-even", lambda p: _replace(p, 4, p[4][..., :2, :2]), ValueError, "kernel size 3 or 5"),
    ("w2-nonsquare", lambda p: _replace(p, 4, p[4][..., :1]), ValueError, r"w2 must be \[C, 7"),
    ("w3-k7", lambda p: _replace(p, 8, F.pad(p[8], (1, 1, 1, 1))), ValueError, "3 or 5"),
    ("w4-k3", lambda p: _replace(p, 10, F.pad(p[10], (1, 1, 1, 1))), ValueError, "size 1"),
    ("b3-len", lambda p: _replace(p, 9, p[9][:2]), ValueError, r"b3 must be \[6\], got \(2,\)"),
    ("b1-dtype", lambda p: _replace(p, 1, p[1].double()), TypeError, "b1 is torch.float64"),
    ("w4-meta", lambda p: _replace(p, 10, p[10].to("meta")), RuntimeError, "w4 is on meta"),
]


@pytest.mark.parametrize("change,exc,match", [pytest.param(*c[1:], id=c[0]) for c in OP_ERRORS])
def test_operator_validates_its_arguments(change, exc, match):
    x = torch.randn(1, 5, 4, 4)
    with pytest.raises(exc, match=match):
        inception_block(x, *change(_folded()), "cpu")


def test_operator_refuses_integer_input():
    with pytest.raises(TypeError, match="x must be floating-point"):
        inception_block(torch.ones(1, 5, 4, 4, dtype=torch.int32), *_folded(torch.int32), "cpu")


# ---------------------------------------------------------------------------------------------
# The C++ operators refuse what the existing tests (test_cuda_ops.py) do not already cover.


def _chain_args(k: int = 3):
    gen = torch.Generator().manual_seed(0)
    w_red, b_red = torch.randn(3, 4, 1, 1, generator=gen), torch.randn(3, generator=gen)
    w_kxk, b_kxk = torch.randn(6, 3, k, k, generator=gen), torch.randn(6, generator=gen)
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk, torch.float32)
    out, x = nan_channels_last(1, 9, 5, 5), randn_channels_last(1, 4, 5, 5)
    names = ("w_red", "b_red", "w_kxk", "b_kxk")
    return {"x": x, **dict(zip(names, packed, strict=True)), "out": out, "c0": 1}


# (id, change, the error type of fused_inception.checks' convention, match)
CHAIN_ERRORS = [
    ("x-rank", lambda a: {"x": a["x"][0]}, ValueError, "x must be 4-D"),
    ("x-nchw", lambda a: {"x": a["x"].contiguous()}, ValueError, "channels_last"),
    ("x-int", lambda a: {"x": a["x"].to(torch.int32)}, TypeError, "float32, float16 or bfloat16"),
    ("w_red-rank", lambda a: {"w_red": a["w_red"][None]}, ValueError, "w_red must be 2-D"),
    ("w_red-dtype", lambda a: {"w_red": a["w_red"].half()}, TypeError, "w_red must be Float"),
    ("w_red-strided", lambda a: {"w_red": a["w_red"].t().contiguous().t()}, ValueError, "contig"),
    ("b_red-shape", lambda a: {"b_red": a["b_red"][:2]}, ValueError, r"b_red must have shape \[3"),
    ("b_red-dtype", lambda a: {"b_red": a["b_red"].half()}, TypeError, "biases are float32"),
    ("w_kxk-rank", lambda a: {"w_kxk": a["w_kxk"][0]}, ValueError, "w_kxk must be 4-D"),
    ("w_kxk-cr", lambda a: {"w_kxk": a["w_kxk"][:, :, :2].contiguous()}, ValueError, r"3, 3, 6\]"),
    ("w_kxk-nonsquare", lambda a: {"w_kxk": a["w_kxk"][:, :1].contiguous()}, ValueError, "w_kxk"),
    ("w_kxk-strided", lambda a: {"w_kxk": a["w_kxk"].transpose(0, 1)}, ValueError, "contiguous"),
    ("b_kxk-shape", lambda a: {"b_kxk": a["b_kxk"][:5]}, ValueError, r"b_kxk must have shape \[6"),
    ("out-rank", lambda a: {"out": a["out"][0]}, ValueError, "out must be 4-D"),
    ("out-nchw", lambda a: {"out": a["out"].contiguous()}, ValueError, "out must be channels_last"),
    ("out-dtype", lambda a: {"out": a["out"].double()}, TypeError, "out must have x's dtype"),
    ("out-batch", lambda a: {"out": torch.cat([a["out"]] * 2)}, ValueError, "like x"),
    ("c0-past-end", lambda a: {"c0": 4}, ValueError, "do not fit in out's 9 channels"),
    ("c0-negative", lambda a: {"c0": -1}, ValueError, "do not fit"),
]


@needs_emulated_ops
@pytest.mark.parametrize(
    "change,exc,message", [pytest.param(*c[1:], id=c[0]) for c in CHAIN_ERRORS]
)
def test_chain_operator_rejects_bad_arguments(change, exc, message):
    args = _chain_args()
    out = args["out"]
    args.update(change(args))
    with pytest.raises(exc, match=message):
        OPS.chain_1x1_kxk_(*args.values())
    assert torch.isnan(out).all(), "out was written before the error"


@needs_emulated_ops
@pytest.mark.parametrize("op,name", [("conv1x1", "w"), ("conv1x1", "bias"), ("chain", "w_red")])
def test_operand_on_another_device_never_touches_out(op, name):
    """A meta operand next to CPU tensors dispatches to the operator's fake (meta) kernel, which
    refuses mixed devices: an error naming the devices, and nothing written.
    (Between CPU and CUDA tensors the C++ check refuses it: test_cuda_ops.py, GPU only.)"""
    if op == "conv1x1":
        w, b = prepare_conv1x1(torch.randn(5, 7, 1, 1), torch.randn(5), dtype=torch.float32)
        out, x = nan_channels_last(2, 12, 3, 4), randn_channels_last(2, 7, 3, 4)
        args = {"x": x, "w": w, "bias": b, "out": out, "c0": 4, "pool": False}
        call = OPS.conv1x1_slice_
    else:
        args, call = _chain_args(), OPS.chain_1x1_kxk_
    args[name] = args[name].to("meta")
    with pytest.raises(RuntimeError, match=f"one device, got .*{name} on meta"):
        call(*args.values())
    assert torch.isnan(args["out"]).all()


def test_winograd_operators_refuse_a_geometry_whose_pixel_count_overflows():
    """n * h * w wraps int64 to the 4 rows given (2**62 + 1 images of 2x2): refused all the same
    (the tile count does not wrap), so the transforms never index past r or out."""
    ops = torch.ops.fused_inception
    with pytest.raises(ValueError, match="overflow"):
        ops.winograd_f2x3_input(torch.randn(4, 3), 2**62 + 1, 2, 2)
    with pytest.raises(ValueError, match="m must be"):
        ops.winograd_f2x3_output_(torch.randn(16, 1, 3), torch.randn(3), torch.empty(4, 3),
                                  2**62 + 1, 2, 2)  # fmt: skip


_C0_OVERFLOW = """
import torch
import fused_inception
from fused_inception.packing import prepare_conv1x1
w, b = prepare_conv1x1(torch.randn(5, 7, 1, 1), torch.randn(5), dtype=torch.float32)
x = torch.randn(2, 7, 3, 4).contiguous(memory_format=torch.channels_last)
out = torch.zeros(2, 12, 3, 4).contiguous(memory_format=torch.channels_last)
try:
    torch.ops.fused_inception.conv1x1_slice_(x, w, b, out, 2**63 - 3, False)
except ValueError as exc:
    assert "do not fit" in str(exc), exc
    print("refused")
else:
    print("accepted")
"""


@needs_emulated_ops
def test_slice_offset_near_int64_max_is_refused():
    """Run in a subprocess: an accepted c0 corrupts the heap."""
    result = subprocess.run(
        [sys.executable, "-c", _C0_OVERFLOW], capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip() == "refused", result.stdout[-2000:] + result.stderr[-2000:]


def test_auto_runs_float64_on_the_aten_path():
    """A drop-in block runs any floating dtype: "auto" takes the cpu backend (ATen primitives,
    any device) for a dtype the GPU kernels do not compute in, also on a CUDA device; a GPU
    backend named explicitly refuses it (test_gpu_backend_refuses_float64)."""
    from fused_inception.backends import resolve_backend

    assert resolve_backend("auto", torch.device("cuda"), torch.float64)[0] == "cpu"
    assert resolve_backend("auto", torch.device("cpu"), torch.float16)[0] == "cpu"
    try:
        name, _ = resolve_backend("auto", torch.device("cuda"), torch.float16)
    except RuntimeError as exc:  # no GPU backend can run on a CUDA device here
        assert "not available" in str(exc)
    else:
        assert name in ("triton", "cuda")
    block = FusedInception(*SMALL.args()).eval().double()
    x = torch.randn(1, SMALL.in_channels, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert block(x).dtype == torch.float64
