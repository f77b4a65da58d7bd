"""compute-sanitizer over every kernel once: a child process of this command
(`python -m fused_inception.gpucheck --sanitizer-child`) runs a small block on each backend,
dtype and form (sanitizer_cases), once under each tool (memcheck, racecheck, synccheck,
initcheck); each tool's log goes into the output folder.

The child runs with PyTorch's caching allocator off (PYTORCH_NO_CUDA_MEMORY_CACHING=1), so an
access past a tensor's end lands outside any allocation where memcheck sees it instead of in a
pooled block, and with autotuning off (each kernel launched in its one chosen configuration).
A tool fails when the child exits non-zero or its "ERROR SUMMARY" counts errors; without
compute-sanitizer the stage says so and is skipped (ok None), which is not a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

import torch

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.gpucheck.parity import FORMS, ParityCase, parity_cases

TOOLS = ("memcheck", "racecheck", "synccheck", "initcheck")
# GoogLeNet's 3a channel counts at 8x8: every kernel and tile kind, in seconds per tool.
SMALL_BLOCK = GOOGLENET_BLOCKS["3a"]._replace(hw=8)
CHILD_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
CHILD_ENV = {"PYTORCH_NO_CUDA_MEMORY_CACHING": "1", "FUSED_INCEPTION_AUTOTUNE": "0"}
_SUMMARY = re.compile(r"ERROR SUMMARY:\s*(\d+)\s+error")


def find_sanitizer(which: Callable[[str], str | None] = shutil.which) -> str | None:
    """compute-sanitizer on PATH, else in $CUDA_HOME/bin; None where neither has it."""
    found = which("compute-sanitizer")
    if found:
        return found
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    candidate = os.path.join(home, "bin", "compute-sanitizer") if home else None
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def sanitizer_cases(backends: Sequence[str]) -> list[ParityCase]:
    """What the child runs: the small block on every backend, dtype and form, batch 1."""
    return parity_cases(
        {"3a@8x8": SMALL_BLOCK}, backends, CHILD_DTYPES, ["channels_last"], tuple(FORMS), 1
    )


def child_command(backends: Sequence[str]) -> list[str]:
    """The child's command line (this Python, this package)."""
    cmd = [sys.executable, "-m", "fused_inception.gpucheck", "--sanitizer-child"]
    return [*cmd, "--backends", *backends]


def errors_reported(log: str) -> int | None:
    """The sum of the "ERROR SUMMARY: N errors" lines in a log; None if it has none."""
    counts = [int(n) for n in _SUMMARY.findall(log)]
    return sum(counts) if counts else None


def run_tool(
    sanitizer: str, tool: str, backends: Sequence[str], out_dir: str, timeout_s: float
) -> dict:
    """One child under `compute-sanitizer --tool <tool>`; its whole output into
    <out_dir>/sanitizer-<tool>.log."""
    log_path = os.path.join(out_dir, f"sanitizer-{tool}.log")
    cmd = [sanitizer, "--tool", tool, *child_command(backends)]
    check = {"stage": "sanitizer", "name": tool, "log": log_path, "command": cmd}
    env = {**os.environ, **CHILD_ENV}
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout_s, check=False
        )
        log, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or b""
        log = out.decode(errors="replace") if isinstance(out, bytes) else out
        log += f"\n[gpucheck] timed out after {timeout_s:.0f} s\n"
        rc = None
    with open(log_path, "w") as f:
        f.write(log)
    errors = errors_reported(log)
    if rc is None:
        return {**check, "ok": False, "errors": errors, "detail": f"timed out ({timeout_s:.0f} s)"}
    ok = rc == 0 and errors == 0
    detail = f"exit {rc}, " + ("no ERROR SUMMARY line" if errors is None else f"{errors} errors")
    return {**check, "ok": ok, "errors": errors, "exit_status": rc, "detail": detail}


def run_sanitizer(
    backends: Sequence[str],
    out_dir: str,
    *,
    tools: Sequence[str] = TOOLS,
    timeout_s: float = 300.0,
    which: Callable[[str], str | None] = shutil.which,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Every tool once over the child; one skipped check saying so without compute-sanitizer."""
    sanitizer = find_sanitizer(which)
    if sanitizer is None:
        detail = (
            "skipped: compute-sanitizer is not installed (not on PATH nor in $CUDA_HOME/bin); "
            "no kernel was run under memcheck, racecheck, synccheck or initcheck"
        )
        log(f"  {detail}")
        return [{"stage": "sanitizer", "name": "compute-sanitizer", "ok": None, "detail": detail}]
    checks = []
    for tool in tools:
        check = run_tool(sanitizer, tool, backends, out_dir, timeout_s)
        log(f"  {tool}: {'ok' if check['ok'] else 'FAIL'} ({check['detail']}; {check['log']})")
        checks.append(check)
    return checks
