"""The FusedInception API: construction, state_dict compatibility, swapping, modes, errors."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torchvision
from helpers import SMALL, assert_close_rel, randomize_block
from helpers import reference_f64 as ref64
from torch import nn
from torchvision.models.googlenet import Inception as TvInception

import fused_inception
from fused_inception import FusedInception, Inception, fuse_inception, unfuse_inception
from fused_inception.configs import GOOGLENET_BLOCKS

CFG_3A = GOOGLENET_BLOCKS["3a"]


def test_state_dict_keys_match_torchvision():
    fused = FusedInception(*CFG_3A.args())
    tv = TvInception(*CFG_3A.args())
    assert list(fused.state_dict()) == list(tv.state_dict())
    randomize_block(tv)
    fused.load_state_dict(tv.state_dict(), strict=True)
    for key, value in tv.state_dict().items():
        assert torch.equal(fused.state_dict()[key], value), key


def test_paper_form_has_biases_and_no_bn():
    fused = FusedInception(*SMALL.args(), norm=False, branch3_kernel=5)
    keys = set(fused.state_dict())
    assert "branch1.conv.bias" in keys and "branch4.1.conv.bias" in keys
    assert not any(".bn." in k for k in keys)
    assert fused.branch3[1].conv.kernel_size == (5, 5)
    assert keys == set(Inception(*SMALL.args(), norm=False, branch3_kernel=5).state_dict())


def test_from_module_reads_kernel_size_and_shares_parameters():
    src = randomize_block(Inception(*SMALL.args(), branch3_kernel=5, norm=False)).eval()
    fused = FusedInception.from_module(src)
    assert fused.branch3[1].conv.kernel_size == (5, 5)
    src_params = dict(src.named_parameters())
    fused_params = dict(fused.named_parameters())
    assert list(src_params) == list(fused_params)
    assert all(fused_params[k] is src_params[k] for k in src_params)
    x = torch.randn(2, SMALL.in_channels, 6, 7)
    with torch.no_grad():
        assert_close_rel(fused(x), src(x), torch.float32)


def test_from_module_rejects_a_different_function():
    src = Inception(*SMALL.args())
    src.branch4[0] = nn.MaxPool2d(3, stride=2, padding=1)
    with pytest.raises(ValueError, match="stride 1"):
        FusedInception.from_module(src)
    src = Inception(*SMALL.args())
    src.branch2[1].conv.dilation = (2, 2)
    with pytest.raises(ValueError, match="branch2.1"):
        FusedInception.from_module(src)
    with pytest.raises(ValueError, match="no branch1"):
        FusedInception.from_module(nn.Conv2d(3, 3, 1))


def test_fuse_and_unfuse_torchvision_googlenet():
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    randomize_block(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
    assert fuse_inception(model) is model
    fused_blocks = [m for m in model.modules() if isinstance(m, FusedInception)]
    assert len(fused_blocks) == 9
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    with torch.no_grad():
        got = model(x)
    assert_close_rel(got, expected, torch.float32)
    unfuse_inception(model)
    assert not any(isinstance(m, FusedInception) for m in model.modules())
    assert isinstance(model.inception3a, TvInception)
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_fuse_inception_on_a_single_block_and_idempotence():
    block = Inception(*SMALL.args())
    fused = fuse_inception(block)
    assert isinstance(fused, FusedInception)
    assert fuse_inception(fused) is fused
    assert isinstance(unfuse_inception(fused), Inception)


def test_fuse_inception_leaves_lookalikes_with_a_warning():
    block = Inception(*SMALL.args())
    block.branch4[0] = nn.AvgPool2d(3, 1, 1)
    model = nn.Sequential(block)
    with pytest.warns(UserWarning, match="branch4"):
        fuse_inception(model)
    assert model[0] is block


def test_backends_and_names():
    assert "cpu" in fused_inception.available_backends()
    with pytest.raises(ValueError, match="auto, cpu, triton, cuda"):
        FusedInception(*SMALL.args(), backend="tpu")
    with pytest.raises(ValueError, match="unknown backend"):
        fuse_inception(nn.Sequential(), backend="fast")
    block = FusedInception(*SMALL.args(), backend="cpu").eval()
    with torch.no_grad():
        block(torch.randn(1, SMALL.in_channels, 3, 3))
    for name in ("triton", "cuda"):
        if name not in fused_inception.available_backends():
            block = FusedInception(*SMALL.args(), backend=name).eval()
            with pytest.raises(RuntimeError, match=name), torch.no_grad():
                block(torch.randn(1, SMALL.in_channels, 3, 3))


@pytest.mark.parametrize(
    "x, exc, match",
    [
        (torch.randn(5, 4, 4), ValueError, "4-D"),
        (torch.randn(1, 6, 4, 4), ValueError, "expects 5 input channels, got 6"),
        (torch.ones(1, 5, 4, 4, dtype=torch.int32), TypeError, "floating-point"),
        (torch.randn(1, 5, 4, 4, dtype=torch.float64), TypeError, "does not match"),
        ([1.0, 2.0], TypeError, "torch.Tensor"),
    ],
    ids=["rank", "channels", "int-dtype", "dtype-mismatch", "not-tensor"],
)
def test_bad_input_errors(x, exc, match):
    block = FusedInception(*SMALL.args()).eval()
    with pytest.raises(exc, match=match), torch.no_grad():
        block(x)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_constructor_arguments(bad):
    with pytest.raises(ValueError, match="ch1x1"):
        FusedInception(8, bad, 4, 4, 4, 4, 4)


@pytest.mark.parametrize("k", [4, 7])
def test_bad_kernel_size(k):
    with pytest.raises(ValueError, match="branch3_kernel"):
        FusedInception(8, 4, 4, 4, 4, 4, 4, branch3_kernel=k)


def test_weight_changes_after_first_call_are_seen():
    block = randomize_block(FusedInception(*SMALL.args())).eval()
    x = torch.randn(2, SMALL.in_channels, 5, 5)
    with torch.no_grad():
        first = block(x)
        block.branch2[1].conv.weight.mul_(2.0)  # in place (optimizer-style)
        block.branch1.bn.running_var.fill_(4.0)  # a buffer
        second = block(x)
        assert not torch.allclose(first, second)
        assert_close_rel(second, ref64(block, x), torch.float32)
        block.branch4[1].conv.weight = nn.Parameter(torch.randn_like(block.branch4[1].conv.weight))
        assert_close_rel(block(x), ref64(block, x), torch.float32)
        other = randomize_block(TvInception(*SMALL.args()), seed=9)
        block.load_state_dict(other.state_dict())
        assert_close_rel(block(x), ref64(other, x), torch.float32)


@pytest.mark.parametrize("bn_training", ["composed", "fused"])
def test_training_mode_matches_torchvision(bn_training):
    """bn_training="composed" runs torchvision's modules: bitwise equal. "fused" (the fused
    BN-training path, tests/test_bn_training.py) computes its convs with other kernels: float32
    close."""
    tv = randomize_block(TvInception(*CFG_3A.args())).train()
    fused = FusedInception.from_module(copy.deepcopy(tv), bn_training=bn_training).train()
    x = torch.randn(2, CFG_3A.in_channels, 6, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = fused(x)
    expected = tv(x)
    exact = bn_training == "composed"

    def check(a, b, name):
        if exact or not a.is_floating_point():
            assert torch.equal(a, b), name
        else:
            assert_close_rel(b, a, torch.float32, what=name)

    check(expected, out, "output")
    for (name, a), b in zip(tv.named_buffers(), fused.buffers(), strict=True):
        check(a, b, name)
    out.square().sum().backward()
    expected.square().sum().backward()
    for (name, a), b in zip(tv.named_parameters(), fused.parameters(), strict=True):
        check(a.grad, b.grad, name)


def test_eval_forward_with_autograd_gives_gradients():
    src = randomize_block(Inception(*SMALL.args(), norm=False)).eval()
    fused = FusedInception.from_module(copy.deepcopy(src)).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 4, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (g_fused,) = torch.autograd.grad(fused(x).sum(), x)
    (g_src,) = torch.autograd.grad(src(x).sum(), x)
    assert_close_rel(g_fused, g_src, torch.float32)


def test_deepcopy_pickle_and_dtype_conversion():
    block = randomize_block(FusedInception(*SMALL.args())).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 5)
    with torch.no_grad():
        expected = block(x)
        assert torch.equal(copy.deepcopy(block)(x), expected)
        assert torch.equal(pickle.loads(pickle.dumps(block))(x), expected)
        double = block.double()
        assert_close_rel(double(x.double()), ref64(block, x), torch.float64)


def test_repeated_calls_are_bitwise_identical():
    block = randomize_block(FusedInception(*CFG_3A.args())).eval()
    x = torch.randn(2, CFG_3A.in_channels, 7, 7)
    with torch.no_grad():
        assert torch.equal(block(x), block(x))


def test_fuse_paper_googlenet():
    model = fused_inception.models.googlenet(variant="paper", aux_logits=True).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
        fuse_inception(model)
        assert sum(isinstance(m, FusedInception) for m in model.modules()) == 9
        assert model.inception5b.branch3[1].conv.kernel_size == (5, 5)
        assert_close_rel(model(x), expected, torch.float32)
