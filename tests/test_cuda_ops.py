"""The CUDA C++ backend's operators called directly: fused_inception::conv1x1_slice_ and
fused_inception::chain_1x1_kxk_ (csrc/cuda_ops.cpp).

Without a GPU they run the emulated build (the .cu sources compiled against the SIMT shim) on
CPU tensors; on a GPU, the nvcc build on CUDA tensors. Every bad argument must be refused with a
message naming it before a kernel touches memory.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CUDA_OPS_DEVICE,
    GPU_DTYPES,
    OPS,
    TOLERANCES,
    assert_close_rel,
    dtype_params,
    nan_channels_last,
    needs_cuda_ops,
    randn_channels_last,
)

from fused_inception.backends import cuda_kernel_builds
from fused_inception.packing import prepare_chain, prepare_conv1x1

BUILDS = cuda_kernel_builds()
DEVICE = CUDA_OPS_DEVICE
pytestmark = needs_cuda_ops


def test_builds_match_the_toolchain():
    """The emulated build exists whenever the CUDA headers do; the nvcc build whenever nvcc and a
    CUDA torch do (unless FUSED_INCEPTION_SKIP_CUDA was set for the build)."""
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if os.path.exists(os.path.join(cuda_home, "include", "cuda_fp16.h")):
        assert "emulated" in BUILDS
    nvcc = shutil.which("nvcc") or os.path.exists(os.path.join(cuda_home, "bin", "nvcc"))
    skipped = os.environ.get("FUSED_INCEPTION_SKIP_CUDA", "0") not in ("", "0")
    if nvcc and torch.version.cuda and not skipped:
        assert "cuda" in BUILDS


def _nhwc(*shape, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return randn_channels_last(*shape, dtype=dtype, generator=gen, device=DEVICE)


def _poisoned_out(n, c, h, w, dtype):
    return nan_channels_last(n, c, h, w, dtype=dtype, device=DEVICE)


def _conv1x1_case(dtype, cin=7, cout=5, hw=(3, 4)):
    x = _nhwc(2, cin, *hw, dtype=dtype)
    weight = torch.randn(cout, cin, 1, 1, generator=torch.Generator().manual_seed(1))
    bias = torch.randn(cout, generator=torch.Generator().manual_seed(2))
    w, b = (t.to(DEVICE) for t in prepare_conv1x1(weight, bias, dtype=dtype))
    return x, weight, bias, w, b


@pytest.mark.parametrize("pool", [False, True], ids=["b1", "b4-pool"])
@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
def test_conv1x1_slice_writes_only_its_slice(dtype, pool):
    x, weight, bias, w, b = _conv1x1_case(dtype)
    out = _poisoned_out(2, 12, 3, 4, dtype)
    OPS.conv1x1_slice_(x, w, b, out, 4, pool)
    a = x.cpu().double()
    if pool:
        a = F.max_pool2d(a, 3, 1, 1)
    ref = F.relu(F.conv2d(a, weight.double(), bias.double()))
    assert_close_rel(out[:, 4:9].cpu(), ref, dtype)
    assert torch.isnan(out[:, :4]).all() and torch.isnan(out[:, 9:]).all()


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
def test_chain_1x1_kxk_writes_only_its_slice(dtype, k):
    gen = torch.Generator().manual_seed(3)
    cin, cr, cout = 6, 5, 9
    x = _nhwc(1, cin, 9, 10, dtype=dtype)
    w_red, b_red = torch.randn(cr, cin, 1, 1, generator=gen), torch.randn(cr, generator=gen)
    w_kxk, b_kxk = torch.randn(cout, cr, k, k, generator=gen), torch.randn(cout, generator=gen)
    packed = [t.to(DEVICE) for t in prepare_chain(w_red, b_red, w_kxk, b_kxk, dtype)]
    out = _poisoned_out(1, cout + 3, 9, 10, dtype)
    OPS.chain_1x1_kxk_(x, *packed, out, 1)
    r = F.relu(F.conv2d(x.cpu().double(), w_red.double(), b_red.double()))
    ref = F.relu(F.conv2d(r, w_kxk.double(), b_kxk.double(), padding=k // 2))
    assert_close_rel(out[:, 1 : 1 + cout].cpu(), ref, dtype)
    assert torch.isnan(out[:, :1]).all() and torch.isnan(out[:, 1 + cout :]).all()


def test_tolerances_cover_every_dtype():
    assert set(GPU_DTYPES) <= set(TOLERANCES)


def _conv_args(**overrides):
    x, _, _, w, b = _conv1x1_case(torch.float32)
    args = {"x": x, "w": w, "bias": b, "out": _poisoned_out(2, 12, 3, 4, torch.float32)}
    args.update(overrides)
    return args


def _call_conv(args, c0=4, pool=False):
    OPS.conv1x1_slice_(args["x"], args["w"], args["bias"], args["out"], c0, pool)


# (id, change, c0 (0: the valid 4), the error type of fused_inception.checks' convention, match)
CONV_ERRORS = [
    ("x-rank", lambda a: {"x": a["x"][0]}, 0, ValueError, "x must be 4-D"),
    ("x-nchw", lambda a: {"x": a["x"].contiguous()}, 0, ValueError, "channels_last"),
    ("x-int", lambda a: {"x": a["x"].to(torch.int32)}, 0, TypeError, "float32, float16 or bf"),
    ("x-double", lambda a: {"x": a["x"].double()}, 0, TypeError, "float32, float16 or bfloat16"),
    ("w-rank", lambda a: {"w": a["w"][None]}, 0, ValueError, "w must be 2-D"),
    ("w-cin", lambda a: {"w": a["w"][1:].contiguous()}, 0, ValueError, "w must have shape [7, 5]"),
    ("w-dtype", lambda a: {"w": a["w"].half()}, 0, TypeError, "w must be Float"),
    ("w-strided", lambda a: {"w": a["w"].t().contiguous().t()}, 0, ValueError, "w must be contig"),
    ("bias-shape", lambda a: {"bias": a["bias"][:3]}, 0, ValueError, "bias must have shape [5]"),
    ("bias-dtype", lambda a: {"bias": a["bias"].double()}, 0, TypeError, "biases are float32"),
    ("out-nchw", lambda a: {"out": a["out"].contiguous()}, 0, ValueError, "out must be channels_l"),
    ("out-dtype", lambda a: {"out": a["out"].half()}, 0, TypeError, "out must have x's dtype"),
    ("out-hw", lambda a: {"out": _poisoned_out(2, 12, 3, 5, torch.float32)}, 0, ValueError, "like"),
    ("slice-past-end", lambda a: {}, 8, ValueError, "do not fit in out's 12 channels"),
    ("slice-negative", lambda a: {}, -1, ValueError, "do not fit"),
]


@pytest.mark.parametrize(
    "change,c0,exc,message", [pytest.param(*c[1:], id=c[0]) for c in CONV_ERRORS]
)
def test_conv1x1_slice_rejects_bad_arguments(change, c0, exc, message):
    args = _conv_args()
    args.update(change(args))
    before = args["out"].clone()
    with pytest.raises(exc, match=message.replace("[", r"\[")):
        _call_conv(args, c0=4 if c0 == 0 else c0)
    assert torch.equal(args["out"].isnan(), before.isnan()), "out was written before the error"


def test_chain_rejects_bad_kernel_size_and_shapes():
    gen = torch.Generator().manual_seed(0)
    x = _nhwc(1, 4, 5, 5)
    w_red, b_red = torch.randn(4, 3, generator=gen), torch.randn(3, generator=gen)
    out = _poisoned_out(1, 8, 5, 5, torch.float32)
    for k in (1, 2):  # the block's kxk convolutions are 3x3 or 5x5; nothing else is built
        w_k = torch.randn(k, k, 3, 8, generator=gen)
        with pytest.raises(ValueError, match=f"K must be 3 or 5, got {k}"):
            OPS.chain_1x1_kxk_(x, w_red, b_red, w_k, torch.randn(8), out, 0)
    w_k3 = torch.randn(3, 3, 3, 8, generator=gen)
    with pytest.raises(ValueError, match=r"w_red must have shape \[5, 3\]"):
        OPS.chain_1x1_kxk_(_nhwc(1, 5, 5, 5), w_red, b_red, w_k3, torch.randn(8), out, 0)
    with pytest.raises(ValueError, match=r"w_kxk must have shape \[3, 3, 3, 8\]"):
        OPS.chain_1x1_kxk_(x, w_red, b_red, w_k3[:, :, :2].contiguous(), torch.randn(8), out, 0)
    with pytest.raises(ValueError, match="do not fit"):
        OPS.chain_1x1_kxk_(x, w_red, b_red, w_k3, torch.randn(8), out, 1)
    assert torch.isnan(out).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_device_mismatch_is_refused():
    args = _conv_args()
    args["w"] = args["w"].cpu() if args["x"].is_cuda else args["w"].cuda()
    with pytest.raises(RuntimeError, match="w is on"):
        _call_conv(args)


def test_cpu_tensors_only_with_the_emulated_build():
    if "emulated" not in BUILDS:
        pytest.skip("no emulated build")
    args = _conv_args(x=_nhwc(2, 7, 3, 4).cpu())
    args = {k: v.cpu() for k, v in args.items()}
    _call_conv(args)
    assert not torch.isnan(args["out"][:, 4:9]).any()


def test_empty_input_writes_nothing():
    args = _conv_args(x=_nhwc(0, 7, 3, 4), out=_poisoned_out(0, 12, 3, 4, torch.float32))
    _call_conv(args)
    assert args["out"].numel() == 0
