"""Ahead-of-time resource report: compile every kernel build for real GPUs, without a GPU.

    python -m fused_inception.report [--json PATH] [--arch sm_80 sm_90] [--kernels SUBSTRING]
                                     [--backends triton cuda]

Compiles every kernel of both GPU backends for each architecture and prints one record per
(build, arch):
- triton: the `aot_builds()` of every module in fused_inception/triton/, with `triton.compile`;
- cuda: every kernel instantiation in csrc/cuda/*.cu, with nvcc -cubin -Xptxas -v
  (fused_inception/report_cuda.py says how its fields are read).

    kernel        KernelBuild.kernel, e.g. "conv1x1_slice[float16,BM=64,BN=64,BK=32]"
    backend       "triton" or "cuda"
    arch          "sm_80" or "sm_90"
    dtype         "float32", "float16" or "bfloat16"
    registers     registers per thread (cuobjdump --dump-resource-usage of the cubin)
    shared_bytes  Triton's dynamic shared memory (metadata.shared) + static shared (cuobjdump)
    local_bytes   local memory per thread: cuobjdump's STACK + LOCAL. ptxas puts register spills
                  in the stack frame (STACK; "N bytes stack frame, M bytes spill stores" in
                  ptxas -v); LOCAL counts only .local variables and stays 0 when a kernel
                  spills. Triton kernels inline everything, so a stack frame means spills.
    tensor_cores  the PTX holds mma.sync / wgmma.mma_async instructions
    compile_s     wall time of the compile (a Triton cache hit is fast; --no-cache forces it)
    error         None, or why the build (or its module) failed

The exit status is 1 if any record failed to compile, spills (local_bytes > 0), is a 16-bit
build without tensor cores, or needs more shared memory than one block can have on its arch
(SHARED_LIMIT; such a kernel compiles but fails at launch). The summary line reads
"N builds, M failed: ..." and each failing record is listed after it.

Records come from a list of providers (PROVIDERS, one per backend): each takes the
ReportRequest and yields records.

Builds compile one after another, in this process: the machines this runs on have 2 shared cores,
Triton already runs ptxas as a separate process, forking after MLIR has started threads is not
safe, and spawned workers would each re-import torch and the kernel modules. Reruns hit Triton's
cache.

@triton.jit functions defined under TRITON_INTERPRET=1 are interpreter objects that cannot be
compiled, so `main` re-runs itself in a subprocess without that variable when it is set.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from fused_inception.triton import KernelBuild

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
    "compile_s",
    "error",
)
SIXTEEN_BIT = ("float16", "bfloat16")
# Most shared memory one block can have (bytes; opt-in maximum): A100 163 KB, H100 227 KB.
# Triton checks this only at launch, on a device; the report checks it ahead of time.
SHARED_LIMIT = {"sm_80": 163 * 1024, "sm_90": 227 * 1024}
KERNEL_PACKAGE = "fused_inception.triton"

# Tensor-core instructions: mma.sync (sm_80 and later), wgmma.mma_async (sm_90).
_MMA_RE = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\.")
# cuobjdump --dump-resource-usage: "Function <name>:" then " REG:40 STACK:0 SHARED:0 LOCAL:0 ...".
_FUNCTION_RE = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")


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


def record_problems(record: dict) -> list[str]:
    """Why a record fails the report's checks (empty if it passes), one short phrase each."""
    problems = []
    if record["error"] is not None:
        problems.append(f"error: {short_error(record['error'])}")
    if (record["local_bytes"] or 0) > 0:
        problems.append(f"spills {record['local_bytes']} bytes of local memory")
    if record["error"] is None and record["dtype"] in SIXTEEN_BIT and not record["tensor_cores"]:
        problems.append(f"{record['dtype']} without tensor cores (no mma/wgmma in the PTX)")
    limit = SHARED_LIMIT.get(record["arch"])
    if limit is not None and (record["shared_bytes"] or 0) > limit:
        shared, arch = record["shared_bytes"], record["arch"]
        problems.append(f"needs {shared} bytes of shared memory, {arch} allows {limit}")
    return problems


# ---------------------------------------------------------------------------------------------
# Triton builds


def _module_error(module_name: str, exc: BaseException) -> dict:
    return make_record(module_name, "triton", None, None, error=f"{type(exc).__name__}: {exc}")


