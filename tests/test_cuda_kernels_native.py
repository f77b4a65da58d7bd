"""The CUDA kernels (csrc/cuda/conv1x1_slice.cu, chain_1x1_kxk.cu) executed on the CPU.

tests/cpp/kernel_parity.cpp includes their SIMT-shim builds (csrc/emulated/*.cpp), runs every
case against a float64 reference computed from the formulas, with NaN-poisoned outputs and a
channel slice (c0 > 0, pixel stride > cout) so that unwritten and stray elements fail. It is
built with tests/native.py (no torch) and run plain on the full case list (three dtypes,
conv1x1 with and without pool, the chain with K = 3 and 5, odd shapes, GoogLeNet 3a and 5b
channel counts) and on a small list under AddressSanitizer(+UBSan) and ThreadSanitizer.

The driver prints "checked <n> cases" and a self-test line (a correct result corrupted three
ways must fail the check three times), so a run that checks nothing cannot pass.
"""

from __future__ import annotations

import native
import pytest

pytestmark = pytest.mark.skipif(
    native.missing_reason() is not None, reason=native.missing_reason() or ""
)

# Number of cases in kernel_parity.cpp's lists (make_cases): keep in step with it.
CASES = {"all": 60, "small": 6}


def test_kernel_parity_all_cases() -> None:
    result = native.run(native.build("kernel_parity.cpp"), "all", timeout=300)
    native.assert_cases_passed(result, CASES["all"])


@pytest.mark.parametrize("sanitizer", ["address", "thread"], ids=["asan", "tsan"])
def test_kernel_parity_sanitized(sanitizer: str) -> None:
    result = native.run(
        native.build("kernel_parity.cpp", sanitizer=sanitizer), "small", timeout=300
    )
    native.assert_cases_passed(result, CASES["small"])
    native.assert_no_sanitizer_report(result)
