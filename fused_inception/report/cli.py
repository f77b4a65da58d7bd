"""The report's command line: compile every kernel build, print a table, exit 1 on a failure.

    python -m fused_inception.report [--json PATH] [--arch sm_80 sm_90] [--kernels SUBSTRING]
                                     [--backends triton cuda] [--modules MODULE ...] [--no-cache]
    python -m fused_inception.report --work [--batch N] [--blocks 3a ...] [--json PATH] ...
    python -m fused_inception.report --tuning [--write] [--check] [--blocks 3a ...] ...

--work runs the work report instead (fused_inception.report.work: the GPU configurations' work
counted under the interpreter, and a roofline MODEL of their GPU time); its options are its own.
--tuning compiles the autotuning candidates and writes or checks the table autotune prunes by
(fused_inception.report.tuning).

Records come from one provider per backend (PROVIDERS: fused_inception.report.triton and
fused_inception.report.cuda), each taking the ReportRequest and yielding records
(fused_inception.report.records says what they hold and how they are checked). One table row
per record; then the summary line "N builds, M failed: ..." and each failing record.

The exit status is 1 if any record fails its checks (a compile error, a spill, a 16-bit build
without tensor cores or with more than 2% as many shuffles as tensor-core instructions in its
SASS, more shared memory than the arch allows), else 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from fused_inception.report.cuda import cuda_records
from fused_inception.report.records import (
    ARCHS,
    PROBLEM_KINDS,
    RecordProvider,
    ReportRequest,
    arch_number,
    problems_by_kind,
    record_problems,
)
from fused_inception.report.triton import KERNEL_PACKAGE, interpreter_set, triton_records

PROVIDERS: dict[str, RecordProvider] = {"triton": triton_records, "cuda": cuda_records}


def format_record(record: dict) -> str:
    """One table row."""

    def show(value: Any) -> str:
        return "-" if value is None else str(value)

    problems = record_problems(record)
    status = "ok" if not problems else "FAIL: " + "; ".join(problems)
    tc = {True: "yes", False: "no", None: "-"}[record["tensor_cores"]]
    return (
        f"{record['kernel']:<62} {record['backend']:<6} {show(record['arch']):<5} "
        f"{show(record['dtype']):<8} {show(record['registers']):>4} "
        f"{show(record['shared_bytes']):>7} {show(record['local_bytes']):>5} {tc:>3} "
        f"{show(record['mma_instructions']):>4} {show(record['shuffle_instructions']):>4} "
        f"{show(record['ldmatrix_instructions']):>4} {show(record['async_copy_instructions']):>4} "
        f"{show(record['compile_s']):>7}  {status}"
    )


HEADER = (
    f"{'kernel':<62} {'backend':<6} {'arch':<5} {'dtype':<8} {'regs':>4} {'shared':>7} "
    f"{'local':>5} {'tc':>3} {'mma':>4} {'shfl':>4} {'ldsm':>4} {'ldgs':>4} {'time_s':>7}  status"
)


def summary_line(records: Sequence[dict]) -> str:
    """'N builds, M failed: ...' with the count of each kind of failure (a record can have two)."""
    # Counted from the same checks that mark the rows, so the two cannot disagree.
    kinds = [problems_by_kind(r) for r in records]
    failed = sum(bool(k) for k in kinds)
    counts = ", ".join(f"{sum(kind in k for k in kinds)} {kind}" for kind in PROBLEM_KINDS)
    return f"{len(records)} builds, {failed} failed: {counts}"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fused_inception.report",
        description="Compile every kernel build for sm_80/sm_90 without a GPU and report "
        "registers, shared memory, spills and tensor-core use.",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records as a JSON list")
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), help="default: sm_80 sm_90")
    parser.add_argument("--kernels", metavar="SUBSTRING", help="only kernels whose name has it")
    parser.add_argument(
        "--modules",
        nargs="+",
        metavar="MODULE",
        help=f"modules whose aot_builds() to compile (default: every module of {KERNEL_PACKAGE})",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="bypass Triton's cache (true compile times)"
    )
    parser.add_argument(
        "--work",
        action="store_true",
        help="run the work report instead (its own options: --work --help)",
    )
    parser.add_argument(
        "--tuning",
        action="store_true",
        help="compile the autotuning candidates instead (its own options: --tuning --help)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=sorted(PROVIDERS),
        default=list(PROVIDERS),
        help="whose kernels to compile (default: all)",
    )
    args = parser.parse_args(argv)
    for arch in args.arch:
        try:
            arch_number(arch)
        except ValueError:
            parser.error(f"--arch expects names like sm_80, got {arch!r}")
    return args


def main(argv: Sequence[str] | None = None, providers: Sequence[RecordProvider] | None = None):
    """Run the report; returns the exit status (0 if every record passes, else 1).

    providers: record sources (default PROVIDERS). With the default ones and TRITON_INTERPRET
               set, the report runs again in a subprocess without it and returns its status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--work" in argv:
        # Its own child processes set TRITON_INTERPRET; this process needs no interpreter.
        from fused_inception.report.work import main as work_main

        return work_main([arg for arg in argv if arg != "--work"])
    if "--tuning" in argv:
        # Compiles like the report itself: needs real @triton.jit functions.
        if interpreter_set():
            env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
            print("TRITON_INTERPRET is set; re-running the report without it", file=sys.stderr)
            return subprocess.call([sys.executable, "-m", "fused_inception.report", *argv], env=env)
        from fused_inception.report.tuning import main as tuning_main

        return tuning_main([arg for arg in argv if arg != "--tuning"])
    if providers is None and interpreter_set():
        # Compilation needs real @triton.jit functions: run again in a clean interpreter.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        print("TRITON_INTERPRET is set; re-running the report without it", file=sys.stderr)
        cmd = [sys.executable, "-m", "fused_inception.report", *argv]
        return subprocess.call(cmd, env=env)
    args = _parse_args(argv)
    request = ReportRequest(
        archs=tuple(args.arch),
        kernels=args.kernels,
        modules=tuple(args.modules) if args.modules else None,
        no_cache=args.no_cache,
    )
    records: list[dict] = []
    print(HEADER, flush=True)
    if providers is None:
        providers = [PROVIDERS[name] for name in args.backends]
    for provider in providers:
        for record in provider(request):
            records.append(record)
            print(format_record(record), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    failed = [r for r in records if record_problems(r)]
    print(summary_line(records))
    for r in failed:
        print(f"  FAILED {r['kernel']} [{r['arch']}]: {'; '.join(record_problems(r))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
