"""Build and run the torch-free C++ test programs in tests/cpp/ with the system compiler.

These programs exercise csrc/simt (the CPU SIMT shim) and the csrc/cuda kernels compiled as
plain C++, optionally under AddressSanitizer or ThreadSanitizer, without loading torch.
Builds are cached under the pytest cache directory, keyed by the sources' contents and flags.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CSRC = REPO / "csrc"
CPP_TESTS = Path(__file__).resolve().parent / "cpp"
CUDA_HOME = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
SANITIZER_FLAGS = {
    None: ["-O2"],
    "address": ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"],
    "thread": ["-O1", "-g", "-fsanitize=thread"],
}
_BUILD_DIR = REPO / ".pytest_cache" / "native"


def compiler() -> str | None:
    """The C++ compiler used for the test programs (CXX, else g++), or None if there is none."""
    return shutil.which(os.environ.get("CXX", "g++"))


def missing_reason() -> str | None:
    """Why the C++ test programs cannot be built here, or None."""
    if compiler() is None:
        return "no C++ compiler (set CXX or install g++)"
    if not (CUDA_HOME / "include" / "cuda_fp16.h").exists():
        return f"no CUDA headers under {CUDA_HOME}/include (set CUDA_HOME)"
    return None


def _dependencies() -> list[Path]:
    suffixes = {".h", ".cuh", ".cu", ".cpp"}
    return sorted(
        p
        for root in (CSRC / "simt", CSRC / "cuda", CPP_TESTS)
        for p in root.rglob("*")
        if p.suffix in suffixes
    )


def build(
    source: str,
    sanitizer: str | None = None,
    defines: dict[str, str] | None = None,
    system_includes: tuple[Path, ...] = (),
) -> Path:
    """Compile tests/cpp/<source> (it may #include csrc files) and return the executable.
    system_includes: extra -isystem directories (third-party headers, exempt from -Werror)."""
    flags = [
        "-std=c++20",
        "-pthread",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-I{CSRC}",
        f"-isystem{CUDA_HOME / 'include'}",
        *(f"-isystem{d}" for d in system_includes),
        *SANITIZER_FLAGS[sanitizer],
        *(f"-D{k}={v}" for k, v in sorted((defines or {}).items())),
    ]
    digest = hashlib.sha256(" ".join(flags).encode())
    digest.update(source.encode())
    for dep in _dependencies():
        digest.update(dep.read_bytes())
    exe = _BUILD_DIR / f"{Path(source).stem}-{sanitizer or 'plain'}-{digest.hexdigest()[:16]}"
    if not exe.exists():
        _BUILD_DIR.mkdir(parents=True, exist_ok=True)
        tmp = exe.with_name(f"{exe.name}.{os.getpid()}.tmp")  # parallel test workers
        cmd = [compiler(), *flags, str(CPP_TESTS / source), "-o", str(tmp)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"compile failed: {' '.join(cmd)}\n{result.stderr[-8000:]}")
        tmp.rename(exe)
    return exe


def run(
    exe: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run a built test program; returns the completed process (the caller checks it)."""
    full_env = {**os.environ, **(env or {})}
    # Sanitizer runtimes must not see torch's preloads (and the reports must be complete).
    full_env.pop("LD_PRELOAD", None)
    full_env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    full_env.setdefault("TSAN_OPTIONS", "halt_on_error=1:second_deadlock_stack=1")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=timeout, env=full_env
    )


def explain(result: subprocess.CompletedProcess, limit: int = 6000) -> str:
    """A failed (or unexpected) run's exit code, stdout and stderr tails, for assert messages."""
    return (
        f"exit code {result.returncode}\n--- stdout\n{result.stdout[-limit:]}"
        f"\n--- stderr\n{result.stderr[-limit:]}"
    )


def assert_cases_passed(result: subprocess.CompletedProcess, cases: int) -> None:
    """A parity driver's run (tests/cpp/parity_common.h run_cases) checked `cases` cases, all
    "ok", and its self-test caught every corruption: a run that checks nothing cannot pass."""
    assert result.returncode == 0, explain(result)
    assert f"checked {cases} cases, 0 failed" in result.stdout, explain(result)
    assert len(re.findall(r"^ok ", result.stdout, flags=re.M)) == cases, explain(result)
    assert "self-test caught 3 of 3 corruptions" in result.stdout, explain(result)


def assert_no_sanitizer_report(result: subprocess.CompletedProcess) -> None:
    """No AddressSanitizer/ThreadSanitizer/UBSan report in a sanitized run's stderr."""
    for report in ("Sanitizer", "runtime error"):
        assert report not in result.stderr, explain(result)