def collect_builds(
    modules: Sequence[str] | None = None, errors: list[dict] | None = None
) -> list[KernelBuild]:
    """The KernelBuilds of every module's `aot_builds()`.

    modules: module names to import (default: every module of fused_inception.triton that
             defines `aot_builds`).
    errors:  if a list, a module that fails to import (or whose aot_builds() raises) is appended
             to it as an error record; if None, the exception propagates.
    """
    if modules is None:
        package = importlib.import_module(KERNEL_PACKAGE)
        modules = [
            f"{KERNEL_PACKAGE}.{info.name}" for info in pkgutil.iter_modules(package.__path__)
        ]
    builds: list[KernelBuild] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
            if hasattr(module, "aot_builds"):
                builds.extend(module.aot_builds())
        except Exception as exc:
            if errors is None:
                raise
            errors.append(_module_error(name, exc))
    return builds


def cuobjdump_path() -> str:
    """The cuobjdump shipped inside the triton package."""
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def cubin_resources(cubin: bytes, function: str) -> dict[str, int]:
    """REG, STACK, SHARED (static) and LOCAL of `function` in a cubin, per cuobjdump.

    Falls back to the maximum over all functions if `function` is not listed by that name.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out = subprocess.run(
            [cuobjdump_path(), "--dump-resource-usage", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    per_function: dict[str, dict[str, int]] = {}
    current = None
    for line in out.splitlines():
        if m := _FUNCTION_RE.match(line):
            current = m.group(1)
        elif current is not None and (pairs := _RESOURCE_RE.findall(line)):
            per_function[current] = {key: int(value) for key, value in pairs}
    if not per_function:
        raise RuntimeError(f"no resource usage found in cuobjdump output:\n{out}")
    if function in per_function:
        return per_function[function]
    keys = ("REG", "STACK", "SHARED", "LOCAL")
    return {k: max(r.get(k, 0) for r in per_function.values()) for k in keys}


def _compile(build: KernelBuild, arch: str) -> Any:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    if not re.fullmatch(r"sm_\d+", arch):
        raise ValueError(f"arch must look like 'sm_80', got {arch!r}")
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise RuntimeError(
            "TRITON_INTERPRET is set: @triton.jit functions are interpreter objects and cannot be "
            "compiled; run `python -m fused_inception.report` without TRITON_INTERPRET"
        )
    if not isinstance(build.fn, JITFunction):
        raise TypeError(
            f"fn is a {type(build.fn).__name__}, expected a @triton.jit JITFunction "
            "(was the module imported under TRITON_INTERPRET=1?)"
        )
    source = ASTSource(
        fn=build.fn, signature=build.signature, constexprs=build.constexprs, attrs=build.attrs
    )
    target = GPUTarget("cuda", int(arch[3:]), 32)
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages, **build.options}
    return triton.compile(source, target=target, options=options)


def compile_build(build: KernelBuild, arch: str) -> dict:
    """Compile one build for one arch ("sm_80"/"sm_90"); the record (error set on failure)."""
    start = time.perf_counter()
    try:
        compiled = _compile(build, arch)
        compile_s = time.perf_counter() - start
        resources = cubin_resources(compiled.asm["cubin"], compiled.metadata.name)
    except Exception as exc:
        message = f"{type(exc).__name__}: {exc}".strip()
        return make_record(
            build.kernel,
            "triton",
            arch,
            build.dtype,
            compile_s=round(time.perf_counter() - start, 3),
            error=message,
        )
    return make_record(
        build.kernel,
        "triton",
        arch,
        build.dtype,
        registers=resources["REG"],
        shared_bytes=int(compiled.metadata.shared) + resources.get("SHARED", 0),
        local_bytes=resources.get("STACK", 0) + resources.get("LOCAL", 0),
        tensor_cores=bool(_MMA_RE.search(compiled.asm["ptx"])),
        compile_s=round(compile_s, 3),
        error=None,
    )


# ---------------------------------------------------------------------------------------------
# Providers and the command line


@dataclass(frozen=True)
class ReportRequest:
    """What to report: architectures, a kernel-name substring filter, Triton modules to scan."""

    archs: tuple[str, ...] = ARCHS
    kernels: str | None = None
    modules: tuple[str, ...] | None = None
    no_cache: bool = False

    def wants(self, kernel: str) -> bool:
        return self.kernels is None or self.kernels in kernel


def triton_records(request: ReportRequest) -> Iterator[dict]:
    """Records of every Triton build (module import failures first, as error records)."""
    errors: list[dict] = []
    builds = collect_builds(request.modules, errors)
    yield from errors
    if request.no_cache:
        from triton import knobs

        knobs.compilation.always_compile = True
    for build in builds:
        if request.wants(build.kernel):
            for arch in request.archs:
                yield compile_build(build, arch)


def cuda_records(request: ReportRequest) -> Iterator[dict]:
    """Records of every CUDA C++ kernel (see fused_inception/report_cuda.py)."""
    from fused_inception.report_cuda import cuda_records as records

    yield from records(request)


RecordProvider = Callable[[ReportRequest], Iterable[dict]]
PROVIDERS: dict[str, RecordProvider] = {"triton": triton_records, "cuda": cuda_records}


def format_record(record: dict) -> str:
    """One table row."""

    def show(value: Any) -> str:
        return "-" if value is None else str(value)

    problems = record_problems(record)
    status = "ok" if not problems else "FAIL: " + "; ".join(problems)
    tc = {True: "yes", False: "no", None: "-"}[record["tensor_cores"]]
    return (
        f"{record['kernel']:<62} {record['backend']:<6} {show(record['arch']):<5} "
        f"{show(record['dtype']):<8} {show(record['registers']):>4} "
        f"{show(record['shared_bytes']):>7} {show(record['local_bytes']):>5} {tc:>3} "
        f"{show(record['compile_s']):>7}  {status}"
    )


HEADER = (
    f"{'kernel':<62} {'backend':<6} {'arch':<5} {'dtype':<8} {'regs':>4} {'shared':>7} "
    f"{'local':>5} {'tc':>3} {'time_s':>7}  status"
)


def summary_line(records: Sequence[dict]) -> str:
    """'N builds, M failed: ...' with the count of each kind of failure (a record can have two)."""
    errors = sum(r["error"] is not None for r in records)
    spills = sum((r["local_bytes"] or 0) > 0 for r in records)
    no_tc = sum(
        r["error"] is None and r["dtype"] in SIXTEEN_BIT and not r["tensor_cores"] for r in records
    )
    too_much_shared = sum(
        (r["shared_bytes"] or 0) > SHARED_LIMIT.get(r["arch"], float("inf")) for r in records
    )
    failed = sum(bool(record_problems(r)) for r in records)
    return (
        f"{len(records)} builds, {failed} failed: {errors} errors, {spills} spill, "
        f"{no_tc} 16-bit without tensor cores, {too_much_shared} over the shared-memory limit"
    )


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fused_inception.report",
        description="Compile every kernel build for sm_80/sm_90 without a GPU and report "
        "registers, shared memory, spills and tensor-core use.",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the records as a JSON list")
    parser.add_argument("--arch", nargs="+", default=list(ARCHS), help="default: sm_80 sm_90")
    parser.add_argument("--kernels", metavar="SUBSTRING", help="only kernels whose name has it")
    parser.add_argument(
        "--modules",
        nargs="+",
        metavar="MODULE",
        help=f"modules whose aot_builds() to compile (default: every module of {KERNEL_PACKAGE})",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="bypass Triton's cache (true compile times)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=sorted(PROVIDERS),
        default=list(PROVIDERS),
        help="whose kernels to compile (default: all)",
    )
    args = parser.parse_args(argv)
    for arch in args.arch:
        if not re.fullmatch(r"sm_\d+", arch):
            parser.error(f"--arch expects names like sm_80, got {arch!r}")
    return args


def main(argv: Sequence[str] | None = None, providers: Sequence[RecordProvider] | None = None):
    """Run the report; returns the exit status (0 if every record passes, else 1).

    providers: record sources (default PROVIDERS). With the default ones and TRITON_INTERPRET
               set, the report runs again in a subprocess without it and returns its status.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if providers is None and os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # Compilation needs real @triton.jit functions: run again in a clean interpreter.
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        print("TRITON_INTERPRET is set; re-running the report without it", file=sys.stderr)
        cmd = [sys.executable, "-m", "fused_inception.report", *argv]
        return subprocess.call(cmd, env=env)
    args = _parse_args(argv)
    request = ReportRequest(
        archs=tuple(args.arch),
        kernels=args.kernels,
        modules=tuple(args.modules) if args.modules else None,
        no_cache=args.no_cache,
    )
    records: list[dict] = []
    print(HEADER, flush=True)
    if providers is None:
        providers = [PROVIDERS[name] for name in args.backends]
    for provider in providers:
        for record in provider(request):
            records.append(record)
            print(format_record(record), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    failed = [r for r in records if record_problems(r)]
    print(summary_line(records))
    for r in failed:
        print(f"  FAILED {r['kernel']} [{r['arch']}]: {'; '.join(record_problems(r))}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
