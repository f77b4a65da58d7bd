"""block_1x1 version 2 (csrc/cuda/block_1x1.cu: mma.sync, ldmatrix, cp.async) on the CPU.

tests/cpp/block_1x1_parity.cpp runs the kernel through the SIMT shim against a float64
reference, with NaN-poisoned outputs (b1 and b4 slices of the block output, the scratch r) and
NaN channels past c_in in x; it is built with tests/native.py (no torch) and run plain on every
case (GoogLeNet 3a, 4e and 5b channel counts, odd shapes, both dtypes, the four tilings
64 | 128 rows x 64 | 128 columns, partial last tiles, the element-load slow paths), and on a
small list under AddressSanitizer(+UBSan) and ThreadSanitizer.

The counter tests run each of GoogLeNet's nine blocks in fp16 at batch 8 and its own image
width, at the tiling block_1x1_plan chooses there (the GPU's: 128 x 128), and require executed /
useful MACs <= 1.25, no shared-memory bank conflicts (ldmatrix, lds, sts), cp.async loading at
least x and the weights once and at most MAX_BYTES_PER_FLOP global bytes per useful FLOP. The
launch is counted from one CTA per distinct tiling, launched alone, times the number of CTAs
that do the same work (same kind, columns in the column tile, rows in the M tile and, for the
pool, halo rows inside the image batch: the interior, first, last and partial tiles); this
gives the whole launch's counts exactly (run_counters in the C++ file, checked against full
launches) in seconds instead of the minutes of all CTAs, and those CTAs' outputs are checked
against the reference. Each prints its counters line (pytest -s shows it).
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
CASES = {"all": 38, "small": 4}

# The launch's global loads per useful FLOP at batch 8 (16-bit bytes; the counted cp.async bytes).
MAX_BYTES_PER_FLOP = 0.025


def test_block_1x1_parity_all_cases() -> None:
    result = native.run(native.build("block_1x1_parity.cpp"), "all", timeout=300)
    native.assert_cases_passed(result, CASES["all"])


@pytest.mark.parametrize("sanitizer", ["address", "thread"], ids=["asan", "tsan"])
def test_block_1x1_parity_sanitized(sanitizer: str) -> None:
    exe = native.build("block_1x1_parity.cpp", sanitizer=sanitizer)
    result = native.run(exe, "small", timeout=300)
    native.assert_cases_passed(result, CASES["small"])
    native.assert_no_sanitizer_report(result)


@pytest.mark.parametrize("name", list(GOOGLENET_BLOCKS))
def test_block_1x1_counters(name: str) -> None:
    c = GOOGLENET_BLOCKS[name]
    shape = (8, c.hw, c.hw, c.in_channels, c.ch1x1, c.ch3x3red, c.ch5x5red, c.pool_proj)
    exe = native.build("block_1x1_parity.cpp")
    result = native.run(exe, "counters", name, *map(str, shape), timeout=300)
    print(result.stdout)
    assert result.returncode == 0, native.explain(result)
    line = re.search(
        r"tile 128x128 .*executed/useful MACs ([\d.]+).*bytes/useful FLOP ([\d.]+).*"
        r"ldmatrix (\d+) lds (\d+) sts (\d+)",
        result.stdout,
    )
    assert line is not None, native.explain(result)
    assert 1.0 <= float(line.group(1)) <= 1.25, native.explain(result)
    assert float(line.group(2)) <= MAX_BYTES_PER_FLOP, native.explain(result)
    assert {line.group(3), line.group(4), line.group(5)} == {"1"}, native.explain(result)
