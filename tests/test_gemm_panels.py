"""The package's own convolution kernel (csrc/cpu/gemm_panels.cpp, fused_inception::
conv_bias_relu_nhwc: a GEMM over NHWC pixel rows, KxK taps as shifted rows) and the paths that
run on it: the eval block operator's 1x1 and direct KxK convolutions and a prepared network's
1x1 units, against float64 references, at every vector width this CPU allows."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CAPABILITY_PRELUDE,
    assert_close_rel,
    outputs_at_every_capability,
    randomize_block,
    reference_f64,
    run_at_capability,
)
from torchvision.models.googlenet import BasicConv2d

from fused_inception import FoldedConvUnit, FusedInception, Inception, _ext, folded_unit
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.plain_layout import plain_views

pytestmark = pytest.mark.skipif(
    not _ext.has_op("conv_bias_relu_nhwc"), reason="this build has no conv_bias_relu_nhwc operator"
)
ops = torch.ops.fused_inception


@pytest.fixture(autouse=True)
def _winograd_gemms_on_onednn(monkeypatch):
    """These tests set the own kernel against oneDNN: Winograd's GEMMs that the own kernel does
    not run stay on oneDNN's grouped GEMM unless a test asks for MKL's (cpu_onednn.mkl_winograd,
    tests/test_cpu_winograd.py covers it)."""
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", False)


def _gemm(a: torch.Tensor, panels: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """relu(a @ W + bias) for a [M, K] (rows contiguous) through the operator: a's rows as the
    pixels of a 1 x M image, whose output [1, N, 1, M] is read back as [M, N] rows."""
    m, k = a.shape
    x = a.as_strided((1, k, 1, m), (a.stride(0) * m, 1, a.stride(0) * m, a.stride(0)))
    return ops.conv_bias_relu_nhwc(x, panels, bias).permute(0, 2, 3, 1).reshape(m, -1)


def _reference(a: torch.Tensor, w: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.relu(a.double() @ w.double().t() + bias.double())


# (m, k, n): every tail of the 12-row tile (m % 12; the AVX2 kernel's 6-row tiles too), panels
# cut by n (n % 16), odd and even panel counts (AVX-512 tiles take two), k of 0 and 1, and
# shapes with several row chunks (k * m * 4 bytes over 256 KiB).
SHAPES = [
    (1, 1, 1),
    (2, 7, 15),
    (3, 16, 16),
    (4, 33, 17),
    (5, 64, 31),
    (6, 5, 33),
    (7, 0, 20),
    (8, 24, 64),
    (9, 3, 47),
    (10, 50, 80),
    (11, 17, 100),
    (13, 19, 48),
    (49, 832, 40),
    (300, 512, 72),
    (1000, 96, 24),
    (200, 1500, 40),  # AVX-512: chunks of at least 96 rows (here 3 of 67), not 12-row multiples
]


@pytest.mark.parametrize("m,k,n", SHAPES, ids=lambda v: str(v))
def test_values_against_float64(m, k, n):
    gen = torch.Generator().manual_seed(m * 1000 + k * 10 + n)
    a = torch.randn(m, k, generator=gen)
    w, bias = torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)
    out = _gemm(a, cpu_onednn.pack_panels(w), bias)
    assert out.shape == (m, n) and out.is_contiguous()
    assert_close_rel(out, _reference(a, w, bias), torch.float32)
    if m * n >= 30:  # both sides of the ReLU were taken
        assert (out == 0).any() and (out > 0).any()


def test_strided_rows_and_panel_layout():
    """Rows of a wider tensor (lda > k, a channel slice of an NHWC image), and the panels'
    layout itself: panel p, row k, lane j is w[16p + j, k], zero past the last channel."""
    gen = torch.Generator().manual_seed(3)
    wide = torch.randn(20, 50, generator=gen)
    a = wide[:, 7:30]  # 23 channels, rows 50 floats apart
    w, bias = torch.randn(19, 23, generator=gen), torch.randn(19, generator=gen)
    panels = cpu_onednn.pack_panels(w.view(19, 23, 1, 1))
    assert panels.shape == (2, 23, 16)
    assert torch.equal(panels[1, 4, 2], w[18, 4]) and torch.equal(panels[0, 9, 5], w[5, 9])
    assert not panels[1, :, 3:].any()
    assert_close_rel(_gemm(a, panels, bias), _reference(a, w, bias), torch.float32)


def test_nan_and_infinities_follow_torch():
    """A NaN in a row makes that row's outputs NaN (the ReLU keeps NaN, as torch.relu does);
    +inf and -inf sums give inf and 0."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(9, 12, generator=gen)
    w = torch.rand(18, 12, generator=gen) + 0.5  # positive: an infinite input keeps its sign
    bias = torch.randn(18, generator=gen)
    a[2, 3] = float("nan")
    a[4, 0] = float("inf")
    a[7, 5] = float("-inf")
    out = _gemm(a, cpu_onednn.pack_panels(w), bias)
    want = torch.relu(a @ w.t() + bias)
    assert torch.equal(out.isnan(), want.isnan()) and out[2].isnan().all()
    assert torch.equal(out[4], want[4]) and (out[4] == float("inf")).all()
    assert (out[7] == 0).all()
    finite = want.isfinite()
    assert_close_rel(out[finite], _reference(a, w, bias)[finite], torch.float32)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5, 7])
@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (3, 5), (7, 7), (6, 9)], ids=str)
def test_kxk_convolution_against_float64(kernel, hw, batch):
    """KxK, stride 1, zero padding K // 2: taps outside the image read zeros (images smaller
    than the kernel included), on batches whose tiles span images; one 7x7 image is cut into
    its border ring and inside rows (test_a_7x7_image_is_tiled_as_its_ring_and_inside)."""
    gen = torch.Generator().manual_seed(kernel * 100 + hw[0] * 10 + hw[1] + batch * 1000)
    c_in, c_out = (5, 19) if batch > 1 else (24, 19)  # 5: a first layer's merged taps
    x = torch.randn(batch, c_in, *hw, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c_out, c_in, kernel, kernel, generator=gen)
    bias = torch.randn(c_out, generator=gen)
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=kernel // 2).relu()
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert_close_rel(out, ref, torch.float32)


