"""Top-1/top-5 error and throughput of GoogLeNet with 1, 10 or 144 crops per image, the fused
model and the eager one side by side.

    python -m fused_inception.evaluate --crops 1 10 144                  # synthetic data
    python -m fused_inception.evaluate --data /imagenet/val --crops 144 --weights googlenet.pth
    python -m fused_inception.evaluate --data /imagenet/val --checkpoint ckpt/checkpoint.pt

Weights: --weights PATH is a torchvision GoogLeNet state_dict (torch.save of
torchvision.models.googlenet(...).state_dict(), e.g. of the ImageNet weights); it loads into
the torchvision variant (the auxiliary heads' keys may be absent) with transform_input=True,
which torchvision's ImageNet weights expect (--no-transform-input for weights trained
otherwise). --checkpoint PATH is a checkpoint of python -m fused_inception.train: its Polyak-
averaged model (--no-average: the last weights). Without either, random weights (a smoke run).

Per image, the prediction is the mean of the crops' softmax outputs (fused_inception.recipe.
crops). images/s counts the models' forward passes only (the crops are cut beforehand, the same
for both), timed per batch with the benchmark's timer. The ImageFolder's class indices must be
the model's (ImageNet's sorted synset folders for torchvision's weights).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .bench.timing import first_call_seconds
from .models import VARIANTS
from .progress import Progress
from .recipe.common import (
    add_data_args,
    build_model,
    check_size_and_device,
    open_data,
    positive_int,
)
from .recipe.crops import CROP_COUNTS, CROP_SIZE, multicrop_predict
from .recipe.transforms import EvalTransform
from .swap import fuse_inception

IMPLS = ("unfused", "fused")
TOP_K = 5
# Images per batch by default: about 64 crops a batch.
CROPS_PER_BATCH = 64


class EvalResult(NamedTuple):
    """rows: one dict per (crops, impl) -- crops, variant ("fused"/"unfused"), images,
    top1_error, top5_error (fractions), images_per_s, seconds (forward passes only);
    probs: (impl, crops) -> [images, num_classes] averaged probabilities."""

    rows: list[dict]
    probs: dict[tuple[str, int], Tensor]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m fused_inception.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--crops", type=int, nargs="+", choices=CROP_COUNTS, default=[1], help="1, 10, 144"
    )
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default=None,
        help="default: paper; torchvision with --weights; the checkpoint's with --checkpoint",
    )
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--weights", default=None, metavar="PATH", help="torchvision state_dict")
    weights.add_argument("--checkpoint", default=None, metavar="PATH", help="a train checkpoint")
    p.add_argument("--no-average", action="store_true", help="checkpoint: not the averaged model")
    p.add_argument("--no-transform-input", action="store_true", help="see --weights")
    p.add_argument("--batch-size", type=positive_int, default=None, help="images per batch")
    p.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    p.add_argument("--crop-size", type=positive_int, default=CROP_SIZE, help="crops (224)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    add_data_args(p, synthetic_images=8)
    args = p.parse_args(argv)
    if args.weights is not None and args.variant == "paper":
        p.error("--weights loads torchvision's GoogLeNet: use --variant torchvision")
    if args.variant is None and args.weights is None and args.checkpoint is None:
        args.variant = "paper"
    check_size_and_device(p, args, args.crop_size, "--crop-size")
    return args


def _load_weights(args: argparse.Namespace, data_classes: int) -> tuple[str, int, dict | None]:
    """(variant, num_classes, state_dict or None) from --weights / --checkpoint / the data."""
    if args.checkpoint is not None:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        if args.variant not in (None, ckpt["variant"]):
            raise ValueError(
                f"the checkpoint holds variant {ckpt['variant']!r}, not {args.variant!r}"
            )
        if args.no_average:
            state = ckpt["model"]
        else:  # AveragedModel's state_dict: the model under "module.", plus n_averaged
            prefix = "module."
            state = {
                k[len(prefix) :]: v for k, v in ckpt["averaged"].items() if k.startswith(prefix)
            }
        return ckpt["variant"], ckpt["num_classes"], state
    if args.weights is not None:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise ValueError(f"--weights {args.weights}: expected a state_dict with fc.weight")
        return "torchvision", state["fc.weight"].shape[0], state
    return args.variant or "paper", data_classes, None


def build_models(args: argparse.Namespace, data_classes: int) -> dict[str, nn.Module]:
    """{"unfused": the eager model, "fused": a copy with FusedInception blocks}, eval mode."""
    variant, num_classes, state = _load_weights(args, data_classes)
    transform_input = args.weights is not None and not args.no_transform_input
    model = build_model(variant, num_classes, fuse=False, transform_input=transform_input)
    if state is not None:
        missing, unexpected = model.load_state_dict(state, strict=False)
        # torchvision drops the auxiliary heads of its ImageNet weights: they may be absent.
        missing = [k for k in missing if not k.startswith(("aux1.", "aux2."))]
        if missing or unexpected:
            raise ValueError(
                f"the weights do not fit the {variant} GoogLeNet: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
    model = model.to(args.device).eval()
    fused = fuse_inception(copy.deepcopy(model), backend=args.backend).eval()
    return {"unfused": model, "fused": fused}


class _Cropped(Dataset):
    def __init__(self, dataset: Dataset, transform: EvalTransform) -> None:
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


def evaluate(args: argparse.Namespace) -> EvalResult:
    """Evaluate as `args` (parse_args) says; see the module docstring."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dataset, data_classes = open_data(args)
    if args.limit is not None:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    models = build_models(args, data_classes)
    num_classes = models["unfused"].fc.out_features
    rows, probs = [], {}
    for crops in args.crops:
        batch = args.batch_size or max(1, CROPS_PER_BATCH // crops)
        data = _Cropped(dataset, EvalTransform(crops, args.crop_size))
        loader = DataLoader(data, batch_size=batch, num_workers=args.workers)
        seconds = dict.fromkeys(IMPLS, 0.0)
        outputs: dict[str, list[Tensor]] = {impl: [] for impl in IMPLS}
        targets = []
        progress = Progress(len(loader), f"{crops} crops ", every=max(1, len(loader) // 10))
        with torch.inference_mode():
            for i, (x, target) in enumerate(loader):
                if int(target.max()) >= num_classes:
                    raise ValueError(f"label {int(target.max())} >= {num_classes} classes")
                x = x.to(args.device)
                if i == 0:  # untimed (one crop): the fused blocks fold and pack their weights
                    for model in models.values():
                        multicrop_predict(model, x[:1, :1])
                for impl, model in models.items():
                    out = []
                    seconds[impl] += first_call_seconds(
                        lambda m=model, o=out, x=x: o.append(multicrop_predict(m, x)), args.device
                    )
                    outputs[impl].append(out[0].cpu())
                targets.append(target)
                progress.update(1, x.shape[0])
        progress.close()
        target = torch.cat(targets)
        for impl in IMPLS:
            p = torch.cat(outputs[impl])
            probs[(impl, crops)] = p
            rows.append(_row(impl, crops, p, target, seconds[impl]))
    return EvalResult(rows, probs)


def _row(impl: str, crops: int, probs: Tensor, target: Tensor, seconds: float) -> dict:
    top = probs.topk(min(TOP_K, probs.shape[1]), dim=1).indices
    hit = top == target[:, None]
    return {
        "variant": impl,
        "crops": crops,
        "images": len(target),
        "top1_error": 1 - hit[:, 0].float().mean().item(),
        "top5_error": 1 - hit.any(dim=1).float().mean().item(),
        "images_per_s": len(target) / seconds if seconds > 0 else float("inf"),
        "seconds": seconds,
    }


def format_table(result: EvalResult) -> str:
    """The rows as a table, then the largest difference between fused and unfused predictions."""
    head = ("variant", "crops", "images", "top-1 err", "top-5 err", "images/s")
    lines = [" ".join(f"{h:>{w}s}" for h, w in zip(head, (8, 5, 6, 9, 9, 9), strict=True))]
    for r in result.rows:
        lines.append(
            f"{r['variant']:>8s} {r['crops']:>5d} {r['images']:>6d} {r['top1_error']:>9.2%} "
            f"{r['top5_error']:>9.2%} {r['images_per_s']:>9.2f}"
        )
    crops = sorted({c for _, c in result.probs})
    diff = max(
        (result.probs[("fused", c)] - result.probs[("unfused", c)]).abs().max().item()
        for c in crops
    )
    lines.append(f"max |fused - unfused| of the averaged probabilities: {diff:.2e}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: evaluate and print the table; 0 on success, 1 on a data error."""
    args = parse_args(argv)
    try:
        result = evaluate(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result.rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
