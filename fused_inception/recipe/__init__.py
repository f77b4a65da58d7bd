"""GoogLeNet's training recipe and multi-crop evaluation (Szegedy et al. 2015, sections 6-7).

    optim:      make_optimizer (SGD, momentum 0.9), make_scheduler (lr x 0.96 every 8 epochs),
                make_averaged (Polyak averaging)
    transforms: TrainTransform (area 8-100%, aspect 3/4-4/3, random interpolation, flip,
                photometric distortion, PCA lighting), EvalTransform (1, 10 or 144 crops)
    crops:      the crop boxes, apply_boxes, multicrop_predict (mean of the crops' softmaxes)
    data:       SyntheticImages, image_folder, Augmented (reproducible augmentation),
                epoch_batches

The commands built on it: python -m fused_inception.train and python -m fused_inception.evaluate.
"""

from __future__ import annotations

from .crops import (
    CropBox,
    apply_boxes,
    center_crop_boxes,
    crop_boxes,
    multicrop_predict,
    paper_crop_boxes,
    ten_crop_boxes,
)
from .data import Augmented, SyntheticImages, epoch_batches, image_folder
from .optim import make_averaged, make_optimizer, make_scheduler
from .transforms import EvalTransform, TrainTransform

__all__ = [
    "Augmented",
    "CropBox",
    "EvalTransform",
    "SyntheticImages",
    "TrainTransform",
    "apply_boxes",
    "center_crop_boxes",
    "crop_boxes",
    "epoch_batches",
    "image_folder",
    "make_averaged",
    "make_optimizer",
    "make_scheduler",
    "multicrop_predict",
    "paper_crop_boxes",
    "ten_crop_boxes",
]
