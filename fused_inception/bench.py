"""The main job: throughput of FusedInception against torchvision's eager Inception block.

    python -m fused_inception.bench                 # best device present, default sizes
    python -m fused_inception.bench --device cpu --batch 8 --dtype float32 --json out.json

For each GoogLeNet block (its 224x224 spatial size), batch size, dtype and input layout
("nchw" or "channels_last"), it times torchvision's eager block and FusedInception on every
available backend side by side (interleaved, medians) and reports images/s, the speedup
against the eager block on the same input, and the achieved GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from collections.abc import Callable, Sequence

import torch

from . import __version__
from .backends import available_backends, backend_unavailable_reason
from .configs import GOOGLENET_BLOCKS, BlockConfig
from .module import FusedInception
from .reference import Inception
from .timing import median_ms_interleaved

LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def block_macs(cfg: BlockConfig, branch3_kernel: int = 3) -> int:
    """Multiply-adds of one block per image at its GoogLeNet spatial size."""
    pixels = cfg.hw * cfg.hw
    per_pixel = (
        cfg.in_channels * (cfg.ch1x1 + cfg.ch3x3red + cfg.ch5x5red + cfg.pool_proj)
        + 9 * cfg.ch3x3red * cfg.ch3x3
        + branch3_kernel**2 * cfg.ch5x5red * cfg.ch5x5
    )
    return pixels * per_pixel


def _randomize_bn(module: torch.nn.Module, gen: torch.Generator) -> None:
    # Fresh running statistics so folding is not an identity (init values are 0 and 1).
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=gen) * 0.1)


def _eager_block(cfg: BlockConfig):
    try:
        from torchvision.models.googlenet import Inception as TvInception

        return TvInception(*cfg.args()), "torchvision"
    except ImportError:
        return Inception(*cfg.args()), "reference"


def block_impls(
    cfg: BlockConfig,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    backends: Sequence[str],
    layout: str,
    seed: int = 0,
) -> dict[str, Callable[[], torch.Tensor]]:
    """The callables compared for one case: the eager block first, then FusedInception per
    backend, all computing the same block (same weights, fresh BN statistics) on one input."""
    gen = torch.Generator().manual_seed(seed)
    eager, eager_name = _eager_block(cfg)
    with torch.no_grad():
        _randomize_bn(eager, gen)
    fmt = LAYOUTS[layout]
    eager = eager.eval().to(device=device, dtype=dtype, memory_format=fmt)
    x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw, generator=gen)
    x = x.to(device=device, dtype=dtype).contiguous(memory_format=fmt)
    impls = {f"{eager_name}_eager": lambda: eager(x)}
    for b in backends:
        fused = FusedInception.from_module(eager, backend=b).eval()
        impls[f"fused_{b}"] = lambda m=fused: m(x)
    return impls


def bench_block(
    name: str,
    cfg: BlockConfig,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    backends: Sequence[str],
    repeats: int,
    min_seconds: float,
) -> list[dict]:
    """Rows for one block/batch/dtype: eager and fused, both layouts, timed side by side."""
    macs = block_macs(cfg) * batch
    rows = []
    for layout in LAYOUTS:
        impls = block_impls(cfg, batch, dtype, device, backends, layout)
        with torch.inference_mode():
            times = median_ms_interleaved(
                list(impls.values()), device, repeats=repeats, min_seconds=min_seconds
            )
        base = times[0]
        for impl, ms in zip(impls, times, strict=True):
            rows.append(
                {
                    "block": name,
                    "batch": batch,
                    "dtype": str(dtype).replace("torch.", ""),
                    "device": device.type,
                    "layout": layout,
                    "impl": impl,
                    "median_ms": round(ms, 4),
                    "images_per_s": round(batch / ms * 1e3, 2),
                    "speedup": round(base / ms, 4),
                    "gflops": round(2 * macs / ms / 1e6, 2),
                }
            )
    return rows


def summarize(rows: list[dict]) -> list[str]:
    """Geometric mean and minimum of the speedups per (impl, layout, batch, dtype)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["impl"].startswith("fused_"):
            key = (r["impl"], r["layout"], r["batch"], r["dtype"])
            groups.setdefault(key, []).append(r["speedup"])
    lines = []
    for (impl, layout, batch, dtype), s in groups.items():
        geo = math.exp(sum(math.log(v) for v in s) / len(s))
        lines.append(
            f"{impl:12s} {layout:13s} batch {batch:<4d} {dtype:9s} speedup vs eager: "
            f"geomean {geo:.2f}x, min {min(s):.2f}x over {len(s)} blocks"
        )
    return lines


