"""The 144-crop evaluation case: GoogLeNet's evaluation of one image as the paper does it (section
7: 4 scales x 3 squares x 6 crops x 2 mirrors, fused_inception.recipe.crops), eager against
fused, one call = one image = a forward pass over its 144 crops plus the mean of their softmaxes.

The model is torchvision's GoogLeNet (cases.eager_network: eval mode, no auxiliary heads, random
BN statistics); "fused_<backend>" is a copy with every block swapped. The inputs are the 144
normalised crops [144, 3, 224, 224] of two random 375x500 images (ImageNet's commonest size),
copied to fill the input rotation, cut before timing (the same for both; cutting is data
loading), in the case's layout.
Rows: block "network", mode "multicrop", batch 144 (the crops per call); images_per_s counts
images, 1 per call.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from fused_inception.bench.cases import (
    EAGER,
    LAYOUTS,
    Case,
    _network_traffic,
    eager_network,
    fused_impl_name,
    rotation_count,
)
from fused_inception.bench.timing import cycling
from fused_inception.recipe.crops import CROP_SIZE, multicrop_predict
from fused_inception.recipe.transforms import EvalTransform
from fused_inception.swap import fuse_inception

CROPS = 144
IMAGE_HW = (375, 500)
MODE = "multicrop"
DISTINCT_IMAGES = 2  # cutting 144 crops takes about 0.5 s an image on a CPU core


def multicrop_inputs(
    dtype: torch.dtype,
    device: torch.device,
    memory_format: torch.memory_format,
    gen: torch.Generator,
    crop_size: int = CROP_SIZE,
) -> list[torch.Tensor]:
    """The 144 crops [144, 3, crop_size, crop_size] of DISTINCT_IMAGES random uint8 images of
    IMAGE_HW drawn from `gen`, copied to fill the rotation (cases.rotation_count)."""
    crop = EvalTransform(CROPS, crop_size)
    images = [
        crop(torch.randint(0, 256, (3, *IMAGE_HW), dtype=torch.uint8, generator=gen))
        .to(device=device, dtype=dtype)
        .contiguous(memory_format=memory_format)
        for _ in range(DISTINCT_IMAGES)
    ]
    count = rotation_count(images[0].numel() * images[0].element_size(), device)
    return [images[i % DISTINCT_IMAGES].clone() for i in range(max(count, DISTINCT_IMAGES))]


def build_multicrop_case(
    dtype: torch.dtype,
    device: torch.device,
    layout: str,
    backends: Sequence[str],
    *,
    crop_size: int = CROP_SIZE,
    seed: int = 0,
) -> Case:
    """Eager and fused GoogLeNet evaluating one image's 144 crops per call.

    inputs: [144, 3, crop_size, crop_size] per image, in `layout`
    calls:  -> [1, 1000] mean of the crops' softmax outputs
    """
    gen = torch.Generator().manual_seed(seed)
    fmt = LAYOUTS[layout]
    eager = eager_network(gen).to(device=device, dtype=dtype, memory_format=fmt)
    models = {EAGER: eager}
    for backend in backends:
        models[fused_impl_name(backend)] = fuse_inception(copy.deepcopy(eager), backend=backend)
    inputs = multicrop_inputs(dtype, device, fmt, gen, crop_size)

    def predict(model):
        return lambda x: multicrop_predict(model, x[None])

    calls = {
        name: cycling(predict(model), inputs, start=i)
        for i, (name, model) in enumerate(models.items())
    }
    return Case(calls, (), _network_traffic(), inputs)
