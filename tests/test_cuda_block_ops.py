"""The CUDA backend's version-2 operators called directly: fused_inception::block_1x1_ and
fused_inception::block_kxk_ (csrc/cuda_ops.cpp, kernels csrc/cuda/block_1x1.cu, block_kxk.cu).

Without a GPU they run the emulated build (the .cu sources against the SIMT shim) on CPU
tensors. Both operators are checked against float64 references with poisoned outputs (only
their slices and the scratch written), and every bad argument must be refused with a message
naming it before a kernel touches memory (the output stays poisoned).
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CUDA_OPS_DEVICE,
    OPS,
    assert_close_rel,
    dtype_params,
    nan_channels_last,
    needs_cuda_ops,
    randn_channels_last,
)

DEVICE = CUDA_OPS_DEVICE
pytestmark = needs_cuda_ops
SIXTEEN_BIT = (torch.float16, torch.bfloat16)


def _rand(*shape, seed, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(DEVICE, dtype)


def _block_1x1_case(dtype, c_in=24, c1=8, c_red=16, c_pool=8, n=2, h=5, w=6, total=40):
    """x, packed weights, poisoned out [n, total, h, w] and scratch r, and float64 weights."""
    x = randn_channels_last(n, c_in, h, w, dtype=dtype, device=DEVICE,
                            generator=torch.Generator().manual_seed(1))  # fmt: skip
    n_x = c1 + c_red
    w_x, w_pool = _rand(c_in, n_x, seed=2, dtype=dtype), _rand(c_in, c_pool, seed=3, dtype=dtype)
    b_x, b_pool = _rand(n_x, seed=4), _rand(c_pool, seed=5)
    out = nan_channels_last(n, total, h, w, dtype=dtype, device=DEVICE)
    r = torch.full((n * h * w, c_red), float("nan"), dtype=dtype, device=DEVICE)
    return {"x": x, "w_x": w_x, "b_x": b_x, "w_pool": w_pool, "b_pool": b_pool, "out": out, "r": r}


def _call_1x1(a, c1=8, pool_off=32):
    OPS.block_1x1_(a["x"], a["w_x"], a["b_x"], a["w_pool"], a["b_pool"], a["out"], a["r"], c1,
                   pool_off)  # fmt: skip


@pytest.mark.parametrize("dtype", dtype_params(*SIXTEEN_BIT))
def test_block_1x1_writes_b1_the_scratch_and_b4(dtype):
    a = _block_1x1_case(dtype)
    _call_1x1(a)
    x = a["x"].cpu().double()
    y = F.relu(torch.einsum("nchw,cd->ndhw", x, a["w_x"].cpu().double())
               + a["b_x"].cpu().double()[None, :, None, None])  # fmt: skip
    pooled = F.max_pool2d(x, 3, 1, 1)
    b4 = F.relu(torch.einsum("nchw,cd->ndhw", pooled, a["w_pool"].cpu().double())
                + a["b_pool"].cpu().double()[None, :, None, None])  # fmt: skip
    out, r = a["out"].cpu(), a["r"].cpu()
    assert_close_rel(out[:, :8], y[:, :8], dtype, "b1")
    assert_close_rel(out[:, 32:40], b4, dtype, "b4")
    r_ref = y[:, 8:].permute(0, 2, 3, 1).reshape(-1, 16)
    assert_close_rel(r, r_ref, dtype, "r2 | r3")
    assert torch.isnan(out[:, 8:32]).all(), "channels outside b1 and b4 were written"


@pytest.mark.parametrize("k3", [3, 5])
@pytest.mark.parametrize("dtype", dtype_params(*SIXTEEN_BIT))
def test_block_kxk_writes_b2_and_b3(dtype, k3):
    n, h, w, c2r, c3r, c2, c3 = 2, 5, 6, 16, 8, 16, 8
    r = _rand(n * h * w, c2r + c3r, seed=6, dtype=dtype)
    w2, w3 = _rand(9, c2r, c2, seed=7, dtype=dtype), _rand(k3 * k3, c3r, c3, seed=8, dtype=dtype)
    b2, b3 = _rand(c2, seed=9), _rand(c3, seed=10)
    out = nan_channels_last(n, 40, h, w, dtype=dtype, device=DEVICE)
    OPS.block_kxk_(r, w2, b2, w3, b3, out, c2r, 8, 24)
    rr = r.cpu().double().reshape(n, h, w, c2r + c3r).permute(0, 3, 1, 2)

    def conv(src, taps, bias, k):  # taps [k*k, cr, c] -> conv2d weight [c, cr, k, k]
        weight = taps.cpu().double().reshape(k, k, *taps.shape[1:]).permute(3, 2, 0, 1)
        return F.relu(F.conv2d(src, weight, bias.cpu().double(), padding=k // 2))

    assert_close_rel(out[:, 8:24].cpu(), conv(rr[:, :c2r], w2, b2, 3), dtype, "b2")
    assert_close_rel(out[:, 24:32].cpu(), conv(rr[:, c2r:], w3, b3, k3), dtype, "b3")
    untouched = torch.cat([out[:, :8], out[:, 32:]], 1)
    assert torch.isnan(untouched).all(), "channels outside b2 and b3 were written"


# (id, change, c1, pool_off, error type, match)
ERRORS_1X1 = [
    ("float32", lambda a: {k: v.float() if k not in ("b_x", "b_pool") else v for k, v in a.items()},
     8, 32, TypeError, "runs float16 and bfloat16"),
    ("x-nchw", lambda a: {"x": a["x"].contiguous()}, 8, 32, ValueError, "channels_last"),
    ("w_x-dtype", lambda a: {"w_x": a["w_x"].float()}, 8, 32, TypeError, "w_x must be"),
    ("w_x-shape", lambda a: {"w_x": a["w_x"][1:].contiguous()}, 8, 32, ValueError, "w_x must have"),
    ("b_pool-dtype", lambda a: {"b_pool": a["b_pool"].half()}, 8, 32, TypeError, "float32"),
    ("r-shape", lambda a: {"r": a["r"][1:]}, 8, 32, ValueError, "r must be [60, 16]"),
    ("r-dtype", lambda a: {"r": a["r"].float()}, 8, 32, TypeError, "r must have x's dtype"),
    ("c1-too-big", lambda a: {}, 25, 32, ValueError, "c1 must be in [0, 24]"),
    ("pool-past-end", lambda a: {}, 8, 33, ValueError, "do not fit in out's 40 channels"),
    ("slices-overlap", lambda a: {}, 8, 4, ValueError, "overlap"),
    ("r-in-out", lambda a: {"r": a["out"].permute(0, 2, 3, 1).reshape(-1)[:960].view(60, 16)},
     8, 32, ValueError, "out overlaps r"),
    ("r-is-x", lambda a: {"r": a["x"].permute(0, 2, 3, 1).reshape(-1)[:960].view(60, 16)},
     8, 32, ValueError, "r overlaps x"),
]  # fmt: skip


@pytest.mark.parametrize(
    "change,c1,pool_off,exc,message", [pytest.param(*e[1:], id=e[0]) for e in ERRORS_1X1]
)
def test_block_1x1_rejects_bad_arguments(change, c1, pool_off, exc, message):
    a = _block_1x1_case(torch.float16)
    a.update(change(a))
    with pytest.raises(exc, match=re.escape(message)):
        _call_1x1(a, c1, pool_off)
    if a["out"].dtype == torch.float16:
        assert torch.isnan(a["out"]).all(), "out was written before the error"


def test_block_kxk_rejects_bad_arguments():
    r = _rand(60, 24, seed=6, dtype=torch.float16)
    w2, w3 = _rand(9, 16, 16, seed=7, dtype=torch.float16), _rand(9, 8, 8, seed=8)
    b2, b3 = _rand(16, seed=9), _rand(8, seed=10)
    out = nan_channels_last(2, 40, 5, 6, dtype=torch.float16, device=DEVICE)
    with pytest.raises(TypeError, match="w3 must be"):  # float32 taps for a float16 r
        OPS.block_kxk_(r, w2, b2, w3, b3, out, 16, 8, 24)
    w3 = w3.half()
    with pytest.raises(ValueError, match="9 or 25 taps"):
        OPS.block_kxk_(r, w2, b2, w3[:4].contiguous(), b3, out, 16, 8, 24)
    with pytest.raises(ValueError, match="w2 must have shape"):
        OPS.block_kxk_(r, w2, b2, w3, b3, out, 15, 8, 24)
    with pytest.raises(ValueError, match="overlap"):
        OPS.block_kxk_(r, w2, b2, w3, b3, out, 16, 8, 20)
    with pytest.raises(ValueError, match="pixels"):
        OPS.block_kxk_(r[:59], w2, b2, w3, b3, out, 16, 8, 24)
    with pytest.raises(TypeError, match="runs float16 and bfloat16"):
        OPS.block_kxk_(r.float(), w2.float(), b2, w3.float(), b3, out.float(), 16, 8, 24)
    assert torch.isnan(out).all(), "out was written before an error"
