"""The fused BatchNorm-training path (fused_inception/bn_training.py) against torchvision.

Every check runs the same steps through FusedInception and through torchvision's block (or the
reference block for branch3_kernel=5) in float64 on fresh random inputs: outputs, the input,
weight and BN affine gradients, and the running statistics after each step (momentum 0.1, 0.3
and None, num_batches_tracked). tests/test_training.py runs its gradient checks over every
GoogLeNet and odd config through this path too; here: several steps, the BatchNorm variants,
the option that chooses the path, float32 and the edge cases.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import (
    ODD_CASES,
    SMALL,
    TOLERANCES,
    assert_close_rel,
    layout_params,
    odd_spatial,
    randomize_block,
    source_block,
)
from torch import nn

from fused_inception import FusedInception
from fused_inception.bench.train import saved_bytes
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.units import block_units

FUSED_NODE = "_BNTrainingBlockBackward"
# Running statistics in float64: the same reduction and update as torch's; only the conv
# outputs they are computed from round differently (oneDNN against torchvision's convs).
STATS_TOLERANCE = 1e-12

# (name, config, spatial size, branch3 kernel): small images keep the file quick.
CASES = [
    pytest.param(GOOGLENET_BLOCKS["3a"], (8, 8), 3, id="googlenet-3a-8x8"),
    pytest.param(GOOGLENET_BLOCKS["4e"], (7, 7), 3, id="googlenet-4e-7x7"),
    pytest.param(GOOGLENET_BLOCKS["5b"], (7, 5), 5, id="googlenet-5b-7x5-k5"),
    *[
        pytest.param(case.values[1], odd_spatial(case.values[0], 4), 3, id=case.id)
        for case in ODD_CASES
    ],
]


def _pair(cfg, k: int, seed: int = 0, momentum: float | None = 0.1, bn_training="fused"):
    """(reference block, FusedInception of a copy), float64, training mode, random weights and
    BN statistics."""
    ref = randomize_block(source_block(cfg, True, k), seed).double().train()
    for unit in block_units(ref):
        unit.bn.momentum = momentum
    fused = FusedInception.from_module(copy.deepcopy(ref), bn_training=bn_training).train()
    return ref, fused


def _step(block: nn.Module, x: torch.Tensor, grad_out: torch.Tensor):
    x = x.detach().requires_grad_()
    out = block(x)
    grads = torch.autograd.grad(out, [x, *block.parameters()], grad_out)
    return out, grads


def _check_steps(ref, fused, cfg, hw, batch, layout, steps=2, dtype=torch.float64, seed=1):
    gen = torch.Generator().manual_seed(seed)
    fused = fused.to(dtype)
    names = ["x"] + [name for name, _ in ref.named_parameters()]
    for _ in range(steps):
        x = torch.randn(batch, cfg.in_channels, *hw, generator=gen, dtype=torch.float64)
        x = x.contiguous(memory_format=layout)
        grad_out = torch.randn(batch, cfg.out_channels, *hw, generator=gen, dtype=torch.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fused path runs: no composed-path warning
            out, grads = _step(fused, x.to(dtype), grad_out.to(dtype))
        out64, grads64 = _step(ref, x, grad_out)
        assert FUSED_NODE in type(out.grad_fn).__name__
        assert out.is_contiguous(memory_format=layout)
        assert_close_rel(out.double(), out64, dtype, what="output")
        by_name = dict(zip(names, grads64, strict=True))
        for name, g, g64 in zip(names, grads, grads64, strict=True):
            if name.endswith("conv.bias"):
                # A bias before a batch-statistics BN has gradient 0 (both are rounding): held
                # to the tolerance of its conv weight's gradient.
                scale = by_name[name.replace("bias", "weight")].abs().max()
                assert (g.double() - g64).abs().max() <= 10 * TOLERANCES[dtype] * scale, name
            else:
                assert_close_rel(g.double(), g64, dtype, what=f"gradient of {name}")
        _check_buffers(ref, fused, dtype)


def _check_buffers(ref, fused, dtype):
    tolerance = STATS_TOLERANCE if dtype == torch.float64 else 1e-5
    for (name, b64), b in zip(ref.named_buffers(), fused.buffers(), strict=True):
        if b.is_floating_point():
            err = (b.double() - b64).norm() / b64.norm()
            assert err <= tolerance, f"{name}: relative difference {err:.3g}"
        else:
            assert torch.equal(b, b64), name  # num_batches_tracked


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("cfg,hw,k", CASES)
def test_steps_match_torchvision_float64(cfg, hw, k, layout):
    ref, fused = _pair(cfg, k)
    _check_steps(ref, fused, cfg, hw, 2, layout)


@pytest.mark.parametrize("momentum", [0.3, None], ids=["momentum-0.3", "momentum-None"])
def test_momentum_and_cumulative_average(momentum):
    """momentum=None: the running statistics are the cumulative average (factor 1 / number of
    batches tracked); three steps so that the factor changes."""
    cfg = GOOGLENET_BLOCKS["4a"]
    ref, fused = _pair(cfg, 3, momentum=momentum)
    _check_steps(ref, fused, cfg, (5, 6), 2, torch.channels_last, steps=3)
    assert int(block_units(fused)[0].bn.num_batches_tracked) == 3


def test_units_with_their_own_eps_and_momentum():
    """Each BatchNorm's own eps and momentum, the three stacked 1x1 units' included."""
    ref, fused = _pair(SMALL, 3)
    for block in (ref, fused):
        for i, unit in enumerate(block_units(block)):
            unit.bn.eps = 1e-5 * (i + 1)
            unit.bn.momentum = None if i == 3 else 0.05 * (i + 1)
    _check_steps(ref, fused, SMALL, (4, 5), 3, torch.contiguous_format, steps=2)


@pytest.mark.parametrize("layout", layout_params())
def test_float32(layout):
    """float32 at 1e-4; 196 rows (4 x 7 x 7), so the 1x1 convolutions take oneDNN's path."""
    cfg = GOOGLENET_BLOCKS["4e"]
    ref, fused = _pair(cfg, 3)
    _check_steps(ref, fused, cfg, (7, 7), 4, layout, dtype=torch.float32)


