"""GoogLeNet models: torchvision parity, the paper's structure, outputs and loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import randomize_block
from torch import nn

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.models import GoogLeNetOutputs, googlenet, googlenet_loss
from fused_inception.reference import ConvUnit, Inception

SMALL = (2, 3, 64, 64)  # torchvision's adaptive pools allow it; 4a sees 4x4, 5b 2x2
BLOCK_NAMES = [f"inception{key}" for key in GOOGLENET_BLOCKS]


def _torchvision_googlenet(**kwargs) -> nn.Module:
    return torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True, **kwargs)


@pytest.fixture
def tv_pair():
    """(ours, torchvision's) with torchvision's weights loaded strictly into ours."""
    torch.manual_seed(1)
    tv = _torchvision_googlenet(num_classes=10)
    randomize_block(tv, seed=2)
    torch.manual_seed(3)
    ours = googlenet("torchvision", num_classes=10)
    assert not torch.equal(ours.conv1.conv.weight, tv.conv1.conv.weight)  # loading must matter
    ours.load_state_dict(tv.state_dict(), strict=True)
    return ours, tv


def test_torchvision_state_dict_keys_identical():
    ours = googlenet("torchvision").state_dict()
    theirs = _torchvision_googlenet().state_dict()
    assert list(ours) == list(theirs)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}


def test_torchvision_init_matches_torchvision_under_seed():
    torch.manual_seed(0)
    ours = googlenet("torchvision").state_dict()
    torch.manual_seed(0)
    theirs = _torchvision_googlenet().state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


@pytest.mark.parametrize("transform_input", [False, True], ids=["plain", "transform_input"])
def test_torchvision_eval_outputs_identical(transform_input):
    torch.manual_seed(1)
    tv = _torchvision_googlenet(num_classes=10, transform_input=transform_input).eval()
    randomize_block(tv, seed=2)
    ours = googlenet("torchvision", num_classes=10, transform_input=transform_input).eval()
    ours.load_state_dict(tv.state_dict(), strict=True)
    x = torch.randn(SMALL, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        got, want = ours(x), tv(x)
    assert isinstance(got, torch.Tensor) and got.shape == (2, 10)
    assert torch.equal(got, want)


def test_torchvision_train_outputs_identical(tv_pair):
    ours, tv = tv_pair
    ours.train()
    tv.train()
    x = torch.randn(SMALL, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(6)
    got = ours(x)
    torch.manual_seed(6)
    want = tv(x)
    assert isinstance(got, GoogLeNetOutputs)
    for field in GoogLeNetOutputs._fields:
        assert torch.equal(getattr(got, field), getattr(want, field)), field
    # Batch statistics updated the running stats the same way.
    ours_state, tv_state = ours.state_dict(), tv.state_dict()
    assert all(torch.equal(ours_state[k], tv_state[k]) for k in tv_state)
    assert ours.inception5b.branch1.bn.num_batches_tracked.item() == 1
    # Dropout really drew from the RNG: another seed gives other logits.
    torch.manual_seed(7)
    assert not torch.equal(ours(x).logits, got.logits)


def test_paper_stage_output_shapes():
    # Shapes only: the meta device runs every op without computing values.
    expected = {
        "conv1": (64, 112, 112),
        "maxpool1": (64, 56, 56),
        "lrn1": (64, 56, 56),
        "conv2_reduce": (64, 56, 56),
        "conv2": (GOOGLENET_BLOCKS["3a"].in_channels, 56, 56),
        "lrn2": (GOOGLENET_BLOCKS["3a"].in_channels, 56, 56),
        "maxpool2": (GOOGLENET_BLOCKS["3a"].in_channels, 28, 28),
        "maxpool3": (GOOGLENET_BLOCKS["4a"].in_channels, 14, 14),
        "maxpool4": (GOOGLENET_BLOCKS["5a"].in_channels, 7, 7),
        "avgpool": (GOOGLENET_BLOCKS["5b"].out_channels, 1, 1),
        "dropout": (GOOGLENET_BLOCKS["5b"].out_channels,),
        "fc": (1000,),
    }
    for key, config in GOOGLENET_BLOCKS.items():
        expected[f"inception{key}"] = (config.out_channels, config.hw, config.hw)
    seen = {}

    def record(name: str):
        def hook(module, args, out) -> None:
            seen[name] = tuple(out.shape[1:])

        return hook

    with torch.device("meta"):
        model = googlenet("paper").eval()
        for name, child in model.named_children():
            child.register_forward_hook(record(name))
        model(torch.empty(1, 3, 224, 224))
    assert seen == expected
    assert [n for n in seen] == [n for n, _ in model.named_children() if n in seen]


def test_paper_rejects_wrong_input_size():
    model = googlenet("paper").eval()
    with pytest.raises(ValueError, match="inception5b"), torch.no_grad():
        model(torch.randn(1, 3, 160, 160))


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_train_returns_three_logits_eval_returns_tensor(variant):
    torch.manual_seed(0)
    model = googlenet(variant, num_classes=7)
    size = (2, 3, 224, 224) if variant == "paper" else SMALL
    x = torch.randn(size)
    with torch.no_grad():
        out = model.train()(x)
        assert isinstance(out, GoogLeNetOutputs)
        assert out._fields == ("logits", "aux_logits2", "aux_logits1")
        assert all(t.shape == (2, 7) for t in out)
        # The two heads see different maps (4d vs 4a), so they cannot agree.
        assert not torch.allclose(out.aux_logits1, out.aux_logits2)
        logits = model.eval()(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 7)


def _cross_entropy_by_hand(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return -logits.log_softmax(1).gather(1, target[:, None]).mean()


def test_googlenet_loss_weights_aux_heads_and_backprops():
    torch.manual_seed(0)
    model = googlenet("torchvision", num_classes=10).train()
    out = model(torch.randn(SMALL))
    target = torch.tensor([3, 8])
    loss = googlenet_loss(out, target)
    main = _cross_entropy_by_hand(out.logits, target)
    aux1 = _cross_entropy_by_hand(out.aux_logits1, target)
    aux2 = _cross_entropy_by_hand(out.aux_logits2, target)
    torch.testing.assert_close(loss, main + 0.3 * (aux1 + aux2))
    torch.testing.assert_close(googlenet_loss(out, target, aux_weight=1.0), main + aux1 + aux2)
    assert (aux1 - aux2).abs() > 1e-6  # otherwise swapped heads would go unnoticed
    loss.backward()
    for param in (model.conv1.conv.weight, model.aux1.fc2.weight, model.aux2.fc2.weight):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_googlenet_loss_plain_tensor_and_missing_aux():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, generator=gen)
    target = torch.tensor([0, 4, 2, 1])
    want = _cross_entropy_by_hand(logits, target)
    torch.testing.assert_close(googlenet_loss(logits, target), want)
    no_aux = GoogLeNetOutputs(logits, None, None)
    torch.testing.assert_close(googlenet_loss(no_aux, target), want)
    with pytest.raises(TypeError, match="GoogLeNetOutputs"):
        googlenet_loss((logits,), target)


def test_googlenet_loss_accepts_torchvision_outputs(tv_pair):
    ours, tv = tv_pair
    x = torch.randn(SMALL, generator=torch.Generator().manual_seed(8))
    target = torch.tensor([1, 2])
    torch.manual_seed(9)
    want = googlenet_loss(ours.train()(x), target)
    torch.manual_seed(9)
    got = googlenet_loss(tv.train()(x), target)
    assert torch.equal(got, want)


@pytest.mark.parametrize("variant", ["paper", "torchvision"])
def test_aux_logits_false_builds_no_heads(variant):
    model = googlenet(variant, aux_logits=False)
    assert model.aux1 is None and model.aux2 is None
    assert not any("aux" in name for name, _ in model.named_modules())
    assert not any(key.startswith("aux") for key in model.state_dict())
    size = (1, 3, 224, 224) if variant == "paper" else SMALL
    with torch.no_grad():
        out = model.train()(torch.randn(size))
    assert isinstance(out, torch.Tensor) and out.shape == (size[0], 1000)
    if variant == "torchvision":
        theirs = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
        assert list(model.state_dict()) == list(theirs.state_dict())


def test_unknown_variant_raises():
    with pytest.raises(ValueError, match="'paper', 'torchvision'"):
        googlenet("inception_v3")


def test_paper_structure_follows_table1():
    model = googlenet("paper")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    for name in BLOCK_NAMES:
        block = getattr(model, name)
        assert isinstance(block, Inception), name
        assert block.branch3[1].conv.kernel_size == (5, 5), name
        assert block.branch3[1].conv.padding == (2, 2), name
        assert block.branch2[1].conv.kernel_size == (3, 3), name
        units = [m for m in block.modules() if isinstance(m, ConvUnit)]
        assert len(units) == 6
        assert all(u.bn is None and u.conv.bias is not None for u in units), name
    assert model.conv1.conv.stride == (2, 2) and model.conv1.conv.kernel_size == (7, 7)
    assert model.conv1.conv.bias is not None
    for lrn in (model.lrn1, model.lrn2):
        assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 1e-4, 0.75, 1.0)
    pools = [model.maxpool1, model.maxpool2, model.maxpool3, model.maxpool4]
    assert all(p.kernel_size == 3 and p.stride == 2 and p.ceil_mode for p in pools)
    assert isinstance(model.avgpool, nn.AvgPool2d) and model.avgpool.kernel_size == 7
    assert model.dropout.p == 0.4
    for head, tap in ((model.aux1, "4a"), (model.aux2, "4d")):
        assert isinstance(head.pool, nn.AvgPool2d)
        assert (head.pool.kernel_size, head.pool.stride) == (5, 3)
        assert head.conv.conv.in_channels == GOOGLENET_BLOCKS[tap].out_channels
        assert head.conv.conv.out_channels == 128 and head.conv.bn is None
        assert (head.fc1.in_features, head.fc1.out_features) == (2048, 1024)
        assert head.fc2.out_features == 1000 and head.dropout.p == 0.7


def test_torchvision_structure_keeps_its_branch3_kernel():
    model = googlenet("torchvision")
    for name in BLOCK_NAMES:
        block = getattr(model, name)
        assert isinstance(block, Inception)
        assert block.branch3[1].conv.kernel_size == (3, 3)
        assert block.branch1.bn is not None and block.branch1.conv.bias is None
    assert model.dropout.p == 0.2 and model.aux1.dropout.p == 0.7
    assert model.maxpool4.kernel_size == 2


def test_paper_init_is_seeded_and_caffe_like():
    torch.manual_seed(0)
    a = googlenet("paper").state_dict()
    torch.manual_seed(0)
    b = googlenet("paper").state_dict()
    torch.manual_seed(1)
    c = googlenet("paper").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(
        a["inception4a.branch1.conv.weight"], c["inception4a.branch1.conv.weight"]
    )
    assert torch.all(a["inception3a.branch2.1.conv.bias"] == 0.2)
    assert torch.all(a["fc.bias"] == 0) and torch.all(a["aux1.fc2.bias"] == 0)
    weight = a["inception3a.branch3.1.conv.weight"]  # U(+-sqrt(3 / fan_in)), fan_in = 16 * 25
    bound = (3 / weight[0].numel()) ** 0.5
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound


def test_paper_trains_one_step_with_aux_loss():
    torch.manual_seed(0)
    model = googlenet("paper", num_classes=10).train()
    out = model(torch.randn(1, 3, 224, 224))
    loss = googlenet_loss(out, torch.tensor([4]))
    expected = sum(
        w * F.cross_entropy(t, torch.tensor([4]))
        for w, t in zip(
            (1.0, 0.3, 0.3), (out.logits, out.aux_logits1, out.aux_logits2), strict=True
        )
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    grad = model.inception4a.branch3[1].conv.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
