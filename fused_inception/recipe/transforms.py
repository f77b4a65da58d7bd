"""The paper's training augmentation and the evaluation transforms, on image tensors.

Training (TrainTransform), in this order:
1. a random crop of 8%-100% of the image area with aspect ratio (width / height) in [3/4, 4/3]
   (log-uniform), resized to size x size with an interpolation drawn with equal probability
   from bilinear, bicubic, nearest and area (the paper's "random interpolation methods");
2. a horizontal flip with probability 1/2;
3. photometric distortion: brightness, contrast and saturation factors each uniform in
   [1 - 0.4, 1 + 0.4], applied in a random order (Howard 2013, which the paper cites);
4. AlexNet's PCA lighting noise: the RGB offset eigvec @ (alpha * eigval), alpha ~ N(0, 0.1^2)
   per image, with the ImageNet eigenvalues and eigenvectors (pixel values in [0, 1]);
5. normalisation with the ImageNet mean and standard deviation.

The random draws use torch's global generator, so a data set wrapper that seeds it per sample
(fused_inception.recipe.data.Augmented) makes every augmentation reproducible.

Evaluation (EvalTransform): to float, normalise, then the 1-, 10- or 144-crop boxes of
fused_inception.recipe.crops.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .crops import CROP_COUNTS, CROP_SIZE, apply_boxes, crop_boxes, resize

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet's RGB covariance (pixels in [0, 1]): eigenvalues and eigenvectors (columns), the
# constants of AlexNet's lighting noise as fb.resnet.torch publishes them.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
AREA = (0.08, 1.0)
ASPECT = (3 / 4, 4 / 3)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")
JITTER = 0.4
LIGHTING_STD = 0.1
_CROP_ATTEMPTS = 10
_GRAY = (0.299, 0.587, 0.114)


def to_float_image(image: Tensor) -> Tensor:
    """[3, H, W] uint8 (0..255) or float (0..1) -> float32 [3, H, W] in [0, 1]."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"expected an RGB image [3, H, W], got {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        return image.float() / 255
    if not image.is_floating_point():
        raise ValueError(f"expected a uint8 or float image, got {image.dtype}")
    return image.float()


def normalize(image: Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> Tensor:
    """(image - mean) / std per channel; image [3, ...]."""
    shape = (3,) + (1,) * (image.dim() - 1)
    return (image - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def random_area_box(
    height: int, width: int, area: tuple[float, float] = AREA, aspect=ASPECT
) -> tuple[int, int, int, int]:
    """(top, left, h, w) covering a uniform fraction `area` of the image with a log-uniform
    aspect ratio w / h in `aspect`; after 10 draws that do not fit, the largest centered box
    whose aspect ratio is within `aspect`."""
    log_lo, log_hi = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(_CROP_ATTEMPTS):
        target = height * width * torch.empty(1).uniform_(area[0], area[1]).item()
        ratio = math.exp(torch.empty(1).uniform_(log_lo, log_hi).item())
        w = round(math.sqrt(target * ratio))
        h = round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,)))
            left = int(torch.randint(0, width - w + 1, (1,)))
            return top, left, h, w
    ratio = width / height
    if ratio < aspect[0]:
        w, h = width, round(width / aspect[0])
    elif ratio > aspect[1]:
        w, h = round(height * aspect[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _blend(image: Tensor, other: Tensor | float, factor: float) -> Tensor:
    return (factor * image + (1 - factor) * other).clamp_(0, 1)


def _gray(image: Tensor) -> Tensor:
    return (torch.tensor(_GRAY).view(3, 1, 1) * image).sum(0, keepdim=True)


def photometric(image: Tensor, jitter: float = JITTER) -> Tensor:
    """Brightness, contrast and saturation factors uniform in [1 - jitter, 1 + jitter], in a
    random order. image: [3, H, W] in [0, 1] -> the same shape, clamped to [0, 1]."""
    for op in torch.randperm(3).tolist():
        factor = torch.empty(1).uniform_(1 - jitter, 1 + jitter).item()
        if op == 0:  # brightness: blend with black
            image = _blend(image, 0.0, factor)
        elif op == 1:  # contrast: blend with the mean gray level
            image = _blend(image, _gray(image).mean(), factor)
        else:  # saturation: blend with the gray image
            image = _blend(image, _gray(image), factor)
    return image


def lighting(image: Tensor, std: float = LIGHTING_STD) -> Tensor:
    """AlexNet's PCA lighting noise: image [3, H, W] + eigvec @ (alpha * eigval), with
    alpha ~ N(0, std^2) per component."""
    alpha = torch.randn(3) * std
    offset = torch.tensor(PCA_EIGVEC) @ (alpha * torch.tensor(PCA_EIGVAL))
    return image + offset.view(3, 1, 1)


class TrainTransform:
    """The training augmentation (module docstring).

    image: [3, H, W] uint8 or float in [0, 1]
    out:   [3, size, size] float32, normalised
    """

    def __init__(
        self,
        size: int = CROP_SIZE,
        *,
        area: tuple[float, float] = AREA,
        aspect: tuple[float, float] = ASPECT,
        interpolations: tuple[str, ...] = INTERPOLATIONS,
        flip: bool = True,
        jitter: float = JITTER,
        lighting_std: float = LIGHTING_STD,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if not interpolations or any(m not in INTERPOLATIONS for m in interpolations):
            raise ValueError(f"interpolations must be among {INTERPOLATIONS}, got {interpolations}")
        self.size = size
        self.area, self.aspect, self.interpolations = area, aspect, interpolations
        self.flip, self.jitter, self.lighting_std = flip, jitter, lighting_std

    def __call__(self, image: Tensor) -> Tensor:
        image = to_float_image(image)
        top, left, h, w = random_area_box(*image.shape[-2:], self.area, self.aspect)
        mode = self.interpolations[int(torch.randint(len(self.interpolations), (1,)))]
        image = image[:, top : top + h, left : left + w]
        image = resize(image, (self.size, self.size), mode).clamp(0, 1)
        if self.flip and torch.rand(1).item() < 0.5:
            image = image.flip(-1)
        if self.jitter:
            image = photometric(image, self.jitter)
        if self.lighting_std:
            image = lighting(image, self.lighting_std)
        return normalize(image)


class EvalTransform:
    """Normalised test-time crops of one image.

    image: [3, H, W] uint8 or float in [0, 1]
    out:   [crops, 3, crop_size, crop_size] float32 (crops = 1, 10 or 144)
    """

    def __init__(self, crops: int = 1, crop_size: int = CROP_SIZE) -> None:
        if crops not in CROP_COUNTS:
            raise ValueError(f"crops must be one of {CROP_COUNTS}, got {crops!r}")
        self.crops, self.crop_size = crops, crop_size

    def __call__(self, image: Tensor) -> Tensor:
        image = normalize(to_float_image(image))
        boxes = crop_boxes(self.crops, *image.shape[-2:], self.crop_size)
        return apply_boxes(image, boxes, self.crop_size)