def test_conv_bias_and_no_affine():
    """Convs with a bias before their BN (its gradient is the sum of the BN input's) and BNs
    without affine parameters (no gamma, beta)."""
    ref, _ = _pair(SMALL, 3)
    gen = torch.Generator().manual_seed(5)
    for i, unit in enumerate(block_units(ref)):
        conv = unit.conv
        biased = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                           padding=conv.padding, bias=True).double()  # fmt: skip
        with torch.no_grad():
            biased.weight.copy_(conv.weight)
            biased.bias.copy_(torch.randn(conv.out_channels, generator=gen))
        unit.conv = biased
        if i % 2:
            bn = unit.bn
            unit.bn = nn.BatchNorm2d(bn.num_features, eps=bn.eps, affine=False).double().train()
    fused = FusedInception.from_module(copy.deepcopy(ref), bn_training="fused").train()
    _check_steps(ref, fused, SMALL, (4, 5), 3, torch.channels_last)


def test_no_grad_training_forward_updates_statistics():
    ref, fused = _pair(SMALL, 3)
    x = torch.randn(3, SMALL.in_channels, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        out = fused(x)
        out64 = ref(x)
    assert_close_rel(out, out64, torch.float64)
    _check_buffers(ref, fused, torch.float64)


def test_eval_after_training_uses_the_running_statistics():
    ref, fused = _pair(SMALL, 3)
    x = torch.randn(3, SMALL.in_channels, 4, 5, dtype=torch.float64)
    fused(x).sum().backward()
    ref(x).sum().backward()
    ref.eval()
    fused.eval()
    with torch.no_grad():
        assert_close_rel(fused(x), ref(x), torch.float64)


def test_partial_gradients_and_retain_graph():
    """Input without grad, a frozen branch, and a second backward of a retained graph."""
    ref, fused = _pair(SMALL, 3)
    for block in (ref, fused):
        for p in block.branch2.parameters():
            p.requires_grad_(False)
    x = torch.randn(2, SMALL.in_channels, 4, 5, dtype=torch.float64)
    grad_out = torch.randn(2, SMALL.out_channels, 4, 5, dtype=torch.float64)
    params = [p for p in fused.parameters() if p.requires_grad]
    params64 = [p for p in ref.parameters() if p.requires_grad]
    out = fused(x)
    first = torch.autograd.grad(out, params, grad_out, retain_graph=True)
    second = torch.autograd.grad(out, params, grad_out)
    expected = torch.autograd.grad(ref(x), params64, grad_out)
    for g1, g2, g64 in zip(first, second, expected, strict=True):
        assert torch.equal(g1, g2)
        assert_close_rel(g1, g64, torch.float64)


@pytest.mark.filterwarnings("ignore:FusedInception")
def test_auto_is_the_fused_path_on_the_cpu_in_float32_from_batch_4():
    _, fused = _pair(SMALL, 3, bn_training="auto")
    fused = fused.float()
    for batch, dtype, fused_path in (
        (4, torch.float32, True),
        (3, torch.float32, False),
        (4, torch.float64, False),
    ):
        x = torch.randn(batch, SMALL.in_channels, 4, 5).to(dtype)
        out = fused.to(dtype)(x)
        assert (FUSED_NODE in type(out.grad_fn).__name__) == fused_path, (batch, dtype)


def test_the_option_chooses_the_path(monkeypatch):
    from fused_inception import module

    monkeypatch.setattr(module, "_warned", set())
    ref, fused = _pair(SMALL, 3, bn_training="composed")
    assert "bn_training='composed'" in repr(fused)
    x = torch.randn(2, SMALL.in_channels, 4, 5, dtype=torch.float64)
    with pytest.warns(UserWarning, match="bn_training='composed'"):
        out = fused(x)
    assert FUSED_NODE not in type(out.grad_fn).__name__
    assert torch.equal(out, ref(x))  # the composed path is torchvision's computation
    fused.bn_training = "fused"
    assert FUSED_NODE in type(fused(x).grad_fn).__name__
    with pytest.raises(ValueError, match="unknown bn_training 'fast'; choose one of"):
        FusedInception(*SMALL.args(), bn_training="fast")
    with pytest.raises(ValueError, match="unknown bn_training"):
        FusedInception.from_module(ref, bn_training="")


@pytest.mark.filterwarnings("ignore:FusedInception")
def test_what_runs_composed():
    """The composed modules run for a BN partly in eval mode, under autocast, and for one value
    per channel (torch's own error then)."""
    ref, fused = _pair(SMALL, 3)
    x = torch.randn(2, SMALL.in_channels, 4, 5, dtype=torch.float64)
    for block in (ref, fused):
        block.branch3[0].bn.eval()
    assert FUSED_NODE not in type(fused(x).grad_fn).__name__
    fused.branch3[0].bn.train()
    one = torch.randn(1, SMALL.in_channels, 1, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        fused(one)
    fused = fused.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(x.float())
    assert out.dtype == torch.bfloat16 and FUSED_NODE not in type(out.grad_fn).__name__


def test_saved_memory_is_no_more_than_torchvision():
    """One step saves x, the output, every unit's pre-BN output, r2/r3, the pooled input and
    its indices: what torchvision's modules save, within 5% (3a, batch 2, 28x28)."""
    cfg = GOOGLENET_BLOCKS["3a"]
    ref, fused = _pair(cfg, 3)
    ref, fused = ref.float(), fused.float()
    x = torch.randn(2, cfg.in_channels, cfg.hw, cfg.hw)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    grad_out = torch.randn(2, cfg.out_channels, cfg.hw, cfg.hw)
    fused_bytes = saved_bytes(lambda: fused(x).backward(grad_out), fused)
    ref_bytes = saved_bytes(lambda: ref(x).backward(grad_out), ref)
    assert fused_bytes <= 1.05 * ref_bytes, (fused_bytes, ref_bytes)


def test_gradcheck_float64():
    """gradcheck of the autograd Function itself (x and every parameter), on a tiny block; no
    running statistics (each gradcheck call would update them)."""
    from fused_inception.bn_training import UnitParams, bn_training_block, bn_training_units

    ref, _ = _pair(SMALL, 3)
    units = [  # conv weight, BN weight and bias (torchvision's convs have no bias)
        UnitParams(u.weight, None, u.gamma, u.beta, u.eps, None, None, 0.0)
        for u in bn_training_units(ref)
    ]
    x = torch.randn(2, SMALL.in_channels, 3, 4, dtype=torch.float64, requires_grad=True)
    tensors = [t.detach().requires_grad_() for u in units for t in (u.weight, u.gamma, u.beta)]

    def fn(x, *flat):
        rebuilt = [
            u._replace(weight=flat[3 * i], gamma=flat[3 * i + 1], beta=flat[3 * i + 2])
            for i, u in enumerate(units)
        ]
        return bn_training_block(x, rebuilt)

    assert torch.autograd.gradcheck(fn, (x, *tensors), fast_mode=True)
