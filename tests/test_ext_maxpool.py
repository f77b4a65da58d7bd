"""fused_inception::max_pool3x3_nhwc (its wrapper in fused_inception.backends.cpu_maxpool)
against torch.nn.functional.max_pool2d(x, 3, 1, 1).

The comparison is bitwise: the operator must pick the very element max_pool2d picks, NaN and
signed zeros included. Exception: bfloat16 NaNs only need to be NaN where max_pool2d's are, since
torch's own bits for them vary (its AVX2/AVX512 kernels write 0xFFFF from their vector loop and
0x7FC0 from their scalar remainder loop; its default-capability kernel keeps the input's bits, as
this operator does everywhere). The subprocess test runs torch and this operator at capability
`default`, where bfloat16 NaNs must match bit for bit too.
"""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
import torch.nn.functional as F
from helpers import BITS, assert_same_pool_bits, dtype_params, run_at_capability

from fused_inception import _ext
from fused_inception.backends.cpu_maxpool import max_pool3x3_nhwc

if not _ext.has_extension():
    _reason = f"fused_inception._C is not built: {_ext.extension_error()}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        # CI builds the extension before the tests: there a missing one is a failure, not a skip.
        pytest.fail(_reason, pytrace=False)
    pytest.skip(_reason, allow_module_level=True)

# Channel counts below, at and around the vector widths (8 floats, 4 doubles, 16 halves on AVX2),
# so that both the vector loop and the scalar remainder run.
CHANNELS = [1, 3, 7, 8, 17, 64, 67]
SIZES = [1, 2, 3, 5, 14]
SPATIAL = [(h, w) for h in SIZES for w in SIZES if h != w]


