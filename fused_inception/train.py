"""Train GoogLeNet with the paper's recipe on the fused blocks.

    python -m fused_inception.train                                   # synthetic data, CPU or GPU
    python -m fused_inception.train --data /imagenet/train --epochs 90 --checkpoint-dir ckpt
    torchrun --nproc-per-node 8 -m fused_inception.train --data /imagenet/train ...
    python -m fused_inception.train --resume ckpt/checkpoint.pt ...

The recipe (fused_inception.recipe): SGD with momentum 0.9, lr x 0.96 every 8 epochs (per
epoch), weight decay on the weights; Polyak averaging of the weights (the averaged model is the
one to evaluate, stored in the checkpoint as "averaged"); crops of 8-100% of the area with
aspect 3/4-4/3, random interpolation, flips, photometric distortion and PCA lighting; the loss
L_main + 0.3 (L_aux1 + L_aux2). The nine Inception blocks are FusedInception (--no-fuse: the
eager blocks). Under torchrun it runs DistributedDataParallel (nccl on GPUs, gloo on the CPU);
--batch-size is per process.

Checkpoints (--checkpoint-dir DIR: DIR/checkpoint.pt, replaced atomically) hold the model, the
optimizer, the scheduler, the averaged model, the position (epoch, batch, step) and every
rank's random generator state; the data order and each sample's augmentation depend only on
(seed, epoch, index), so a resumed run takes exactly the steps the uninterrupted one would.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, update_bn
from torch.utils.data import DataLoader

from .models import VARIANTS, googlenet_loss
from .progress import Progress
from .recipe import optim
from .recipe.common import (
    PAPER_SIZE,
    add_data_args,
    build_model,
    check_size_and_device,
    open_data,
    positive_int,
)
from .recipe.data import Augmented, epoch_batches
from .recipe.transforms import TrainTransform

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class TrainResult(NamedTuple):
    """losses: this process's loss per step taken in this run; step: global steps done."""

    losses: list[float]
    step: int
    model: nn.Module
    averaged: AveragedModel


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fused_inception.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--variant", choices=VARIANTS, default="paper")
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--batch-size", type=positive_int, default=32, help="per process (32)")
    p.add_argument(
        "--image-size", type=positive_int, default=PAPER_SIZE, help="training crops (224)"
    )
    p.add_argument("--lr", type=float, default=optim.LR, help=f"base rate ({optim.LR})")
    p.add_argument("--momentum", type=float, default=optim.MOMENTUM)
    p.add_argument("--weight-decay", type=float, default=optim.WEIGHT_DECAY)
    p.add_argument("--lr-step-epochs", type=positive_int, default=optim.LR_STEP_EPOCHS)
    p.add_argument("--lr-gamma", type=float, default=optim.LR_GAMMA)
    p.add_argument("--aux-weight", type=float, default=0.3, help="auxiliary losses' weight")
    p.add_argument(
        "--average-start", type=int, default=0, metavar="EPOCH", help="Polyak averaging from"
    )
    p.add_argument(
        "--update-bn-batches",
        type=int,
        default=0,
        metavar="N",
        help="after training, recompute the averaged model's BatchNorm statistics on N "
        "training batches (torch's update_bn; default 0: keep the averaged statistics)",
    )
    p.add_argument("--no-fuse", action="store_true", help="train the eager blocks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR")
    p.add_argument(
        "--checkpoint-every", type=int, default=0, metavar="STEPS", help="also every N steps"
    )
    p.add_argument("--resume", default=None, metavar="PATH", help="a checkpoint to continue")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="STEPS",
        help="stop (and checkpoint) after this many steps in all, e.g. to fit a time limit; "
        "--resume continues",
    )
    p.add_argument("--log-every", type=positive_int, default=10, metavar="STEPS")
    add_data_args(p, synthetic_images=256)
    args = p.parse_args(argv)
    if args.resume is not None and not os.path.isfile(args.resume):
        p.error(f"--resume {args.resume}: no such file")
    check_size_and_device(p, args, args.image_size, "--image-size")
    return args


