"""The main job: throughput of FusedInception against torchvision's Inception block and GoogLeNet,
eager and under torch.compile, with each time set against the device's roofline.

    python -m fused_inception.bench                 # best device present, default cases
    python -m fused_inception.bench --device cpu --batch 8 --dtype float32 --json out.json
    python -m fused_inception.bench --device cuda --plot speedups.svg

For each GoogLeNet block (3a ... 5b, at their 224x224 sizes) and the whole network, batch size,
dtype and input layout ("nchw" or "channels_last"), it times side by side (interleaved calls,
warm-up, medians, rotated inputs; fused_inception.bench.timing) torchvision's eager module,
FusedInception on every available backend and torch.compile of torchvision's module, and
reports images/s, the speedup against the eager module on the same input, the achieved TFLOP/s
and the roofline bound (fused_inception.bench.roofline, fused_inception.bench.peaks).

It also times training steps of both forms, the paper's and torchvision's
(fused_inception.bench.train), with the bytes each step saves for backward: part of the default
run (--no-train leaves them out, --train-only times nothing else). Their torch.compile rows use
mode "default" unless --compile names the modes (max-autotune on training graphs would take far
too long to compile); compiling the forward and backward graphs is much of their cost.
With --multicrop (or --multicrop-only) it also times the paper's 144-crop evaluation of one
image, eager against fused (fused_inception.bench.multicrop).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence

import torch

from fused_inception import __version__
from fused_inception.backends import backend_unavailable_reason
from fused_inception.bench.cases import (
    COMPILE_MODES,
    DTYPES,
    EAGER,
    LAYOUTS,
    MIN_ROTATION_BYTES,
    NETWORK,
    ORT,
    ORT_SPINNING,
    Case,
    build_case,
    default_dtypes,
    dtype_name,
    impl_names,
    ort_unavailable_reason,
    timed_backends,
)
from fused_inception.bench.multicrop import CROPS, build_multicrop_case
from fused_inception.bench.multicrop import MODE as MULTICROP
from fused_inception.bench.peaks import Peak, device_peak
from fused_inception.bench.roofline import Traffic, roofline_fields, significant
from fused_inception.bench.timing import (
    first_call_seconds,
    samples_ms_interleaved,
)
from fused_inception.bench.train import (
    BASELINES,
    FORMS,
    TRAIN_MACS_FACTOR,
    build_train_case,
    train_impl_names,
)
from fused_inception.configs import GOOGLENET_BLOCKS

__all__ = ["main", "parse_args", "compile_modes", "case_rows", "summarize"]

BLOCK_CHOICES = (*GOOGLENET_BLOCKS, NETWORK)
# The training rows' torch.compile modes unless --compile names them.
TRAIN_DEFAULT_COMPILE = ("default",)
# The network costs about 30 blocks per call: fewer timed rounds keep a run within minutes.
NETWORK_REPEATS_DIVISOR = 3


# Segments of a case's interleaved rounds where it has rows timed alone (onnxruntime_spinning):
# those rows are timed before, between and after the segments, so that each of their timings
# is next to some of the others' calls and a change of the host's speed (a shared cloud host's
# moves by up to 2x within minutes) reaches both sides alike, where one timing before and one
# after the rounds left the middle of the case to the other rows alone.
ALONE_SEGMENTS = 3
# Calls of each implementation in a row per timed round on the CPU (see --run-length).
CPU_RUN_LENGTH = 10


def network_repeats(repeats: int) -> int:
    """Timed rounds for the network case: a third of the blocks', at least 3 (or `repeats`)."""
    return min(repeats, max(3, repeats // NETWORK_REPEATS_DIVISOR))


def case_names(case) -> list[str]:
    """A case's implementations in the order of _time_case's times: its calls', then those it
    times alone (Case.alone)."""
    return [*case.calls, *(name for name, _ in case.alone)]


def case_rows(
    block: str,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    layout: str,
    case: Case,
    times_ms: Sequence[float],
    compile_s: dict[str, float],
    peak: Peak | None,
    *,
    mode: str = "inference",
    form: str = "torchvision",
    saved_bytes: dict[str, int] | None = None,
) -> list[dict]:
    """The rows of one timed case, one per implementation, with the roofline fields.

    times_ms:    median ms per call, in the order of case_names(case) (the eager module first)
    compile_s:   seconds spent compiling, for the implementations of case.compiled
    peak:        the device's peak rates (None: roofline fields are None)
    mode:        "inference" (a forward) or "train" (a training step, fused_inception.bench.train:
                 flops count TRAIN_MACS_FACTOR x the forward's, no roofline)
    form:        "torchvision" (BN units, 3x3 branch3) or "paper" (conv + bias, 5x5)
    saved_bytes: per implementation, the bytes a training step saves for backward
    """
    traffic: Traffic = case.traffic
    if mode == "train":
        traffic = traffic._replace(macs_per_image=traffic.macs_per_image * TRAIN_MACS_FACTOR)
        peak = None
    roof = roofline_fields(traffic, batch, dtype, peak)
    if mode == "train":  # a step's bytes moved are not modelled
        roof.update(bytes_fused=None, bytes_unfused=None)
    base = times_ms[0]
    rows = []
    for impl, ms in zip(case_names(case), times_ms, strict=True):
        fraction = None if peak is None else significant(roof["bound_ms_fused"] / ms)
        compiled = compile_s.get(impl)
        rows.append(
            {
                "mode": mode,
                "form": form,
                "block": block,
                "batch": batch,
                "dtype": dtype_name(dtype),
                "device": device.type,
                "layout": layout,
                "impl": impl,
                "median_ms": round(ms, 4),
                "images_per_s": significant(batch / ms * 1e3),
                "speedup": round(base / ms, 4),
                "tflops": significant(roof["flops"] / ms / 1e9),
                "compile_s": None if compiled is None else round(compiled, 2),
                "saved_bytes": None if saved_bytes is None else saved_bytes[impl],
                **roof,
                "roofline_fraction": fraction,
            }
        )
    return rows


def summarize(rows: list[dict]) -> list[str]:
    """Per (mode, form, impl, layout, batch, dtype): geometric mean and minimum of the blocks'
    speedups, and the network's speedup. Training rows' lines start with "train <form>"."""
    groups: dict[tuple, dict[str, float]] = {}
    for r in rows:
        mode, form = r.get("mode", "inference"), r.get("form", "torchvision")
        if r["impl"] != (BASELINES[form] if mode == "train" else EAGER):
            key = (mode, form, r["impl"], r["layout"], r["batch"], r["dtype"])
            groups.setdefault(key, {})[r["block"]] = r["speedup"]
    names = {
        key: {"train": f"train {key[1]} {key[2]}", MULTICROP: f"{CROPS}-crop {key[2]}"}.get(
            key[0], key[2]
        )
        for key in groups
    }
    width = max([32, *map(len, names.values())])  # one column, training names included
    lines = []
    for key, by_block in groups.items():
        _, _, _, layout, batch, dtype = key
        text = f"{names[key]:{width}s} {layout:13s} batch {batch:<4d} {dtype:9s} speedup vs eager:"
        blocks = {b: s for b, s in by_block.items() if b != NETWORK}
        if blocks:
            geo = math.exp(sum(math.log(v) for v in blocks.values()) / len(blocks))
            worst = min(blocks, key=blocks.get)
            text += (
                f" geomean {geo:.2f}x, min {blocks[worst]:.2f}x ({worst}) over {len(blocks)} blocks"
            )
        if NETWORK in by_block:
            text += f"{';' if blocks else ''} network {by_block[NETWORK]:.2f}x"
        lines.append(text)
    return lines


def _versions() -> str:
    parts = [f"fused_inception {__version__}", f"torch {torch.__version__}"]
    for name in ("torchvision", "triton"):
        try:  # from the installed metadata: importing triton only for this costs a second
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} absent")
    parts.append(f"CUDA {torch.version.cuda or 'none'} (torch build)")
    if torch.cuda.is_available():
        parts.append(f"cuDNN {torch.backends.cudnn.version()}")
    parts.append(f"python {platform.python_version()}")
    return " | ".join(parts)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_text(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return (
            f"cuda: {p.name} (sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
            f"{p.total_memory / 2**30:.0f} GiB)"
        )
    load = os.getloadavg()
    text = (
        f"cpu: {_cpu_model()} ({os.cpu_count()} logical cores, torch threads "
        f"{torch.get_num_threads()}; load average {' '.join(f'{v:.1f}' for v in load)})"
    )
    if load[0] > (os.cpu_count() or 1) - 0.5:
        # Other processes on these cores stall the thread pool's barriers: times swell, by
        # different factors for different implementations.
        text += "\nwarning: the cores are busy with other processes; times will be inflated"
    return text


def _peak_text(peak: Peak | None, source: str, dtypes: Sequence[str]) -> str:
    if peak is None:
        return f"peak rates: {source}"
    rates = ", ".join(f"{peak.tflops(DTYPES[d]):.3g} TFLOP/s {d}" for d in dtypes)
    return f"peak rates: {rates}, {peak.gbps:.4g} GB/s memory -- {source}"


def compile_modes(
    given: Sequence[str] | None, *, no_compile: bool, quick: bool, on_gpu: bool
) -> tuple[list[str], list[str]]:
    """The torch.compile modes of the inference rows and of the training rows.

    given:      --compile's modes (None: not passed)
    no_compile: --no-compile; quick: --quick (no compile rows unless --compile is given)
    on_gpu:     the device is a GPU (the inference rows then default to every mode)

    Unless --compile names them, the training rows use only "default": compiling forward and
    backward graphs is their main cost, and max-autotune would multiply it.
    """
    if no_compile or (quick and given is None):
        return [], []
    if given is not None:
        return list(given), list(given)
    return (list(COMPILE_MODES) if on_gpu else ["default"]), list(TRAIN_DEFAULT_COMPILE)


def header(args: argparse.Namespace, impls: Sequence[str], peak_line: str) -> str:
    """What the run measured with: versions, device, peak rates, settings."""
    device = args.device
    return "\n".join(
        [
            _versions(),
            f"device: {_device_text(device)}",
            peak_line,
            f"cases: {', '.join(args.blocks) if args.inference or args.train else NETWORK} | "
            f"dtype {args.dtype}",
            *(_inference_header(args, impls) if args.inference else []),
            *(_train_header(args) if args.train else []),
            *(["training steps: left out (--no-train)"] if args.no_train else []),
            *([_MULTICROP_HEADER] if args.multicrop else []),
            *(
                [f"allocator: freed heap memory kept (keep_freed_memory: {args.kept_memory})"]
                if args.keep_freed_memory
                else []
            ),
            f"timing: {'CUDA events' if device.type == 'cuda' else 'perf_counter'} per call, "
            f"{args.warmup} warm-up rounds, median of >= {args.repeats} interleaved rounds "
            f"of {_calls_text(args.run_length)} "
            f"(network >= {network_repeats(args.repeats)}) and >= {args.min_seconds} s per "
            f"case; inputs rotated over >= {MIN_ROTATION_BYTES // 2**20} MiB; compilation "
            "timed apart",
        ]
    )


def _calls_text(run_length: int) -> str:
    return "one call each" if run_length == 1 else f"{run_length} calls in a row each"


_MULTICROP_HEADER = (
    f"{CROPS}-crop evaluation: torchvision's GoogLeNet, one image per call = a forward pass "
    f"over its {CROPS} crops (batch {CROPS}) + the mean of their softmaxes; images/s counts images"
)


def _inference_header(args: argparse.Namespace, impls: Sequence[str]) -> list[str]:
    skipped = {reason for reason in args.ort_skipped.values() if reason is not None}
    ort = (
        f"{ORT}: the same eager module exported once per case (ONNX opset 17), NCHW numpy "
        f"input, {torch.get_num_threads()} intra-op threads that do not spin; export + session "
        "seconds in compile_s"
        + (
            f"; {ORT_SPINNING}: the same model, ONNX Runtime's default (spinning) threads, "
            f"timed alone before, between and after {ALONE_SEGMENTS} segments of the "
            "interleaved rounds"
            if ORT_SPINNING in impls
            else ""
        )
        if args.onnxruntime
        else f"no {ORT}"
    )
    if skipped:
        ort += f" ({'; '.join(sorted(skipped))})"
    return [
        f"forward (inference): batch {' '.join(map(str, args.batch))} | layouts "
        f"{', '.join(LAYOUTS)} | {', '.join(impls)}",
        ort,
    ]


def _train_header(args: argparse.Namespace) -> list[str]:
    forms = "; ".join(
        f"{form}: {', '.join(train_impl_names(form, args.backend, args.train_compile))}"
        for form in args.forms
    )
    included = " only" if args.train_only else " included (--no-train leaves them out)"
    return [
        f"training steps{included}: batch "
        f"{' '.join(map(str, args.train_batch))} | layouts {', '.join(args.train_layouts)} | "
        f"{forms}; 16-bit dtypes under torch.autocast (float32 weights); saved MiB: distinct "
        "storages saved for backward, parameters left out",
    ]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line and fill in the device-dependent defaults."""
    p = argparse.ArgumentParser(
        prog="python -m fused_inception.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    p.add_argument(
        "--blocks",
        nargs="+",
        default=None,
        choices=BLOCK_CHOICES,
        metavar="BLOCK",
        help=f"cases among {', '.join(BLOCK_CHOICES)} (default: all)",
    )
    p.add_argument("--no-network", action="store_true", help="leave the whole network out")
    p.add_argument("--batch", nargs="+", type=int, default=None, help="GPU 1 8 32 128, CPU 1 8")
    p.add_argument("--dtype", nargs="+", default=None, choices=list(DTYPES))
    p.add_argument("--backend", nargs="+", default=None, help="FusedInception backends to time")
    p.add_argument(
        "--compile",
        nargs="+",
        default=None,
        choices=COMPILE_MODES,
        metavar="MODE",
        help="torch.compile modes of torchvision's block and of the training steps' eager "
        "modules (default: the forward's default and max-autotune on a GPU, default on the "
        "CPU; the training steps' default only; none with --quick)",
    )
    p.add_argument("--no-compile", action="store_true", help="no torch.compile baseline")
    p.add_argument(
        "--no-onnxruntime",
        action="store_true",
        help="no ONNX Runtime baseline (default: included where onnxruntime is installed and "
        "the device is the CPU, or a GPU with ONNX Runtime's CUDAExecutionProvider)",
    )
    p.add_argument(
        "--compile-network",
        action="store_true",
        help="compile the whole network too (off by default: about 140 s per layout and batch "
        "on a 2-core CPU)",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="time training steps too: the default, kept for compatibility (with "
        "--multicrop-only: the 144-crop evaluation and the training steps)",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="leave out the training steps (forward, backward; the network also an SGD step) "
        "of both forms, the paper's (no BN, 5x5) and torchvision's (BN in training mode), "
        "which the default run times; their compile rows use mode default unless --compile "
        "is given",
    )
    p.add_argument("--train-only", action="store_true", help="only the training steps")
    p.add_argument(
        "--forms", nargs="+", default=list(FORMS), choices=FORMS, help="training forms (both)"
    )
    p.add_argument(
        "--multicrop",
        action="store_true",
        help=f"also time the paper's {CROPS}-crop evaluation of one image (the network at batch "
        f"{CROPS}), eager and fused",
    )
    p.add_argument(
        "--multicrop-only",
        action="store_true",
        help=f"only the {CROPS}-crop evaluation (implies --multicrop)",
    )
    p.add_argument(
        "--multicrop-layouts",
        nargs="+",
        default=list(LAYOUTS),
        choices=list(LAYOUTS),
        help=f"input layouts of the {CROPS}-crop evaluation (default both)",
    )
    p.add_argument(
        "--train-layouts",
        nargs="+",
        default=["channels_last"],
        choices=list(LAYOUTS),
        help="input layouts of the training steps (default channels_last)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the run (default: torch's). On cores shared with other "
        "busy processes, 1 avoids the thread pool's barrier stalls that swell multi-threaded "
        "times by different factors per implementation",
    )
    p.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="call fused_inception.memory.keep_freed_memory() first (glibc keeps freed heap "
        "memory, as ONNX Runtime's arena does; process-wide: every row gets it)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timed rounds per case (at least)")
    p.add_argument(
        "--run-length",
        type=int,
        default=None,
        metavar="K",
        help="calls of each implementation in a row per round (default: 10 on the CPU, as in "
        "a loop that serves one model; 1 on a GPU and with --quick). With 1 on the CPU, torch's "
        "OpenMP threads still spin from the call before when ONNX Runtime's call starts and "
        "take its cores (2x its time at batch 8 on 2 cores, measured)",
    )
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    p.add_argument("--plot", default=None, metavar="PATH", help="write a speedup chart (.svg)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="batch 1, 3 rounds, no minimum time, no torch.compile unless --compile is given",
    )
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    args.device = device
    on_gpu = device.type == "cuda"
    if args.blocks is None:
        args.blocks = list(BLOCK_CHOICES)
    if args.no_network:
        args.blocks = [b for b in args.blocks if b != NETWORK]
    if args.no_train and (args.train or args.train_only):
        flag = "--train-only" if args.train_only else "--train"
        p.error(f"--no-train and {flag} exclude each other: give one of them")
    if args.train_only and args.multicrop_only:
        p.error(
            "--train-only and --multicrop-only exclude each other: use --train-only --multicrop"
        )
    # Training steps are in the default run; --multicrop-only times only the multi-crop rows
    # (and the training steps where --train asks for them, as before they were the default).
    args.train = args.train_only or (args.train if args.multicrop_only else not args.no_train)
    args.multicrop = args.multicrop or args.multicrop_only
    args.inference = not (args.train_only or args.multicrop_only)
    # Training steps: batch 32 on a GPU, 8 on the CPU, unless --batch (or --quick) says.
    args.train_batch = args.batch or ([1] if args.quick else ([32] if on_gpu else [8]))
    if args.batch is None:
        args.batch = [1] if args.quick else ([1, 8, 32, 128] if on_gpu else [1, 8])
    if args.dtype is None:
        args.dtype = default_dtypes(device)
    if args.run_length is None:
        args.run_length = 1 if on_gpu or args.quick else CPU_RUN_LENGTH
    if args.repeats is None:
        args.repeats = 15 if args.run_length == 1 and not args.quick else 3
    args.warmup = 1 if args.quick else 2
    args.min_seconds = 0.0 if args.quick else 1.0
    args.compile, args.train_compile = compile_modes(
        args.compile, no_compile=args.no_compile, quick=args.quick, on_gpu=on_gpu
    )
    if "max-autotune" in args.compile and not on_gpu:
        p.error("--compile max-autotune is for a GPU (on the CPU it only adds compile time)")
    if args.run_length < 1:
        p.error("--run-length must be at least 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if args.plot and not args.plot.endswith(".svg"):
        p.error("--plot writes SVG: give a path ending in .svg")
    # The onnxruntime row, per dtype (bfloat16 has none): None where it runs, else why not.
    args.ort_skipped = {
        d: "--no-onnxruntime" if args.no_onnxruntime else ort_unavailable_reason(device, DTYPES[d])
        for d in args.dtype
    }
    args.onnxruntime = any(reason is None for reason in args.ort_skipped.values())
    if args.backend is None:
        args.backend = timed_backends(device)
    for b in args.backend:
        reason = backend_unavailable_reason(b)
        if reason is not None:
            p.error(f"backend {b!r} is not available: {reason}")
    return args


ROW_FORMAT = "{:>7s} {:>5d} {:>8s} {:>13s} {:>32s} {:>10.3f} {:>9.1f} {:>7.2f}x {:>8.4g} {}"
ROW_HEADER = (
    f"{'block':>7s} {'batch':>5s} {'dtype':>8s} {'layout':>13s} {'impl':>32s} "
    f"{'median ms':>10s} {'images/s':>9s} {'speedup':>8s} {'TFLOP/s':>8s} roofline"
)


TRAIN_FORMAT = (
    "{:>7s} {:>11s} {:>5d} {:>8s} {:>13s} {:>24s} {:>10.3f} {:>9.1f} {:>7.2f}x {:>9.2f} {}"
)
TRAIN_HEADER = (
    f"training steps:\n{'block':>7s} {'form':>11s} {'batch':>5s} {'dtype':>8s} {'layout':>13s} "
    f"{'impl':>24s} {'median ms':>10s} {'images/s':>9s} {'speedup':>8s} {'saved MiB':>9s} "
    "TFLOP/s (3x forward)"
)


def _row_text(r: dict) -> str:
    """One printed line: ROW_FORMAT for a forward's row, TRAIN_FORMAT for a training step's."""
    train = r.get("mode") == "train"
    verb = "exported" if r["impl"] == ORT else "compiled"
    compiled = "" if r["compile_s"] is None else f"; {verb} in {r['compile_s']:.1f} s"
    fields = [r["block"], *([r["form"]] if train else []), r["batch"], r["dtype"], r["layout"]]
    fields += [r["impl"], r["median_ms"], r["images_per_s"], r["speedup"]]
    if train:
        return TRAIN_FORMAT.format(
            *fields, r["saved_bytes"] / 2**20, f"{r['tflops']:.4g}{compiled}"
        )
    roof = (
        "-"
        if r["roofline_fraction"] is None
        else f"{r['roofline_fraction']:.0%} of fused bound {r['bound_ms_fused']:.3g} ms "
        f"(unfused {r['bound_ms_unfused']:.3g} ms)"
    )
    # A multicrop row's images/s is about 0.1-100 (one image is 144 crops): more decimals.
    fmt = ROW_FORMAT.replace("9.1f", "9.3f") if r.get("mode") == MULTICROP else ROW_FORMAT
    return fmt.format(*fields, r["tflops"], roof + compiled)


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run_case(
    args: argparse.Namespace, block: str, batch: int, dtype: str, layout: str, peak: Peak | None
) -> list[dict]:
    """Build, compile (timed apart), time and turn into rows one case."""
    device = args.device
    modes = args.compile if (block != NETWORK or args.compile_network) else []
    ort = args.ort_skipped[dtype] is None
    case = build_case(
        block, batch, DTYPES[dtype], device, layout, args.backend, modes, onnxruntime=ort
    )
    with torch.inference_mode():
        times, compile_s = _time_case(args, case, block, f"{block}, batch {batch}, {dtype}")
    compile_s.update(case.setup_s)  # exporting to ONNX, apart from the timing like compiling
    return case_rows(block, batch, DTYPES[dtype], device, layout, case, times, compile_s, peak)


def run_multicrop_case(
    args: argparse.Namespace, dtype: str, layout: str, peak: Peak | None
) -> list[dict]:
    """Time the 144-crop evaluation of one image, eager and fused; rows of mode "multicrop"."""
    case = build_multicrop_case(DTYPES[dtype], args.device, layout, args.backend)
    with torch.inference_mode():
        times, _ = _time_case(args, case, NETWORK, f"{CROPS}-crop evaluation, {dtype}")
    rows = case_rows(
        NETWORK, CROPS, DTYPES[dtype], args.device, layout, case, times, {}, peak, mode=MULTICROP
    )
    for r in rows:  # one image per call
        r["images_per_s"] = significant(1e3 / r["median_ms"])
    return rows


def run_train_case(
    args: argparse.Namespace, block: str, form: str, batch: int, dtype: str, layout: str
) -> list[dict]:
    """Build, compile (timed apart), time and measure the saved memory of one training case."""
    device = args.device
    modes = args.train_compile if (block != NETWORK or args.compile_network) else []
    case = build_train_case(block, form, batch, DTYPES[dtype], device, layout, args.backend, modes)
    label = f"train {form} {block}, batch {batch}, {dtype}"
    with torch.enable_grad():
        times, compile_s = _time_case(args, case, block, label)
        saved = {name: measure() for name, measure in case.saved.items()}
    return case_rows(
        block, batch, DTYPES[dtype], device, layout, case, times, compile_s, None,
        mode="train", form=form, saved_bytes=saved,
    )  # fmt: skip


def _time_case(
    args: argparse.Namespace, case, block: str, label: str
) -> tuple[list[float], dict[str, float]]:
    """Compile (the first call, timed apart), then the interleaved medians of case.calls; where
    the case has rows timed alone (case.alone), the interleaved rounds are cut into
    ALONE_SEGMENTS segments and each of those rows is timed alone before, between and after
    them (made, timed, released each time; each timing and each segment gets a share of the
    rounds and seconds) and gets the median of all its timings' calls: (ms per call in
    case_names(case)' order, seconds compiling per compiled implementation)."""
    compile_s = {}
    repeats = network_repeats(args.repeats) if block == NETWORK else args.repeats
    for name in case.compiled:
        _progress(f"    compiling {name} ({label}) ...")
        compile_s[name] = first_call_seconds(case.calls[name], args.device)
    segments = ALONE_SEGMENTS if case.alone else 1
    rounds = dict(
        warmup=args.warmup,
        repeats=-(-repeats // segments),
        min_seconds=args.min_seconds / segments,
        run_length=args.run_length,
    )
    alone_samples: dict[str, list[float]] = {name: [] for name, _ in case.alone}

    def time_alone(when: int) -> None:
        for name, make in case.alone:
            _progress(f"    {name} alone, {when} of {segments + 1} ({label}) ...")
            fn = make()
            (samples,) = samples_ms_interleaved([fn], args.device, **rounds)
            del fn  # its session, and with it its threads, go before anything else runs
            gc.collect()
            alone_samples[name] += samples

    samples: list[list[float]] = [[] for _ in case.calls]
    time_alone(1)  # (no-ops without such rows)
    for segment in range(segments):
        for kept, new in zip(
            samples,
            samples_ms_interleaved(list(case.calls.values()), args.device, **rounds),
            strict=True,
        ):
            kept += new
        time_alone(segment + 2)
    times = [statistics.median(s) for s in samples]
    for name, ms in zip(case.calls, times, strict=True):
        if name in compile_s:  # the first call also ran the module once
            compile_s[name] = max(0.0, compile_s[name] - ms / 1e3)
    times += [statistics.median(alone_samples[name]) for name, _ in case.alone]
    return times, compile_s


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (the console script fused-inception-bench); 0 on success."""
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.keep_freed_memory:
        from fused_inception.memory import keep_freed_memory

        args.kept_memory = "applied" if keep_freed_memory() else "not glibc, nothing changed"
    start = time.perf_counter()
    impls = impl_names(
        args.backend,
        args.compile,
        args.onnxruntime,
        network=NETWORK in args.blocks,
        cpu=torch.device(args.device).type == "cpu",
    )
    peak, source = device_peak(args.device, tuple(DTYPES[d] for d in args.dtype))
    print(header(args, impls, _peak_text(peak, source, args.dtype)), flush=True)
    if args.inference:
        print(ROW_HEADER, flush=True)
    cases: list[tuple] = []
    if args.inference:
        cases += [
            (None, block, batch, dtype, layout)
            for dtype in args.dtype
            for batch in args.batch
            for block in args.blocks
            for layout in LAYOUTS
        ]
    if args.train:
        cases += [
            (form, block, batch, dtype, layout)
            for dtype in args.dtype
            for batch in args.train_batch
            for block in args.blocks
            for form in args.forms
            for layout in args.train_layouts
        ]
    if args.multicrop:
        cases += [
            (MULTICROP, NETWORK, CROPS, dtype, layout)
            for dtype in args.dtype
            for layout in args.multicrop_layouts
        ]
    rows: list[dict] = []
    for i, (form, block, batch, dtype, layout) in enumerate(cases, 1):
        what = {None: "", MULTICROP: f"{CROPS}-crop "}.get(form, f"train {form} ")
        _progress(
            f"[{i}/{len(cases)} {time.perf_counter() - start:.0f} s] {what}{block}, "
            f"batch {batch}, {dtype}, {layout}"
        )
        if form is None:
            new = run_case(args, block, batch, dtype, layout, peak)
        elif form == MULTICROP:
            if not any(r["mode"] == MULTICROP for r in rows):
                print(f"{CROPS}-crop evaluation (batch: the crops of one image; images/s: images):")
                print(ROW_HEADER, flush=True)
            new = run_multicrop_case(args, dtype, layout, peak)
        else:
            if not any(r["mode"] == "train" for r in rows):
                print(TRAIN_HEADER, flush=True)
            new = run_train_case(args, block, form, batch, dtype, layout)
        for r in new:
            print(_row_text(r), flush=True)
        rows.extend(new)
    print()
    for line in summarize(rows):
        print(line)
    compiled = [r["compile_s"] for r in rows if r["compile_s"] is not None and r["impl"] != ORT]
    exported = [r["compile_s"] for r in rows if r["compile_s"] is not None and r["impl"] == ORT]
    if exported:
        print(
            f"onnxruntime: {len(exported)} exports and sessions, {sum(exported):.0f} s in all "
            f"(max {max(exported):.1f} s), not included in any median"
        )
    if compiled:
        print(
            f"torch.compile: {len(compiled)} compilations, {sum(compiled):.0f} s in all "
            f"(max {max(compiled):.1f} s), not included in any median"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {len(rows)} rows to {args.json}")
    if args.plot:
        from fused_inception.bench.plot import write_speedup_svg

        write_speedup_svg(rows, args.plot)
        print(f"wrote the speedup chart to {args.plot}")
    print(f"finished in {time.perf_counter() - start:.0f} s", flush=True)
    return 0
