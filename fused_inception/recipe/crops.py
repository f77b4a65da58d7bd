"""Test-time crops of GoogLeNet's paper (section 7) and the averaging of their predictions.

Every crop is a square box in the image resized so that its SHORTER side is `scale` (the long
side becomes int(scale * long / short), torchvision's Resize rule), cropped, resized to
`crop_size` when the box is larger, and mirrored when `flip`.

- 1 crop:   shorter side 256, the center 224x224 crop.
- 10 crops: shorter side 256, the 4 corner 224x224 crops and the center one (torchvision's
            TenCrop geometry on the resized image), each also mirrored. (TenCrop crops the
            mirrored image instead: its mirrored center starts a pixel to the right when the
            width left over is odd.)
- 144 crops (the paper): for each scale 256, 288, 320, 352 the left, center and right squares
            of side `scale` (top, center and bottom for portrait images; a square image gives
            the same square three times); from each square its 4 corner 224x224 crops, its
            center 224x224 crop and the whole square resized to 224x224; each also mirrored:
            4 x 3 x 6 x 2 = 144.

Centers are rounded down: offset (length - crop) // 2. With crop_size other than 224 the
scales are scaled with it (round(256 * crop_size / 224), ...), which keeps the paper's
geometry for small test images. The prediction of an image is the mean of its crops' softmax
outputs (multicrop_predict).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CROP_SIZE = 224
PAPER_SCALES = (256, 288, 320, 352)
SINGLE_SCALE = 256  # the 1- and 10-crop evaluations' shorter side
CROP_COUNTS = (1, 10, 144)


class CropBox(NamedTuple):
    """One test-time crop: the square [top, top + size) x [left, left + size) of the image resized
    to shorter side `scale`, resized to the crop size (if size differs), mirrored if `flip`."""

    scale: int
    top: int
    left: int
    size: int
    flip: bool


def scaled(lengths: Sequence[int], crop_size: int) -> tuple[int, ...]:
    """The paper's lengths (for 224 crops) for crops of `crop_size`: round(l * crop_size / 224)."""
    return tuple(round(length * crop_size / CROP_SIZE) for length in lengths)


def resized_size(height: int, width: int, shorter: int) -> tuple[int, int]:
    """(height, width) of an image resized so that its shorter side is `shorter`.

    The long side is int(shorter * long / short), as torchvision's Resize computes it."""
    if height <= width:
        return shorter, int(shorter * width / height)
    return int(shorter * height / width), shorter