def _distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, this process's device); joins the process group torchrun describes
    (nccl for CUDA, gloo for the CPU) when WORLD_SIZE > 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def _rng_state(device: torch.device) -> dict:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class _Run:
    """The training state that a checkpoint holds."""

    def __init__(self, args: argparse.Namespace, num_classes: int, device: torch.device) -> None:
        self.args, self.device = args, device
        self.model = build_model(
            args.variant, num_classes, fuse=not args.no_fuse, backend=args.backend
        ).to(device)
        self.optimizer = optim.make_optimizer(self.model, args.lr, args.momentum, args.weight_decay)
        self.scheduler = optim.make_scheduler(self.optimizer, args.lr_step_epochs, args.lr_gamma)
        self.averaged = optim.make_averaged(self.model)
        self.epoch = self.batch = self.step = 0

    def state(self, rng: list[dict]) -> dict:
        return {
            "format": CHECKPOINT_FORMAT,
            "variant": self.args.variant,
            "num_classes": self.model.fc.out_features,
            "epoch": self.epoch,
            "batch": self.batch,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "averaged": self.averaged.state_dict(),
            "rng": rng,
        }

    def load(self, ckpt: dict, rank: int, world: int) -> None:
        if ckpt.get("format") != CHECKPOINT_FORMAT or ckpt["variant"] != self.args.variant:
            raise ValueError(
                f"checkpoint: expected format {CHECKPOINT_FORMAT} of variant "
                f"{self.args.variant!r}, got format {ckpt.get('format')} of "
                f"{ckpt.get('variant')!r}"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.averaged.load_state_dict(ckpt["averaged"])
        self.epoch, self.batch, self.step = ckpt["epoch"], ckpt["batch"], ckpt["step"]
        if len(ckpt["rng"]) != world:
            raise ValueError(
                f"checkpoint written by {len(ckpt['rng'])} processes, resumed by {world}"
            )
        _set_rng_state(ckpt["rng"][rank], self.device)

    def save(self, rank: int, world: int) -> None:
        if self.args.checkpoint_dir is None:
            return
        rng = [_rng_state(self.device)]
        if world > 1:
            gathered: list = [None] * world
            dist.all_gather_object(gathered, rng[0])
            rng = gathered
        if rank == 0:
            os.makedirs(self.args.checkpoint_dir, exist_ok=True)
            path = os.path.join(self.args.checkpoint_dir, CHECKPOINT_NAME)
            torch.save(self.state(rng), path + ".tmp")
            os.replace(path + ".tmp", path)


def train(args: argparse.Namespace) -> TrainResult:
    """Run the training that `args` (parse_args) describes; see the module docstring."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rank, world, device = _distributed(args.device)
    torch.manual_seed(args.seed + rank)  # dropout; overwritten by a checkpoint's state
    dataset, num_classes = open_data(args, seed=args.seed)
    run = _Run(args, num_classes, device)
    if args.resume is not None:
        run.load(torch.load(args.resume, map_location=device, weights_only=False), rank, world)
    net = DistributedDataParallel(run.model) if world > 1 else run.model
    data = Augmented(dataset, TrainTransform(args.image_size), args.seed)
    steps_per_epoch = len(_batches(args, len(dataset), 0, rank, world))
    total = args.epochs * steps_per_epoch
    if args.stop_after is not None:
        total = min(total, args.stop_after)
    stream = sys.stderr if rank == 0 else io.StringIO()  # one progress line, from rank 0
    progress = Progress(total, stream=stream, every=args.log_every)
    progress.done = run.step
    losses: list[float] = []
    stopped = False
    while run.epoch < args.epochs and not stopped:
        batches = _batches(args, len(dataset), run.epoch, rank, world)
        data.set_epoch(run.epoch)
        loader = _loader(data, batches[run.batch :], args.workers)
        progress.prefix = f"epoch {run.epoch + 1}/{args.epochs} "
        for x, target in loader:
            if args.stop_after is not None and run.step >= args.stop_after:
                stopped = True
                break
            loss = _step(run, net, x.to(device), target.to(device))
            losses.append(loss)
            progress.update(1, x.shape[0] * world, loss=loss, lr=run.scheduler.get_last_lr()[0])
            if args.checkpoint_every and run.step % args.checkpoint_every == 0:
                run.save(rank, world)
        else:
            run.epoch, run.batch = run.epoch + 1, 0
            run.scheduler.step()
        run.save(rank, world)
    progress.close()
    if args.update_bn_batches > 0 and not stopped:
        _update_bn(run, data, rank, world)
        run.save(rank, world)
    if world > 1:
        dist.barrier()
    return TrainResult(losses, run.step, run.model, run.averaged)


def _batches(args: argparse.Namespace, size: int, epoch: int, rank: int, world: int) -> list:
    return epoch_batches(size, args.batch_size, args.seed, epoch, rank=rank, world_size=world)


def _loader(data: Augmented, batches: list[list[int]], workers: int) -> DataLoader:
    # A private generator: a loader draws its workers' base seed when it starts an epoch, which
    # from torch's global generator would shift the dropout draws of a resumed run.
    return DataLoader(data, batch_sampler=batches, num_workers=workers, generator=torch.Generator())


def _step(run: _Run, net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> float:
    """One SGD step of the training loss; the averaged model takes the new weights."""
    run.model.train()
    loss = googlenet_loss(net(x), target, aux_weight=run.args.aux_weight)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    run.optimizer.step()
    if run.epoch >= run.args.average_start:
        run.averaged.update_parameters(run.model)
    run.step += 1
    run.batch += 1
    return loss.item()


def _update_bn(run: _Run, data: Augmented, rank: int, world: int) -> None:
    batches = _batches(run.args, len(data), run.args.epochs, rank, world)
    data.set_epoch(run.args.epochs)
    loader = _loader(data, batches[: run.args.update_bn_batches], run.args.workers)
    update_bn((x for x, _ in loader), run.averaged, device=run.device)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: train, print a summary; 0 on success."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        result = train(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        if dist.is_initialized() and "WORLD_SIZE" in os.environ:
            dist.destroy_process_group()
    if result.losses:
        seconds = time.perf_counter() - start
        print(
            f"trained {len(result.losses)} steps (step {result.step} in all) in {seconds:.1f} s; "
            f"loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
