"""pytest-benchmark suite: GoogLeNet's nine blocks, eager vs fused, grouped per block.

    pytest benchmarks/                      # not part of the default test run (testpaths=tests)
    pytest benchmarks/ --benchmark-json out.json -k "4e"

The cases are the ones `python -m fused_inception.bench` times (fused_inception.bench.block_impls);
pytest-benchmark does the timing and the statistics here. Batch and dtype come from
FUSED_INCEPTION_BENCH_BATCH (default 8) and the device's default dtype (fp16 on a GPU, fp32 on
the CPU).
"""

from __future__ import annotations

import os

import pytest
import torch

from fused_inception.backends import available_backends
from fused_inception.bench import LAYOUTS, block_impls
from fused_inception.configs import GOOGLENET_BLOCKS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = torch.float16 if DEVICE.type == "cuda" else torch.float32
BATCH = int(os.environ.get("FUSED_INCEPTION_BENCH_BATCH", "8"))
BACKENDS = [b for b in available_backends() if (b == "cpu") != (DEVICE.type == "cuda")]
IMPLS = ["eager"] + [f"fused_{b}" for b in BACKENDS]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("block", list(GOOGLENET_BLOCKS))
def test_block(benchmark, block, layout, impl):
    benchmark.group = f"{block} {layout} batch {BATCH} {str(DTYPE).replace('torch.', '')}"
    impls = block_impls(GOOGLENET_BLOCKS[block], BATCH, DTYPE, DEVICE, BACKENDS, layout)
    fn = next(iter(impls.values())) if impl == "eager" else impls[impl]

    def run():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        benchmark.pedantic(run, warmup_rounds=2, rounds=10, iterations=1)
