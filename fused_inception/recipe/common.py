"""What the train and evaluate commands share: data options, the model, the device."""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.data import Dataset

from ..configs import GOOGLENET_BLOCKS
from ..models import VARIANTS, googlenet
from ..module import FusedInception
from ..swap import fuse_inception
from .data import SyntheticImages, image_folder

PAPER_SIZE = 224  # the paper variant's input size
SYNTHETIC_HW = (256, 320)  # landscape, like most ImageNet photos


def add_data_args(p: argparse.ArgumentParser, *, synthetic_images: int) -> None:
    """--data, --synthetic-images, --synthetic-classes, --synthetic-size, --device, --threads,
    --workers, --backend."""
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="an ImageFolder directory (one sub-directory of images per class); without it a "
        "synthetic, learnable data set is used",
    )
    p.add_argument("--synthetic-images", type=positive_int, default=synthetic_images, metavar="N")
    p.add_argument("--synthetic-classes", type=positive_int, default=10, metavar="C")
    p.add_argument(
        "--synthetic-size",
        type=positive_int,
        nargs=2,
        default=list(SYNTHETIC_HW),
        metavar=("H", "W"),
        help="height and width of the synthetic images (default 256 320)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch.set_num_threads")
    p.add_argument("--workers", type=non_negative_int, default=0, help="DataLoader workers (0)")
    p.add_argument("--backend", default="auto", help="FusedInception backend (auto)")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value


def open_data(args: argparse.Namespace, seed: int = 0) -> tuple[Dataset, int]:
    """(the data set, its number of classes): ImageFolder at args.data, else SyntheticImages."""
    if args.data is not None:
        dataset = image_folder(args.data)
        return dataset, len(dataset.classes)
    h, w = args.synthetic_size
    dataset = SyntheticImages(args.synthetic_images, args.synthetic_classes, h, w, seed=seed)
    return dataset, args.synthetic_classes


def check_size_and_device(
    p: argparse.ArgumentParser, args: argparse.Namespace, size: int, flag: str
) -> None:
    """Parser errors (exit 2) for the paper variant at another size than 224 and for an absent
    device; args.device becomes a torch.device."""
    if args.variant == "paper" and size != PAPER_SIZE:
        p.error(f"--variant paper needs {flag} {PAPER_SIZE} (its 7x7 average pool)")
    try:
        args.device = pick_device(args.device)
    except ValueError as e:
        p.error(str(e))


def pick_device(name: str | None) -> torch.device:
    """torch.device(name), or cuda when present, else cpu; ValueError if cuda is absent."""
    device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    return device


def build_model(
    variant: str, num_classes: int, *, fuse: bool, backend: str = "auto", **kwargs
) -> nn.Module:
    """fused_inception.models.googlenet(variant, num_classes, **kwargs), its nine blocks
    swapped for FusedInception when `fuse`."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    model = googlenet(variant, num_classes=num_classes, **kwargs)
    if fuse:
        fuse_inception(model, backend=backend)
        fused = sum(isinstance(m, FusedInception) for m in model.modules())
        if fused != len(GOOGLENET_BLOCKS):
            raise RuntimeError(f"expected {len(GOOGLENET_BLOCKS)} fused blocks, got {fused}")
    return model
