"""The CPU SIMT shim (csrc/simt): the torch-free programs tests/cpp/shim_*.cpp, built with the
system compiler through tests/native.py, run plain and under AddressSanitizer/ThreadSanitizer.

Each program checks its own results, prints "OK: ..." and exits 0, or prints FAIL lines and exits
non-zero. Negative tests (a missing __syncthreads, out-of-range shared memory) assert on the
sanitizer's report, and each has a correct twin that must pass, so none can pass vacuously.
"""

from __future__ import annotations

import os
import subprocess

import native
import pytest

pytestmark = pytest.mark.skipif(
    native.missing_reason() is not None, reason=native.missing_reason() or ""
)

SANITIZERS = pytest.mark.parametrize(
    "sanitizer", [None, "address", "thread"], ids=["plain", "asan", "tsan"]
)


def _run(
    source: str,
    sanitizer: str | None = None,
    defines: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    exe = native.build(source, sanitizer=sanitizer, defines=defines)
    return native.run(exe, *args, timeout=120)


def _assert_clean(result: subprocess.CompletedProcess, ok_line: str) -> None:
    assert result.returncode == 0, native.explain(result)
    assert ok_line in result.stdout, native.explain(result)
    assert "Sanitizer" not in result.stderr and "runtime error" not in result.stderr, (
        native.explain(result)
    )


@SANITIZERS
def test_block_reduction_is_exact(sanitizer: str | None) -> None:
    # 3x2 grid of 256-thread blocks, tree reduction through __shared__ and __syncthreads,
    # launched with FI_LAUNCH (-Wall -Wextra -Werror, as every test program).
    _assert_clean(_run("shim_reduce.cpp", sanitizer), "OK: 6 block sums exact")


def test_missing_syncthreads_is_a_data_race() -> None:
    # The synced twin is test_block_reduction_is_exact[tsan].
    result = _run("shim_reduce.cpp", "thread", {"SIMT_SKIP_SYNC": "1"})
    assert result.returncode != 0, native.explain(result)
    assert "WARNING: ThreadSanitizer: data race" in result.stderr, native.explain(result)
    assert "block_sum" in result.stderr, native.explain(result)


def test_missing_syncthreads_gives_wrong_sums_on_fibers() -> None:
    # Fiber mode runs a block's threads in turn, in increasing and decreasing order in alternate
    # __syncthreads phases, so a missing barrier reads stale values whichever thread writes
    # first: the plain (fiber) build of the racy reduction must get sums wrong. Its synced twin
    # is test_block_reduction_is_exact[plain].
    result = _run("shim_reduce.cpp", None, {"SIMT_SKIP_SYNC": "1"})
    assert result.returncode != 0, native.explain(result)
    assert "FAIL: block" in result.stdout, native.explain(result)


@pytest.mark.parametrize(
    ("variant", "report"),
    [(0, None), (1, "global-buffer-overflow"), (2, "heap-buffer-overflow")],
    ids=["in_range", "past_static_shared", "past_dynamic_shared"],
)
def test_shared_memory_overrun_caught_by_asan(variant: int, report: str | None) -> None:
    result = _run("shim_oob.cpp", "address", args=(str(variant),))
    if report is None:
        _assert_clean(result, "OK: shared accesses of variant 0 in range")
    else:
        assert result.returncode != 0, native.explain(result)
        assert f"ERROR: AddressSanitizer: {report}" in result.stderr, native.explain(result)
        assert "neighbour_sum" in result.stderr, native.explain(result)


@pytest.mark.parametrize("sanitizer", [None, "thread"], ids=["plain", "tsan"])
def test_wmma_tile_products(sanitizer: str | None) -> None:
    # Under TSan a launch costs ~0.1 s: one layout pair per shape and type instead of four.
    quick = sanitizer == "thread"
    result = _run("shim_wmma.cpp", sanitizer, {"SIMT_WMMA_QUICK": str(int(quick))})
    _assert_clean(result, "OK: all WMMA tile products match")
    # (3 shapes x 2 types x layout pairs) x 2 store layouts, one "ok" line each
    expected_configs = 3 * 2 * (1 if quick else 4) * 2
    assert sum(line.startswith("ok ") for line in result.stdout.splitlines()) == expected_configs


@pytest.mark.parametrize(
    ("os_threads", "sanitizer"),
    [(0, None), (1, None), (0, "address")],
    ids=["fibers", "os_threads", "fibers_asan"],
)
def test_misuse_is_reported(os_threads: int, sanitizer: str | None) -> None:
    # fibers_asan: the fiber switches (and the deadlock's early exits) under AddressSanitizer.
    result = _run("shim_faults.cpp", sanitizer, defines={"SIMT_OS_THREADS": str(os_threads)})
    _assert_clean(result, "OK: all misuse detected")
    # Fiber mode reports a lane that skips __syncwarp (OS threads would hang: not run there).
    deadlock = (
        "deadlock in block (1,0,0): no thread can go on; 31 wait in __syncwarp, a warp shuffle "
        "or a warp vote (thread (0,0,0) and others), 33 wait in __syncthreads or the end of the "
        "block (thread (3,0,0) and others)"
    )
    assert (deadlock in result.stdout) == (os_threads == 0), native.explain(result)
    for message in [
        "has 2048 threads, the limit is 1024",
        "above 48 KiB requires set_max_dynamic_shared",
        "__syncthreads mismatch in block (0,0,0): thread (5,0,0) reached the end of the kernel",
        "wmma::load_matrix_sync: pointer",
        "is not 256-bit (32-byte) aligned",
        "wmma::load_matrix_sync: ldm 20 is not a multiple of 8 elements",
        "wmma::store_matrix_sync: ldm 18 is not a multiple of 4 elements",
        "partial warp of 16 lanes",
    ]:
        assert message in result.stdout, native.explain(result)


@pytest.mark.parametrize("sanitizer", [None, "thread"], ids=["plain", "tsan"])
def test_compat_macros_indices_and_order(sanitizer: str | None) -> None:
    result = _run("shim_compat.cpp", sanitizer)
    _assert_clean(result, "OK: launch hygiene, compat macros, block order, indices")


def test_kernel_file_compiles_with_nvcc(tmp_path) -> None:
    # shim_reduce.cpp is written like a csrc/cuda/*.cu file: nvcc takes compat.cuh's CUDA branch.
    nvcc = native.CUDA_HOME / "bin" / "nvcc"
    if not nvcc.exists():
        pytest.skip(f"no nvcc under {native.CUDA_HOME}/bin (set CUDA_HOME)")
    cmd = [
        str(nvcc),
        "-std=c++20",
        "-arch=sm_90",
        f"-I{native.CSRC}",
        "-c",
        "-x",
        "cu",
        str(native.CPP_TESTS / "shim_reduce.cpp"),
        "-o",
        str(tmp_path / "shim_reduce.o"),
    ]
    env = {**os.environ, "CUDA_HOME": str(native.CUDA_HOME)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, native.explain(result)