def channels_last_randn(*shape: int, dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
    return x.contiguous(memory_format=torch.channels_last)


def assert_same_as_max_pool2d(x: torch.Tensor) -> None:
    out = max_pool3x3_nhwc(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert_same_pool_bits(out, F.max_pool2d(x, 3, 1, 1), f"shape {tuple(x.shape)}, {x.dtype}")


@pytest.mark.parametrize("channels", CHANNELS, ids=lambda c: f"c{c}")
@pytest.mark.parametrize("dtype", dtype_params())
def test_random_inputs_match_bitwise(dtype: torch.dtype, channels: int) -> None:
    gen = torch.Generator().manual_seed(channels)
    for i, (h, w) in enumerate(SPATIAL):
        # Batch 1, and batch 3 (every other shape) where a task's rows cross image boundaries.
        batch = 1 if i % 2 == 0 else 3
        assert_same_as_max_pool2d(channels_last_randn(batch, channels, h, w, dtype=dtype, gen=gen))


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize(
    "shape",
    [(5, 67, 14, 13), (2, 480, 14, 14), (8, 832, 7, 7)],
    ids=lambda s: "x".join(map(str, s)),
)
def test_parallel_shapes_match_bitwise(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    # Large enough for several parallel tasks, whose boundaries fall inside an image.
    gen = torch.Generator().manual_seed(1)
    assert_same_as_max_pool2d(channels_last_randn(*shape, dtype=dtype, gen=gen))


@pytest.mark.parametrize("dtype", dtype_params())
def test_all_negative_input_stays_negative(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(2)
    x = -(channels_last_randn(2, 17, 5, 3, dtype=dtype, gen=gen).abs() + 1)
    out = max_pool3x3_nhwc(x)
    assert (out <= -1).all()
    assert_same_as_max_pool2d(x)


@pytest.mark.parametrize("dtype", dtype_params())
def test_empty_batch(dtype: torch.dtype) -> None:
    x = torch.randn(0, 8, 3, 5, dtype=dtype).contiguous(memory_format=torch.channels_last)
    out = max_pool3x3_nhwc(x)
    assert out.shape == F.max_pool2d(x, 3, 1, 1).shape == (0, 8, 3, 5)
    assert out.is_contiguous(memory_format=torch.channels_last)


def _place_specials(x: torch.Tensor) -> torch.Tensor:
    """NaN, +inf and -inf at the corners and edge midpoints, in channels spread over the vector
    and remainder lanes; windows that see NaN and inf together; a channel that is all -inf."""
    x = x.clone()
    _, c, h, w = x.shape
    spots = [
        (0, 0),
        (0, w - 1),
        (h - 1, 0),
        (h - 1, w - 1),
        (0, w // 2),
        (h // 2, 0),
        (h - 1, w // 2),
        (h // 2, w - 1),
    ]
    values = [float("nan"), float("inf"), float("-inf")]
    for ch in range(c):
        for i, (hh, ww) in enumerate(spots):
            if (ch + i) % 3 != 0:
                x[:, ch, hh, ww] = values[(ch + i) % len(values)]
    x[:, c // 2] = float("-inf")
    return x


@pytest.mark.parametrize("dtype", dtype_params())
@pytest.mark.parametrize("spatial", [(1, 1), (1, 5), (2, 3), (5, 3), (14, 5)], ids=str)
@pytest.mark.parametrize("channels", [3, 17, 67], ids=lambda c: f"c{c}")
def test_nan_and_inf_at_edges_and_corners(
    dtype: torch.dtype, spatial: tuple[int, int], channels: int
) -> None:
    gen = torch.Generator().manual_seed(3)
    x = _place_specials(channels_last_randn(2, channels, *spatial, dtype=dtype, gen=gen))
    assert_same_as_max_pool2d(x)
    assert torch.isneginf(max_pool3x3_nhwc(x)[:, channels // 2]).all()


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float64))
def test_which_nan_and_which_zero_is_kept(dtype: torch.dtype) -> None:
    # max_pool2d scans a window row by row: of several NaNs the last one wins, of equal values
    # (-0.0, +0.0) the first. NaN payloads and zero signs make the choice visible in the bits.
    int_t, one = BITS[dtype], 1
    nan_bits = torch.tensor(float("nan"), dtype=dtype).view(int_t)
    x = torch.full((1, 9, 3, 3), -1.0, dtype=dtype)
    bits = x.view(int_t)
    bits[0, :, 2, 0] = nan_bits + one  # later in row-major order, earlier in column-major
    bits[0, :, 0, 2] = nan_bits + 2 * one
    x[0, 4:, :, :] = -1.0
    x[0, 4:, 0, 2] = -0.0  # earlier in row-major order, later in column-major
    x[0, 4:, 1, 0] = 0.0
    x = x.contiguous(memory_format=torch.channels_last)
    assert_same_as_max_pool2d(x)
    out = max_pool3x3_nhwc(x)
    assert out[0, 0, 1, 1].view(int_t) == nan_bits + one
    assert torch.signbit(out[0, 4, 1, 1])


def test_rejects_3d_input() -> None:
    with pytest.raises(ValueError, match=r"expected a 4-D tensor \[N, C, H, W\], got 3-D"):
        max_pool3x3_nhwc(torch.randn(8, 5, 5))


def test_rejects_nchw_contiguous_input() -> None:
    x = torch.randn(2, 8, 5, 5)
    with pytest.raises(ValueError, match=r"channels_last-contiguous.*memory_format=torch\."):
        max_pool3x3_nhwc(x)


def test_rejects_integer_dtype() -> None:
    x = torch.randint(0, 9, (2, 8, 5, 5)).contiguous(memory_format=torch.channels_last)
    with pytest.raises(
        TypeError, match=r"expected dtype float32, float64, float16 or bfloat16, got Long"
    ):
        max_pool3x3_nhwc(x)


_DEFAULT_CAPABILITY_CHECK = textwrap.dedent(
    """
    import torch, torch.nn.functional as F
    from fused_inception.backends.cpu_maxpool import max_pool3x3_nhwc
    assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
    bits = {torch.float32: torch.int32, torch.float64: torch.int64,
            torch.float16: torch.int16, torch.bfloat16: torch.int16}
    gen = torch.Generator().manual_seed(4)
    for dtype, int_t in bits.items():
        for shape in [(3, 17, 5, 3), (2, 67, 14, 13), (1, 3, 1, 2)]:
            x = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
            x[:, ::4, 0, 0] = float("nan")
            x[:, 1::4, -1, -1] = float("nan")
            x[:, 2::4, 0, -1] = float("inf")
            x = x.contiguous(memory_format=torch.channels_last)
            out, ref = max_pool3x3_nhwc(x), F.max_pool2d(x, 3, 1, 1)
            assert out.is_contiguous(memory_format=torch.channels_last)
            assert torch.equal(out.view(int_t), ref.view(int_t)), (dtype, shape)
    print("ok")
    """
)


def test_portable_path_without_avx2() -> None:
    # At capability `default` the operator takes its portable (non-AVX2) loops; CI has AVX2, so
    # without this test those loops would never run.
    run_at_capability(_DEFAULT_CAPABILITY_CHECK, "DEFAULT")
