"""The CUDA C++ kernels' records (backend "cuda"): nvcc for a GPU, without one.

Each csrc/cuda/*.cu file is compiled by nvcc for each architecture into a cubin, with the
flags setup.py uses (NVCC_FLAGS; a test keeps the two equal) and `-Xptxas -v`. One record per
(kernel instantiation, arch), from ptxas's lines for that function:

    ptxas info    : Compiling entry function '<mangled>' for 'sm_90'
    ptxas info    : Function properties for <mangled>
        N bytes stack frame, S bytes spill stores, L bytes spill loads
    ptxas info    : Used R registers, used B barriers, M bytes smem, ...

    kernel        the demangled name (cu++filt or c++filt), e.g. "conv1x1_slice_kernel<__half,
                  true>"
    dtype         from the first template argument: float, __half, __nv_bfloat16
    registers     R
    shared_bytes  M (static) + the dynamic shared memory the launcher requests. ptxas cannot
                  see the latter: each csrc/cuda/<family>.cu defines
                  `<family>_shared_memory(emit)`, which lists it per kernel; a small program
                  compiled with the host compiler against the SIMT shim prints that table.
                  A kernel missing from it is an error record.
    local_bytes   N, the stack frame (spill stores land there; any stack frame is local memory)
    tensor_cores  the function's SASS (cuobjdump -sass) holds HMMA instructions
    mma_instructions, shuffle_instructions, ldmatrix_instructions, async_copy_instructions
                  HMMA/HGMMA, SHFL, LDSM and LDGSTS instructions in the function's SASS
                  (records.sass_counts)
    compile_s     wall time of the file's nvcc run for that arch (shared by its kernels; from
                  the cache below, the run that filled it)

The sources are read from the source tree (csrc/ beside the package); nvcc from CUDA_HOME.

nvcc's outputs (its ptxas log and the cubin's SASS) are cached per (file, arch) under
$FUSED_INCEPTION_CACHE_DIR/nvcc (default ~/.cache/fused_inception/nvcc), keyed by a SHA-256 of
everything the compile reads that can change: the source file, every header and source under
the include root (csrc/), the command line, and the versions of nvcc, cuobjdump and the host
compiler. The records are parsed from the cached text as from a fresh run, so a hit gives the
same records; CI's report step then reuses the compiles its test suite just did (the CUDA half
of the report: 128 s cold, 12 s from the cache, 2 cores). FUSED_INCEPTION_NVCC_CACHE=0 turns the
cache off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fused_inception.report.records import (
    ReportRequest,
    cuobjdump_path,
    make_record,
    read_cache_entry,
    sass_counts,
    tool_cache_dir,
    write_cache_entry,
)

NVCC_FLAGS = ("-O3", "-std=c++20", "--expt-relaxed-constexpr")  # == setup.py's NVCC_FLAGS
# fused_inception/report/cuda.py -> the repository root's csrc/.
SOURCE_ROOT = Path(__file__).resolve().parents[2] / "csrc"

_ENTRY_RE = re.compile(r"Compiling entry function '(\S+)' for '(sm_\d+)'")
_PROPS_RE = re.compile(r"Function properties for (\S+)")
_FRAME_RE = re.compile(
    r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads"
)
_USED_RE = re.compile(r"Used (\d+) registers")
_SMEM_RE = re.compile(r"(\d+) bytes smem")
_DTYPES = {"float": "float32", "__half": "float16", "__nv_bfloat16": "bfloat16"}


def cuda_home() -> Path:
    """CUDA_HOME, else /usr/local/cuda if it has nvcc, else the directory above nvcc on PATH."""
    if os.environ.get("CUDA_HOME"):
        return Path(os.environ["CUDA_HOME"])
    default = Path("/usr/local/cuda")
    nvcc = shutil.which("nvcc")
    if (default / "bin" / "nvcc").exists() or nvcc is None:
        return default
    return Path(nvcc).resolve().parent.parent


def nvcc_path() -> str:
    path = cuda_home() / "bin" / "nvcc"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (set CUDA_HOME to a CUDA toolkit)")
    return str(path)


def _cuobjdump() -> str:
    # The toolkit's own if it has one (minimal installs do not), else the one inside triton.
    path = cuda_home() / "bin" / "cuobjdump"
    return str(path) if path.exists() else cuobjdump_path()


def parse_ptxas(log: str) -> dict[str, dict[str, int]]:
    """Per mangled function: registers, smem, stack_frame, spill_stores, spill_loads."""
    functions: dict[str, dict[str, int]] = {}
    current: str | None = None
    for line in log.splitlines():
        if m := _ENTRY_RE.search(line):
            current = m.group(1)
            functions.setdefault(current, {})
        elif m := _PROPS_RE.search(line):
            current = m.group(1)
            functions.setdefault(current, {})
        elif current is not None and (m := _FRAME_RE.search(line)):
            frame, stores, loads = (int(g) for g in m.groups())
            functions[current].update(stack_frame=frame, spill_stores=stores, spill_loads=loads)
        elif current is not None and (m := _USED_RE.search(line)):
            functions[current]["registers"] = int(m.group(1))
            smem = _SMEM_RE.search(line)
            functions[current]["smem"] = int(smem.group(1)) if smem else 0
    return functions


def demangle(names: Sequence[str]) -> dict[str, str]:
    """Mangled -> readable names via cu++filt or c++filt (the name itself where both fail)."""
    tool = cuda_home() / "bin" / "cu++filt"
    try:
        out = subprocess.run(
            [str(tool) if tool.exists() else "c++filt"],
            input="\n".join(names),
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return {n: n for n in names}
    return {n: d.strip() or n for n, d in zip(names, out, strict=False)}


def kernel_dtype(readable: str) -> str | None:
    """The dtype of a kernel from its first template argument (None if it has none)."""
    m = re.search(r"<\s*([\w:]+)", readable)
    if not m:
        return None
    return _DTYPES.get(m.group(1).split("::")[-1])


def short_kernel_name(readable: str) -> str:
    """Drop namespaces, the parameter list and `void`: "ns::k<float, 3>(...)" -> "k<float, 3>"."""
    name = re.sub(r"^void\s+", "", readable)
    depth, end = 0, len(name)
    for i, ch in enumerate(name):
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0:
            end = i
            break
    name = name[:end]
    head, sep, tail = name.partition("<")
    return head.split("::")[-1] + sep + tail


# Files hashed into the cache key, by suffix: whatever nvcc may include (host-only sources are
# hashed too, which costs no more than a needless recompile when they change).
_INCLUDED_SUFFIXES = (".h", ".cuh", ".hpp", ".inc", ".cu", ".cpp")
# The layout of a cache entry (in the key: entries of another layout are never read).
_CACHE_FORMAT = 2


def nvcc_cache_dir() -> Path | None:
    """Where nvcc's outputs are cached (see the module's docstring); None when turned off."""
    return tool_cache_dir("nvcc")


@functools.cache
def _tool_versions(tools: tuple[str, ...]) -> str:
    """The version texts of `tools` (part of every cache key; per path, so a changed CUDA_HOME
    is a different key)."""
    texts = []
    for tool in tools:
        try:
            out = subprocess.run([tool, "--version"], capture_output=True, text=True, check=True)
            texts.append(out.stdout)
        except (OSError, subprocess.CalledProcessError):
            texts.append(f"{tool}: no version")
    return "\n".join(texts)


def _cache_key(source: Path, include: Path, flags: Sequence[str]) -> str:
    digest = hashlib.sha256(f"format {_CACHE_FORMAT}\n".encode())
    tools = (nvcc_path(), _cuobjdump(), shutil.which("gcc") or "gcc")
    digest.update(_tool_versions(tools).encode())
    digest.update(json.dumps(list(flags)).encode())
    digest.update(source.read_bytes())
    # The include root, and the source's own directory (quoted includes are looked up there
    # first; for csrc/cuda/*.cu it is inside the root).
    for root, files in ((include, include.rglob("*")), (source.parent, source.parent.glob("*"))):
        for path in sorted(files):
            if path.is_file() and path.suffix in _INCLUDED_SUFFIXES:
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _run_nvcc(source: Path, arch: str, include: Path) -> dict:
    """nvcc on one file for one arch: {"returncode", "stdout", "stderr", "sass", "compile_s"},
    from the cache when it has the key (failures are never cached)."""
    flags = [*NVCC_FLAGS, "-cubin", f"-arch={arch}", "-Xptxas", "-v"]
    cache = nvcc_cache_dir()
    entry = cache / f"{_cache_key(source, include, flags)}.json" if cache is not None else None
    if entry is not None and (cached := read_cache_entry(entry)) is not None:
        return cached
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernels.cubin")
        cmd = [nvcc_path(), f"-I{include}", *flags, str(source), "-o", cubin]
        result = subprocess.run(cmd, capture_output=True, text=True)
        out = {
            "returncode": result.returncode,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "sass": "",
            "compile_s": round(time.perf_counter() - start, 3),
        }
        if result.returncode != 0:
            return out
        out["sass"] = subprocess.run(
            [_cuobjdump(), "-sass", cubin], capture_output=True, text=True, check=True
        ).stdout
    if entry is not None:
        write_cache_entry(entry, out)
    return out


def compile_source(
    source: Path,
    arch: str,
    include: Path = SOURCE_ROOT,
    dynamic_shared: dict[str, int] | None = None,
) -> Iterator[dict]:
    """Records of every kernel in one .cu file for one arch ("sm_80").

    dynamic_shared: kernel name -> dynamic shared memory bytes (see dynamic_shared_memory);
                    None for files whose kernels use static shared memory only. With a table,
                    a kernel missing from it is an error record.
    """
    run = _run_nvcc(source, arch, include)
    compile_s = run["compile_s"]
    if run["returncode"] != 0:
        message = f"nvcc failed on {source.name}: {run['stderr'].strip()[-2000:]}"
        yield make_record(source.name, "cuda", arch, None, compile_s=compile_s, error=message)
        return
    sass = run["sass"]
    functions = parse_ptxas(run["stdout"] + run["stderr"])
    if not functions:
        message = f"no kernels found in the ptxas output of {source.name}"
        yield make_record(source.name, "cuda", arch, None, compile_s=compile_s, error=message)
        return
    sass_by_function = sass_counts(sass)
    readable = demangle(sorted(functions))
    for mangled in sorted(functions, key=lambda n: readable[n]):
        info = functions[mangled]
        name = short_kernel_name(readable[mangled])
        error, dynamic = None, 0
        if dynamic_shared is not None:
            if name in dynamic_shared:
                dynamic = dynamic_shared[name]
            else:
                error = f"{name} is not listed by {source.stem}_shared_memory() in {source.name}"
        yield make_record(
            name,
            "cuda",
            arch,
            kernel_dtype(readable[mangled]),
            registers=info.get("registers"),
            shared_bytes=info.get("smem", 0) + dynamic,
            local_bytes=info.get("stack_frame", 0),
            tensor_cores=sass_by_function.get(mangled, {}).get("mma", 0) > 0,
            mma_instructions=sass_by_function.get(mangled, {}).get("mma"),
            shuffle_instructions=sass_by_function.get(mangled, {}).get("shuffles"),
            ldmatrix_instructions=sass_by_function.get(mangled, {}).get("ldmatrix"),
            async_copy_instructions=sass_by_function.get(mangled, {}).get("async_copies"),
            compile_s=compile_s,
            error=error,
        )


_TABLE_PROGRAM = """
#include <cstddef>
#include <cstdio>
{includes}
static void emit(const char* kernel, std::size_t bytes) {{
  std::printf("%s\\t%zu\\n", kernel, bytes);
}}
int main() {{
{calls}
  return 0;
}}
"""


def dynamic_shared_memory(sources: Sequence[Path]) -> dict[str, int]:
    """Kernel name -> dynamic shared memory bytes, from each family's `<family>_shared_memory`.

    Compiles the kernels as plain C++ against the SIMT shim (the host compiler, CXX or g++,
    and the CUDA headers) and runs the result; no GPU or nvcc involved.
    """
    includes = "\n".join(f'#include "emulated/{s.stem}.cpp"' for s in sources)
    calls = "\n".join(
        f"  fused_inception::emulated::{s.stem}_shared_memory(emit);" for s in sources
    )
    cxx = os.environ.get("CXX", "g++")
    with tempfile.TemporaryDirectory() as tmp:
        program, exe = os.path.join(tmp, "table.cpp"), os.path.join(tmp, "table")
        with open(program, "w") as f:
            f.write(_TABLE_PROGRAM.format(includes=includes, calls=calls))
        cmd = [cxx, "-std=c++20", "-pthread", "-O0", f"-I{SOURCE_ROOT}"]
        cmd += [f"-isystem{cuda_home() / 'include'}", program, "-o", exe]
        subprocess.run(cmd, capture_output=True, text=True, check=True)
        out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    table = {}
    for line in out.splitlines():
        kernel, _, size = line.partition("\t")
        table[kernel] = int(size)
    return table


def cuda_sources() -> list[Path]:
    """The kernel files of the CUDA backend (csrc/cuda/*.cu)."""
    return sorted((SOURCE_ROOT / "cuda").glob("*.cu"))


def cuda_records(request: ReportRequest) -> Iterator[dict]:
    """Records of every CUDA kernel for every requested arch."""
    sources = cuda_sources()
    if not sources:
        yield make_record(
            "csrc/cuda/*.cu",
            "cuda",
            None,
            None,
            error=f"no CUDA sources under {SOURCE_ROOT / 'cuda'} (run from a source checkout)",
        )
        return
    try:
        dynamic_shared = dynamic_shared_memory(sources)
    except (OSError, subprocess.CalledProcessError) as exc:
        detail = getattr(exc, "stderr", "") or str(exc)
        message = f"could not build the shared-memory table: {detail.strip()[-2000:]}"
        yield make_record("csrc/cuda/*.cu", "cuda", None, None, error=message)
        return
    for source in sources:
        for arch in request.archs:
            for record in compile_source(source, arch, dynamic_shared=dynamic_shared):
                if request.wants(record["kernel"]):
                    yield record