def _header(device: torch.device, args: argparse.Namespace) -> str:
    if device.type == "cuda":
        dev = torch.cuda.get_device_name(device)
    else:
        dev = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return (
        f"fused_inception {__version__} | torch {torch.__version__} | python "
        f"{platform.python_version()} | device {device.type} ({dev})\n"
        f"backends: {', '.join(args.backend)} | blocks: {', '.join(args.blocks)} | "
        f"batch: {args.batch} | dtype: {args.dtype} | repeats: {args.repeats}"
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m fused_inception.bench", description=__doc__)
    p.add_argument("--device", default=None, help="cpu or cuda (default: the best present)")
    p.add_argument("--blocks", nargs="+", default=list(GOOGLENET_BLOCKS), metavar="BLOCK")
    p.add_argument("--batch", nargs="+", type=int, default=None)
    p.add_argument("--dtype", nargs="+", default=None, choices=list(DTYPES))
    p.add_argument("--backend", nargs="+", default=None, help="backends to time")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds (at least)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    p.add_argument("--quick", action="store_true", help="one small batch, few repeats")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.device = device
    unknown = [b for b in args.blocks if b not in GOOGLENET_BLOCKS]
    if unknown:
        p.error(f"unknown blocks {unknown}; choose from {list(GOOGLENET_BLOCKS)}")
    on_gpu = device.type == "cuda"
    if args.batch is None:
        args.batch = [1] if args.quick else ([1, 8, 32, 128] if on_gpu else [1, 8])
    if args.dtype is None:
        args.dtype = ["float16", "bfloat16"] if on_gpu else ["float32"]
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.backend is None:
        # On a GPU the GPU backends; the ATen-built "cpu" backend only on the CPU.
        args.backend = [b for b in available_backends() if (b == "cpu") != on_gpu]
    for b in args.backend:
        reason = backend_unavailable_reason(b)
        if reason is not None:
            p.error(f"backend {b!r} is not available: {reason}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    print(_header(device, args), flush=True)
    rows: list[dict] = []
    cases = [(b, n, d) for d in args.dtype for n in args.batch for b in args.blocks]
    min_seconds = 0.0 if args.quick else 1.0
    fmt = "{:>5s} {:>5d} {:>8s} {:>13s} {:>18s} {:>10.3f} {:>10.1f} {:>8.2f}x {:>8.1f}"
    print(
        f"{'block':>5s} {'batch':>5s} {'dtype':>8s} {'layout':>13s} {'impl':>18s} "
        f"{'median ms':>10s} {'images/s':>10s} {'speedup':>9s} {'GFLOP/s':>8s}"
    )
    for i, (block, batch, dtype) in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] block {block}, batch {batch}, {dtype}", file=sys.stderr)
        new = bench_block(
            block,
            GOOGLENET_BLOCKS[block],
            batch,
            DTYPES[dtype],
            device,
            args.backend,
            args.repeats,
            min_seconds,
        )
        for r in new:
            print(
                fmt.format(
                    r["block"],
                    r["batch"],
                    r["dtype"],
                    r["layout"],
                    r["impl"],
                    r["median_ms"],
                    r["images_per_s"],
                    r["speedup"],
                    r["gflops"],
                ),
                flush=True,
            )
        rows.extend(new)
    print()
    for line in summarize(rows):
        print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