def _taps_inside(n: int, h: int, w: int, kernel: int, stride: int, padding: int) -> int:
    """The (output pixel, tap) pairs of a convolution whose tap reads a pixel of the image."""

    def inside(size: int) -> int:  # (output position, kernel offset) pairs inside along one axis
        out = (size + 2 * padding - kernel) // stride + 1
        return sum(0 <= o * stride - padding + d < size for o in range(out) for d in range(kernel))

    return n * inside(h) * inside(w)


# (n, c, h, w, kernel, stride, padding): GoogLeNet's 7x7 3x3s and 5x5s at batch 1 and 8, a 14x14
# 5x5, small images under a large kernel, a 1x1 and an unpadded 3x3 (nothing to drop).
TILE_TAPS = [
    (1, 192, 7, 7, 3, 1, 1),
    (1, 48, 7, 7, 5, 1, 2),
    (8, 48, 7, 7, 5, 1, 2),
    (1, 32, 14, 14, 5, 1, 2),
    (2, 5, 3, 5, 7, 1, 3),
    (1, 16, 1, 1, 5, 1, 2),
    (3, 20, 9, 8, 3, 2, 1),
    (1, 64, 7, 7, 1, 1, 0),
    (2, 8, 6, 7, 3, 1, 0),
]


@pytest.mark.parametrize("n,c,h,w,kernel,stride,padding", TILE_TAPS, ids=lambda v: str(v))
def test_tiles_drop_the_taps_of_padding_alone(n, c, h, w, kernel, stride, padding):
    """A tile (pixels in a row-major run) skips the taps under which every one of its pixels
    reads padding: counted by the kernel's own plan and tiles (conv_tile_taps), never fewer
    than the taps that read the image, all of them where nothing is padded; and the outputs
    of such convolutions match float64 (KxK tests above, the capability bits below)."""
    run, every, _, _ = torch.ops.fused_inception.conv_tile_taps(n, c, h, w, kernel, stride, padding)
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    inside = _taps_inside(n, h, w, kernel, stride, padding)
    assert every == n * oh * ow * kernel * kernel
    assert inside <= run <= every
    if padding == 0:
        assert run == every == inside
    elif h * w <= 49 and kernel >= 5 or h * w == 1:
        assert run < every  # whole tiles lie in the top rows' padding on every ISA's tiling
    if h * w == 1:
        assert run == inside == n  # one pixel: only the centre tap reads it
    x = torch.randn(n, c, h, w).contiguous(memory_format=torch.channels_last)
    weight, bias = torch.randn(24, c, kernel, kernel), torch.randn(24)
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias, stride, padding)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=padding)
    assert_close_rel(out, ref.relu(), torch.float32)


