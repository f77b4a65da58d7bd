"""fused_inception.memory.keep_freed_memory: glibc serves a large tensor from its heap and
keeps it there when it is freed (by default: its own mapping, given back); its arguments; the
bench flag."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fused_inception.memory import MAX_HEAP_BLOCK, _glibc, keep_freed_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One 24 MiB tensor allocated, written and freed; then what glibc's malloc holds (mallinfo2):
# by default the block is served by mmap (the threshold starts at 128 KiB) and unmapped when
# freed; kept, it comes from the heap and stays there, free, for the next allocation.
CHILD = """
import ctypes, sys, torch
from fused_inception.memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
t = torch.empty(6 * 2**20)
t.fill_(1.0)
mapped = libc.mallinfo2().hblkhd
del t
print(mapped, libc.mallinfo2().fordblks)
"""


def _malloc_state(mode: str) -> tuple[int, int]:
    """(bytes malloc had mmapped while the tensor lived, free bytes it keeps after)."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GLIBC_TUNABLES", None)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    mapped, free = proc.stdout.split()[-2:]
    return int(mapped), int(free)


@pytest.mark.skipif(
    _glibc() is None or not hasattr(_glibc(), "mallinfo2"),
    reason="keep_freed_memory acts on glibc (Linux) only; the check reads glibc's mallinfo2",
)
def test_freed_block_stays_in_the_heap():
    """What the helper changes, read from malloc's own counters (page-fault counts are not
    reproducible here: this host's kernel also reclaims idle pages, DAMON)."""
    size = 24 * 2**20
    mapped, free = _malloc_state("default")
    assert mapped >= size and free < size, (mapped, free)  # its own mapping, given back
    mapped, free = _malloc_state("keep")
    assert mapped < size and free >= size, (mapped, free)  # from the heap, kept there


def test_arguments():
    with pytest.raises(ValueError, match="max_block"):
        keep_freed_memory(0)
    with pytest.raises(ValueError, match="max_block"):
        keep_freed_memory(MAX_HEAP_BLOCK + 1)
    with pytest.raises(TypeError, match="max_block"):
        keep_freed_memory(1.5)
    with pytest.raises(TypeError, match="max_block"):
        keep_freed_memory(True)


def test_bench_flag_is_off_by_default_and_named_in_the_header():
    from fused_inception.bench import cli as bench

    default = bench.parse_args(["--device", "cpu", "--no-train"])
    assert not default.keep_freed_memory
    assert "allocator" not in bench.header(default, ["eager"], "peak")
    kept = bench.parse_args(["--device", "cpu", "--no-train", "--keep-freed-memory"])
    assert kept.keep_freed_memory
    kept.kept_memory = "applied"  # what main() records after calling keep_freed_memory
    assert "allocator: freed heap memory kept (keep_freed_memory: applied)" in bench.header(
        kept, ["eager"], "peak"
    )
