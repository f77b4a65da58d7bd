"""The Triton kernels' records (backend "triton"): `triton.compile` for a GPU, without one.

Every module of fused_inception.triton that defines `aot_builds()` lists its KernelBuilds; each
is compiled for each arch and read:

    registers     cuobjdump --dump-resource-usage of the cubin (REG)
    shared_bytes  Triton's dynamic shared memory (metadata.shared) + static shared (SHARED)
    local_bytes   cuobjdump's STACK + LOCAL. ptxas puts register spills in the stack frame
                  (STACK; "N bytes stack frame, M bytes spill stores" in ptxas -v); LOCAL
                  counts only .local variables and stays 0 when a kernel spills. Triton kernels
                  inline everything, so a stack frame means spills.
    tensor_cores  the PTX holds mma.sync / wgmma.mma_async instructions
    compile_s     wall time of the compile (a Triton cache hit is fast; no_cache forces it)

Builds compile one after another, in this process: the machines this runs on have 2 shared
cores, Triton already runs ptxas as a separate process, forking after MLIR has started threads
is not safe, and spawned workers would each re-import torch and the kernel modules. Reruns hit
Triton's cache.

@triton.jit functions defined under TRITON_INTERPRET=1 are interpreter objects that cannot be
compiled (interpreter_set() says so; the command line then re-runs itself without it).

This module is named like the triton package; absolute imports keep `import triton` the real one.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fused_inception.report.records import (
    ReportRequest,
    arch_number,
    cuobjdump_path,
    make_record,
)
from fused_inception.triton import KernelBuild

KERNEL_PACKAGE = "fused_inception.triton"

# Tensor-core instructions: mma.sync (sm_80 and later), wgmma.mma_async (sm_90).
_MMA_RE = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\.")
# cuobjdump --dump-resource-usage: "Function <name>:" then " REG:40 STACK:0 SHARED:0 LOCAL:0 ...".
_FUNCTION_RE = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")


def interpreter_set() -> bool:
    """Whether TRITON_INTERPRET is set now (read at every call: tests change it)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


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


def compile_inputs(build: KernelBuild, arch: str) -> tuple[Any, Any, dict]:
    """(source, target, options): what the report hands to triton.compile for build on arch."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    source = ASTSource(
        fn=build.fn, signature=build.signature, constexprs=build.constexprs, attrs=build.attrs
    )
    target = GPUTarget("cuda", arch_number(arch), 32)
    options = {"num_warps": build.num_warps, "num_stages": build.num_stages, **build.options}
    return source, target, options


def _compile(build: KernelBuild, arch: str) -> Any:
    import triton
    from triton.runtime.jit import JITFunction

    arch_number(arch)
    if interpreter_set():
        raise RuntimeError(
            "TRITON_INTERPRET is set: @triton.jit functions are interpreter objects and cannot be "
            "compiled; run `python -m fused_inception.report` without TRITON_INTERPRET"
        )
    if not isinstance(build.fn, JITFunction):
        raise TypeError(
            f"fn is a {type(build.fn).__name__}, expected a @triton.jit JITFunction "
            "(was the module imported under TRITON_INTERPRET=1?)"
        )
    source, target, options = compile_inputs(build, arch)
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
