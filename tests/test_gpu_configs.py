"""The Triton backend with the exact GPU tile configurations (FUSED_INCEPTION_GPU_CONFIGS=1), under
the interpreter, on GoogLeNet blocks at their real sizes: output parity against float64.

The other Triton tests run the interpreter's larger chunks (launch_config's overrides); these
run the tiles, chunks and masks a GPU runs, which the work report (python -m
fused_inception.report --work) counts. The variable is read at import, so each block runs in a
subprocess that sets it (and TRITON_INTERPRET) before importing fused_inception. 5b has no
column tail; 4e's GEMM over x and b2 run 64-column tails merged into their last full block,
3b's GEMM over x a 32-column one, b2 a 64-column one and b3 (96 = 64 + 32) a 32-column one.
Measured on a 2-core Sapphire Rapids host (xdist, 2026-12-04): 12 s (5b), 22 s (4e) and 26 s
(3b), 41 s of wall time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)

# Runs in the child: every (dtype, k) of one block at batch 1, poisoned outputs, float64 reference.
CHILD = """
import sys, torch
sys.path.insert(0, {tests!r})
from helpers import assert_close_rel, randomize_block, reference_f64
from fused_inception import FusedInception
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.triton import INTERPRETER, common

assert INTERPRETER and common.FORCE_GPU_CONFIGS, "the GPU configs are not on"
launches = []
common.launch_listener = lambda kernel, grid, macs, rows: launches.append(kernel)
cfg = GOOGLENET_BLOCKS[{block!r}]
for dtype in (torch.float16, torch.float32):
    for k in (3, 5):
        block = FusedInception(*cfg.args(), branch3_kernel=k, norm=False, backend="triton")
        block = randomize_block(block, seed=k).eval()
        gen = torch.Generator().manual_seed(k)
        x = torch.randn(1, cfg.in_channels, cfg.hw, cfg.hw, generator=gen).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        ref = reference_f64(block, x)
        fused = block.to(dtype)
        before = len(launches)
        with torch.no_grad(), poison_outputs(True):
            out = fused(x)
        assert len(launches) > before, "no Triton launch"
        assert_close_rel(out, ref, dtype, f"{block!r} {{dtype}} k={{k}}")
        print("ok", {block!r}, dtype, k, flush=True)
"""


@pytest.mark.parametrize("block", ["5b", "4e", "3b"])
def test_gpu_configs_parity(block):
    env = {**os.environ, "TRITON_INTERPRET": "1", "FUSED_INCEPTION_GPU_CONFIGS": "1"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    code = CHILD.format(tests=TESTS, block=block)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert proc.stdout.count("ok ") == 4, proc.stdout
