"""Hardening: bad input refused before any kernel runs, edge cases against torchvision on every
backend, determinism, the module's life cycle, and int64 offsets past 2**31 elements.

Every backend that runs here is covered: cpu natively; triton under TRITON_INTERPRET=1 and cuda
through the SIMT shim (FUSED_INCEPTION_EMULATE_CUDA=1) on CPU tensors, or on CUDA tensors when
a GPU is present. Shapes stay tiny because the interpreter costs ~10 ms per program-iteration.
"""

from __future__ import annotations

import copy
import io
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from helpers import ODD_CASES, TOLERANCES, assert_close_rel, randomize_block
from helpers import reference_f64 as ref64
from torch import nn
from torchvision.models.googlenet import Inception as TvInception

import fused_inception.module as module_mod
from fused_inception import FusedInception, _ext
from fused_inception.backends import available_backends, cuda_kernel_builds
from fused_inception.folding import fold_block
from fused_inception.ops import inception_block
from fused_inception.packing import prepare_chain, prepare_conv1x1

SMALL = ODD_CASES[0].values[1]  # 5 -> 3 | 7 -> 9 | 2 -> 6 | 1
GPU = torch.cuda.is_available()
BACKENDS = [
    pytest.param(
        name, marks=pytest.mark.skipif(name not in available_backends(), reason=f"no {name}")
    )
    for name in ("cpu", "triton", "cuda")
]
EMULATED_OPS = "emulated" in cuda_kernel_builds() and not GPU
needs_emulated_ops = pytest.mark.skipif(not EMULATED_OPS, reason="no emulated CUDA kernel build")


def _device(backend: str) -> torch.device:
    return torch.device("cuda" if backend != "cpu" and GPU else "cpu")


def _tv_block(seed: int = 0) -> nn.Module:
    return randomize_block(TvInception(*SMALL.args()), seed).eval()


def _fused(src: nn.Module, backend: str) -> FusedInception:
    fused = FusedInception.from_module(copy.deepcopy(src), backend=backend).eval()
    return fused.to(_device(backend))


# ---------------------------------------------------------------------------------------------
# Bad input: a clear exception before any kernel runs, on every backend.


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
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input_is_refused_before_any_kernel(backend, make, exc, match, mode, monkeypatch):
    block = FusedInception(*SMALL.args(), norm=mode == "eval", backend=backend)
    block.train(mode != "eval")
    _no_kernels(monkeypatch)
    with pytest.raises(exc, match=match):
        block(make())


@pytest.mark.parametrize("backend", BACKENDS)
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
    block = FusedInception(*SMALL.args(), backend=backend).eval().double().to(_device(backend))
    x = torch.randn(1, 5, 4, 4, dtype=torch.float64, device=_device(backend))
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

OPS = torch.ops.fused_inception if _ext.has_extension() else None


def _nhwc(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype).contiguous(memory_format=torch.channels_last)


def _chain_args(k: int = 3):
    gen = torch.Generator().manual_seed(0)
    w_red, b_red = torch.randn(3, 4, 1, 1, generator=gen), torch.randn(3, generator=gen)
    w_kxk, b_kxk = torch.randn(6, 3, k, k, generator=gen), torch.randn(6, generator=gen)
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk, torch.float32)
    out = torch.full((1, 9, 5, 5), float("nan")).contiguous(memory_format=torch.channels_last)
    names = ("w_red", "b_red", "w_kxk", "b_kxk")
    return {"x": _nhwc(1, 4, 5, 5), **dict(zip(names, packed, strict=True)), "out": out, "c0": 1}


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
        out = torch.full((2, 12, 3, 4), float("nan")).contiguous(memory_format=torch.channels_last)
        args = {"x": _nhwc(2, 7, 3, 4), "w": w, "bias": b, "out": out, "c0": 4, "pool": False}
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


