"""The benchmark stage: fused_inception.bench's cases (its case building, interleaved timing
and roofline fields, through bench.cli.run_case), each row beside the work report's roofline
MODEL of the same block, batch and dtype.

MODEL columns (fused_inception.report.work_model; estimates, not measurements):
- eager and torch.compile rows: the unfused cuDNN-class sequence (work_model.unfused_ms), always
  available for a block on a GPU the model knows (A100, H100);
- fused rows: the fused launches' MODEL (work_analysis.fused_model, scaled to the row's batch)
  from the counts of an earlier `python -m fused_inception.report --work --json PATH` given as
  --work-json; without it "-". The work report counts the paper's form; after BN folding the
  torchvision form runs the same kernels on the same shapes.
The network has no MODEL. Only 16-bit rows are modelled (the MODEL is of fp16 tensor cores).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import NamedTuple

from fused_inception.bench.cases import DTYPES, NETWORK
from fused_inception.bench.cli import run_case
from fused_inception.bench.peaks import device_peak
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.gpucheck.budget import Budget
from fused_inception.report import work_model
from fused_inception.report.work_analysis import fused_model

LAYOUT = "channels_last"  # the fused kernels' own layout; NCHW input only adds a conversion
BRANCH3_KERNEL = 3  # the benchmark's blocks are torchvision's


class Plan(NamedTuple):
    """What the stage times."""

    blocks: tuple[str, ...]
    batches: tuple[int, ...]
    dtypes: tuple[str, ...]
    compile_modes: tuple[str, ...]
    repeats: int
    warmup: int
    min_seconds: float


FULL_PLAN = Plan(
    (*GOOGLENET_BLOCKS, NETWORK),
    (1, 32, 128),
    ("float16", "bfloat16"),
    ("max-autotune",),
    10,
    2,
    0.1,
)
QUICK_PLAN = Plan(("3a", "4e", "5b", NETWORK), (32,), ("float16",), (), 5, 1, 0.0)


def model_gpu_for(device_name: str) -> str | None:
    """The work model's GPU (work_model.GPUS) for a device name, or None."""
    for key in work_model.GPUS:
        if key in device_name:
            return key
    return None


def load_work(path: str) -> dict[tuple[str, str, int], dict]:
    """The analysed results of a work report's --json, by (backend, block, branch-3 kernel
    size); results of reports from before the cuda rows are the triton backend's."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or "results" not in data:
        raise ValueError(f"{path}: not the JSON of `python -m fused_inception.report --work`")
    return {(r.get("backend", "triton"), r["block"], r["k"]): r for r in data["results"]}


def model_fields(
    block: str, batch: int, dtype: str, gpu: str | None, work: dict | None, backend: str = "triton"
) -> dict[str, float | str | None]:
    """model_gpu, model_unfused_ms and model_fused_ms (of `backend`'s counted launches) of one
    case (None where not modelled)."""
    fields = {"model_gpu": gpu, "model_unfused_ms": None, "model_fused_ms": None}
    if gpu is None or block == NETWORK or DTYPES[dtype].itemsize != 2:
        return fields
    cfg = GOOGLENET_BLOCKS[block]
    fields["model_unfused_ms"] = round(
        work_model.unfused_ms(work_model.GPUS[gpu], cfg, BRANCH3_KERNEL, batch, 2)["ms"], 5
    )
    counted = (work or {}).get((backend, block, BRANCH3_KERNEL))
    if counted is not None:
        fields["model_fused_ms"] = round(fused_model(counted, gpu, batch)["fused_ms"], 5)
    return fields


def with_model(row: dict, fields: dict) -> dict:
    """The row plus the MODEL fields and "model_ms": the fused MODEL for a fused row, the
    unfused one for the others, and measured / model."""
    fused = row["impl"].startswith("fused_")
    model = fields["model_fused_ms"] if fused else fields["model_unfused_ms"]
    ratio = None if model is None else round(row["median_ms"] / model, 3)
    return {**row, **fields, "model_ms": model, "measured_over_model": ratio}


def run_bench(
    device,
    backends: Sequence[str],
    plan: Plan,
    budget: Budget,
    *,
    compile_budget_s: float,
    work: dict | None = None,
    model_gpu: str | None = None,
    log: Callable[[str], None] = print,
) -> tuple[list[dict], list[str]]:
    """Time the plan's cases while the budget lasts; (rows, cases skipped and why).

    torch.compile runs while its own seconds stay under compile_budget_s; later cases go
    without it (listed in the skipped). Compile seconds are in the rows' compile_s, never in
    a median.
    """
    peak, source = device_peak(device, tuple(DTYPES[d] for d in plan.dtypes))
    log(f"  peak rates: {source}")
    args = argparse.Namespace(
        device=device,
        compile=[],
        compile_network=False,
        backend=list(backends),
        repeats=plan.repeats,
        warmup=plan.warmup,
        min_seconds=plan.min_seconds,
        run_length=1,  # one call per round, the benchmark's GPU default (CUDA events per call)
        # The ONNX Runtime row is a CPU baseline (the benchmark's); the GPU check has none.
        ort_skipped=dict.fromkeys(plan.dtypes, "not part of the GPU check"),
    )
    rows: list[dict] = []
    skipped: list[str] = []
    compile_spent = 0.0
    for dtype in plan.dtypes:
        for batch in plan.batches:
            for block in plan.blocks:
                case = f"{block} batch {batch} {dtype}"
                if budget.left() <= 0:
                    skipped.append(f"{case}: time budget spent")
                    continue
                args.compile = list(plan.compile_modes)
                if args.compile and block != NETWORK and compile_spent >= compile_budget_s:
                    skipped.append(
                        f"{case}: torch.compile left out ({compile_budget_s:.0f} s "
                        "compile budget spent)"
                    )
                    args.compile = []
                new = run_case(args, block, batch, dtype, LAYOUT, peak)
                compile_spent += sum(r["compile_s"] or 0.0 for r in new)
                for r in new:
                    backend = r["impl"].removeprefix("fused_")  # the fused rows' backend
                    fields = model_fields(block, batch, dtype, model_gpu, work, backend)
                    rows.append(with_model(r, fields))
                log("  " + case_line(rows[-len(new) :]))
    return rows, skipped


def case_line(rows: Sequence[dict]) -> str:
    """One printed line per case: each implementation's ms and speedup."""
    head = rows[0]
    parts = [
        f"{r['impl'].removeprefix('torchvision_')} {r['median_ms']:.3g} ms ({r['speedup']:.2f}x)"
        for r in rows
    ]
    return f"{head['block']} batch {head['batch']} {head['dtype']}: " + ", ".join(parts)
