"""Edge inputs against torchvision's block on every backend (helpers.EVERY_BACKEND; float64 on
cpu, float32 at its tolerance elsewhere): empty batch, 1x1 and 1xW images, strided, sliced,
permuted and expanded views; NaN and +-inf propagate where torchvision's block propagates them,
on the Winograd path too.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    EVERY_BACKEND,
    SMALL,
    TOLERANCES,
    assert_close_rel,
    backend_device,
    fused_on,
    randomize_block,
    tv_block,
)
from torchvision.models.googlenet import Inception as TvInception

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
    "permuted-channels_last": lambda n, c: torch.randn(n, 4, 5, c).permute(0, 3, 1, 2),
    "transposed-hw": lambda n, c: torch.randn(n, c, 5, 4).transpose(2, 3),
    "expanded-batch": lambda n, c: torch.randn(1, c, 4, 5).expand(n, c, 4, 5),
    "expanded-h": lambda n, c: torch.randn(n, c, 1, 5).expand(n, c, 4, 5),
}


def _expected_memory_format(x: torch.Tensor) -> torch.memory_format:
    strictly_cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if strictly_cl else torch.contiguous_format


@pytest.mark.parametrize("case", list(EDGE_INPUTS))
@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_edge_inputs_match_torchvision(backend, case):
    tv = tv_block()
    dtype = torch.float64 if backend == "cpu" else torch.float32
    fused = fused_on(tv, backend).to(dtype)
    x = EDGE_INPUTS[case](2, SMALL.in_channels).to(dtype)
    x_before = x.clone()
    with torch.no_grad():
        out = fused(x.to(backend_device(backend))).cpu()
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


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_inf_input_propagates_like_torchvision(backend):
    """+-inf reaches the same outputs with the same signs and the finite outputs match. (Where
    torchvision gets inf - inf = NaN, see the NaN test.)"""
    tv = tv_block(1)
    x = _nan_inf_input()
    x[0, 1, 2, 3] = 0.5
    with torch.no_grad():
        out = fused_on(tv, backend)(x.to(backend_device(backend))).cpu()
        expected = tv.double()(x.double())
    assert expected.isinf().any() and expected.isfinite().any()
    _compare_nonfinite(out, expected, check_nan=False)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_nan_input_propagates_like_torchvision(backend):
    """A NaN input gives NaN wherever torchvision's block gives NaN (relu(NaN) = NaN, and
    max_pool2d returns NaN for a window holding one), and nowhere else."""
    tv = tv_block(1)
    x = _nan_inf_input()
    with torch.no_grad():
        out = fused_on(tv, backend)(x.to(backend_device(backend))).cpu()
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
        out = fused_on(tv, "cpu")(x)
        expected = tv(x)
    assert torch.equal(out.isnan(), expected.isnan())
