"""Data for the recipe: an ImageFolder directory or a learnable synthetic set, reproducible
augmentation, and the order of batches per epoch (shared by training, resume and DDP).

Samples are (image [3, H, W] uint8, label int). Augmented seeds torch's generator from
(seed, epoch, index) around each sample's transform, and epoch_batches draws each epoch's order
from (seed, epoch): what a step sees depends on nothing else, so a run resumed from a
checkpoint, with any number of loader workers, sees exactly the batches the uninterrupted run
would have seen.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.data import Dataset

_MIX = 1_000_003  # an odd prime: mixes (seed, epoch, index) into one seed


class SyntheticImages(Dataset):
    """A learnable toy set: image i has label i % num_classes; each class has its own colour and
    stripe orientation, on which every image adds its own noise and stripe phase.

    out[i]: (image [3, height, width] uint8, label)
    """

    def __init__(
        self, num_images: int, num_classes: int, height: int, width: int, seed: int = 0
    ) -> None:
        if num_images < 1 or num_classes < 1 or height < 1 or width < 1:
            raise ValueError(
                f"expected positive sizes, got num_images={num_images}, num_classes="
                f"{num_classes}, height={height}, width={width}"
            )
        self.num_images, self.classes = num_images, [f"class{c}" for c in range(num_classes)]
        self.height, self.width, self.seed = height, width, seed
        gen = torch.Generator().manual_seed(seed)
        self.colours = torch.rand(num_classes, 3, 1, 1, generator=gen) * 0.6 + 0.2
        self.angles = torch.rand(num_classes, generator=gen) * torch.pi

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        label = index % len(self.classes)
        gen = torch.Generator().manual_seed(self.seed * _MIX + index + 1)
        ys = torch.arange(self.height).view(-1, 1).float()
        xs = torch.arange(self.width).view(1, -1).float()
        angle = self.angles[label]
        phase = torch.rand(1, generator=gen) * 2 * torch.pi
        stripes = torch.sin((xs * torch.cos(angle) + ys * torch.sin(angle)) * 0.5 + phase)
        image = self.colours[label] * (0.75 + 0.25 * stripes)
        image = image + 0.05 * torch.randn(3, self.height, self.width, generator=gen)
        return (image.clamp(0, 1) * 255).round().to(torch.uint8), label


def image_folder(root: str) -> Dataset:
    """torchvision's ImageFolder at `root` (one sub-directory per class), images as uint8 RGB
    tensors [3, H, W]. A clear error when `root` is not a directory or holds no class."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"data directory {root!r} does not exist or is not a directory")
    try:
        from torchvision.datasets import ImageFolder
        from torchvision.transforms.functional import pil_to_tensor
    except ImportError as e:
        raise ImportError("reading an ImageFolder directory needs torchvision") from e
    try:
        return ImageFolder(root, transform=pil_to_tensor)
    except (FileNotFoundError, RuntimeError) as e:  # no class folders / no images
        raise FileNotFoundError(f"data directory {root!r}: {e}") from None


class Augmented(Dataset):
    """`dataset` with `transform` applied to each image under a generator seeded from
    (seed, epoch, index); set_epoch before making each epoch's loader."""

    def __init__(self, dataset: Dataset, transform: Callable[[Tensor], Tensor], seed: int) -> None:
        self.dataset, self.transform, self.seed, self.epoch = dataset, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(((self.seed * _MIX + self.epoch) * _MIX + index) % 2**63)
            return self.transform(image), label


def epoch_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, *, rank: int = 0, world_size: int = 1
) -> list[list[int]]:
    """This rank's batches of indices for `epoch`: a permutation drawn from (seed, epoch), cut
    into global batches of batch_size * world_size (an incomplete last one dropped, so every
    rank takes the same number of steps), of which rank r takes the r-th slice."""
    global_batch = batch_size * world_size
    if num_samples < global_batch:
        raise ValueError(
            f"the data set has {num_samples} images, fewer than one global batch "
            f"({batch_size} x {world_size} processes)"
        )
    gen = torch.Generator().manual_seed(seed * _MIX + epoch)
    order = torch.randperm(num_samples, generator=gen).tolist()
    steps = num_samples // global_batch
    return [
        order[s * global_batch + rank * batch_size : s * global_batch + (rank + 1) * batch_size]
        for s in range(steps)
    ]
