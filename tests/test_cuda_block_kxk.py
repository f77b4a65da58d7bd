"""block_kxk version 2 (csrc/cuda/block_kxk.cu) executed on the CPU through the SIMT shim.

tests/cpp/block_kxk_parity.cpp (built with tests/native.py, no torch) checks the kernel against
a float64 reference with zero padding: NaN-poisoned outputs, two channel slices with gaps,
GoogLeNet's channel counts (3a, 4e, 5b) at small images with k3 = 3 and 5, odd channel counts,
tiny and wide images, unaligned pointers and offsets, fp16 and bf16; a small list also under
AddressSanitizer(+UBSan) and ThreadSanitizer. Its "counters" mode counts, at the tiling the
GPU would run for each of GoogLeNet's nine blocks at batch 8 (fp16), the executed tensor-core
MACs against the useful ones, the global bytes cp.async loads per useful FLOP and the
ldmatrix bank-conflict degree (simt::last_launch_stats).
"""

from __future__ import annotations

import re
import subprocess

import native
import pytest

pytestmark = pytest.mark.skipif(
    native.missing_reason() is not None, reason=native.missing_reason() or ""
)

# Number of cases in block_kxk_parity.cpp's lists (parity_cases, kBlocks x k3): keep in step.
CASES = {"all": 20, "small": 2, "counters": 18}


def _assert_all_passed(result: subprocess.CompletedProcess, cases: int) -> None:
    assert result.returncode == 0, native.explain(result)
    assert f"checked {cases} cases, 0 failed" in result.stdout, native.explain(result)
    assert len(re.findall(r"^ok ", result.stdout, flags=re.M)) == cases, native.explain(result)


def test_block_kxk_parity_all_cases() -> None:
    result = native.run(native.build("block_kxk_parity.cpp"), "all", timeout=600)
    _assert_all_passed(result, CASES["all"])


@pytest.mark.parametrize("sanitizer", ["address", "thread"], ids=["asan", "tsan"])
def test_block_kxk_parity_sanitized(sanitizer: str) -> None:
    result = native.run(
        native.build("block_kxk_parity.cpp", sanitizer=sanitizer), "small", timeout=600
    )
    _assert_all_passed(result, CASES["small"])
    for report in ("Sanitizer", "runtime error"):
        assert report not in result.stderr, native.explain(result)


def test_block_kxk_counters_googlenet() -> None:
    """Executed/useful MACs within 1.25 (3x3) and 1.30 (5x5 b3), ldmatrix conflict-free, and
    the counts equal to the chooser's model, on all nine blocks at batch 8."""
    result = native.run(native.build("block_kxk_parity.cpp"), "counters", timeout=600)
    print(result.stdout)  # the per-block lines (pytest -s shows them)
    _assert_all_passed(result, CASES["counters"])
    for line in result.stdout.splitlines():
        if line.startswith("ok counters"):
            assert "max degree 1," in line, line
