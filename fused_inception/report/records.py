"""The report's records and their checks: what the Triton and the CUDA compile steps share.

A record is a dict with exactly the keys of RECORD_FIELDS (plain JSON, one per build and arch):

    kernel        the build's name, e.g. "conv1x1_slice[float16,BM=64,BN=64,BK=32]" (Triton)
                  or "conv1x1_slice_kernel<__half, true>" (CUDA)
    backend       "triton" or "cuda"
    arch          "sm_80" or "sm_90"
    dtype         "float32", "float16" or "bfloat16"
    registers     registers per thread
    shared_bytes  shared memory per block, static + dynamic
    local_bytes   local memory per thread (spills land there)
    tensor_cores  the code holds tensor-core instructions
    mma_instructions      tensor-core instructions in the SASS (HMMA, HGMMA), static count
    shuffle_instructions  warp shuffles in the SASS (SHFL), static count
    ldmatrix_instructions shared -> register fragment loads in the SASS (LDSM), static count
    async_copy_instructions  global -> shared asynchronous copies in the SASS (LDGSTS: cp.async;
                  UTMALDG, UBLKCP: TMA), static count
    compile_s     wall time of the compile
    error         None, or why the build (or its module) failed

fused_inception.report.triton and fused_inception.report.cuda say how each fills them in.

A record passes when it compiled, does not spill (local_bytes == 0), uses tensor cores if it is
a 16-bit build, has at most MAX_SHUFFLE_SHARE shuffles per tensor-core instruction in its SASS
if it is a 16-bit build (taps taken through registers by shuffles cost about 4x their MMA:
version 1 of the Triton kernels), and needs no more shared memory than one block can have on
its arch (SHARED_LIMIT; such a kernel compiles but fails at launch). The CUDA kernels with
hand-written tensor-core mainloops (PIPELINED_KERNELS) must also load their fragments with
ldmatrix and fill shared memory with asynchronous copies, in their 16-bit builds.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ARCHS = ("sm_80", "sm_90")
RECORD_FIELDS = (
    "kernel",
    "backend",
    "arch",
    "dtype",
    "registers",
    "shared_bytes",
    "local_bytes",
    "tensor_cores",
    "mma_instructions",
    "shuffle_instructions",
    "ldmatrix_instructions",
    "async_copy_instructions",
    "compile_s",
    "error",
)
SIXTEEN_BIT = ("float16", "bfloat16")
# Most shared memory one block can have (bytes; opt-in maximum): A100 163 KB, H100 227 KB.
# Triton checks this only at launch, on a device; the report checks it ahead of time.
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
# The kinds of failure, as the summary line counts them (a record can fail in several ways).
PROBLEM_KINDS = (
    "errors",
    "spill",
    "16-bit without tensor cores",
    "shuffles",
    "over the shared-memory limit",
    "no ldmatrix or cp.async",
)
# The CUDA kernels whose mainloops are csrc/cuda/ptx.cuh's (ldmatrix fragments, a cp.async
# pipeline): a 16-bit build of one without LDSM or LDGSTS in its SASS fails.
PIPELINED_KERNELS = ("block_1x1_kernel", "block_kxk_kernel")
_ASYNC_COPY_OPCODES = ("LDGSTS", "UTMALDG", "UBLKCP")
# Most SHFL per HMMA/HGMMA instruction in a 16-bit build's SASS (static counts).
MAX_SHUFFLE_SHARE = 0.02
# The keys of sass_counts' per-function dicts.
SASS_KINDS = ("mma", "shuffles", "ldmatrix", "async_copies")
_SASS_FUNCTION_RE = re.compile(r"^\s*Function : (\S+)\s*$")
_SASS_OPCODE_RE = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9]*)")


def arch_number(arch: str) -> int:
    """80 for "sm_80"; ValueError for a name not of that form."""
    if not re.fullmatch(r"sm_\d+", arch):
        raise ValueError(f"arch must look like 'sm_80', got {arch!r}")
    return int(arch[3:])


def make_record(kernel: str, backend: str, arch: str | None, dtype: str | None, **values) -> dict:
    """A report record with every field of RECORD_FIELDS (unknown values None)."""
    record = dict.fromkeys(RECORD_FIELDS)
    record.update(kernel=kernel, backend=backend, arch=arch, dtype=dtype, **values)
    unknown = set(record) - set(RECORD_FIELDS)
    if unknown:
        raise ValueError(f"unknown record fields {sorted(unknown)}; expected {RECORD_FIELDS}")
    return record


def short_error(message: str, limit: int = 160) -> str:
    """The last non-empty line of an error message (where Triton puts the cause), shortened."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    last = lines[-1] if lines else message
    return last if len(last) <= limit else last[: limit - 3] + "..."


