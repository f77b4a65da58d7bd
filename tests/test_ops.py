"""The fused_inception:: operators under torch.library.opcheck, and their fake kernels.

opcheck runs each operator for real, under FakeTensorMode (fake kernel: shapes, dtypes and
strides must match the real output), through AOTAutograd with dynamic shapes, and checks the
schema's mutation annotations and the autograd registration. Shapes are small: the triton
backend runs under the interpreter here, the cuda ops through the SIMT shim.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    GPU_DEVICE,
    SMALL,
    assert_close_rel,
    backend_params,
    dtype_params,
    layout_params,
    randomize_block,
)
from torch._subclasses.fake_tensor import FakeTensorMode

from fused_inception import Inception, _ext
from fused_inception.backends import cpu_onednn, cuda_kernel_builds
from fused_inception.folding import fold_block
from fused_inception.ops import inception_block
from fused_inception.packing import prepare_block, prepare_chain, prepare_conv1x1

ops = torch.ops.fused_inception
HAS_CUDA_OPS = "emulated" in cuda_kernel_builds() or (
    "cuda" in cuda_kernel_builds() and torch.cuda.is_available()
)
needs_cuda_ops = pytest.mark.skipif(
    not HAS_CUDA_OPS,
    reason="this build has no conv1x1_slice_/chain_1x1_kxk_ kernels runnable here (emulated "
    "build with FUSED_INCEPTION_EMULATE_CUDA=1, or nvcc build with a GPU)",
)

# Every operator of the namespace and the test that opchecks it (test_every_operator_is_covered).
COVERED = {
    "inception_block": "test_opcheck_inception_block",
    "inception_block_saving": "test_opcheck_inception_block_saving",
    "inception_block_onednn": "test_opcheck_inception_block_onednn",
    "conv3x3_relu_winograd": "test_opcheck_conv3x3_relu_winograd",
    "conv3x3_weight_grad_winograd": "test_opcheck_conv3x3_weight_grad_winograd",
    "conv3x3_winograd_f4": "test_opcheck_conv3x3_winograd_f4",
    "conv5x5_weight_grad_winograd": "test_opcheck_conv3x3_weight_grad_winograd",  # k=5
    "conv5x5_winograd_f4": "test_opcheck_conv3x3_winograd_f4",  # k=5
    "conv_bias_relu_nhwc": "test_opcheck_conv_bias_relu_nhwc",
    "max_pool3x3_nhwc": "test_opcheck_max_pool3x3_nhwc",
    "max_pool3x3_nhwc_backward": "test_opcheck_max_pool3x3_nhwc_backward",
    "max_pool3x3_nhwc_backward_add_": "test_opcheck_max_pool3x3_nhwc_backward",
    "max_pool_nhwc": "test_opcheck_max_pool_nhwc",
    "global_avg_pool_nhwc": "test_opcheck_global_avg_pool_nhwc",
    "linear_rows": "test_opcheck_linear_rows",
    "winograd_f2x3_input": "test_opcheck_winograd_f2x3",  # and ..._tile_range
    "winograd_f2x3_output_": "test_opcheck_winograd_f2x3",
    "conv1x1_slice_": "test_opcheck_conv1x1_slice_",
    "chain_1x1_kxk_": "test_opcheck_chain_1x1_kxk_",
    "block_1x1_": "test_opcheck_block_1x1_",
    "block_kxk_": "test_opcheck_block_kxk_",
    "cuda_kernel_builds": "test_opcheck_cuda_kernel_builds",
    "fingerprint": "test_opcheck_fingerprint",
    "emulated_counters_start": "test_opcheck_emulated_counters",
    "emulated_counters_stop": "test_opcheck_emulated_counters",
    "parallel_for_probe": "test_opcheck_parallel_for_probe",  # its behaviour: test_parallel_for
    # its behaviour: test_parallel_for
    "parallel_for_ordered_probe": "test_opcheck_parallel_for_ordered_probe",
    "conv_tile_taps": "test_opcheck_conv_tile_taps",  # its counts: test_gemm_panels
}


def _significant_strides(t: torch.Tensor) -> list[int | None]:
    """Strides of the dimensions longer than 1 (the others never address memory)."""
    return [s if n > 1 else None for s, n in zip(t.stride(), t.shape, strict=True)]


def _opcheck(op, args) -> None:
    results = torch.library.opcheck(op, args)
    assert set(results.values()) == {"SUCCESS"}, results


def _opcheck_pool(packet, x: torch.Tensor, *args) -> torch.Tensor:
    """_opcheck of a pool operator (its OpOverloadPacket) on x, and its fake kernel's output
    against the real one (shape, dtype, strides); returns the real output."""
    _opcheck(packet.default, (x, *args))
    with FakeTensorMode() as mode:
        fake = packet(mode.from_tensor(x), *args)
    real = packet(x, *args)
    assert fake.shape == real.shape and fake.dtype == real.dtype == x.dtype
    assert fake.stride() == real.stride()
    return real


def test_every_operator_is_covered():
    names = {
        name.split("::", 1)[1]
        for name in torch._C._dispatch_get_all_op_names()
        if name.startswith("fused_inception::")
    }
    assert {"inception_block", "max_pool3x3_nhwc"} <= names
    assert names <= set(COVERED), f"operators without an opcheck test: {names - set(COVERED)}"


def _block_args(norm: bool, k: int, batch: int, hw, dtype, device, layout, seed: int = 0):
    block = randomize_block(Inception(*SMALL.args(), branch3_kernel=k, norm=norm), seed).eval()
    params = [t.to(device, dtype).requires_grad_() for t in fold_block(block)]
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, SMALL.in_channels, *hw, generator=gen).to(device, dtype)
    x = x.contiguous(memory_format=layout).requires_grad_()
    return x, params


@pytest.mark.parametrize(
    "k,dtype,layout",
    [
        pytest.param(3, torch.float32, torch.contiguous_format, id="k3-float32-nchw"),
        pytest.param(5, torch.float32, torch.channels_last, id="k5-float32-channels_last"),
        pytest.param(3, torch.float64, torch.channels_last, id="k3-float64-channels_last"),
        pytest.param(5, torch.float64, torch.contiguous_format, id="k5-float64-nchw"),
    ],
)
def test_opcheck_inception_block_cpu(k, dtype, layout):
    x, params = _block_args(False, k, 2, (4, 5), dtype, "cpu", layout, seed=k)
    _opcheck(ops.inception_block.default, (x, *params, "cpu"))


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("backend", backend_params("triton", "cuda"))
def test_opcheck_inception_block(backend, layout):
    x, params = _block_args(True, 5, 1, (3, 4), torch.float32, GPU_DEVICE, layout, seed=3)
    _opcheck(ops.inception_block.default, (x, *params, backend))


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("backend", ["cpu", *backend_params("triton", "cuda")])
def test_opcheck_inception_block_saving(backend, layout):
    """The saving variant on every backend (cuda float32 takes its ATen fallback for r2/r3),
    and its fake kernel's shapes and strides against the real outputs, 1x1 images and batch 0
    included."""
    device = "cpu" if backend == "cpu" else GPU_DEVICE
    x, params = _block_args(False, 5, 2, (4, 5), torch.float32, device, layout, seed=5)
    _opcheck(ops.inception_block_saving.default, (x, *params, backend))
    for batch, hw in ((2, (4, 5)), (1, (1, 1)), (0, (3, 3))):
        x, params = _block_args(False, 3, batch, hw, torch.float32, device, layout)
        with torch.no_grad():
            real = ops.inception_block_saving(x, *params, backend)
            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fake = ops.inception_block_saving(
                    mode.from_tensor(x), *(mode.from_tensor(p) for p in params), backend
                )
        plain = inception_block(x, *params, backend)
        torch.testing.assert_close(real[0], plain, rtol=0, atol=0)
        w2r, b2r, w3r, b3r = params[2], params[3], params[6], params[7]
        for r, w, b in ((real[1], w2r, b2r), (real[2], w3r, b3r)):
            want = torch.nn.functional.conv2d(x.double(), w.double(), b.double()).relu()
            assert_close_rel(r.cpu(), want.cpu(), torch.float32)
        for f, r in zip(fake, real, strict=True):
            assert f.shape == r.shape and f.dtype == r.dtype
            if r.numel():
                assert _significant_strides(f) == _significant_strides(r)


@pytest.mark.parametrize("layout", layout_params())
def test_inception_block_fake_matches_real(layout):
    """The fake kernel's output has the real output's shape, dtype and strides (opcheck checks
    this too; here the layouts are spelled out, 1x1 images and batch 0 included)."""
    for batch, hw in ((2, (4, 5)), (1, (1, 1)), (0, (3, 3))):
        x, params = _block_args(False, 3, batch, hw, torch.float32, "cpu", layout)
        with torch.no_grad():
            real = inception_block(x, *params, "cpu")
            with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                fake = inception_block(
                    mode.from_tensor(x), *(mode.from_tensor(p) for p in params), "cpu"
                )
        assert fake.shape == real.shape == (batch, SMALL.out_channels, *hw)
        assert fake.dtype == real.dtype
        if real.numel():
            assert _significant_strides(fake) == _significant_strides(real)
        wants_cl = layout == torch.channels_last and min(hw) > 1 and batch > 0
        assert real.is_contiguous(
            memory_format=torch.channels_last if wants_cl else torch.contiguous_format
        )


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.bfloat16))
def test_opcheck_max_pool3x3_nhwc(dtype):
    x = torch.randn(2, 6, 5, 4).to(dtype).contiguous(memory_format=torch.channels_last)
    _opcheck_pool(ops.max_pool3x3_nhwc, x)


@pytest.mark.parametrize(
    "args",
    [
        ([3, 3], [2, 2], [0, 0], True),
        ([2, 2], [2, 2], [0, 0], True),
        ([3, 2], [1, 2], [1, 0], False),
    ],
    ids=["3x3s2_ceil", "2x2s2_ceil", "3x2_s1x2_pad1x0"],
)
@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.bfloat16))
def test_opcheck_max_pool_nhwc(dtype, args):
    # Sizes where ceil_mode adds an output (7 -> 3 + 1) and where it does not (6).
    x = torch.randn(2, 6, 7, 6).to(dtype).contiguous(memory_format=torch.channels_last)
    _opcheck_pool(ops.max_pool_nhwc, x, *args)


@pytest.mark.skipif(not hasattr(ops, "global_avg_pool_nhwc"), reason="the extension is not built")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_opcheck_global_avg_pool_nhwc(dtype):
    x = torch.randn(2, 70, 5, 3).to(dtype).contiguous(memory_format=torch.channels_last)
    assert _opcheck_pool(ops.global_avg_pool_nhwc, x).shape == (2, 70, 1, 1)


@pytest.mark.skipif(not hasattr(ops, "linear_rows"), reason="the extension is not built")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
def test_opcheck_linear_rows(with_bias):
    gen = torch.Generator().manual_seed(14)
    x, w = torch.randn(3, 20, generator=gen), torch.randn(9, 20, generator=gen)
    b = torch.randn(9, generator=gen) if with_bias else None
    _opcheck(ops.linear_rows.default, (x, w, b))
    with FakeTensorMode() as mode:
        fake_b = None if b is None else mode.from_tensor(b)
        fake = ops.linear_rows(mode.from_tensor(x), mode.from_tensor(w), fake_b)
    real = ops.linear_rows(x, w, b)
    assert fake.shape == real.shape == (3, 9) and fake.stride() == real.stride()


@pytest.mark.skipif(
    not hasattr(ops, "max_pool3x3_nhwc_backward"), reason="the extension is not built"
)
def test_opcheck_max_pool3x3_nhwc_backward():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 4, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    g = torch.randn(2, 5, 4, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    _opcheck(ops.max_pool3x3_nhwc_backward.default, (g, x))
    acc = torch.randn(2, 5, 4, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    _opcheck(ops.max_pool3x3_nhwc_backward_add_.default, (acc, g, x))


@pytest.mark.skipif(
    not _ext.has_op("inception_block_onednn") or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_opcheck_inception_block_onednn(layout):
    """The CPU backend's eval block in one C++ call, with plain (channels_last) weights: the
    opaque reordered ones cannot enter FakeTensorMode. Values: tests/test_cpu_winograd.py."""
    gen = torch.Generator().manual_seed(8)
    c_in, c1, c2r, c2, c3r, c3, c4 = 6, 3, 4, 5, 2, 3, 4

    def weight(c_out, c, k):
        w = torch.randn(c_out, c, k, k, generator=gen)
        return w.contiguous(memory_format=torch.channels_last)

    args = (
        torch.randn(2, c_in, 5, 4, generator=gen).contiguous(memory_format=layout),
        weight(c1 + c2r + c3r, c_in, 1), torch.randn(c1 + c2r + c3r, generator=gen),
        weight(c2, c2r, 3), torch.randn(c2, generator=gen),
        weight(c3, c3r, 5), torch.randn(c3, generator=gen),
        weight(c4, c_in, 1), torch.randn(c4, generator=gen),
        c1, c2r, True,
    )  # fmt: skip
    _opcheck(ops.inception_block_onednn.default, args)
    out = ops.inception_block_onednn(*args)
    assert out.shape == (2, c1 + c2 + c3 + c4, 5, 4) and not out.isnan().any()
    with FakeTensorMode() as mode:
        fake = ops.inception_block_onednn(
            *(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        )
    assert fake.shape == out.shape and fake.stride() == out.stride()
    # Bad arguments: a clear error before any convolution runs.
    bad_cases = [
        ((args[0].double(),) + args[1:], "float32 CPU x"),
        ((args[0][0],) + args[1:], "4-D x"),
        (args[:9] + (c1, c2r + c3r, True), "leave channels of b_x for r3"),
        (args[:2] + (args[2][:, None],) + args[3:], "1-D biases"),
    ]
    for bad, match in bad_cases:
        with pytest.raises((ValueError, RuntimeError), match=match):
            ops.inception_block_onednn(*bad)


_WINOGRAD_OPS = {3: ("conv3x3_winograd_f4", "conv3x3_weight_grad_winograd"),
                 5: ("conv5x5_winograd_f4", "conv5x5_weight_grad_winograd")}  # fmt: skip


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("transposed", [False, True])
def test_opcheck_conv3x3_winograd_f4(layout, transposed, k):
    """Training's F(4x4, 3x3) and F(4x4, 5x5) convolutions (values against float64 in
    tests/test_winograd_training.py), in chunks of 3 tiles with a short last one."""
    name = _WINOGRAD_OPS[k][0]
    if not _ext.has_op(name):
        pytest.skip(f"no {name} operator in this build")
    op = getattr(ops, name)
    gen = torch.Generator().manual_seed(5)
    weight = torch.randn(7, 5, k, k, generator=gen)
    x = torch.randn(2, 7 if transposed else 5, 9, 6, generator=gen).contiguous(memory_format=layout)
    bias = torch.randn(5 if transposed else 7, generator=gen)
    args = (x, weight, bias, 3, not transposed, transposed)
    _opcheck(op.default, args)
    with FakeTensorMode() as mode:
        fake = op(mode.from_tensor(x), mode.from_tensor(weight), mode.from_tensor(bias), *args[3:])
    real = op(*args)
    assert fake.shape == real.shape == (2, bias.shape[0], 9, 6)
    assert fake.stride() == real.stride() and fake.dtype == real.dtype


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_opcheck_conv3x3_weight_grad_winograd(layout, k):
    """The training backward's Winograd weight gradients, 3x3 and 5x5 (values against float64
    in tests/test_winograd_training.py), in chunks of 3 tiles with a short last one."""
    name = _WINOGRAD_OPS[k][1]
    if not _ext.has_op(name):
        pytest.skip(f"no {name} operator in this build")
    op = getattr(ops, name)
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 5, 9, 6, generator=gen).contiguous(memory_format=layout)
    grad_out = torch.randn(2, 7, 9, 6, generator=gen).contiguous(memory_format=layout)
    channels_last = layout == torch.channels_last  # (the result's layout, x's any)
    args = (x, grad_out, 3, channels_last)
    _opcheck(op.default, args)
    with FakeTensorMode() as mode:
        fake = op(mode.from_tensor(x), mode.from_tensor(grad_out), 3, channels_last)
    real = op(*args)
    assert fake.shape == real.shape == (7, 5, k, k)
    assert fake.stride() == real.stride() and fake.dtype == real.dtype


@pytest.mark.skipif(
    not _ext.has_op("conv3x3_relu_winograd") or not cpu_onednn.available(torch.float32),
    reason="no conv3x3_relu_winograd operator or no oneDNN in this build",
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("tile", [2, 4])
@pytest.mark.parametrize("form", ["onednn", "matrices"])
def test_opcheck_conv3x3_relu_winograd(layout, tile, form):
    """A prepared network's standalone Winograd 3x3 (plain grouped weight for oneDNN's grouped
    GEMM, or MKL's matrices for one batched product; values against float64 in
    tests/test_inference.py), in chunks of 4 tiles with a padded (oneDNN) or short (matrices)
    last one; F(4x4, 3x3) with its direct weight, which it takes for input holding NaN or inf."""
    from fused_inception.backends import cpu_winograd

    gen = torch.Generator().manual_seed(9)
    x = torch.randn(2, 5, 5, 6, generator=gen).contiguous(memory_format=layout)
    weight, bias = torch.randn(7, 5, 3, 3, generator=gen), torch.randn(7, generator=gen)
    if form == "matrices":
        grouped = cpu_winograd.grouped_matrices(weight, tile)
        assert grouped.shape == ((tile + 2) ** 2, 5, 7)
    else:
        grouped = cpu_onednn.conv_weight(cpu_winograd.grouped_weight(weight, tile))
    args = (x, grouped, bias, 4) + ((weight,) if tile == 4 else ())
    _opcheck(ops.conv3x3_relu_winograd.default, args)
    out = ops.conv3x3_relu_winograd(*args)
    ref = torch.nn.functional.conv2d(x.double(), weight.double(), bias.double(), padding=1)
    ref = torch.relu(ref)
    assert_close_rel(out, ref, torch.float32)
    assert out.is_contiguous(memory_format=layout)
    with FakeTensorMode() as mode:
        fake = ops.conv3x3_relu_winograd(
            *(mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args)
        )
    assert fake.shape == out.shape and fake.stride() == out.stride()
    # No input channels: the sum over none is 0, so relu(bias) everywhere (it once returned
    # raw memory).
    x0 = x[:, :0]
    out0 = ops.conv3x3_relu_winograd(x0, cpu_winograd.grouped_weight(weight[:, :0]), bias, 4)
    assert torch.equal(out0, torch.relu(bias).view(1, 7, 1, 1).expand(2, 7, 5, 6))
    if tile == 4:  # NaN and inf where the direct convolution has them
        x_bad = x.clone()
        x_bad[0, 1, 2, 3], x_bad[1, 4, 4, 5] = float("nan"), float("inf")
        out_bad = ops.conv3x3_relu_winograd(x_bad, *args[1:])
        want = torch.relu(torch.nn.functional.conv2d(x_bad, weight, bias, padding=1))
        assert torch.equal(out_bad.isnan(), want.isnan()) and bool(want.isnan().any())
        assert torch.equal(out_bad.isinf(), want.isinf())
        assert_close_rel(out_bad[want.isfinite()], want[want.isfinite()], torch.float32)
        # relu=False (a training backward's input gradient): the convolution itself, NaN and
        # inf included
        for inp in (x, x_bad):
            lin = ops.conv3x3_relu_winograd(inp, *args[1:], False)
            want = torch.nn.functional.conv2d(inp, weight, bias, padding=1)
            assert torch.equal(lin.isnan(), want.isnan()) and torch.equal(lin.isinf(), want.isinf())
            assert (lin < 0).any() and lin.is_contiguous(memory_format=layout)
            assert_close_rel(lin[want.isfinite()], want[want.isfinite()], torch.float32)
        with pytest.raises(ValueError, match="needs direct"):
            ops.conv3x3_relu_winograd(x, grouped, bias, 4)
        with pytest.raises(ValueError, match="direct must be"):
            ops.conv3x3_relu_winograd(x, grouped, bias, 4, weight[:, :-1])
    bad_cases = [
        ((x.double(), grouped, bias, 4), "float32 CPU x"),
        ((x[0], grouped, bias, 4), "4-D x"),
        ((x, weight, bias, 4), "weight must be the transformed weight"),
        (
            (x, grouped, bias[:-1], 4),
            "weight as matrices must be"
            if form == "matrices"
            else "weight must be the transformed",
        ),
        ((x, grouped[:, :-1] if form == "matrices" else grouped[:-1], bias, 4), "weight"),
        ((x, grouped, bias[:, None], 4), "1-D bias"),
        ((x, grouped, bias, 0), "tiles must be positive"),
    ]
    for bad, match in bad_cases:
        with pytest.raises((ValueError, RuntimeError), match=match):
            ops.conv3x3_relu_winograd(*bad, *args[4:])
    if tile == 2:
        with pytest.raises(ValueError, match="relu=False needs the F\\(4x4, 3x3\\) weight"):
            ops.conv3x3_relu_winograd(*args, None, False)


@pytest.mark.skipif(
    not _ext.has_op("conv_bias_relu_nhwc"), reason="no conv_bias_relu_nhwc operator"
)
def test_opcheck_conv_bias_relu_nhwc():
    """The own convolution kernel (values and errors: tests/test_gemm_panels.py), and the eval
    block operator with its 1x1 and direct KxK weights as the kernel's panels."""
    gen = torch.Generator().manual_seed(10)
    x = torch.randn(2, 7, 5, 3, generator=gen).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(21, 7, 3, 3, generator=gen), torch.randn(21, generator=gen)
    args = (x, cpu_onednn.pack_panels(weight), bias)
    _opcheck(ops.conv_bias_relu_nhwc.default, args)
    with FakeTensorMode() as mode:
        fake = ops.conv_bias_relu_nhwc(*(mode.from_tensor(t) for t in args))
    out = ops.conv_bias_relu_nhwc(*args)
    assert fake.shape == out.shape == (2, 21, 5, 3) and fake.stride() == out.stride()
    if not _ext.has_op("inception_block_onednn") or not cpu_onednn.available(torch.float32):
        return
    c_in, c1, c2r, c2, c3r, c3, c4 = 6, 3, 4, 5, 2, 3, 4
    for layout in (torch.contiguous_format, torch.channels_last):
        block = (
            torch.randn(2, c_in, 5, 4, generator=gen).contiguous(memory_format=layout),
            cpu_onednn.pack_panels(torch.randn(c1 + c2r + c3r, c_in, generator=gen)),
            torch.randn(c1 + c2r + c3r, generator=gen),
            cpu_onednn.pack_panels(torch.randn(c2, c2r, 3, 3, generator=gen)),
            torch.randn(c2, generator=gen),
            cpu_onednn.pack_panels(torch.randn(c3, c3r, 5, 5, generator=gen)),
            torch.randn(c3, generator=gen),
            cpu_onednn.pack_panels(torch.randn(c4, c_in, generator=gen)),
            torch.randn(c4, generator=gen),
            c1, c2r, True,
        )  # fmt: skip
        _opcheck(ops.inception_block_onednn.default, block)
        assert not ops.inception_block_onednn(*block).isnan().any()


