"""Peak memory of one cpu-backend forward at a large input, against torchvision's eager block.

The Winograd workspace used to grow with the image (chunks of whole images: 3.5 GiB for one
1024x1024 image into block 3a) and whole-tensor temporaries stayed alive until the end of the
forward; fused took 1520 MiB over its input at 1x192x512x512 where the eager block takes 800.
Each measurement runs in a fresh subprocess: the growth of the anonymous resident memory
(RssAnon, sampled every 0.5 ms by a thread) across one forward, with the input allocated in
place (no temporary above the live memory before the forward).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import LAYOUTS

import fused_inception
from fused_inception import _ext

pytest.importorskip("torchvision")
pytestmark = pytest.mark.skipif(
    not _ext.has_extension(), reason=f"no extension: {_ext.extension_error()}"
)

SIZE = 512
BLOCK_3A = (192, 64, 96, 128, 16, 32, 32)  # in, 1x1, 3x3 red, 3x3, 5x5 red, 5x5 (3x3), pool
MIB = 2**20
# Allocator granularity, the Winograd chunks (16 * (Cin + Cout) floats per tile, TILES_PER_CHUNK
# tiles), oneDNN's scratch and the thread stacks: 0-6 MiB measured alone, up to 35 MiB while
# other test workers ran on the same cores (malloc arenas and scratch of busier threads).
SLACK = 64 * MIB

SCRIPT = r"""
import sys, threading, time, torch
impl, layout, size, cfg = sys.argv[1], sys.argv[2], int(sys.argv[3]), eval(sys.argv[4])
torch.manual_seed(0)
if impl == "eager":
    from torchvision.models.googlenet import Inception
    block = Inception(*cfg)
else:
    from fused_inception import FusedInception
    block = FusedInception(*cfg, backend="cpu")
fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
block = block.eval().to(memory_format=fmt)

def anon():
    # Anonymous resident memory only: file-backed pages (the libraries' code) can be reclaimed
    # and faulted in again during the forward when other processes press on memory, which
    # the total resident size (and ru_maxrss) would count as growth.
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("RssAnon:"))
    return int(line.split()[1]) * 1024

peak = 0
done = threading.Event()

def sample():
    global peak
    while not done.is_set():
        peak = max(peak, anon())
        time.sleep(0.0005)

with torch.no_grad():
    block(torch.randn(1, cfg[0], 16, 16).contiguous(memory_format=fmt))  # load, pack, warm up
    if layout == "channels_last":  # in place: no NCHW temporary above the live memory
        x = torch.empty(1, size, size, cfg[0]).normal_().permute(0, 3, 1, 2)
    else:
        x = torch.empty(1, cfg[0], size, size).normal_()
    before = anon()
    sampler = threading.Thread(target=sample)
    sampler.start()
    y = block(x)
    done.set()
    sampler.join()
    peak = max(peak, anon())
assert y.shape[1] == cfg[1] + cfg[3] + cfg[5] + cfg[6]
print("PEAK-GROWTH", peak - before)
"""


def _growth(impl: str, layout: str) -> int:
    env = dict(os.environ)
    root = str(Path(fused_inception.__file__).resolve().parents[1])  # this checkout's package
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    args = [impl, layout, str(SIZE), repr(BLOCK_3A)]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(s for s in proc.stdout.splitlines() if s.startswith("PEAK-GROWTH"))
    return int(line.split()[1])


def _fused_bound(layout: str) -> int:
    """What the cpu backend's float32 path (oneDNN convolutions) needs above x, from the tensor
    sizes (float32, batch 1): the output, plus the largest set of temporaries alive together:
    the pooled x and b4's convolution output; then y = b1 | r2 | r3; then the ReLU'd copies of
    r2 and r3 with y; then those copies and one kxk convolution's output. For NCHW input the
    NHWC copy of x lives until y exists, and the NCHW copy of the output is made at the end."""
    c_in, c1, c2r, c2, c3r, c3, c4 = BLOCK_3A
    pixels = SIZE * SIZE * 4  # bytes per channel
    x, out = c_in * pixels, (c1 + c2 + c3 + c4) * pixels
    y, reduced = (c1 + c2r + c3r) * pixels, (c2r + c3r) * pixels
    x_copy = x if layout != "channels_last" else 0
    alive = max(
        x_copy + x + c4 * pixels,  # the pooled x and b4
        x_copy + y,
        y + reduced,
        reduced + max(c2, c3) * pixels,
    )
    final_copy = out if layout != "channels_last" else 0
    return out + max(alive, final_copy) + SLACK


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fused_peak_memory_is_at_most_the_eager_blocks(layout):
    fused, eager = _growth("fused", layout), _growth("eager", layout)
    bound = _fused_bound(layout)
    report = (
        f"1x192x{SIZE}x{SIZE} {layout}: fused +{fused / MIB:.0f} MiB, eager +{eager / MIB:.0f} "
        f"MiB, bound from the sizes {bound / MIB:.0f} MiB"
    )
    assert fused <= eager, report
    assert fused <= bound, report