# ---------------------------------------------------------------------------------------------
# Edge cases against torchvision's block (float64 on cpu, float32 at its tolerance elsewhere).


EDGE_INPUTS = {
    "empty-batch": lambda n, c: torch.randn(0, c, 4, 5),
    "1x1": lambda n, c: torch.randn(n, c, 1, 1),
    "1xW": lambda n, c: torch.randn(n, c, 1, 9),
    "nchw": lambda n, c: torch.randn(n, c, 4, 5),
    "channels_last": lambda n, c: torch.randn(n, c, 5, 4).contiguous(
        memory_format=torch.channels_last
    ),
    "hw-slices": lambda n, c: torch.randn(n, c, 9, 11)[:, :, 1:8:2, ::3],
    "channel-slice": lambda n, c: torch.randn(n, c + 4, 4, 5)[:, 2 : 2 + c],
    "batch-stride": lambda n, c: torch.randn(2 * n, c, 4, 3)[::2],
    "permuted-nhwc": lambda n, c: torch.randn(n, 4, 5, c).permute(0, 3, 1, 2),
    "transposed-hw": lambda n, c: torch.randn(n, c, 5, 4).transpose(2, 3),
    "expanded-batch": lambda n, c: torch.randn(1, c, 4, 5).expand(n, c, 4, 5),
    "expanded-h": lambda n, c: torch.randn(n, c, 1, 5).expand(n, c, 4, 5),
}


def _expected_memory_format(x: torch.Tensor) -> torch.memory_format:
    strictly_cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if strictly_cl else torch.contiguous_format


@pytest.mark.parametrize("case", list(EDGE_INPUTS))
@pytest.mark.parametrize("backend", BACKENDS)
def test_edge_inputs_match_torchvision(backend, case):
    tv = _tv_block()
    dtype = torch.float64 if backend == "cpu" else torch.float32
    fused = _fused(tv, backend).to(dtype)
    x = EDGE_INPUTS[case](2, SMALL.in_channels).to(dtype)
    x_before = x.clone()
    with torch.no_grad():
        out = fused(x.to(_device(backend))).cpu()
        expected = tv.double()(x.double())
    assert out.dtype == dtype
    assert_close_rel(out, expected, dtype)
    assert out.is_contiguous(memory_format=_expected_memory_format(x))
    assert torch.equal(x, x_before), "the input was modified"


def _nan_inf_input() -> torch.Tensor:
    x = torch.randn(2, SMALL.in_channels, 6, 7, generator=torch.Generator().manual_seed(7))
    x[0, 1, 2, 3] = float("nan")  # reaches b1, b2/b3 (through their halos) and the pool
    x[1, 2, 4, 4] = float("inf")
    x[1, 0, 0, 0] = -float("inf")  # at the corner: in the pool's and the kxk halos' padding
    return x


