"""fused_inception.recipe: the test-time crop boxes against the paper's geometry (derived here
from hand-computed sizes), the crops' pixels, the mean of softmaxes, the training augmentation's
ranges and constants, the lr schedule, Polyak averaging and the reproducible data order."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
from torch import nn

from fused_inception.recipe import (
    Augmented,
    CropBox,
    EvalTransform,
    SyntheticImages,
    TrainTransform,
    apply_boxes,
    center_crop_boxes,
    epoch_batches,
    make_averaged,
    make_optimizer,
    make_scheduler,
    multicrop_predict,
    paper_crop_boxes,
    ten_crop_boxes,
)
from fused_inception.recipe.transforms import (
    PCA_EIGVAL,
    PCA_EIGVEC,
    lighting,
    photometric,
    random_area_box,
)

# A 375x500 photo (ImageNet's commonest size), its long side after resizing the short side to
# each scale (int(scale * 500 / 375), by hand), and where the center square starts.
LONG = {256: 341, 288: 384, 320: 426, 352: 469}
CENTER_SQUARE = {256: 42, 288: 48, 320: 53, 352: 58}  # (LONG - scale) // 2
# Inside a square of side `scale`: the far corner's offset (scale - 224) and the center's.
FAR = {256: 32, 288: 64, 320: 96, 352: 128}
MID = {256: 16, 288: 32, 320: 48, 352: 64}


def _expected_144(orientation: str) -> Counter:
    """The paper's 144 boxes, as (scale, top, left, size, flip), from the tables above."""
    boxes = []
    for s in (256, 288, 320, 352):
        if orientation == "square":
            starts = [0, 0, 0]
        else:
            starts = [0, CENTER_SQUARE[s], LONG[s] - s]
        for start in starts:
            t0, l0 = (0, start) if orientation in ("landscape", "square") else (start, 0)
            six = [(t0 + dt, l0 + dl, 224) for dt in (0, FAR[s]) for dl in (0, FAR[s])]
            six += [(t0 + MID[s], l0 + MID[s], 224), (t0, l0, s)]
            boxes += [(s, t, left, size, flip) for t, left, size in six for flip in (False, True)]
    return Counter(boxes)


@pytest.mark.parametrize(
    "orientation, hw",
    [
        pytest.param("landscape", (375, 500), id="landscape-375x500"),
        pytest.param("portrait", (500, 375), id="portrait-500x375"),
        pytest.param("square", (300, 300), id="square-300x300"),
    ],
)
def test_144_boxes_are_the_papers(orientation, hw):
    boxes = paper_crop_boxes(*hw)
    assert len(boxes) == 144 == 4 * 3 * 6 * 2
    assert Counter(tuple(b) for b in boxes) == _expected_144(orientation)


def test_10_and_1_crop_boxes():
    # Shorter side 256: 256x341; corners and center of the whole resized image.
    ten = ten_crop_boxes(375, 500)
    expected = [(0, 0), (0, 117), (32, 0), (32, 117), (16, 58)]
    assert [(b.top, b.left) for b in ten] == expected * 2
    assert [b.flip for b in ten] == [False] * 5 + [True] * 5
    assert {(b.scale, b.size) for b in ten} == {(256, 224)}
    assert center_crop_boxes(500, 375) == [CropBox(256, 58, 16, 224, False)]


def _coordinate_image(h: int, w: int) -> torch.Tensor:
    """A float image whose pixels differ everywhere: value = row * 1000 + column (+ channel)."""
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (ys * 1000 + xs).double()[None] + torch.arange(3).double().view(3, 1, 1)


def test_crops_cut_the_boxes():
    # An image already at shorter side 64 (crop 56: the scales are 64, 72, 80, 88): at scale
    # 64 nothing is resized, so each crop must be that slice of the image, mirrored if flip.
    image = _coordinate_image(64, 85)
    boxes = [b for b in paper_crop_boxes(64, 85, crop_size=56) if b.scale == 64]
    crops = apply_boxes(image, boxes, crop_size=56)
    assert crops.shape == (36, 3, 56, 56)
    for b, crop in zip(boxes, crops, strict=True):
        patch = image[:, b.top : b.top + b.size, b.left : b.left + b.size]
        if b.size == 56:
            assert torch.equal(crop, patch.flip(-1) if b.flip else patch), b
        else:  # the whole square, resized to 56x56 (antialiased bilinear), mirrored if flip
            assert b.size == 64
            square = torch.nn.functional.interpolate(
                patch[None], size=(56, 56), mode="bilinear", antialias=True, align_corners=False
            )[0]
            torch.testing.assert_close(crop, square.flip(-1) if b.flip else square)


def test_ten_crops_match_torchvision_ten_crop():
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    # torchvision mirrors the image, then crops: the same ten crops in another order, when the
    # center is whole pixels from both sides (256x340: 16 and 58). (At 256x341 its mirrored
    # center starts a pixel further right than the mirror of the center crop, which we take.)
    image = torch.rand(3, 256, 340, dtype=torch.float64)
    ours = apply_boxes(image, ten_crop_boxes(256, 340))
    theirs = torch.stack(tv.ten_crop(image, [224, 224]))
    order = sorted(range(10), key=lambda i: ours[i, 0, 0, :4].tolist())
    order_tv = sorted(range(10), key=lambda i: theirs[i, 0, 0, :4].tolist())
    assert torch.equal(ours[order], theirs[order_tv])


