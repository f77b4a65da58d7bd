"""Eval-mode parity of FusedInception against torchvision's block and float64 references."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    GOOGLENET_CASES,
    ODD_CASES,
    SMALL,
    assert_close_rel,
    backend_device,
    layout_params,
    odd_spatial,
    randomize_block,
    source_block,
)
from helpers import reference_f64 as ref64

from fused_inception import FusedInception, Inception


def _check(cfg, hw, batch, norm, k, layout, backend, seed=0):
    src = randomize_block(source_block(cfg, norm, k), seed).eval()
    device = backend_device(backend)  # the fixture's GPU backends run here only on a GPU
    fused = FusedInception.from_module(copy.deepcopy(src), backend=backend).eval().to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, cfg.in_channels, *hw, generator=gen)
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        out = fused(x.to(device)).cpu()
        eager = src(x)
    ref = ref64(src, x)
    assert_close_rel(out, ref, torch.float32)
    assert_close_rel(out, eager, torch.float32)
    if layout == torch.channels_last and min(out.shape[1:]) > 1:
        assert out.is_contiguous(memory_format=torch.channels_last)
    else:
        assert out.is_contiguous()


FORMS = [
    pytest.param(True, 3, id="bn-k3"),
    pytest.param(False, 5, id="paper-k5"),
    pytest.param(True, 5, id="bn-k5"),
    pytest.param(False, 3, id="paper-k3"),
]


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", GOOGLENET_CASES)
def test_googlenet_blocks(name, cfg, norm, k, layout, backend):
    _check(cfg, (cfg.hw, cfg.hw), 2, norm, k, layout, backend)


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", ODD_CASES)
@pytest.mark.parametrize("batch", [1, 3])
def test_odd_shapes(name, cfg, batch, norm, k, layout, backend):
    _check(cfg, odd_spatial(name, cfg.hw), batch, norm, k, layout, backend)


def test_empty_batch(backend):
    cfg = SMALL
    block = randomize_block(FusedInception(*cfg.args(), backend=backend)).eval()
    with torch.no_grad():
        out = block(torch.randn(0, cfg.in_channels, 4, 6))
    assert out.shape == (0, cfg.out_channels, 4, 6)


def test_all_negative_input_keeps_pool_negative(backend):
    """Max-pool padding is -inf: an all-negative neighbourhood must stay negative."""
    cfg = ODD_CASES[1].values[1]
    src = randomize_block(Inception(*cfg.args(), norm=False), 3).eval()
    fused = FusedInception.from_module(src, backend=backend).eval()
    x = -torch.rand(2, cfg.in_channels, 3, 4) - 1.0
    with torch.no_grad():
        out = fused(x)
    assert_close_rel(out, ref64(src, x), torch.float32)


def test_reduced_padding_is_zero_not_relu_bias(backend):
    """Zero padding applies to r2/r3: with large positive reduction biases and a negative input,
    relu(B_red) != 0, so a kernel that pads with relu(B_red) would differ at the border."""
    cfg = SMALL
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=5, norm=False), 4).eval()
    with torch.no_grad():
        src.branch2[0].conv.bias.fill_(3.0)
        src.branch3[0].conv.bias.fill_(3.0)
    fused = FusedInception.from_module(src, backend=backend).eval()
    x = torch.randn(1, cfg.in_channels, 6, 5)
    with torch.no_grad():
        out = fused(x)
    assert_close_rel(out, ref64(src, x), torch.float32)


def test_float64_block_matches_reference(backend):
    cfg = SMALL
    block = randomize_block(FusedInception(*cfg.args(), branch3_kernel=5), 5).double().eval()
    x = torch.randn(2, cfg.in_channels, 7, 6, dtype=torch.float64)
    with torch.no_grad():
        out = block(x)
    assert out.dtype == torch.float64
    assert_close_rel(out, ref64(block, x), torch.float64)
