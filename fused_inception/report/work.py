"""The work report: what the GPU backends' kernels execute, counted on a CPU.

    python -m fused_inception.report --work [--batch N] [--blocks 3a ...] [--kernel-sizes 3 5]
                                            [--backends triton cuda] [--json PATH]
                                            [--jobs J] [--compile-json PATH] [--counts PATH]

For each GoogLeNet block (fused_inception.configs, at its real spatial size) and both branch-3
kernel sizes (3: torchvision, 5: the paper), one eval forward of FusedInception(...,
branch3_kernel=k, norm=False, backend=B) in fp16 on a channels_last batch of N random images
(default 8), with random weights, per backend B:
- triton: under Triton's interpreter with the exact GPU tile configurations (TRITON_INTERPRET=1
  and FUSED_INCEPTION_GPU_CONFIGS=1), every launch counted by fused_inception.report.counting,
  named as the launchers announce them;
- cuda: the CUDA C++ kernels on the SIMT shim (FUSED_INCEPTION_EMULATE_CUDA=1), every launch
  counted by the shim's emulated PTX (fused_inception.report.shim_counting says what is counted
  and what derived), with the shared-memory bank-conflict degree.
The variables are set in the child processes before fused_inception is imported; this process
needs none of them.

Printed per backend, block, k and kernel: launches, programs, executed / useful tensor-core
MACs, gathered elements per useful MAC, bytes loaded per useful FLOP (FLOP = 2 MAC), waves on
an A100 and an H100, and a MODEL time on both at batch N and 128 (fused_inception.report.
work_model states every assumption); then the unfused cuDNN-class sequence's MODEL time and a
verdict on the targets (TARGETS). --json writes every count and estimate. Exit status 0 (the
verdicts are information, not a failure), 1 if a count fails."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report import work_model as wm
from fused_inception.report.work_analysis import MODEL_BATCH, TARGETS, analyse

KERNEL_SIZES = (3, 5)
BACKENDS = ("triton", "cuda")
WORK_ENV = {
    "TRITON_INTERPRET": "1",
    "FUSED_INCEPTION_GPU_CONFIGS": "1",
    "FUSED_INCEPTION_EMULATE_CUDA": "1",
}


def work_env() -> dict[str, str]:
    """The child's environment: the interpreter and the GPU configs on, and this copy of the
    package first on the path (a child started elsewhere must not import another install)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, **WORK_ENV, "PYTHONPATH": root + (os.pathsep + path if path else "")}


# ---------------------------------------------------------------------------------------------
# The child: count the cases it is given.


def count_case(block: str, k: int, batch: int, backend: str = "triton") -> dict:
    """Count one forward of `block` with branch3_kernel k at batch `batch` on `backend`: triton
    under the interpreter (needs FUSED_INCEPTION_GPU_CONFIGS=1 from before the import), cuda on
    the SIMT shim (needs FUSED_INCEPTION_EMULATE_CUDA=1)."""
    import torch

    from fused_inception import FusedInception
    from fused_inception.bench.roofline import block_macs
    from fused_inception.report.counting import count_work
    from fused_inception.report.shim_counting import count_shim
    from fused_inception.triton import common

    if backend == "triton" and not common.FORCE_GPU_CONFIGS:
        raise RuntimeError(f"count_case needs {common.GPU_CONFIGS_ENV}=1 before the import")
    cfg = GOOGLENET_BLOCKS[block]
    torch.manual_seed(0)
    module = FusedInception(*cfg.args(), branch3_kernel=k, norm=False, backend=backend)
    module = module.eval().to(torch.float16)
    x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw).to(torch.float16)
    x = x.contiguous(memory_format=torch.channels_last)
    start, cpu_start = time.perf_counter(), time.process_time()
    counter = count_work() if backend == "triton" else count_shim()
    with torch.no_grad(), counter as log:
        out = module(x)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    launches = [launch if isinstance(launch, dict) else launch.as_dict() for launch in log.launches]
    # The scratch rows r [N*H*W, c2r + c3r] scale with the batch like x and out.
    scratch = [t["key"][0] for launch in launches for n, t in launch["tensors"].items() if n == "r"]
    return {
        "backend": backend,
        "block": block,
        "k": k,
        "batch": batch,
        "dtype": "float16",
        "hw": cfg.hw,
        "block_useful_macs": block_macs(cfg, k) * batch,
        "listener_calls": log.listener_calls,
        "activation_keys": [[x.data_ptr()], [out.data_ptr()], sorted(set(scratch))],
        "output_finite": bool(torch.isfinite(out).all()),
        "count_s": round(seconds, 2),
        "count_cpu_s": round(cpu_seconds, 2),
        "launches": launches,
    }