def _ring_tiles(h: int, w: int) -> list[list[tuple[int, int]]]:
    """An image's tiles as the kernel's chunk_tiling cuts it where it takes the ring: each
    inside row (columns 1 .. w-2), then the top (row 0, columns 0 .. w-2), right (column w-1,
    rows 0 .. h-2), bottom (row h-1, columns 1 .. w-1) and left (column 0, rows 1 .. h-1)
    sides, each cut into near-equal runs of at most 6 pixels."""

    def runs(pixels):
        parts = -(-len(pixels) // 6)
        return [
            pixels[q * len(pixels) // parts : (q + 1) * len(pixels) // parts] for q in range(parts)
        ]

    tiles = [t for y in range(1, h - 1) for t in runs([(y, x) for x in range(1, w - 1)])]
    for side in (
        [(0, x) for x in range(w - 1)],
        [(y, w - 1) for y in range(h - 1)],
        [(h - 1, x) for x in range(1, w)],
        [(y, 0) for y in range(1, h)],
    ):
        tiles += runs(side)
    return tiles


def _tiles_taps(tiles, h: int, w: int, kernel: int) -> int:
    """The (pixel, tap) pairs tiles multiply when each drops the taps under which all its
    pixels read padding (stride 1, padding kernel // 2)."""
    pad = kernel // 2
    total = 0
    for tile in tiles:
        kept = sum(
            any(0 <= y + dy - pad < h and 0 <= x + dx - pad < w for y, x in tile)
            for dy in range(kernel)
            for dx in range(kernel)
        )
        total += kept * len(tile)
    return total


def _one_pointer_tiles(tiles, h: int, w: int, kernel: int) -> int:
    """The tiles whose rows are one run of one output row with every window inside the image
    (stride 1, padding kernel // 2): where the AVX2 tile takes one row pointer per tap."""
    pad = kernel // 2
    return sum(
        len({y for y, _ in tile}) == 1
        and all(pad <= y <= h - 1 - pad and pad <= x <= w - 1 - pad for y, x in tile)
        for tile in tiles
    )


_RING_COUNTS = """
import sys, torch
import fused_inception
capability = torch.backends.cpu.get_cpu_capability()
assert capability == sys.argv[1], capability
one_pointer = capability == "AVX2"  # the plain loop takes every row's pointer
for kernel in (3, 5, 7):
    run, every, uniform, tiles = torch.ops.fused_inception.conv_tile_taps(
        1, 16, 7, 7, kernel, 1, kernel // 2
    )
    assert (run, every) == (EXPECTED[kernel], 49 * kernel * kernel), (kernel, run, every)
    assert tiles == 9 and uniform == (UNIFORM[kernel] if one_pointer else 0), (kernel, uniform)
# A 1x1 over stride-1 pixels: every tile's rows are ld floats apart, across output rows too.
_, _, uniform, tiles = torch.ops.fused_inception.conv_tile_taps(1, 16, 7, 7, 1, 1, 0)
assert tiles == 9 and uniform == (tiles if one_pointer else 0), (uniform, tiles)
print("ok")
"""


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2"])
def test_a_7x7_image_is_tiled_as_its_ring_and_inside(capability):
    """One 7x7 image (GoogLeNet's 5a and 5b at batch 1) under a padded KxK: the AVX2 tiles and
    the plain loop take its inside rows and the four sides of its border ring as tiles (9
    either way), so a side's tile drops every tap of padding on its side; row-major runs of
    5-6 pixels straddle two rows and drop only the top or bottom taps. The counts are the
    kernel's own (conv_tile_taps at that capability) against this model of both tilings: a 3x3
    runs 369 of 441 pairs (408 row-major; 361 read the image), a 5x5 935 of 1225 (1059).
    The AVX2 tiles take one row pointer per tap where a tile is one run of an output row with
    every window inside (a 3x3's five inside rows; a 5x5 or 7x7 has none), and on every tile
    of a 1x1; the plain loop on none."""
    ring = {k: _tiles_taps(_ring_tiles(7, 7), 7, 7, k) for k in (3, 5, 7)}
    uniform = {k: _one_pointer_tiles(_ring_tiles(7, 7), 7, 7, k) for k in (3, 5, 7)}
    assert uniform == {3: 5, 5: 0, 7: 0}
    pixels = [(y, x) for y in range(7) for x in range(7)]
    row_major = [pixels[t * 49 // 9 : (t + 1) * 49 // 9] for t in range(9)]
    assert sorted(len(t) for t in _ring_tiles(7, 7)) == sorted(len(t) for t in row_major)
    assert sorted(p for t in _ring_tiles(7, 7) for p in t) == pixels  # each pixel once
    assert ring[3] == 369 and ring[5] == 935 and _tiles_taps(row_major, 7, 7, 3) == 408
    for kernel in (3, 5, 7):
        assert _taps_inside(1, 7, 7, kernel, 1, kernel // 2) < ring[kernel]
        assert ring[kernel] < _tiles_taps(row_major, 7, 7, kernel)
    script = _RING_COUNTS.replace("EXPECTED", repr(ring)).replace("UNIFORM", repr(uniform))
    run_at_capability(script, capability)


def test_tile_taps_refuses_bad_shapes():
    for args in [
        (1, 4, 7, 7, 4, 1, 1),
        (1, 4, 7, 7, 3, 0, 1),
        (1, 4, 7, 7, 3, 1, 2),
        (1, 0, 7, 7, 3, 1, 1),
    ]:
        with pytest.raises(ValueError, match="conv_tile_taps: unsupported convolution"):
            torch.ops.fused_inception.conv_tile_taps(*args)


# (channels, kernel, stride, padding, image): few channels take the kernel rows as taps of a
# zero-padded copy (GoogLeNet's conv1 is 3 channels, 7x7, stride 2, padding 3), more channels
# the per-pixel taps; strides, padding below K // 2 and images that end mid-stride.
STRIDED = [
    (3, 7, 2, 3, (17, 13)),
    (3, 5, 2, 1, (9, 9)),
    (1, 3, 3, 1, (7, 7)),
    (4, 3, 1, 0, (6, 7)),
    (20, 3, 2, 1, (9, 8)),
    (16, 5, 3, 2, (11, 10)),
    (5, 1, 2, 0, (5, 6)),
]


@pytest.mark.parametrize("c,kernel,stride,padding,hw", STRIDED, ids=lambda v: str(v))
def test_strided_and_padded_convolution_against_float64(c, kernel, stride, padding, hw):
    gen = torch.Generator().manual_seed(c * 1000 + kernel * 100 + stride * 10 + padding)
    x = torch.randn(2, c, *hw, generator=gen).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(21, c, kernel, kernel, generator=gen)
    bias = torch.randn(21, generator=gen)
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias, stride, padding)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), stride=stride, padding=padding)
    assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert_close_rel(out, ref.relu(), torch.float32)


@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
@pytest.mark.parametrize("c", [3, 2])
def test_first_layer_reads_any_layout(layout, c):
    """A first layer's zero-padded copy (few channels: kernel rows as taps) reads x in any
    layout: NCHW (the three channel rows interleaved), channels_last, or a strided view."""
    gen = torch.Generator().manual_seed(c * 10 + len(layout))
    base = torch.randn(2, c, 21, 30, generator=gen)
    x = {
        "nchw": base[..., :19],
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "strided": base[:, :, ::2, ::3],
    }[layout]
    if layout == "nchw":
        x = x.contiguous()
    weight = torch.randn(17, c, 7, 7, generator=gen)
    bias = torch.randn(17, generator=gen)
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias, 2, 3)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), stride=2, padding=3).relu()
    assert out.shape == ref.shape
    assert_close_rel(out, ref, torch.float32)


# (c_out, output width, stride): the AVX-512 first-layer tiles (csrc/cpu/first_layer.cpp) take
# up to 6 pixels of an output row and up to 4 panels: every tile width 1..6 (rows cut evenly),
# one to four panels, a partial last panel, two groups of panels, and GoogLeNet's conv1 row.
FIRST_LAYER = [
    (16, 1, 2),
    (20, 2, 1),
    (48, 3, 2),
    (64, 4, 1),
    (33, 5, 2),
    (64, 6, 2),
    (100, 13, 1),
    (64, 112, 2),
]


@pytest.mark.parametrize("c_out,width,stride", FIRST_LAYER, ids=lambda v: str(v))
def test_first_layer_tiles_against_float64(c_out, width, stride):
    """A first layer (3 channels, 7x7, padding 3) against float64, NaN kept, on two images,
    for the tile shapes above (the AVX-512 first-layer tiles on AVX-512 CPUs, gemm_panels'
    tiles elsewhere); with the scale of a plain weight too."""
    gen = torch.Generator().manual_seed(c_out * 1000 + width * 10 + stride)
    w_in = (width - 1) * stride + 1
    x = torch.randn(2, 3, 5, w_in, generator=gen)
    x[1, 2, 2, w_in // 2] = float("nan")
    weight = torch.randn(c_out, 3, 7, 7, generator=gen)
    bias, scale = torch.randn(c_out, generator=gen), torch.rand(c_out, generator=gen) + 0.5
    (plain,) = plain_views([weight])
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias, stride, 3)
    scaled = ops.conv_bias_relu_nhwc(x, plain, bias, stride, 3, scale)
    ref = F.conv2d(x.double(), weight.double(), stride=stride, padding=3)
    assert out.shape[3] == width
    for got, want in ((out, ref), (scaled, ref * scale.double().view(-1, 1, 1))):
        want = (want + bias.double().view(-1, 1, 1)).relu()
        assert torch.equal(got.isnan(), want.isnan()) and bool(want.isnan().any())
        finite = want.isfinite()
        assert_close_rel(got[finite], want[finite], torch.float32)


def test_channel_slice_input():
    """x may be a channel slice of a channels_last tensor (pixel rows wider than C)."""
    gen = torch.Generator().manual_seed(6)
    wide = torch.randn(2, 30, 5, 6, generator=gen).contiguous(memory_format=torch.channels_last)
    x = wide[:, 4:17]
    weight, bias = torch.randn(18, 13, 3, 3, generator=gen), torch.randn(18, generator=gen)
    out = ops.conv_bias_relu_nhwc(x, cpu_onednn.pack_panels(weight), bias)
    ref = F.conv2d(x.double(), weight.double(), bias.double(), padding=1).relu()
    assert_close_rel(out, ref, torch.float32)


