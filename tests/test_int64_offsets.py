"""Offsets past 2**31 elements are int64, in the CUDA kernels (through the SIMT shim), the
Triton kernels (under the interpreter) and the CPU Winograd output transform.

Sparse files give tensors of more than 2**31 elements of which only the few pages a kernel
touches are ever allocated; with int32 offsets the kernels would address memory 2**32 elements
away (a crash or wrong values).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import GPU, OPS, assert_close_rel, needs_emulated_ops, randn_channels_last

from fused_inception.backends import available_backends
from fused_inception.packing import prepare_chain, prepare_conv1x1

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
    x = randn_channels_last(1, 7, 2, 2)
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