def test_multicrop_prediction_is_mean_of_softmaxes():
    gen = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 7)).double()
    crops = torch.randn(2, 10, 3, 8, 8, generator=gen, dtype=torch.float64)
    probs = multicrop_predict(model, crops)
    for i in range(2):
        expected = torch.stack([torch.softmax(model(c[None])[0], 0) for c in crops[i]]).mean(0)
        torch.testing.assert_close(probs[i], expected.float(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(probs.sum(1), torch.ones(2))


def test_eval_transform_shapes_and_bad_crops():
    image = torch.randint(0, 256, (3, 70, 90), dtype=torch.uint8)
    for n in (1, 10, 144):
        assert EvalTransform(n, 56)(image).shape == (n, 3, 56, 56)
    with pytest.raises(ValueError, match="crops must be one of"):
        EvalTransform(5)


def test_random_area_box_ranges():
    torch.manual_seed(0)
    for _ in range(2000):
        top, left, h, w = random_area_box(300, 400)
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        # Rounding to whole pixels moves area and aspect by a little.
        assert 0.08 * 0.97 <= h * w / (300 * 400) <= 1.0
        assert 0.75 * 0.97 <= w / h <= 4 / 3 * 1.03


def test_train_transform_is_reproducible_and_normalised():
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    t = TrainTransform(32)
    torch.manual_seed(3)
    a = t(image)
    torch.manual_seed(3)
    assert torch.equal(a, t(image)) and a.shape == (3, 32, 32) and a.dtype == torch.float32
    torch.manual_seed(4)
    assert not torch.equal(a, t(image))


def test_lighting_is_the_pca_offset():
    eigvec = torch.tensor(PCA_EIGVEC, dtype=torch.float64)
    identity = torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(eigvec.T @ eigvec, identity, atol=2e-4, rtol=0)
    torch.manual_seed(5)
    alpha = torch.randn(3) * 0.1
    offset = sum(alpha[j] * PCA_EIGVAL[j] * eigvec[:, j] for j in range(3))
    torch.manual_seed(5)
    out = lighting(torch.zeros(3, 2, 2))
    torch.testing.assert_close(out, offset.float().view(3, 1, 1).expand(3, 2, 2))


def test_photometric_stays_in_range_and_zero_jitter_is_identity():
    image = torch.rand(3, 16, 16)
    assert torch.equal(photometric(image, 0.0), image)
    out = photometric(image, 0.4)
    assert out.min() >= 0 and out.max() <= 1 and not torch.equal(out, image)


def test_lr_schedule_and_weight_decay_groups():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    opt = make_optimizer(model, lr=0.1, weight_decay=1e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 0.0]
    assert [len(g["params"]) for g in opt.param_groups] == [1, 3]  # conv weight; biases, BN
    assert all(g["momentum"] == 0.9 for g in opt.param_groups)
    sched = make_scheduler(opt)
    for epoch in range(25):
        assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.96 ** (epoch // 8)), epoch
        opt.step()
        sched.step()


def test_averaged_model_is_mean_of_snapshots():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten()).double()
    averaged = make_averaged(model)
    snapshots = []
    for _ in range(4):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        model(torch.randn(2, 3, 5, 5, dtype=torch.float64))  # moves BN's running statistics
        averaged.update_parameters(model)
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    for name, value in averaged.module.state_dict().items():
        if value.is_floating_point():
            mean = torch.stack([s[name] for s in snapshots]).mean(0)
            torch.testing.assert_close(value, mean, rtol=1e-12, atol=1e-12, msg=name)
    assert int(averaged.n_averaged) == 4


def test_epoch_batches_split_ranks_and_repeat():
    a = epoch_batches(21, 2, seed=1, epoch=0, rank=0, world_size=2)
    b = epoch_batches(21, 2, seed=1, epoch=0, rank=1, world_size=2)
    assert len(a) == len(b) == 5  # 21 // 4 global batches
    flat = [i for batch in a + b for i in batch]
    assert len(set(flat)) == 20 and set(flat) <= set(range(21))
    assert a == epoch_batches(21, 2, seed=1, epoch=0, rank=0, world_size=2)
    assert a != epoch_batches(21, 2, seed=1, epoch=1, rank=0, world_size=2)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        epoch_batches(3, 2, seed=0, epoch=0, world_size=2)


def test_augmentation_depends_only_on_seed_epoch_index():
    data = Augmented(SyntheticImages(4, 2, 40, 48), TrainTransform(32), seed=7)
    first = data[1][0]
    torch.manual_seed(123)  # the global generator's state does not matter
    assert torch.equal(data[1][0], first)
    data.set_epoch(1)
    assert not torch.equal(data[1][0], first)