def _child(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(1)
    results = []
    for case in args.cases:
        backend, block, k = case.split(":")
        result = count_case(block, int(k), args.batch, backend)
        print(
            f"  counted {backend} {block} k={k} in {result['count_s']} s "
            f"({result['count_cpu_s']} s CPU)",
            file=sys.stderr,
            flush=True,
        )
        results.append(result)
    with open(args.out, "w") as f:
        json.dump(results, f)
    return 0


def run_counts(cases: Sequence[tuple[str, str, int]], batch: int, jobs: int) -> list[dict]:
    """Count every (backend, block, k) in `jobs` child processes (largest cases spread first)."""
    from fused_inception.bench.roofline import block_macs

    def cost(case: tuple[str, str, int]) -> float:
        # The shim takes about twice the interpreter's time per MAC (measured here).
        return block_macs(GOOGLENET_BLOCKS[case[1]], case[2]) * (2 if case[0] == "cuda" else 1)

    order = sorted(cases, key=lambda c: -cost(c))
    groups: list[list[tuple[str, str, int]]] = [[] for _ in range(max(1, min(jobs, len(cases))))]
    loads = [0.0] * len(groups)
    for case in order:
        i = loads.index(min(loads))
        groups[i].append(case)
        loads[i] += cost(case)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i, group in enumerate(groups):
            out = os.path.join(tmp, f"counts{i}.json")
            cmd = [sys.executable, "-m", "fused_inception.report.work", "--child"]
            cmd += ["--batch", str(batch), "--out", out, "--cases"]
            cmd += [f"{backend}:{b}:{k}" for backend, b, k in group]
            procs.append((subprocess.Popen(cmd, env=work_env()), out))
        results = []
        for proc, out in procs:
            if proc.wait() != 0:
                raise RuntimeError(f"counting failed (exit {proc.returncode}): {proc.args}")
            with open(out) as f:
                results += json.load(f)
    rank = {case: i for i, case in enumerate(cases)}
    return sorted(results, key=lambda r: rank[(r["backend"], r["block"], r["k"])])


# ---------------------------------------------------------------------------------------------
# The table.

HEADER = (
    f"{'backend':<7} {'block':<5} {'k':>1} {'kernel':<22} {'launch':>6} {'progs':>6} "
    f"{'exec/use':>8} {'gath/MAC':>8} {'B/FLOP':>7} {'waves A100/H100':>15} "
    f"{'MODEL ms @N A100/H100':>21} {'MODEL ms @128 A100/H100':>23} {'bound':>7}"
)


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pair(model: dict, key: str, batch: int, fmt: str) -> str:
    return f"{_num(model[f'A100@{batch}'][key], fmt)}/{_num(model[f'H100@{batch}'][key], fmt)}"


def format_rows(result: dict) -> list[str]:
    """The table rows of one (block, k): each kernel, the fused total, the unfused MODEL."""
    n = result["batch"]
    rows = []
    named = [(name, row) for name, row in result["kernels"].items()]
    head = f"{result['backend']:<7} {result['block']:<5} {result['k']:>1}"
    for name, row in [*named, ("fused (all launches)", result["total"])]:
        rows.append(
            f"{head} {name[:22]:<22} {row['launches']:>6} "
            f"{row['programs']:>6} {_num(row['exec_per_useful'], '.3f'):>8} "
            f"{_num(row['gathered_per_mac'], '.4f'):>8} "
            f"{_num(row['loaded_bytes_per_flop'], '.4f'):>7} "
            f"{_pair(row['model'], 'waves', n, '.2f'):>15} "
            f"{_pair(row['model'], 'ms', n, '.4f'):>21} "
            f"{_pair(row['model'], 'ms', MODEL_BATCH, '.4f'):>23} "
            f"{row['model'][f'H100@{MODEL_BATCH}']['bound']:>7}"
        )
    unf = result["unfused"]
    launches = unf[f"H100@{n}"]["launches"]
    rows.append(
        f"{head} {'unfused cuDNN-class':<22} {launches:>6} "
        f"{'-':>6} {'1.000':>8} {'0':>8} {'-':>7} {'-':>15} {_pair(unf, 'ms', n, '.4f'):>21} "
        f"{_pair(unf, 'ms', MODEL_BATCH, '.4f'):>23} {unf[f'H100@{MODEL_BATCH}']['bound']:>7}"
    )
    return rows


def verdict_line(result: dict) -> str:
    """'verdict 3a k=3: ...' with each target met or missed."""
    v = result["verdict"]
    parts = [
        ("exec/useful", v["exec_per_useful"], ".3f", "<="),
        ("gathered", v["gathered"], ".0f", "<="),
        ("B/FLOP", v["bytes_per_flop"], ".4f", "<="),
        ("launches", v["launches"], "d", "<="),
        (f"H100 MODEL ms @{MODEL_BATCH} vs unfused", v["h100_ms_vs_unfused"], ".4f", "<"),
    ]
    if "bank_conflict_degree" in v:
        parts.append(("bank-conflict degree", v["bank_conflict_degree"], "d", "<="))
    text = [
        f"{name} {_num(c['value'], fmt)} {op} {format(c['limit'], fmt)} "
        f"{'ok' if c['met'] else 'MISS'}"
        for name, c, fmt, op in parts
    ]
    met = sum(c["met"] for c in v.values())
    head = f"verdict {result['backend']} {result['block']} k={result['k']}"
    return f"{head}: {met}/{len(v)} met: " + "; ".join(text)


def assumptions_text() -> str:
    """The MODEL's assumptions, as printed under the table."""
    gpus = ", ".join(
        f"{g.name} {g.peak.fp16_tflops:g} TFLOP/s fp16, {g.peak.gbps:g} GB/s, {g.sms} SMs, "
        f"L2 {g.l2_bytes >> 20} MB, L2->SM {g.l2_gbps:g} GB/s (assumed)"
        for g in wm.GPUS.values()
    )
    return "\n".join(
        [
            "MODEL assumptions (roofline estimates from counted work, not measurements):",
            f"  GPUs: {gpus}",
            f"  MMA at {wm.MMA_EFFICIENCY:.0%} of dense fp16 peak, quantized per SM (x ceil(progs"
            f" / SMs) / (progs / SMs)); DRAM at "
            f"{wm.DRAM_EFFICIENCY:.0%} of peak; gathers >= 1 shuffle lane per element "
            f"({wm.SHUFFLE_LANES_PER_CLOCK} lanes/clock/SM), added to MMA time; L2 time = "
            f"bytes loaded+stored / L2->SM bandwidth; {wm.LAUNCH_OVERHEAD_US:g} us per launch",
            "  a launch = max(MMA + gather, L2, DRAM) + overhead; waves = programs / (SMs x CTAs "
            "per SM), CTAs per SM from --compile-json records (Triton builds), else 1 (always 1 "
            "for cuda launches)",
            "  cuda rows: counted on the SIMT shim (MMA MACs, cp.async bytes per tensor, bank "
            "conflicts); stored bytes derived from the output slices (plain stores are not "
            "counted); bias reads not counted",
            "  DRAM: " + wm.ASSUMPTIONS["dram_rule"],
            "  unfused: " + wm.ASSUMPTIONS["unfused"],
            f"  batch {MODEL_BATCH}: "
            + wm.ASSUMPTIONS["batch_scaling"]
            + " (the configs of batch N)",
            "  exec/use: executed tensor-core MACs / useful MACs; gath/MAC: gathered elements per "
            "useful MAC; B/FLOP: bytes loaded per useful FLOP; a kernel row sums its launches' "
            f"waves and times; bound: the largest term (compute, L2, DRAM) on the H100 at batch "
            f"{MODEL_BATCH}",
        ]
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fused_inception.report --work",
        description="Count the work the Triton backend's GPU configurations execute (under the "
        "interpreter, on the CPU) and estimate GPU times with a roofline MODEL.",
    )
    parser.add_argument("--batch", type=int, default=8, help="images per forward (default 8)")
    parser.add_argument(
        "--blocks", nargs="+", choices=list(GOOGLENET_BLOCKS), default=list(GOOGLENET_BLOCKS)
    )
    parser.add_argument(
        "--kernel-sizes",
        nargs="+",
        type=int,
        choices=KERNEL_SIZES,
        default=list(KERNEL_SIZES),
        help="branch-3 kernel sizes (default 3 5)",
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="triton (counted under the interpreter) and/or cuda (counted on the SIMT shim); "
        "default both",
    )
    parser.add_argument("--json", metavar="PATH", help="write every count and estimate")
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="counting processes (default: min(2, cores))",
    )
    parser.add_argument(
        "--compile-json",
        metavar="PATH",
        help="records of python -m fused_inception.report --json, for CTAs per SM",
    )
    parser.add_argument(
        "--counts",
        metavar="PATH",
        help="re-analyse the counts of an earlier --json (same batch) instead of counting",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.batch < 1:
        parser.error("--batch must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the work report (or, with --child, count cases for it); returns the exit status."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.child:
        return _child(args)
    records = []
    if args.compile_json:
        with open(args.compile_json) as f:
            records = json.load(f)
    cases = [(be, b, k) for be in args.backends for b in args.blocks for k in args.kernel_sizes]
    start = time.perf_counter()
    if args.counts:
        with open(args.counts) as f:
            earlier = json.load(f)
        wanted = set(cases)
        counts = [
            r
            for r in earlier["results"]
            if (r.get("backend", "triton"), r["block"], r["k"]) in wanted
        ]
        args.batch, args.jobs = earlier["batch"], earlier["jobs"]
        seconds = earlier["count_wall_s"]
    else:
        print(
            f"counting {len(cases)} cases at batch {args.batch} in {args.jobs} processes "
            "(triton: TRITON_INTERPRET=1, FUSED_INCEPTION_GPU_CONFIGS=1; cuda: the SIMT shim, "
            "FUSED_INCEPTION_EMULATE_CUDA=1)",
            file=sys.stderr,
            flush=True,
        )
        try:
            counts = run_counts(cases, args.batch, args.jobs)
        except RuntimeError as exc:
            print(f"work report: {exc}", file=sys.stderr)
            return 1
        seconds = time.perf_counter() - start
    results = [analyse(case, records) for case in counts]
    print(
        f"fp16, batch {args.batch}, channels_last, norm=False, eval forward; "
        f"MODEL times are estimates, not measurements"
    )
    print(HEADER)
    for result in results:
        for row in format_rows(result):
            print(row)
    for result in results:
        print(verdict_line(result))
    print(assumptions_text())
    print(
        f"counted in {seconds:.1f} s wall ({args.jobs} processes; per case: "
        + ", ".join(
            f"{r['backend']} {r['block']}/{r['k']} {r['count_s']:.0f}s "
            f"({r.get('count_cpu_s', 0):.0f}s CPU)"
            for r in results
        )
        + ")"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "batch": args.batch,
                    "model_batch": MODEL_BATCH,
                    "targets": TARGETS,
                    "assumptions": wm.ASSUMPTIONS,
                    "count_wall_s": round(seconds, 2),
                    "jobs": args.jobs,
                    "results": results,
                },
                f,
                indent=1,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
