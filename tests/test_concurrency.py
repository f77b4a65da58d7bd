"""Threads and fork around the emulated backends.

- fork() while another thread is inside an emulated CUDA launch: the SIMT shim's launch mutex
  used to be copied into the child locked by a thread the child does not have, and the child's
  first launch waited forever. Run in a subprocess with a timeout, so a deadlock fails the test
  instead of hanging CI.
- Triton's interpreter is not thread-safe (four threads running forwards at once: three
  InterpreterErrors); the package serializes its interpreter launches.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import fused_inception
from fused_inception import FusedInception
from fused_inception.backends import available_backends, cuda_kernel_builds

FORK_SCRIPT = r"""
import os, sys, threading, time
os.environ["FUSED_INCEPTION_EMULATE_CUDA"] = "1"
import torch
from fused_inception import FusedInception
from fused_inception.packing import prepare_conv1x1

torch.manual_seed(0)
# A launch of 8x16 pixels with the pool: long enough (many __syncthreads) that a fork lands
# inside one almost every time.
x = torch.randn(2, 16, 8, 16).contiguous(memory_format=torch.channels_last)
w, b = prepare_conv1x1(torch.randn(16, 16, 1, 1), torch.randn(16))
block = FusedInception(16, 4, 4, 8, 2, 4, 4, backend="cuda").eval()
small = torch.randn(1, 16, 3, 3)
with torch.no_grad():
    expected = block(small)

stop = threading.Event()
launches = [0]

def launch_forever():
    out = torch.empty_like(x)
    while not stop.is_set():
        torch.ops.fused_inception.conv1x1_slice_(x, w, b, out, 0, True)
        launches[0] += 1

thread = threading.Thread(target=launch_forever, daemon=True)
thread.start()
while launches[0] == 0:
    time.sleep(0.01)
hung = 0
for attempt in range(ROUNDS):
    time.sleep(0.05)
    pid = os.fork()
    if pid == 0:  # the child: one emulated forward of the block (four launches)
        with torch.no_grad():
            same = torch.equal(block(small), expected)
        os._exit(0 if same else 3)
    deadline = time.monotonic() + CHILD_TIMEOUT
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            assert code == 0, f"child {attempt} exited with {code}"
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            hung += 1
            break
        time.sleep(0.01)
stop.set()
thread.join()
print(f"FORK-RESULT hung={hung} of {ROUNDS}, parent launches={launches[0]}")
sys.exit(1 if hung else 0)
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # The subprocess imports this checkout's fused_inception, not an installed one.
    root = str(Path(fused_inception.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    return env


@pytest.mark.skipif(
    "emulated" not in cuda_kernel_builds(), reason="no emulated build of the CUDA kernels"
)
def test_fork_during_an_emulated_launch_leaves_the_child_working():
    script = FORK_SCRIPT.replace("ROUNDS", "4").replace("CHILD_TIMEOUT", "20")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "FORK-RESULT hung=0" in proc.stdout, (
        f"exit status {proc.returncode}\nstdout: {proc.stdout[-2000:]}\n"
        f"stderr: {proc.stderr[-3000:]}"
    )


@pytest.mark.skipif("triton" not in available_backends(), reason="triton cannot run here")
def test_triton_forwards_from_four_threads():
    torch.manual_seed(0)
    block = FusedInception(8, 4, 4, 6, 2, 3, 3, backend="triton").eval()
    x = torch.randn(1, 8, 5, 6)
    with torch.no_grad():
        expected = block(x)
    results: list[object] = []

    def run() -> None:
        try:
            for _ in range(2):
                with torch.no_grad():
                    results.append(torch.equal(block(x), expected))
        except Exception as exc:  # recorded: an exception in a thread would be lost
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads), "a thread did not finish"
    assert results == [True] * 8, results