def test_bad_arguments_are_refused():
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 8, 4, 5, generator=gen).contiguous(memory_format=torch.channels_last)
    w, bias = torch.randn(5, 8, 3, 3, generator=gen), torch.randn(5, generator=gen)
    panels = cpu_onednn.pack_panels(w)
    big_kernel = cpu_onednn.pack_panels(torch.randn(5, 8, 5, 5))  # 5x5 on a 1-row image
    cases = [
        ((x.double(), panels, bias), "float32 CPU"),
        ((x[0], panels, bias), r"expected x \[N, C, H, W\]"),
        ((x, panels[:, :40], bias), r"panels must be \[1, K \* K \* 8, 16\]"),
        ((x, panels, torch.randn(17)), r"panels must be \[2, K \* K \* 8, 16\]"),
        ((x, cpu_onednn.pack_panels(torch.randn(5, 8, 9, 9)), bias), "at most 7"),
        (
            (x.contiguous(), cpu_onednn.pack_panels(torch.randn(5, 8, 1, 1)), bias),
            "pixels must be rows of contiguous channels",
        ),
        ((x, panels, bias, 0), "stride must be 1 to 8"),
        ((x, panels, bias, 1, 2), r"padding at most K // 2 = 1"),
        (
            (x[:, :, :1].contiguous(memory_format=torch.channels_last), big_kernel, bias, 1, 0),
            "not fit",
        ),
    ]
    for args, match in cases:
        with pytest.raises((ValueError, RuntimeError), match=match):
            ops.conv_bias_relu_nhwc(*args)


_CAPABILITY_CHECK = (
    CAPABILITY_PRELUDE
    + """
from fused_inception.backends import cpu_onednn
op = torch.ops.fused_inception.conv_bias_relu_nhwc
for name, shape, kernel, c_out, stride in (
    ("a", (1, 40, 1, 7), 1, 33, 1),
    ("b", (2, 30, 6, 5), 3, 50, 1),
    ("c", (1, 20, 5, 7), 1, 70, 1),
    ("d", (2, 3, 19, 17), 7, 40, 2),  # a first layer, from NCHW
    ("e", (2, 3, 12, 61), 7, 64, 2),  # GoogLeNet's conv1 on a smaller image
    ("f", (1, 3, 9, 40), 3, 100, 1),  # two groups of panels, the last partial
    ("g", (2, 5, 9, 9), 5, 16, 3),
    ("h", (2, 20, 7, 7), 5, 24, 1),  # 7x7 images: tiles drop the taps of padding alone
    ("i", (1, 20, 7, 7), 3, 24, 1),  # one 7x7 image: AVX2 and plain tiles take its ring
):
    x = rand(*shape)
    if shape[1] > 3:
        x = x.contiguous(memory_format=torch.channels_last)
    w, bias = rand(c_out, shape[1], kernel, kernel), rand(c_out)
    x[0, 2, 0, 1] = float("nan")
    panels = cpu_onednn.pack_panels(w)
    out = op(x, panels, bias, stride, -1, None, 2**62)
    # written with non-temporal stores (every output larger than 0 bytes): the same bits
    streamed = op(x, panels, bias, stride, -1, None, 0)
    assert torch.equal(out.view(torch.int32), streamed.view(torch.int32)), name
    assert torch.equal(op(x, panels, bias, stride).view(torch.int32), out.view(torch.int32))
    print(out.view(torch.int32).flatten().tolist(), file=open(OUT_DIR + f"/{name}.txt", "w"))
print("ok")
"""
)


def test_vector_and_plain_loops_give_the_same_bits(tmp_path):
    """The AVX-512 kernel (12-row tiles of two panels; first layers: tiles of up to 6 pixels of
    a row and 4 panels), the AVX2 one (6-row tiles of one panel) and the plain loop (capability
    DEFAULT) all take one FMA chain per output in k order: the same bits, NaN included, at every
    capability this CPU allows; with the output written by non-temporal stores too
    (stream_bytes 0), and for first layers read from NCHW."""
    first, *others = outputs_at_every_capability(tmp_path, _CAPABILITY_CHECK).values()
    assert len(first) == 9 and all(other == first for other in others)