def _compare_nonfinite(out: torch.Tensor, expected: torch.Tensor, check_nan: bool) -> None:
    out, expected = out.double(), expected.double()
    assert torch.equal(out.isinf(), expected.isinf()), "inf positions differ"
    assert torch.equal(out[out.isinf()], expected[expected.isinf()]), "inf signs differ"
    if check_nan:
        nan, nan_ref = out.isnan(), expected.isnan()
        assert torch.equal(nan, nan_ref), (
            f"NaN masks differ: {int(nan.sum())} NaN, torchvision {int(nan_ref.sum())}"
        )
    finite = expected.isfinite() & out.isfinite()
    err = (out[finite] - expected[finite]).abs().max().item()
    assert err <= TOLERANCES[torch.float32] * expected[finite].abs().max().item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_inf_input_propagates_like_torchvision(backend):
    """+-inf reaches the same outputs with the same signs and the finite outputs match. (Where
    torchvision gets inf - inf = NaN, see the NaN test.)"""
    tv = _tv_block(1)
    x = _nan_inf_input()
    x[0, 1, 2, 3] = 0.5
    with torch.no_grad():
        out = _fused(tv, backend)(x.to(_device(backend))).cpu()
        expected = tv.double()(x.double())
    assert expected.isinf().any() and expected.isfinite().any()
    _compare_nonfinite(out, expected, check_nan=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_propagates_like_torchvision(backend):
    """A NaN input gives NaN wherever torchvision's block gives NaN (relu(NaN) = NaN, and
    max_pool2d returns NaN for a window holding one), and nowhere else."""
    tv = _tv_block(1)
    x = _nan_inf_input()
    with torch.no_grad():
        out = _fused(tv, backend)(x.to(_device(backend))).cpu()
        expected = tv.double()(x.double())
    assert expected.isnan().any()
    _compare_nonfinite(out, expected, check_nan=True)


def test_nan_propagates_through_the_cpu_winograd_path():
    """GoogLeNet's 3a at 8x8: its 3x3 convolution (96 -> 128) runs as Winograd F(2x2, 3x3)."""
    from fused_inception.backends import cpu_winograd
    from fused_inception.configs import GOOGLENET_BLOCKS

    cfg = GOOGLENET_BLOCKS["3a"]
    assert cpu_winograd.winograd_pays(8, 8, cfg.ch3x3red, cfg.ch3x3)
    tv = randomize_block(TvInception(*cfg.args())).eval()
    x = torch.randn(1, cfg.in_channels, 8, 8, generator=torch.Generator().manual_seed(8))
    x[0, 3, 4, 4] = float("nan")
    with torch.no_grad():
        out = _fused(tv, "cpu")(x)
        expected = tv(x)
    assert torch.equal(out.isnan(), expected.isnan())


# ---------------------------------------------------------------------------------------------
# Determinism and the module's life cycle.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_repeated_forwards_are_bit_identical(backend, dtype):
    block = _fused(_tv_block(2), backend).to(dtype)
    x = torch.randn(2, SMALL.in_channels, 5, 6).to(_device(backend), dtype)
    with torch.no_grad():
        outs = [block(x) for _ in range(3)]
    op_out = inception_block(x, *fold_block(block), backend)  # the operator, repacking each call
    for out in outs[1:] + [op_out]:
        assert torch.equal(out, outs[0])


def test_state_dict_and_module_survive_torch_save():
    block = randomize_block(FusedInception(*SMALL.args(), branch3_kernel=5)).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 5)
    with torch.no_grad():
        expected = block(x)  # fills the packed cache before saving
    buf = io.BytesIO()
    torch.save(block.state_dict(), buf)
    buf.seek(0)
    fresh = FusedInception(*SMALL.args(), branch3_kernel=5).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    buf = io.BytesIO()
    torch.save(block, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert whole._state is None
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
        assert torch.equal(whole(x), expected)


def test_deepcopy_after_a_call_is_independent():
    block = randomize_block(FusedInception(*SMALL.args())).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 5)
    with torch.no_grad():
        expected = block(x)
        twin = copy.deepcopy(block)
        twin.branch3[1].conv.weight.mul_(-1.0)
        assert torch.equal(block(x), expected)
        assert_close_rel(twin(x), ref64(twin, x), torch.float32)
        assert not torch.allclose(twin(x), expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["half", "bfloat16"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_and_bfloat16_after_a_float32_call(backend, dtype):
    block = _fused(_tv_block(3), backend)
    x = torch.randn(1, SMALL.in_channels, 4, 5, device=_device(backend))
    with torch.no_grad():
        block(x)
        converted = block.half() if dtype == torch.float16 else block.bfloat16()
        out = converted(x.to(dtype))
    assert out.dtype == dtype
    assert_close_rel(out.cpu(), ref64(block.cpu(), x.cpu().to(dtype)), dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_stale_folded_weights(backend):
    """Every kind of weight change after the first call is seen (per backend's packed cache)."""
    block = _fused(_tv_block(4), backend)
    dev = _device(backend)
    x = torch.randn(1, SMALL.in_channels, 4, 5, device=dev)

    def check():
        with torch.no_grad():
            assert_close_rel(block(x).cpu(), ref64(block.cpu(), x.cpu()), torch.float32)
        block.to(dev)

    check()
    with torch.no_grad():
        block.branch2[0].conv.weight.add_(0.5)  # in place
    check()
    block.branch3[1].conv.weight.data = torch.randn_like(block.branch3[1].conv.weight)  # .data
    check()
    block.load_state_dict(_tv_block(5).state_dict())
    check()
    # BN running statistics updated by a training-mode forward (the composed path).
    before = block.branch4[1].bn.running_mean.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block.train()(3.0 * torch.randn(4, SMALL.in_channels, 4, 5, device=dev) + 1.0)
    block.eval()
    assert not torch.equal(block.branch4[1].bn.running_mean.cpu(), before.cpu())
    check()


# ---------------------------------------------------------------------------------------------
# Offsets past 2**31 elements are int64. Sparse files give tensors of more than 2**31 elements
# of which only the few pages a kernel touches are ever allocated; with int32 offsets the
# kernels would address memory 2**32 elements away (a crash or wrong values).

BIG_STRIDE = 2**30 + 64  # fits int32; (index >= 2) * BIG_STRIDE does not


def _sparse(tmp_path, name: str, numel: int, dtype=torch.float32) -> torch.Tensor:
    return torch.from_file(str(tmp_path / name), shared=True, size=numel, dtype=dtype)


@needs_emulated_ops
@pytest.mark.parametrize("op", ["conv1x1", "conv1x1-pool", "chain-k3"])
def test_cuda_kernels_write_output_offsets_past_2_31(tmp_path, op):
    """The output's pixel stride (its channel count) is 2**30 + 64, so pixel p >= 2 starts past
    element 2**31: out[p * out_pixel_stride + j] must be computed in int64."""
    c_tot, c0 = BIG_STRIDE, BIG_STRIDE - 16
    out = _sparse(tmp_path, "out.bin", 4 * c_tot).view(1, 2, 2, c_tot).permute(0, 3, 1, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    x = _nhwc(1, 7, 2, 2)
    if op.startswith("conv1x1"):
        weight, bias = torch.randn(5, 7, 1, 1, generator=gen), torch.randn(5, generator=gen)
        pool = op.endswith("pool")
        OPS.conv1x1_slice_(x, *prepare_conv1x1(weight, bias, dtype=torch.float32), out, c0, pool)
        a = F.max_pool2d(x.double(), 3, 1, 1) if pool else x.double()
        ref = F.relu(F.conv2d(a, weight.double(), bias.double()))
    else:
        w_red, b_red = torch.randn(3, 7, 1, 1, generator=gen), torch.randn(3, generator=gen)
        w_kxk, b_kxk = torch.randn(5, 3, 3, 3, generator=gen), torch.randn(5, generator=gen)
        packed = prepare_chain(w_red, b_red, w_kxk, b_kxk, torch.float32)
        OPS.chain_1x1_kxk_(x, *packed, out, c0)
        r = F.relu(F.conv2d(x.double(), w_red.double(), b_red.double()))
        ref = F.relu(F.conv2d(r, w_kxk.double(), b_kxk.double(), padding=1))
    assert_close_rel(out[:, c0 : c0 + 5], ref, torch.float32)
    # The neighbours of the slice stay as the (zero) file left them.
    assert (out[:, c0 - 1] == 0).all() and (out[:, c0 + 5] == 0).all()


def _big_batch_views(tmp_path, c_in: int, c_tot: int, h: int, w: int):
    """x [3, c_in, h, w] and out [3, c_tot, h, w], NHWC inside each image, image stride
    BIG_STRIDE: image 2 starts past element 2**31 of both."""
    x_all = _sparse(tmp_path, "x.bin", 2 * BIG_STRIDE + c_in * h * w)
    out_all = _sparse(tmp_path, "o.bin", 2 * BIG_STRIDE + c_tot * h * w)
    x = x_all.as_strided((3, c_in, h, w), (BIG_STRIDE, 1, w * c_in, c_in))
    out = out_all.as_strided((3, c_tot, h, w), (BIG_STRIDE, 1, w * c_tot, c_tot))
    x.copy_(torch.randn(3, c_in, h, w, generator=torch.Generator().manual_seed(1)))
    out.fill_(float("nan"))
    return x, out


@pytest.mark.skipif("triton" not in available_backends() or GPU, reason="interpreter only")
@pytest.mark.parametrize("kernel", ["conv1x1", "chain-k3"])
def test_triton_kernels_address_images_past_2_31(tmp_path, kernel):
    """Image 2 of x and of out starts at element 2 * (2**30 + 64) > 2**31: the kernels' image
    offsets (program id x image stride) must be int64; the interpreter computes int32 products
    in int32, so an int32 offset would point 2**32 elements away."""
    from fused_inception.triton.chain_1x1_kxk import chain_1x1_kxk
    from fused_inception.triton.conv1x1_slice import conv1x1_slice

    c_in, c_tot, c0, h, w = 4, 9, 2, 8, 16  # 128 pixels per image: one interpreter tile
    x, out = _big_batch_views(tmp_path, c_in, c_tot, h, w)
    gen = torch.Generator().manual_seed(2)
    if kernel == "conv1x1":
        weight, bias = torch.randn(5, c_in, 1, 1, generator=gen), torch.randn(5, generator=gen)
        conv1x1_slice(x, *prepare_conv1x1(weight, bias, dtype=torch.float32), out, c0)
        ref = F.relu(F.conv2d(x.double(), weight.double(), bias.double()))
    else:
        w_red, b_red = torch.randn(3, c_in, 1, 1, generator=gen), torch.randn(3, generator=gen)
        w_kxk, b_kxk = torch.randn(5, 3, 3, 3, generator=gen), torch.randn(5, generator=gen)
        chain_1x1_kxk(x, *prepare_chain(w_red, b_red, w_kxk, b_kxk, torch.float32), out, c0)
        r = F.relu(F.conv2d(x.double(), w_red.double(), b_red.double()))
        ref = F.relu(F.conv2d(r, w_kxk.double(), b_kxk.double(), padding=1))
    assert_close_rel(out[:, c0 : c0 + 5], ref, torch.float32)
    assert out[:, :c0].isnan().all() and out[:, c0 + 5 :].isnan().all()


def test_winograd_output_rows_past_2_31(tmp_path):
    """The CPU Winograd output transform writes rows with a row stride of 2**30 + 64 (a channel
    slice of a very wide output): row 2 starts past element 2**31."""
    from fused_inception.backends import cpu_winograd

    n, h, w, c_red, c_out = 1, 2, 2, 3, 4
    gen = torch.Generator().manual_seed(3)
    r_rows = torch.randn(n * h * w, c_red, generator=gen)
    weight, bias = torch.randn(c_out, c_red, 3, 3, generator=gen), torch.randn(c_out)
    storage = _sparse(tmp_path, "rows.bin", 3 * BIG_STRIDE + c_out)
    out_rows = storage.as_strided((n * h * w, c_out), (BIG_STRIDE, 1))
    cpu_winograd.conv3x3_relu_into(
        r_rows, cpu_winograd.transform_weight(weight), bias, out_rows, n, h, w
    )
    r_nchw = r_rows.double().reshape(n, h, w, c_red).permute(0, 3, 1, 2)
    ref = F.relu(F.conv2d(r_nchw, weight.double(), bias.double(), padding=1))
    assert_close_rel(out_rows, ref.permute(0, 2, 3, 1).reshape(n * h * w, c_out), torch.float32)
