"""block_1x1 version 2 (csrc/cuda/block_1x1.cu: mma.sync, ldmatrix, cp.async) on the CPU.

tests/cpp/block_1x1_parity.cpp runs the kernel through the SIMT shim against a float64
reference, with NaN-poisoned outputs (b1 and b4 slices of the block output, the scratch r) and
NaN channels past c_in in x; it is built with tests/native.py (no torch) and run plain on every
case (GoogLeNet 3a, 4e and 5b channel counts, odd shapes, both dtypes), and on a small list under
AddressSanitizer(+UBSan) and ThreadSanitizer.

The counter tests run each of GoogLeNet's nine blocks in fp16 at its own image width (the
tile configuration a GPU runs: the column tiles depend on the channel counts, the pool's halo
on the width) over two pixel tiles, and require executed / useful MACs <= 1.25, no shared-memory
bank conflicts (ldmatrix, lds, sts) and cp.async loading at least x and the weights once. Each
prints its counters line (pytest -s shows it).
"""

from __future__ import annotations

import re

import native
import pytest

from fused_inception.configs import GOOGLENET_BLOCKS

pytestmark = pytest.mark.skipif(
    native.missing_reason() is not None, reason=native.missing_reason() or ""
)

# Number of cases in block_1x1_parity.cpp's lists (make_cases): keep in step with it.
CASES = {"all": 28, "small": 3}


def test_block_1x1_parity_all_cases() -> None:
    result = native.run(native.build("block_1x1_parity.cpp"), "all", timeout=300)
    native.assert_cases_passed(result, CASES["all"])


@pytest.mark.parametrize("sanitizer", ["address", "thread"], ids=["asan", "tsan"])
def test_block_1x1_parity_sanitized(sanitizer: str) -> None:
    exe = native.build("block_1x1_parity.cpp", sanitizer=sanitizer)
    result = native.run(exe, "small", timeout=300)
    native.assert_cases_passed(result, CASES["small"])
    native.assert_no_sanitizer_report(result)


def _counted_size(hw: int) -> tuple[int, int]:
    """(batch, height) for about two 64-row pixel tiles at width hw, rows a whole image's."""
    return (2, hw) if hw * hw < 64 else (1, max(1, 128 // hw - 1))


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_block_1x1_counters(name: str) -> None:
    c = GOOGLENET_BLOCKS[name]
    batch, height = _counted_size(c.hw)
    shape = (batch, height, c.hw, c.in_channels, c.ch1x1, c.ch3x3red, c.ch5x5red, c.pool_proj)
    exe = native.build("block_1x1_parity.cpp")
    result = native.run(exe, "counters", name, *map(str, shape), timeout=300)
    print(result.stdout)
    assert result.returncode == 0, native.explain(result)
    line = re.search(
        r"executed/useful MACs ([\d.]+).*ldmatrix (\d+) lds (\d+) sts (\d+)", result.stdout
    )
    assert line is not None, native.explain(result)
    assert 1.0 <= float(line.group(1)) <= 1.25, native.explain(result)
    assert {line.group(2), line.group(3), line.group(4)} == {"1"}, native.explain(result)