@pytest.fixture
def own_gemm_calls(monkeypatch):
    """Forces the own GEMM on, Winograd as F(2x2, 3x3) (F(4x4, 3x3): see
    test_winograd_f4_gemms_on_the_own_kernel), and records the eval operator's calls that pass
    it panels."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
    calls = []
    real = cpu._BLOCK_OP
    if real is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")

    def kind(w: torch.Tensor) -> str:  # how the operator takes a weight
        if w.dim() == 3:
            return "panels"
        winograd_panels = w.layout == torch.strided and w.shape[0] == 16 and w.shape[3] == 16
        return "winograd-panels" if winograd_panels else "onednn"

    monkeypatch.setattr(
        cpu,
        "_BLOCK_OP",
        lambda *a: (calls.append(tuple(kind(a[i]) for i in (1, 3, 5, 7))), real(*a))[1],
    )
    return calls


def _block_with_nan_against_float64(src, fused, shape: tuple[int, ...], layout):
    """fused(x) into a poisoned output against src in float64, for a random x of `shape` in
    `layout` with one NaN: NaN where the reference has it, the rest within fp32's tolerance.
    Returns (x, the output)."""
    x = torch.randn(shape)
    x[0, 1, 3, 3] = float("nan")
    x = x.contiguous(memory_format=layout)
    with torch.no_grad(), poison_outputs():
        got = fused(x)
    want = reference_f64(src, x)
    assert torch.equal(got.isnan(), want.isnan()) and bool(want.isnan().any())
    finite = want.isfinite()
    assert_close_rel(got[finite], want[finite], torch.float32)
    return x, got


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("name,norm,k", [("3a", True, 3), ("4b", False, 5), ("5b", True, 3)])
def test_block_operator_on_the_own_kernel(name, norm, k, layout, own_gemm_calls):
    """The eval operator with its 1x1 GEMMs and its direct KxK convolutions on panels (4b's r3
    ends mid-panel; the narrow b3s, 4b's paper-form 5x5 included, and 5b's b2 at batch 1 are
    direct, the other wide 3x3s Winograd, whose 16 GEMMs also run on the kernel) against
    float64, NaN where the reference has it, and the oneDNN path's output layout; every branch
    but a Winograd one is stored by the kernel itself, into a poisoned output."""
    cfg = GOOGLENET_BLOCKS[name]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm)).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    for batch in (1, 2):
        shape = (batch, cfg.in_channels, cfg.hw, cfg.hw)
        x, got = _block_with_nan_against_float64(src, fused, shape, layout)
        cpu_onednn.OWN_GEMM = False
        with torch.no_grad():
            onednn = fused(x)
        cpu_onednn.OWN_GEMM = True
        assert got.stride() == onednn.stride()
    own = [call for call in own_gemm_calls if call[0] == "panels"]  # (not the oneDNN calls)
    assert len(own) == 2 and own_gemm_calls.count(("onednn",) * 4) == 2
    for w_x, w2, w3, w_pool in own:
        assert w_x == w_pool == w3 == "panels"  # b3 is narrow: never Winograd
        assert w2 == ("panels" if name == "5b" and w2 != "winograd-panels" else "winograd-panels")
    if name == "5b":  # at batch 1 (16 tiles) b2's 3x3 is direct, at batch 2 (32) Winograd
        assert [call[1] for call in own] == ["panels", "winograd-panels"]


@pytest.mark.parametrize(
    "name,batch,own",
    [("3a", 1, True), ("5a", 8, True), ("4a", 8, True), ("3a", 8, False)],
    ids=["3a-b1-49", "5a-b8-32", "4a-b8-128", "3a-b8-196"],
)
def test_winograd_f4_gemms_on_the_own_kernel(name, batch, own, monkeypatch):
    """Where the own kernel runs (OWN_GEMM), F(4x4, 3x3)'s 36 GEMMs run on it too, as panels [36,
    ceil(c2 / 16), c2r, 16], where each has at most OWN_F4_MAX_TILES rows (4x4 tiles of one
    chunk: 3a at batch 1 49, 5a at batch 8 32, 4a at batch 8 128), and on oneDNN's grouped GEMM
    where it has more (3a at batch 8: chunks of 196); either way against float64 into a
    poisoned output, with the NaN that F(4x4, 3x3) recomputes directly where the reference has
    it, and OWN_F4_MAX_TILES is part of what an eval plan rests on. (128: AVX2's default;
    AVX-512's 196 would take 3a at batch 8 too.)"""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_winograd, "OWN_F4_MAX_TILES", 128)
    if cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")
    cfg = GOOGLENET_BLOCKS[name]
    tiles = min(
        cpu_winograd.onednn_chunk(batch, cfg.hw, cfg.hw),
        cpu_winograd.winograd_tiles(batch, cfg.hw, cfg.hw, 4),
    )
    assert (tiles <= cpu_winograd.own_f4_max_tiles()) == own
    w2s = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(cpu, "_BLOCK_OP", lambda *a: (w2s.append((a[3], a[12])), real(*a))[1])
    src = randomize_block(Inception(*cfg.args())).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    shape = (batch, cfg.in_channels, cfg.hw, cfg.hw)
    _block_with_nan_against_float64(src, fused, shape, torch.channels_last)
    w2, winograd2 = w2s[-1]
    c2 = cfg.args()[3]
    assert winograd2
    if own:
        assert w2.layout == torch.strided and w2.shape == (36, -(-c2 // 16), cfg.args()[2], 16)
    else:
        assert w2.shape[0] == 36 * c2 or w2.layout != torch.strided  # oneDNN's (reordered) weight
    # a plan made with one threshold is not replayed after it changes
    policy = cpu.plan_policy()
    monkeypatch.setattr(cpu_winograd, "OWN_F4_MAX_TILES", cpu_winograd.OWN_F4_MAX_TILES + 1)
    assert cpu.plan_policy() != policy


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize(
    "args",
    [GOOGLENET_BLOCKS["5b"].args(), (64, 16, 32, 48, 8, 16, 16)],
    ids=["5b", "narrow"],
)
def test_jobs_in_one_loop_give_the_bits_of_separate_loops(monkeypatch, args, layout):
    """At 7x7 and batch 1 (49 rows), on two or three threads, the block's two 1x1s (5b, and a
    narrow block) and its two direct KxKs (each one chunk with few tasks) run as one ordered
    loop, the KxKs after the 1x1 that writes their input (gemm_panels.h, gemms_in_order), on one
    thread one job after the other. Every output is one FMA chain either way: the same bits,
    against float64 too, into a poisoned output, for NCHW output (staged) and channels_last."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    src = randomize_block(Inception(*args), seed=5).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    x = torch.randn(1, args[0], 7, 7, generator=torch.Generator().manual_seed(6))
    x = x.contiguous(memory_format=layout)
    previous = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            with torch.no_grad(), poison_outputs():
                outs.append(fused(x))
    finally:
        torch.set_num_threads(previous)
    assert all(torch.equal(out, outs[0]) for out in outs[1:])
    assert_close_rel(outs[0], reference_f64(src, x), torch.float32)


@pytest.mark.parametrize("scatter", [True, False], ids=["scatter", "staged"])
@pytest.mark.parametrize(
    "args,hw",
    [(GOOGLENET_BLOCKS["5b"].args(), 7), ((40, 21, 12, 19, 5, 11, 7), 5)],
    ids=["5b", "odd"],
)
def test_nchw_output_has_the_bits_of_channels_last(monkeypatch, args, hw, scatter):
    """On AVX-512 CPUs with NCHW_SCATTER (by default Intel's) the own kernel scatters the
    branches it computes into an NCHW output's planes itself (gemm_panels.h, gemms_nchw_stores);
    otherwise, and on AVX2 ones, they are staged in NHWC and transposed. Either way each output
    is the channels_last call's FMA chain: the same bits, into a poisoned output, at batch 1 and
    3 (tiles whose rows cross into the next image), for GoogLeNet's 5b and a block whose odd
    widths leave panels straddling b1 and r2 or ending past n (stored one float at a time), and
    against float64."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_onednn, "NCHW_SCATTER", scatter)
    src = randomize_block(Inception(*args), seed=7).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    for batch in (1, 3):
        x = torch.randn(batch, args[0], hw, hw, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad(), poison_outputs():
            nchw = fused(x.contiguous())
            channels_last = fused(x.contiguous(memory_format=torch.channels_last))
        assert nchw.is_contiguous() and not channels_last.is_contiguous()
        assert torch.equal(nchw, channels_last)
        assert_close_rel(nchw, reference_f64(src, x), torch.float32)


def test_block_operator_refuses_bad_panels():
    if cpu._BLOCK_OP is None:
        pytest.skip("no inception_block_onednn operator in this build")
    gen = torch.Generator().manual_seed(8)
    c_in, c1, c2r, c2, c3r, c3, c4 = 6, 3, 4, 5, 2, 3, 4
    x = torch.randn(1, c_in, 4, 4, generator=gen)
    w_x = cpu_onednn.pack_panels(torch.randn(c1 + c2r + c3r, c_in, generator=gen))
    w_pool = cpu_onednn.pack_panels(torch.randn(c4, c_in, generator=gen))
    w2 = cpu_onednn.pack_panels(torch.randn(c2, c2r, 3, 3, generator=gen))
    w3 = torch.randn(c3, c3r, 5, 5, generator=gen)  # oneDNN's, beside the panels
    b = [torch.randn(c, generator=gen) for c in (c1 + c2r + c3r, c2, c3, c4)]
    good = (x, w_x, b[0], w2, b[1], w3, b[2], w_pool, b[3], c1, c2r)
    assert ops.inception_block_onednn(*good).shape == (1, c1 + c2 + c3 + c4, 4, 4)
    bad = [
        (good[:3] + (w2[:, :30],) + good[4:], r"w2 must be \[1, K \* K \* 4 \(K odd"),
        (good[:3] + (w2[:, :, :8].contiguous(),) + good[4:], r"w2 must be \[1, 36, 16\]"),
        (good[:1] + (w_x[:, :5],) + good[2:], r"w_x must be \[1, 6, 16\]"),
        (good[:7] + (w_pool.double(),) + good[8:], "w_pool must be a contiguous float32"),
        (
            good[:7] + (cpu_onednn.pack_panels(torch.randn(20, c_in)),) + good[8:],
            r"w_pool must be \[1, 6, 16\] for 4 outputs",
        ),
    ]
    for args, match in bad:
        with pytest.raises((ValueError, RuntimeError), match=match):
            ops.inception_block_onednn(*args)
    # Winograd's 16 GEMMs as panels [16, ceil(c2 / 16), c2r, 16]
    w2 = torch.randn(c2, c2r, 3, 3, generator=gen)
    u2 = cpu_winograd.grouped_panels(w2)
    winograd = good[:3] + (u2,) + good[4:] + (False, True, False, 4)
    out2 = ops.inception_block_onednn(*winograd)
    assert out2.shape == (1, c1 + c2 + c3 + c4, 4, 4)
    wide = cpu_winograd.grouped_panels(torch.randn(20, c2r, 3, 3))
    with pytest.raises(ValueError, match=r"w2 as panels must be \[16 or 36, 1, 4, 16\]"):
        ops.inception_block_onednn(*(winograd[:3] + (wide,) + winograd[4:]))
    # F(4x4, 3x3)'s 36 as panels [36, ...]: they need the plain weight as well
    u4 = cpu_winograd.grouped_panels(w2, 4)
    assert u4.shape == (36, 1, c2r, 16)
    f4 = winograd[:3] + (u4,) + winograd[4:]
    with pytest.raises(ValueError, match=r"F\(4x4, 3x3\) needs direct2"):
        ops.inception_block_onednn(*f4)
    out4 = ops.inception_block_onednn(*f4, w2)
    assert_close_rel(out4, out2, torch.float32)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=str)
def test_folded_units_on_the_own_kernel(fmt, monkeypatch):
    """A prepared network's 1x1 unit (GoogLeNet's conv2) runs on the own kernel: float64
    parity, NaN kept, the output layout of oneDNN's path (channels_last: a 1x1 weight is
    channels_last in either format, so x is moved to it); strided or padded 1x1 units and a 3x3
    on 24 channels stay on oneDNN's convolution, a first layer's 7x7/2 on 3 channels does not."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    if folded_unit._GEMM_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no conv_bias_relu_nhwc operator or no oneDNN in this build")
    calls = []
    real = folded_unit._GEMM_OP
    monkeypatch.setattr(folded_unit, "_GEMM_OP", lambda *a: (calls.append(1), real(*a))[1])
    torch.manual_seed(27)
    unit = randomize_block(BasicConv2d(24, 40, kernel_size=1)).eval().to(memory_format=fmt)
    x = torch.randn(2, 24, 7, 9)
    x[1, 3, 2, 2] = float("nan")
    x_cl = x.contiguous(memory_format=torch.channels_last)
    folded = FoldedConvUnit.from_module(copy.deepcopy(unit))
    with torch.no_grad():
        got = [folded(x_cl) for _ in range(2)]
        want = unit(x_cl)
        ref = unit.double()(x_cl.double())
    assert len(calls) == 2
    for out in got:
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(out.isnan(), want.isnan()) and bool(want.isnan().any())
        finite = ref.isfinite()
        assert_close_rel(out[finite], ref[finite], torch.float32)
    with torch.no_grad():
        other = folded(x.contiguous())  # NCHW x: moved to channels_last as oneDNN's path does
        cpu_onednn.OWN_GEMM = False
        onednn = folded(x.contiguous())
        cpu_onednn.OWN_GEMM = True
    assert len(calls) == 3 and other.stride() == onednn.stride()
    for kwargs in ({"stride": 2}, {"padding": 1}, {"kernel_size": 3, "padding": 1}):
        other_unit = randomize_block(BasicConv2d(24, 40, **{"kernel_size": 1, **kwargs})).eval()
        with torch.no_grad():
            FoldedConvUnit.from_module(other_unit)(x_cl)
    assert len(calls) == 3
    # A first layer (GoogLeNet's conv1: 3 channels, 7x7, stride 2, padding 3) takes it too, an
    # NCHW image as it is (the kernel copies it into its padded NHWC buffer): the same bits as
    # from channels_last, channels_last out.
    stem = randomize_block(BasicConv2d(3, 20, kernel_size=7, stride=2, padding=3)).eval()
    stem = stem.to(memory_format=fmt)
    image = torch.randn(2, 3, 23, 19)
    seen = []
    monkeypatch.setattr(
        folded_unit, "_GEMM_OP", lambda *a: (seen.append(a[0].is_contiguous()), real(*a))[1]
    )
    unit = FoldedConvUnit.from_module(copy.deepcopy(stem))
    with torch.no_grad():
        got = [unit(image), unit(image.contiguous(memory_format=torch.channels_last))]
        ref = stem.double()(image.double())
    # NCHW in: read as it is where the weight is channels_last (channels_last out, as oneDNN's
    # path gives it then); with an NCHW weight oneDNN's path runs, as before
    if fmt == torch.channels_last:
        assert seen == [True, False] and torch.equal(got[0], got[1])
    else:
        assert seen == [False]
    assert got[1].is_contiguous(memory_format=torch.channels_last)
    for out in got:
        assert_close_rel(out, ref, torch.float32)


@pytest.mark.parametrize(
    "batch,own,chunk_tiles,mkl",
    [(1, True, None, False), (1, True, 98, False), (2, False, None, False), (2, False, None, True)],
    ids=["196-tiles", "196-tiles-in-chunks-of-98", "392-tiles", "392-tiles-mkl"],
)
def test_winograd_unit_f4_on_the_own_kernel(batch, own, chunk_tiles, mkl, monkeypatch):
    """A prepared network's 3x3 unit (GoogLeNet's conv3: 64 -> 192 at 56x56) runs F(4x4, 3x3)'s
    GEMMs on the own kernel where the batch has at most OWN_F4_MAX_UNIT_TILES 4x4 tiles (196 at
    batch 1: one chunk, or two of 98 with OWN_F4_UNIT_CHUNK_TILES 98), else on oneDNN's grouped
    GEMM or, with MKL_WINOGRAD, MKL's batched one (392 at batch 2): against float64 with a NaN,
    which F(4x4, 3x3) recomputes directly, where the reference has it."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", mkl)
    if chunk_tiles is not None:
        monkeypatch.setattr(cpu_winograd, "OWN_F4_UNIT_CHUNK_TILES", chunk_tiles)
    if folded_unit._WINOGRAD_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no conv3x3_relu_winograd operator or no oneDNN in this build")
    calls = []
    real = folded_unit._WINOGRAD_OP
    monkeypatch.setattr(folded_unit, "_WINOGRAD_DIRECT", None)
    monkeypatch.setattr(
        folded_unit, "_WINOGRAD_OP", lambda *a: (calls.append((a[1], a[3])), real(*a))[1]
    )
    torch.manual_seed(29)
    conv3 = randomize_block(BasicConv2d(64, 192, kernel_size=3, padding=1)).eval()
    unit = FoldedConvUnit.from_module(copy.deepcopy(conv3))
    x = torch.randn(batch, 64, 56, 56)
    x[0, 5, 30, 7] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = [unit(x) for _ in range(3)]  # the third a replay of the eval plan
        ref = conv3.double()(x.double())
    assert len(calls) == 3
    chunk = cpu_winograd.own_f4_unit_chunk(batch, 56, 56)
    for weight, tiles in calls:
        if own:
            assert chunk == tiles == (chunk_tiles or 196) and weight.shape == (36, 12, 64, 16)
        elif mkl:  # MKL's matrices [36, Cin, Cout], in chunks of MKL_TILES_PER_CHUNK
            assert chunk == 0 and tiles == 392 and weight.shape == (36, 64, 192)
        else:
            assert chunk == 0 and (weight.layout != torch.strided or weight.shape[0] != 36)
    for out in got:
        assert torch.equal(out.isnan(), ref.isnan()) and bool(ref.isnan().any())
        finite = ref.isfinite()
        assert_close_rel(out[finite], ref[finite], torch.float32)


def test_policy_follows_the_cpu(monkeypatch):
    """By default the own GEMM runs every convolution it can where torch's CPU capability is
    AVX2, and AVX-512 on CPUs that are not Intel's; on Intel AVX-512 ones the block's 1x1s and
    direct KxKs, the 1x1 units and first layers, not Winograd's GEMMs (MKL's there); none
    without vectors. OWN_GEMM overrides all of it. The AVX-512 tiles scatter into NCHW outputs
    on Intel CPUs (NCHW_SCATTER overrides that)."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", None)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", None)
    monkeypatch.setattr(cpu_onednn, "NCHW_SCATTER", None)
    for capability, intel, everything, direct in (
        ("AVX2", True, True, True),
        ("AVX2", False, True, True),
        ("AVX512", True, False, True),
        ("AVX512", False, True, True),
        ("DEFAULT", True, False, False),
        ("DEFAULT", False, False, False),
    ):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        monkeypatch.setattr(cpu_onednn, "_intel_cpu", lambda i=intel: i)
        assert cpu_onednn.own_gemm() is everything
        assert cpu_onednn.own_gemm_direct() is direct
        # Winograd's GEMMs on MKL: Intel AVX-512 CPUs only
        assert cpu_onednn.mkl_winograd() is (
            capability == "AVX512" and intel and torch.backends.mkl.is_available()
        )
        assert cpu_onednn.nchw_scatter() is intel  # the AVX-512 tiles' NCHW stores
    for forced in (True, False):
        monkeypatch.setattr(cpu_onednn, "OWN_GEMM", forced)
        for capability in ("AVX2", "AVX512"):
            monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
            assert cpu_onednn.own_gemm() is forced
            assert cpu_onednn.own_gemm_direct() is forced
        monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", forced)
        assert cpu_onednn.mkl_winograd() is forced
        monkeypatch.setattr(cpu_onednn, "NCHW_SCATTER", forced)
        assert cpu_onednn.nchw_scatter() is forced


def test_f4_gemm_rows_on_the_own_kernel_follow_the_cpu(monkeypatch):
    """F(4x4, 3x3)'s GEMMs of up to 196 rows run on the own kernel where its tiles are AVX-512's
    (3a and 3b at batch 8, chunks of 196), of up to 128 elsewhere; OWN_F4_MAX_TILES overrides
    it, and the eval plan's settings hold the value in force."""
    monkeypatch.setattr(cpu_winograd, "OWN_F4_MAX_TILES", None)
    for capability, rows in (("AVX512", 196), ("AVX2", 128), ("DEFAULT", 128)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert cpu_winograd.own_f4_max_tiles() == rows
        assert rows in cpu_winograd.onednn_settings()
        assert cpu_winograd.own_f4_gemm(8, 28, 28) is (rows == 196)  # 3a: 392 tiles, 2 chunks
        assert cpu_winograd.own_f4_gemm(8, 14, 14)  # 4a: 128 tiles
    monkeypatch.setattr(cpu_winograd, "OWN_F4_MAX_TILES", 64)
    assert cpu_winograd.own_f4_max_tiles() == 64 and not cpu_winograd.own_f4_gemm(8, 14, 14)


@pytest.mark.parametrize("setting", ["mkldnn.matmul", "legacy", "global"])
def test_winograd_leaves_mkl_under_reduced_matmul_precision(setting, monkeypatch):
    """Where torch's float32 matmul precision is reduced (bfloat16 through any of its three
    switches), torch.bmm rounds its inputs: Winograd's GEMMs then leave MKL even where forced
    onto it and the eval plan made before is not replayed; with the matmul switches the block
    stays within float32's tolerance of float64 (torch.backends.fp32_precision lowers oneDNN's
    convolutions too, as it does torch's own, so there only the GEMMs' form is checked). The
    setting is restored after."""
    if cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", False)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", True)
    calls = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(cpu, "_BLOCK_OP", lambda *a: (calls.append(a[3].dim()), real(*a))[1])
    cfg = GOOGLENET_BLOCKS["4e"]
    src = randomize_block(Inception(*cfg.args())).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    x = torch.randn(1, cfg.in_channels, cfg.hw, cfg.hw).contiguous(
        memory_format=torch.channels_last
    )
    ref = reference_f64(src, x)
    try:
        with torch.no_grad():
            assert_close_rel(fused(x), ref, torch.float32)
            assert cpu_onednn.mkl_winograd() and calls == [3]  # MKL's matrices [16, c2r, c2]
            if setting == "mkldnn.matmul":
                matmul.fp32_precision = "bf16"
            elif setting == "legacy":
                torch.set_float32_matmul_precision("medium")
            else:
                torch.backends.fp32_precision = "bf16"
            assert not cpu_onednn.mkl_winograd()
            for _ in range(3):  # the full forward again, then its replays
                out = fused(x)
                if setting != "global":
                    assert_close_rel(out, ref, torch.float32)
            assert calls[1:] == [4] * 3  # oneDNN's grouped weight
    finally:
        torch.backends.fp32_precision = "none"
        matmul.fp32_precision = before
    assert not cpu_onednn._matmul_precision_reduced()


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize(
    "name,norm,k,batch",
    [("3a", True, 3, 1), ("4b", False, 5, 1), ("4e", True, 3, 8), ("5b", True, 3, 8)],
)
@pytest.mark.parametrize("intel", [True, False], ids=["intel", "other-vendor"])
def test_avx512_policy_mixes_the_kernels(name, norm, k, batch, layout, intel, monkeypatch):
    """AVX-512's default (OWN_GEMM None) on Intel CPUs mixes the kernels in one block: the 1x1s
    and the direct KxK (b3; 5b's b2 at batch 1) on panels, the wide 3x3s as Winograd reading
    the own kernel's dense ReLU'd r2, their GEMMs on MKL's batched one (where torch has MKL,
    else on oneDNN's grouped GEMM); on other vendors' CPUs every weight is panels, Winograd's
    GEMMs included. Float64 parity, NaN kept, into a poisoned output."""
    if cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", None)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", None)
    monkeypatch.setattr(cpu_onednn, "_intel_cpu", lambda: intel)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    calls = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(
        cpu,
        "_BLOCK_OP",
        lambda *a: (calls.append(tuple(_weight_form(a[i]) for i in (1, 3, 5, 7))), real(*a))[1],
    )
    cfg = GOOGLENET_BLOCKS[name]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm)).eval()
    fused = FusedInception.from_module(copy.deepcopy(src), backend="cpu").eval()
    _block_with_nan_against_float64(src, fused, (batch, cfg.in_channels, cfg.hw, cfg.hw), layout)
    # w2 is Winograd's in every block here: MKL's matrices, the own kernel's grouped panels
    # [P, ceil(Cout / 16), Cin, 16] or oneDNN's reordered weight
    w2 = "onednn" if intel else "4-d"
    if intel and torch.backends.mkl.is_available():
        w2 = "3-d"
    assert calls == [("3-d", w2, "3-d", "3-d")]