def _five(top: int, left: int, height: int, width: int, crop: int) -> list[tuple[int, int]]:
    """(top, left) of the corner crops (top-left, top-right, bottom-left, bottom-right) and the
    center crop of side `crop` inside the region [top, top + height) x [left, left + width)."""
    bottom, right = top + height - crop, left + width - crop
    center = (top + (height - crop) // 2, left + (width - crop) // 2)
    return [(top, left), (top, right), (bottom, left), (bottom, right), center]


def _with_mirrors(boxes: list[CropBox]) -> list[CropBox]:
    return boxes + [b._replace(flip=True) for b in boxes]


def _check_fits(height: int, width: int, scale: int, crop_size: int) -> None:
    if scale < crop_size:
        raise ValueError(f"scale {scale} must be at least the crop size {crop_size}")
    if min(height, width) < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")


def center_crop_boxes(
    height: int, width: int, crop_size: int = CROP_SIZE, scale: int | None = None
) -> list[CropBox]:
    """The 1-crop evaluation: the center crop_size square at shorter side `scale` (256)."""
    scale = scale or scaled([SINGLE_SCALE], crop_size)[0]
    _check_fits(height, width, scale, crop_size)
    h, w = resized_size(height, width, scale)
    top, left = _five(0, 0, h, w, crop_size)[4]
    return [CropBox(scale, top, left, crop_size, False)]


def ten_crop_boxes(
    height: int, width: int, crop_size: int = CROP_SIZE, scale: int | None = None
) -> list[CropBox]:
    """The 10-crop evaluation: corners and center at shorter side `scale` (256), then mirrored."""
    scale = scale or scaled([SINGLE_SCALE], crop_size)[0]
    _check_fits(height, width, scale, crop_size)
    h, w = resized_size(height, width, scale)
    return _with_mirrors(
        [CropBox(scale, t, left, crop_size, False) for t, left in _five(0, 0, h, w, crop_size)]
    )


def paper_crop_boxes(
    height: int, width: int, crop_size: int = CROP_SIZE, scales: Sequence[int] | None = None
) -> list[CropBox]:
    """The paper's 144 crops (module docstring), in the order scale, square, then per square
    the 6 crops (4 corners, center, whole square) and their 6 mirrors."""
    scales = tuple(scales or scaled(PAPER_SCALES, crop_size))
    boxes: list[CropBox] = []
    for scale in scales:
        _check_fits(height, width, scale, crop_size)
        h, w = resized_size(height, width, scale)
        if w >= h:  # landscape (or square): left, center, right
            squares = [(0, left) for left in (0, (w - scale) // 2, w - scale)]
        else:  # portrait: top, center, bottom
            squares = [(top, 0) for top in (0, (h - scale) // 2, h - scale)]
        for top0, left0 in squares:
            six = [
                CropBox(scale, t, left, crop_size, False)
                for t, left in _five(top0, left0, scale, scale, crop_size)
            ]
            six.append(CropBox(scale, top0, left0, scale, False))
            boxes += _with_mirrors(six)
    return boxes


def crop_boxes(crops: int, height: int, width: int, crop_size: int = CROP_SIZE) -> list[CropBox]:
    """The boxes of the 1-, 10- or 144-crop evaluation of a height x width image."""
    if crops == 1:
        return center_crop_boxes(height, width, crop_size)
    if crops == 10:
        return ten_crop_boxes(height, width, crop_size)
    if crops == 144:
        return paper_crop_boxes(height, width, crop_size)
    raise ValueError(f"crops must be one of {CROP_COUNTS}, got {crops!r}")


def resize(image: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """image [C, H, W] float -> [C, *size]; antialiased for bilinear and bicubic."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    antialias = mode in ("bilinear", "bicubic")
    kwargs = {"align_corners": False, "antialias": True} if antialias else {}
    return F.interpolate(image[None], size=size, mode=mode, **kwargs)[0]


def apply_boxes(image: Tensor, boxes: Sequence[CropBox], crop_size: int = CROP_SIZE) -> Tensor:
    """Cut `boxes` out of `image`.

    image: [C, H, W] float
    out:   [len(boxes), C, crop_size, crop_size], in the order of `boxes`
    """
    if image.dim() != 3 or not image.is_floating_point():
        raise ValueError(f"image must be a float [C, H, W] tensor, got {image.dtype} {image.shape}")
    height, width = image.shape[-2:]
    resized = {s: resize(image, resized_size(height, width, s)) for s in {b.scale for b in boxes}}
    crops = []
    for b in boxes:
        source = resized[b.scale]
        inside = b.top + b.size <= source.shape[-2] and b.left + b.size <= source.shape[-1]
        if b.top < 0 or b.left < 0 or not inside:
            raise ValueError(f"{b} lies outside the resized image {tuple(source.shape[-2:])}")
        crop = source[:, b.top : b.top + b.size, b.left : b.left + b.size]
        crop = resize(crop, (crop_size, crop_size))
        crops.append(crop.flip(-1) if b.flip else crop)
    return torch.stack(crops)


def multicrop_predict(model: nn.Module, crops: Tensor) -> Tensor:
    """Mean over each image's crops of the softmax of `model`'s logits.

    crops: [B, n, 3, H, W]  n crops of each of B images
    out:   [B, num_classes] float32 probabilities
    """
    if crops.dim() != 5:
        raise ValueError(f"crops must be [B, n, 3, H, W], got {tuple(crops.shape)}")
    batch, n = crops.shape[:2]
    logits = model(crops.flatten(0, 1))
    return torch.softmax(logits.float(), dim=-1).view(batch, n, -1).mean(dim=1)
