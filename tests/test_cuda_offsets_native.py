"""The CUDA kernels' int64 offset math (tile::pixel_index, tile::pixel_offset in
csrc/cuda/tile_math.cuh), checked past 2**31 elements by the torch-free tests/cpp/offsets.cpp.

Every index of x and of the block output in csrc/cuda/*.cu goes through these two functions; the
program compares them with 128-bit products at batch sizes where N*H*W*C passes 2**31 (and a
pixel stride past 2**30), cases that wrap with int32 arithmetic. The output side is also run
end to end through the emulated kernels in tests/test_hardening.py (sparse-file outputs).
"""

from __future__ import annotations

import native
import pytest

pytestmark = pytest.mark.skipif(
    native.missing_reason() is not None, reason=native.missing_reason() or ""
)

CASES = 5  # kCases in offsets.cpp


def test_offsets_past_2_31_are_exact() -> None:
    result = native.run(native.build("offsets.cpp"), timeout=120)
    assert result.returncode == 0, native.explain(result)
    assert f"checked {CASES} cases, 0 failed" in result.stdout, native.explain(result)
    assert result.stdout.count("\nok ") + result.stdout.startswith("ok ") == CASES