def _weight_form(w: torch.Tensor) -> str:
    """A weight the block operator receives: "onednn" (oneDNN's opaque reordered tensor) or
    its number of dimensions ("3-d": panels or MKL's matrices; "4-d": Winograd's panels)."""
    return "onednn" if w.layout != torch.strided else f"{w.dim()}-d"


@pytest.mark.parametrize("own", [False, True], ids=["onednn", "own-kernel"])
def test_block_operator_reads_strided_biases(own):
    """Biases that are views with a stride (every other element of a longer tensor) give the
    same output as their dense copies, on oneDNN's convolutions and Winograd's output
    transform (which read a strided bias as dense before 2026-12-03) and on the own kernel."""
    if cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")

    gen = torch.Generator().manual_seed(12)
    c_in, c1, c2r, c2, c3r, c3, c4 = 6, 3, 4, 5, 2, 3, 4

    def weight(c_out, c, k):
        w = torch.randn(c_out, c, k, k, generator=gen)
        return cpu_onednn.pack_panels(w) if own else cpu_onednn.conv_weight(w)

    raw2 = torch.randn(c2, c2r, 3, 3, generator=gen)
    w2 = cpu_winograd.grouped_panels(raw2) if own else cpu_winograd.grouped_weight(raw2)
    biases = [torch.randn(2 * c, generator=gen)[::2] for c in (c1 + c2r + c3r, c2, c3, c4)]
    x = torch.randn(2, c_in, 5, 4, generator=gen).contiguous(memory_format=torch.channels_last)
    weights = (weight(c1 + c2r + c3r, c_in, 1), w2, weight(c3, c3r, 3), weight(c4, c_in, 1))

    def run(b):
        return ops.inception_block_onednn(
            x, weights[0], b[0], weights[1], b[1], weights[2], b[2], weights[3], b[3],
            c1, c2r, True, True, False, 4,
        )  # fmt: skip

    assert not biases[0].is_contiguous()
    assert torch.equal(run(biases), run([b.contiguous() for b in biases]))
