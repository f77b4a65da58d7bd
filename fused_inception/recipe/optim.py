"""The paper's optimisation: SGD with momentum 0.9, the learning rate multiplied by 0.96 every 8
epochs, and Polyak averaging of the weights for the model used at inference time.

The paper trains with asynchronous SGD on many machines; here it is synchronous SGD (one
process or DistributedDataParallel), the same update rule without the staleness. The paper
gives no base learning rate or weight decay; the defaults are Caffe's bvlc_googlenet solver's
(base_lr 0.01, weight_decay 0.0002, no decay on biases: its decay_mult 0).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.lr_scheduler import StepLR
from torch.optim.swa_utils import AveragedModel

MOMENTUM = 0.9
LR = 0.01
WEIGHT_DECAY = 2e-4
LR_STEP_EPOCHS = 8
LR_GAMMA = 0.96


def make_optimizer(
    model: nn.Module, lr: float = LR, momentum: float = MOMENTUM, weight_decay: float = WEIGHT_DECAY
) -> torch.optim.SGD:
    """SGD with momentum; weight decay on the weights (tensors of 2 or more dims) only, none on
    biases and BatchNorm's scales and shifts."""
    if lr <= 0 or not 0 <= momentum < 1 or weight_decay < 0:
        raise ValueError(
            f"expected lr > 0, 0 <= momentum < 1, weight_decay >= 0; got lr={lr}, "
            f"momentum={momentum}, weight_decay={weight_decay}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=lr, momentum=momentum)


def make_scheduler(
    optimizer: torch.optim.Optimizer, step_epochs: int = LR_STEP_EPOCHS, gamma: float = LR_GAMMA
) -> StepLR:
    """lr x gamma every `step_epochs` epochs: call scheduler.step() once at the end of each epoch.
    Epoch e (from 0) trains at lr * gamma ** (e // step_epochs)."""
    if step_epochs < 1 or not 0 < gamma <= 1:
        raise ValueError(f"expected step_epochs >= 1, 0 < gamma <= 1; got {step_epochs}, {gamma}")
    return StepLR(optimizer, step_size=step_epochs, gamma=gamma)


def make_averaged(model: nn.Module) -> AveragedModel:
    """Polyak averaging: torch.optim.swa_utils.AveragedModel with its default averaging, the
    arithmetic mean of every snapshot passed to update_parameters (the first one copied).

    use_buffers=True: BatchNorm's running statistics (the torchvision variant) are averaged
    with the weights, so the averaged model evaluates with statistics that belong to the
    averaged run, not with the last snapshot's. They are the mean of the snapshots' statistics,
    not the statistics of the averaged weights; the two agree when the averaged snapshots are
    close (late in training, which is where Polyak averaging is meant). torch's update_bn
    recomputes them exactly at the cost of a pass over training data: train's
    --update-bn-batches does that after training. The paper variant has no buffers.
    """
    return AveragedModel(model, use_buffers=True)