def test_opcheck_winograd_f2x3():
    """Input transform on a row-strided NHWC slice, output transform into another one."""
    n, h, w, c_in, c_out = 2, 5, 3, 6, 4
    r_all = torch.randn(n * h * w, c_in + 3)
    r = r_all[:, 1 : 1 + c_in]  # channels contiguous, row stride c_in + 3
    _opcheck(ops.winograd_f2x3_input.default, (r, n, h, w))
    v = ops.winograd_f2x3_input(r, n, h, w)
    tiles = n * ((h + 1) // 2) * ((w + 1) // 2)
    assert v.shape == (tiles, 16, c_in)
    with FakeTensorMode() as mode:
        fake_v = ops.winograd_f2x3_input(mode.from_tensor(r), n, h, w)
    assert fake_v.shape == v.shape and fake_v.stride() == v.stride()

    m = torch.bmm(v.transpose(0, 1), torch.randn(16, c_in, c_out)).contiguous()
    out = torch.zeros(n * h * w, c_out + 5)[:, 2 : 2 + c_out]
    _opcheck(ops.winograd_f2x3_output_.default, (m, torch.randn(c_out), out, n, h, w))
    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        args = (mode.from_tensor(m), mode.from_tensor(torch.randn(c_out)), mode.from_tensor(out))
        assert ops.winograd_f2x3_output_(*args, n, h, w) is None


@pytest.mark.parametrize("begin,count", [(2, 3), (4, None), (6, 0)], ids=["mid", "to-end", "none"])
def test_opcheck_winograd_f2x3_tile_range(begin, count):
    """The transforms over a range of tiles [begin, begin + count) of 2 images of 5x3 (12
    tiles); tile_count None runs to the last tile. The fake kernel gives the range's shape."""
    n, h, w, c_in, c_out = 2, 5, 3, 6, 4
    r = torch.randn(n * h * w, c_in + 3)[:, 1 : 1 + c_in]
    _opcheck(ops.winograd_f2x3_input.default, (r, n, h, w, begin, count))
    v = ops.winograd_f2x3_input(r, n, h, w, begin, count)
    tiles = 12 - begin if count is None else count
    assert v.shape == (tiles, 16, c_in)
    with FakeTensorMode() as mode:
        fake_v = ops.winograd_f2x3_input(mode.from_tensor(r), n, h, w, begin, count)
    assert fake_v.shape == v.shape and fake_v.stride() == v.stride()
    m = torch.bmm(v.transpose(0, 1), torch.randn(16, c_in, c_out)).contiguous()
    out = torch.zeros(n * h * w, c_out + 5)[:, 2 : 2 + c_out]
    _opcheck(ops.winograd_f2x3_output_.default, (m, torch.randn(c_out), out, n, h, w, begin, count))


def _cuda_op_inputs(dtype=torch.float32):
    """x, the block output and branch widths for the cuda kernels' operators (channels_last)."""
    block = randomize_block(Inception(*SMALL.args(), branch3_kernel=5, norm=False), 4).eval()
    folded = fold_block(block)
    x = torch.randn(2, SMALL.in_channels, 4, 3).to(GPU_DEVICE, dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    out = torch.zeros(2, SMALL.out_channels, 4, 3, dtype=dtype, device=GPU_DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    folded = type(folded)(*(t.to(GPU_DEVICE) for t in folded))
    return x, out, folded


@needs_cuda_ops
@pytest.mark.parametrize("pool", [False, True], ids=["b1", "b4-pool"])
def test_opcheck_conv1x1_slice_(pool):
    x, out, p = _cuda_op_inputs()
    w, bias = (p.w4, p.b4) if pool else (p.w1, p.b1)
    w_kn, b32 = prepare_conv1x1(w, bias)
    c0 = out.shape[1] - w.shape[0] if pool else 0
    _opcheck(ops.conv1x1_slice_.default, (x, w_kn, b32, out, c0, pool))


@needs_cuda_ops
@pytest.mark.parametrize("branch", [2, 3], ids=["b2-3x3", "b3-5x5"])
def test_opcheck_chain_1x1_kxk_(branch):
    x, out, p = _cuda_op_inputs()
    if branch == 2:
        packed, c0 = prepare_chain(p.w2r, p.b2r, p.w2, p.b2), p.w1.shape[0]
    else:
        packed, c0 = prepare_chain(p.w3r, p.b3r, p.w3, p.b3), p.w1.shape[0] + p.w2.shape[0]
    _opcheck(ops.chain_1x1_kxk_.default, (x, *packed, out, c0))


@needs_cuda_ops
def test_opcheck_block_1x1_():
    x, out, p = _cuda_op_inputs(torch.float16)
    packed = prepare_block(p, torch.float16)
    r = torch.zeros(2 * 4 * 3, packed.w_x.shape[1] - packed.c1, dtype=torch.float16)
    pool_off = out.shape[1] - packed.w_pool.shape[1]
    args = (x, packed.w_x, packed.b_x, packed.w_pool, packed.b_pool, out, r.to(x.device))
    _opcheck(ops.block_1x1_.default, (*args, packed.c1, pool_off))


@needs_cuda_ops
def test_opcheck_block_kxk_():
    x, out, p = _cuda_op_inputs(torch.float16)
    packed = prepare_block(p, torch.float16)
    gen = torch.Generator().manual_seed(5)
    r = torch.randn(2 * 4 * 3, packed.w_x.shape[1] - packed.c1, generator=gen)
    r = r.to(x.device, torch.float16)
    c1, c2 = packed.c1, packed.b2.shape[0]
    args = (r, packed.w2, packed.b2, packed.w3, packed.b3, out, packed.c2r, c1, c1 + c2)
    _opcheck(ops.block_kxk_.default, args)


@pytest.mark.skipif(
    not hasattr(ops, "cuda_kernel_builds"), reason="a build from before the cuda backend"
)
def test_opcheck_cuda_kernel_builds():
    """A build query without tensors (str[] out): schema, autograd and fake-mode checks. The
    AOTAutograd check is left out: it compares outputs as tensors and cannot compare strings,
    and no traced graph calls this operator."""
    results = torch.library.opcheck(
        ops.cuda_kernel_builds.default,
        (),
        test_utils=("test_schema", "test_autograd_registration", "test_faketensor"),
    )
    assert set(results.values()) == {"SUCCESS"}, results
    assert set(ops.cuda_kernel_builds()) <= {"cuda", "emulated"}


@pytest.mark.skipif(
    "emulated" not in cuda_kernel_builds(), reason="no emulated build of the CUDA kernels"
)
def test_opcheck_emulated_counters():
    """The shim's launch log (report --work's cuda rows), operators without tensors: schema,
    autograd and fake-mode checks, as for cuda_kernel_builds; stop leaves counting off."""
    for op in (ops.emulated_counters_start.default, ops.emulated_counters_stop.default):
        results = torch.library.opcheck(
            op, (), test_utils=("test_schema", "test_autograd_registration", "test_faketensor")
        )
        assert set(results.values()) == {"SUCCESS"}, results
    launches, names, values = ops.emulated_counters_stop()
    assert launches == [] and values == [] and names[0] == "blocks"


def test_opcheck_conv_tile_taps():
    """The CPU convolution's counted (pixel, tap) pairs (no tensors in or out): schema and
    autograd registration. No fake kernel: nothing traced calls it."""
    results = torch.library.opcheck(
        ops.conv_tile_taps.default,
        (1, 8, 7, 7, 3, 1, 1),
        test_utils=("test_schema", "test_autograd_registration"),
    )
    assert set(results.values()) == {"SUCCESS"}, results


def test_opcheck_parallel_for_probe():
    """The parallel loop's test view (no tensor inputs, an int64 CPU tensor out): schema and
    autograd registration. No fake kernel: nothing traced calls it."""
    results = torch.library.opcheck(
        ops.parallel_for_probe.default,
        (10, 1, False),
        test_utils=("test_schema", "test_autograd_registration"),
    )
    assert set(results.values()) == {"SUCCESS"}, results


def test_opcheck_parallel_for_ordered_probe():
    """The ordered loop's test view (no tensor inputs, an int64 CPU tensor out): schema and
    autograd registration. No fake kernel: nothing traced calls it."""
    results = torch.library.opcheck(
        ops.parallel_for_ordered_probe.default,
        ([4, 3, 5], [0, 1, 1], -1, -1),
        test_utils=("test_schema", "test_autograd_registration"),
    )
    assert set(results.values()) == {"SUCCESS"}, results


@pytest.mark.parametrize(
    "dtype", dtype_params(torch.float32, torch.float16, torch.float64, torch.bool)
)
def test_opcheck_fingerprint(dtype):
    """A 0-dim int64 hash of CPU tensors: schema, autograd registration, fake and AOT checks."""
    tensors = [torch.randn(3, 5).to(dtype), torch.randn(7).to(dtype), torch.randn(0).to(dtype)]
    _opcheck(ops.fingerprint.default, (tensors,))


# Run in a fresh interpreter: `import fused_inception` alone must register every fake kernel
# (the operators' Python homes are imported by the package) without importing triton.
_FAKES_AFTER_IMPORT = """
import sys
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
import fused_inception
assert "triton" not in sys.modules, "import fused_inception imported triton"
ops = torch.ops.fused_inception
cl = torch.channels_last
with FakeTensorMode():
    x = torch.empty(1, 4, 3, 3).contiguous(memory_format=cl)
    out = torch.empty(1, 8, 3, 3).contiguous(memory_format=cl)
    assert ops.max_pool3x3_nhwc(x).shape == x.shape
    assert ops.winograd_f2x3_input(torch.empty(9, 4), 1, 3, 3).shape == (4, 16, 4)
    ops.winograd_f2x3_output_(torch.empty(16, 4, 2), torch.empty(2), torch.empty(9, 2), 1, 3, 3)
    assert ops.fingerprint([x]).dtype == torch.int64
    if hasattr(ops, "conv1x1_slice_"):
        ops.conv1x1_slice_(x, torch.empty(4, 2), torch.empty(2), out, 0, False)
        w_kxk = torch.empty(3, 3, 2, 2)
        ops.chain_1x1_kxk_(x, torch.empty(4, 2), torch.empty(2), w_kxk, torch.empty(2), out, 0)
print("ok")
"""

# And with the extension unloadable, the package still imports and the CPU backend runs.
_IMPORT_WITHOUT_EXTENSION = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "fused_inception._C":
            raise ImportError("blocked by the test")
sys.meta_path.insert(0, Block())
import torch
import fused_inception
from fused_inception import _ext
assert not _ext.has_extension() and "blocked by the test" in _ext.extension_error()
block = fused_inception.FusedInception(8, 2, 2, 4, 2, 2, 2).eval()
with torch.no_grad():
    assert block(torch.randn(1, 8, 4, 4)).shape == (1, 10, 4, 4)
print("ok")
"""


@pytest.mark.skipif(not hasattr(ops, "max_pool3x3_nhwc"), reason="the extension is not built")
@pytest.mark.parametrize(
    "script", [_FAKES_AFTER_IMPORT, _IMPORT_WITHOUT_EXTENSION], ids=["fakes", "no-extension"]
)
def test_import_fused_inception(script):
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    env.pop("TRITON_INTERPRET", None)  # the package must not need triton to import
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.stdout.strip() == "ok", result.stdout[-2000:] + result.stderr[-3000:]


@pytest.mark.skipif(not hasattr(ops, "max_pool3x3_nhwc"), reason="the extension is not built")
def test_the_extension_runs_its_parallel_loops_on_threads():
    # at::parallel_for is an OpenMP loop compiled into the extension: built without -fopenmp it
    # silently runs on one thread (the CPU operators did, until setup.py passed the flag). With
    # the flag, the compiled loops call libgomp's GOMP_parallel.
    from fused_inception import _C

    assert b"GOMP_parallel" in Path(_C.__file__).read_bytes()
