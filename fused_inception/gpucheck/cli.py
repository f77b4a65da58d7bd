"""python -m fused_inception.gpucheck: validate and benchmark everything on a real GPU.

    python -m fused_inception.gpucheck                 # about 8 minutes on an A100/H100
    python -m fused_inception.gpucheck --quick         # about 3 minutes: a subset
    python -m fused_inception.gpucheck --out DIR --work-json work.json

Prints the environment, then each stage (parity, sanitizer, graph, bench) with its seconds
against the budget, and writes DIR/gpucheck.json and DIR/summary.md (sanitizer logs too).
Exit status: 0 all checks passed; 1 a check failed; 2 bad arguments; 3 no CUDA device
(nothing done). See fused_inception/gpucheck/__init__.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence

import torch

from fused_inception.gpucheck import EXIT_FAILED, EXIT_NO_DEVICE, EXIT_OK

STAGES = ("parity", "sanitizer", "graph", "bench")
GPU_BACKENDS = ("triton", "cuda")
FULL_BUDGET_S = 480.0
QUICK_BUDGET_S = 180.0
COMPILE_BUDGET_S = 150.0
QUICK_PARITY_BLOCKS = ("3a", "4e", "5b")
NO_DEVICE_MESSAGE = (
    "gpucheck: no CUDA device (torch.cuda.is_available() is False; torch {torch} built with "
    "CUDA {cuda}); nothing was checked. Run it on a machine with an NVIDIA GPU."
)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, defaults filled in (out, budget)."""
    from fused_inception.report.work_model import GPUS

    p = argparse.ArgumentParser(
        prog="python -m fused_inception.gpucheck",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a subset in about 3 minutes")
    p.add_argument("--out", metavar="DIR", help="output folder (default ./gpucheck-<timestamp>)")
    p.add_argument(
        "--work-json",
        metavar="PATH",
        help="JSON of `python -m fused_inception.report --work --json PATH`: the fused MODEL "
        "beside each fused bench row (without it: '-')",
    )
    p.add_argument(
        "--backends", nargs="+", choices=GPU_BACKENDS, default=list(GPU_BACKENDS), metavar="B"
    )
    p.add_argument(
        "--skip",
        nargs="+",
        choices=STAGES,
        default=[],
        metavar="STAGE",
        help=f"stages to leave out, among {', '.join(STAGES)}",
    )
    p.add_argument(
        "--budget",
        type=_positive,
        metavar="SECONDS",
        help=f"time budget (default {FULL_BUDGET_S:.0f}, --quick "
        f"{QUICK_BUDGET_S:.0f}); the benchmark stops starting cases past it",
    )
    p.add_argument(
        "--compile-budget",
        type=_positive,
        default=COMPILE_BUDGET_S,
        metavar="SECONDS",
        help="seconds of torch.compile (max-autotune) after which "
        f"cases run without it (default {COMPILE_BUDGET_S:.0f})",
    )
    p.add_argument(
        "--model-gpu",
        choices=list(GPUS),
        help="the work model's GPU for the MODEL columns (default: from the device "
        "name; none for other GPUs)",
    )
    p.add_argument("--sanitizer-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.work_json and not os.path.isfile(args.work_json):
        p.error(f"--work-json {args.work_json}: no such file")
    if args.out and os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"--out {args.out}: exists and is not a folder")
    args.out = args.out or f"gpucheck-{time.strftime('%Y%m%d-%H%M%S')}"
    if args.budget is None:
        args.budget = QUICK_BUDGET_S if args.quick else FULL_BUDGET_S
    return args


def no_device_message() -> str:
    return NO_DEVICE_MESSAGE.format(torch=torch.__version__, cuda=torch.version.cuda or "none")


def sanitizer_child(backends: Sequence[str]) -> int:
    """The process compute-sanitizer runs: each kernel once on a small block (sanitizer.py)."""
    from fused_inception.gpucheck.parity import run_parity
    from fused_inception.gpucheck.sanitizer import sanitizer_cases

    checks = run_parity(sanitizer_cases(backends), torch.device("cuda"))
    return EXIT_OK if all(c["ok"] for c in checks) else EXIT_FAILED


def build_checks(backends: Sequence[str]) -> list[dict]:
    """One check per requested backend: can it run here (the build and the device)?"""
    from fused_inception.backends import backend_unavailable_reason

    checks = []
    for b in backends:
        reason = backend_unavailable_reason(b)
        checks.append(
            {
                "stage": "build",
                "name": f"backend {b}",
                "ok": reason is None,
                "detail": reason or "available",
            }
        )
    return checks


def run_checks(args: argparse.Namespace, device: torch.device, budget, log) -> tuple[list, list]:
    """The stages; (checks, bench rows)."""
    from fused_inception.configs import GOOGLENET_BLOCKS
    from fused_inception.gpucheck import graph, parity, sanitizer

    checks = build_checks(args.backends)
    backends = [c["name"].split()[-1] for c in checks if c["ok"]]
    rows: list[dict] = []
    grad_block = "3a"
    if "parity" not in args.skip:
        with budget.stage("parity", log):
            names = QUICK_PARITY_BLOCKS if args.quick else tuple(GOOGLENET_BLOCKS)
            dtypes = [torch.float16, torch.float32]
            if not args.quick:
                dtypes.append(torch.bfloat16)
            layouts = ["channels_last"] if args.quick else ["nchw", "channels_last"]
            blocks = {n: GOOGLENET_BLOCKS[n] for n in names}
            cases = parity.parity_cases(blocks, backends, dtypes, layouts)
            checks += parity.run_parity(cases, device, log)
            cfg = GOOGLENET_BLOCKS[grad_block]
            for b in backends:
                for check in (
                    parity.check_gradients(b, grad_block, cfg, device),
                    parity.check_other_device(b, grad_block, cfg),
                ):
                    log(f"  {check['stage']} {check['name']}: {_result(check)}")
                    checks.append(check)
    if "sanitizer" not in args.skip:
        with budget.stage("sanitizer", log):
            timeout = 120.0 if args.quick else 240.0
            checks += sanitizer.run_sanitizer(backends, args.out, timeout_s=timeout, log=log)
    if "graph" not in args.skip:
        with budget.stage("graph", log):
            for b in backends:
                check = graph.check_graph(b, device)
                log(f"  {check['name']}: {_result(check)}")
                checks.append(check)
    if "bench" not in args.skip:
        with budget.stage("bench", log):
            rows, skipped = _bench(args, device, backends, budget, log)
            for text in skipped:
                log(f"  skipped {text}")
            args.notes += [f"bench skipped {text}" for text in skipped]
    return checks, rows


def _bench(args, device, backends, budget, log):
    from fused_inception.gpucheck import bench

    gpu = args.model_gpu or bench.model_gpu_for(torch.cuda.get_device_name(device))
    if gpu is None:
        args.notes.append("no MODEL columns: the work model knows A100 and H100 (--model-gpu)")
    work = bench.load_work(args.work_json) if args.work_json else None
    if work is None:
        args.notes.append("fused MODEL column '-': no --work-json given")
    plan = bench.QUICK_PLAN if args.quick else bench.FULL_PLAN
    return bench.run_bench(
        device,
        backends,
        plan,
        budget,
        compile_budget_s=args.compile_budget,
        work=work,
        model_gpu=gpu,
        log=log,
    )


def _result(check: dict) -> str:
    status = {True: "ok", False: "FAIL", None: "skipped"}[check["ok"]]
    return f"{status} ({check.get('detail')})"


def main(
    argv: Sequence[str] | None = None,
    cuda_available: Callable[[], bool] = torch.cuda.is_available,
) -> int:
    """Run the check; the exit status (EXIT_* of fused_inception.gpucheck)."""
    args = parse_args(argv)
    if not cuda_available():
        print(no_device_message(), file=sys.stderr)
        return EXIT_NO_DEVICE
    if args.sanitizer_child:
        return sanitizer_child(args.backends)
    from fused_inception.gpucheck import env, summary
    from fused_inception.gpucheck.budget import Budget

    def log(text: str) -> None:
        print(text, flush=True)

    budget = Budget(args.budget)
    device = torch.device("cuda", torch.cuda.current_device())
    args.notes = []
    os.makedirs(args.out, exist_ok=True)
    with budget.stage("env", log):
        info = env.environment(device)
        for line in env.environment_lines(info):
            log(f"  {line}")
    checks, rows = run_checks(args, device, budget, log)
    json_path, md_path = summary.write_outputs(
        args.out, info, checks, rows, budget.as_dict(), args.notes
    )
    failed = summary.failed_checks(checks)
    for check in failed:
        log(f"FAILED {check['stage']}: {check['name']}: {check.get('detail')}")
    log(
        f"verdict: {summary.verdict(checks)} ({len(failed)} of {len(checks)} checks failed); "
        f"{budget.elapsed():.0f} s of a {budget.total_s:.0f} s budget"
    )
    log(f"wrote {json_path} and {md_path}")
    return summary.exit_status(checks)
