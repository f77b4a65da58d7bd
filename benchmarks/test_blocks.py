"""pytest-benchmark suite: GoogLeNet's nine blocks and the whole network, grouped per case.

    pytest -n 0 benchmarks/                 # not part of the default test run (testpaths=tests)
    pytest -n 0 benchmarks/ --benchmark-json out.json -k "4e"
    FUSED_INCEPTION_BENCH_COMPILE=0 pytest -n 0 benchmarks/    # without torch.compile

`-n 0` turns off pytest-xdist (pyproject's addopts use `-n auto`): pytest-benchmark does not
time under xdist, and parallel workers would share the cores being measured.

The cases are the ones `python -m fused_inception.bench` times (fused_inception.bench.cases:
same modules, same rotated inputs); pytest-benchmark does the timing and the statistics here.
Each group (block, layout, batch, dtype) holds torchvision's eager module, FusedInception per
backend and torch.compile (mode "default") of torchvision's module, compiled by a first call
outside the timed rounds (its seconds go to the benchmark's extra_info["compile_s"]).

Environment:
- FUSED_INCEPTION_BENCH_BATCH: batch size (default 8);
- FUSED_INCEPTION_BENCH_COMPILE=0: leave torch.compile out (each block compiles in 10-30 s on a
  2-core CPU, the first time; inductor's cache makes later runs faster);
- FUSED_INCEPTION_BENCH_COMPILE_NETWORK=1: compile the whole network too (off by default:
  about 140 s per layout on a 2-core CPU).
The dtype is the device's default (fp16 on a GPU, fp32 on the CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from fused_inception.bench.cases import (
    DTYPES,
    EAGER,
    LAYOUTS,
    NETWORK,
    PREPARED_FOLDED,
    build_case,
    compile_impl_name,
    default_dtypes,
    dtype_name,
    fused_impl_name,
    prepared_impl_name,
    timed_backends,
)
from fused_inception.bench.timing import first_call_seconds
from fused_inception.configs import GOOGLENET_BLOCKS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = DTYPES[default_dtypes(DEVICE)[0]]
BATCH = int(os.environ.get("FUSED_INCEPTION_BENCH_BATCH", "8"))
COMPILE = os.environ.get("FUSED_INCEPTION_BENCH_COMPILE", "1") != "0"
COMPILE_NETWORK = os.environ.get("FUSED_INCEPTION_BENCH_COMPILE_NETWORK", "0") == "1"
# (row name, FusedInception backends, torch.compile modes): what build_case makes for each.
IMPLS = [(EAGER, (), ())] + [(fused_impl_name(b), (b,), ()) for b in timed_backends(DEVICE)]
IMPLS += [(compile_impl_name("default"), (), ("default",))] if COMPILE else []
# The network prepared by prepare_for_inference (no such row for a block).
PREPARED = [prepared_impl_name(b) for b in timed_backends(DEVICE)]
IMPLS += [(name, (b,), ()) for name, b in zip(PREPARED, timed_backends(DEVICE), strict=True)]
PREPARED.append(PREPARED_FOLDED)
IMPLS += [(PREPARED_FOLDED, (), ())]


@pytest.mark.parametrize("impl, backends, modes", IMPLS, ids=[impl for impl, _, _ in IMPLS])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block", [*GOOGLENET_BLOCKS, NETWORK])
def test_block(benchmark, block, layout, impl, backends, modes):
    if block == NETWORK and modes and not COMPILE_NETWORK:
        pytest.skip("compiling the network takes minutes; FUSED_INCEPTION_BENCH_COMPILE_NETWORK=1")
    if block != NETWORK and impl in PREPARED:
        pytest.skip("prepare_for_inference rows are timed for the whole network only")
    benchmark.group = f"{block} {layout} batch {BATCH} {dtype_name(DTYPE)}"
    case = build_case(block, BATCH, DTYPE, DEVICE, layout, backends, modes)
    fn = case.calls[impl]

    def run():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        if case.compiled:
            benchmark.extra_info["compile_s"] = first_call_seconds(fn, DEVICE)
        benchmark.pedantic(run, warmup_rounds=2, rounds=10, iterations=1)