def problems_by_kind(record: dict) -> dict[str, str]:
    """Why a record fails the checks: PROBLEM_KINDS entry -> a short phrase (empty: passes)."""
    problems = {}
    if record["error"] is not None:
        problems["errors"] = f"error: {short_error(record['error'])}"
    if (record["local_bytes"] or 0) > 0:
        problems["spill"] = f"spills {record['local_bytes']} bytes of local memory"
    if record["error"] is None and record["dtype"] in SIXTEEN_BIT and not record["tensor_cores"]:
        problems["16-bit without tensor cores"] = (
            f"{record['dtype']} without tensor cores (no mma/wgmma in the PTX)"
        )
    mma, shuffles = record["mma_instructions"], record["shuffle_instructions"]
    if record["dtype"] in SIXTEEN_BIT and mma and (shuffles or 0) > MAX_SHUFFLE_SHARE * mma:
        problems["shuffles"] = (
            f"{shuffles} SHFL for {mma} tensor-core instructions in the SASS "
            f"(at most {MAX_SHUFFLE_SHARE:.0%})"
        )
    if (
        record["backend"] == "cuda"
        and record["error"] is None
        and record["dtype"] in SIXTEEN_BIT
        and record["kernel"].split("<")[0] in PIPELINED_KERNELS
        and not (record["ldmatrix_instructions"] and record["async_copy_instructions"])
    ):
        problems["no ldmatrix or cp.async"] = (
            f"{record['ldmatrix_instructions']} LDSM and {record['async_copy_instructions']} "
            "LDGSTS/UTMALDG in the SASS (its mainloop needs both)"
        )
    limit = SHARED_LIMIT.get(record["arch"])
    if limit is not None and (record["shared_bytes"] or 0) > limit:
        shared, arch = record["shared_bytes"], record["arch"]
        problems["over the shared-memory limit"] = (
            f"needs {shared} bytes of shared memory, {arch} allows {limit}"
        )
    return problems


def record_problems(record: dict) -> list[str]:
    """Why a record fails the report's checks (empty if it passes), one short phrase each."""
    return list(problems_by_kind(record).values())


def sass_counts(sass: str) -> dict[str, dict[str, int]]:
    """Per function of `cuobjdump -sass` output (mangled name): {"mma": HMMA + HGMMA
    instructions, "shuffles": SHFL, "ldmatrix": LDSM, "async_copies": LDGSTS + UTMALDG +
    UBLKCP}, static counts."""
    kinds = {"HMMA": "mma", "HGMMA": "mma", "SHFL": "shuffles", "LDSM": "ldmatrix"}
    kinds |= dict.fromkeys(_ASYNC_COPY_OPCODES, "async_copies")
    counts: dict[str, dict[str, int]] = {}
    current = None
    for line in sass.splitlines():
        if m := _SASS_FUNCTION_RE.match(line):
            current = counts.setdefault(m.group(1), dict.fromkeys(SASS_KINDS, 0))
        elif current is not None and (op := _SASS_OPCODE_RE.search(line)):
            if (kind := kinds.get(op.group(1))) is not None:
                current[kind] += 1
    return counts


def tool_cache_dir(name: str) -> Path | None:
    """$FUSED_INCEPTION_CACHE_DIR/<name> (default ~/.cache/fused_inception/<name>): where the
    report caches the CUDA tools' outputs (nvcc's in "nvcc", cuobjdump's on Triton's cubins in
    "cuobjdump"); None when FUSED_INCEPTION_NVCC_CACHE=0 turns the caches off."""
    if os.environ.get("FUSED_INCEPTION_NVCC_CACHE", "1") == "0":
        return None
    root = os.environ.get("FUSED_INCEPTION_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "fused_inception")
    return Path(root) / name


def read_cache_entry(entry: Path) -> dict | None:
    """A cache entry's JSON object (tool_cache_dir), or None where it is absent or unreadable
    (the caller then runs the tool and replaces it)."""
    try:
        value = json.loads(entry.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_cache_entry(entry: Path, value: dict) -> None:
    """Store a cache entry: written whole, then renamed, so a concurrent reader sees all of it or
    nothing; a read-only or full cache directory leaves it unwritten (the report goes on)."""
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        partial = entry.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(value))
        os.replace(partial, entry)
    except OSError:
        pass


def cuobjdump_path() -> str:
    """The cuobjdump shipped inside the triton package (a CUDA toolkit may lack one)."""
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


@dataclass(frozen=True)
class ReportRequest:
    """What to report: architectures, a kernel-name substring filter, Triton modules to scan."""

    archs: tuple[str, ...] = ARCHS
    kernels: str | None = None
    modules: tuple[str, ...] | None = None
    no_cache: bool = False

    def wants(self, kernel: str) -> bool:
        """Whether the kernel-name filter keeps `kernel`."""
        return self.kernels is None or self.kernels in kernel


# A source of records, one per backend (fused_inception.report.cli.PROVIDERS).
RecordProvider = Callable[[ReportRequest], Iterable[dict]]
