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


# Pixel stride of the Triton test's x and out: a tile of 128 rows (plus the pool's and the
# taps' reach) still fits int32 in-tile offsets, but pixel row 256 starts past element 2**31.
PIXEL_STRIDE = 2**23 + 16


def _rows_past_2_31(tmp_path, name: str, channels: int, n: int, h: int, w: int) -> torch.Tensor:
    """[n, channels, h, w] NHWC rows PIXEL_STRIDE elements apart, in a sparse file."""
    s = PIXEL_STRIDE
    storage = _sparse(tmp_path, name, n * h * w * s)
    return storage.as_strided((n, channels, h, w), (h * w * s, 1, w * s, s))


@pytest.mark.skipif("triton" not in available_backends() or GPU, reason="interpreter only")
def test_triton_kernels_address_rows_past_2_31(tmp_path):
    """Pixel rows 256..383 of x and of out start past element 2**31: the kernels' tile bases
    (first row x pixel stride) must be int64; the interpreter computes int32 products in
    int32, so an int32 base would point 2**32 elements away."""
    from fused_inception.triton.block_1x1 import block_1x1
    from fused_inception.triton.block_kxk import block_kxk

    n, c_in, c1, c2r, c3r, c2, c3, c4, h, w = 3, 4, 2, 3, 2, 5, 3, 2, 8, 16
    c_tot = c1 + c2 + c3 + c4
    x = _rows_past_2_31(tmp_path, "x.bin", c_in, n, h, w)
    out = _rows_past_2_31(tmp_path, "o.bin", c_tot, n, h, w)
    gen = torch.Generator().manual_seed(2)
    x.copy_(torch.randn(n, c_in, h, w, generator=gen))
    out.fill_(float("nan"))
    w_x, b_x = torch.randn(c1 + c2r + c3r, c_in, generator=gen), torch.randn(c1 + c2r + c3r)
    w4, b4 = torch.randn(c4, c_in, generator=gen), torch.randn(c4, generator=gen) + 1.0
    w2, b2 = torch.randn(c2, c2r, 3, 3, generator=gen), torch.randn(c2, generator=gen)
    w3, b3 = torch.randn(c3, c3r, 5, 5, generator=gen), torch.randn(c3, generator=gen)
    r = torch.empty(n * h * w, c2r + c3r + c_in)
    block_1x1(x, w_x.t().contiguous(), b_x, out, r, c1)

    def taps(weight):
        k = weight.shape[-1]
        return weight.permute(2, 3, 1, 0).reshape(k * k, weight.shape[1], -1).contiguous()

    w_pool = w4.t().contiguous()
    block_kxk(r, taps(w2), b2, taps(w3), b3, w_pool, b4, out, c1, c1 + c2, c1 + c2 + c3)
    x64 = x.double()
    reduced = F.relu(F.conv2d(x64, w_x.double()[c1:, :, None, None], b_x.double()[c1:]))
    ref = torch.cat(
        [
            F.relu(F.conv2d(x64, w_x.double()[:c1, :, None, None], b_x.double()[:c1])),
            F.relu(F.conv2d(reduced[:, :c2r], w2.double(), b2.double(), padding=1)),
            F.relu(F.conv2d(reduced[:, c2r:], w3.double(), b3.double(), padding=2)),
            F.relu(
                F.conv2d(F.max_pool2d(x64, 3, 1, 1), w4.double()[:, :, None, None], b4.double())
            ),
        ],
        1,
    )
    assert_close_rel(out, ref, torch.float32)


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
