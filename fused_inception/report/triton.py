"""The Triton kernels' records (backend "triton"): `triton.compile` for a GPU, without one.

What is compiled is what runs. Triton's JIT does not compile a kernel as written but one
specialization per distinct launch (ints equal to 1 as constants, ints and pointers divisible by
16 marked so; fused_inception.report.specialization explains it). So the report captures the
launches of FusedInception(backend="triton") forwards of GoogLeNet's nine blocks (both forms,
every dtype, both input layouts, batches 1, 8, 32, 128) and takes each distinct specialization,
as the JIT computes it, for each arch: one build each, named after the config that
`aot_builds()` lists for it (every module of fused_inception.triton that defines one) plus what
the JIT specialized, e.g.
"chain_1x1_kxk[float16,K=3,...,stages=2]{stride_xc=1,stride_oc=1;not16=height,width,tiles_w}":
the arguments the JIT made constants, then the ints and pointers it did not mark divisible by
16 (`specialization_tag`). A config of `aot_builds()` that no captured launch uses (it serves
other shapes) is compiled as listed, with the specialization its KernelBuild assumes (no tag);
a launched config that `aot_builds()` does not list is compiled too, named from its kernel.
Each build is compiled for each arch and read:

    registers     cuobjdump --dump-resource-usage of the cubin (REG)
    shared_bytes  Triton's dynamic shared memory (metadata.shared) + static shared (SHARED)
    local_bytes   cuobjdump's STACK + LOCAL. ptxas puts register spills in the stack frame
                  (STACK; "N bytes stack frame, M bytes spill stores" in ptxas -v); LOCAL
                  counts only .local variables and stays 0 when a kernel spills. Triton kernels
                  inline everything, so a stack frame means spills.
    tensor_cores  the PTX holds mma.sync / wgmma.mma_async instructions
    mma_instructions, shuffle_instructions, ldmatrix_instructions, async_copy_instructions
                  HMMA/HGMMA, SHFL, LDSM and LDGSTS/UTMALDG instructions in the SASS
                  (records.sass_counts)
    compile_s     wall time of the compile (a Triton cache hit is fast; no_cache forces it)

The capture runs the forwards on CPU tensors with nothing launched, in this process (about
15 s on 2 cores). Builds compile one after another, in this process: the machines this runs on
have 2 shared cores, Triton already runs ptxas as a separate process, forking after MLIR has
started threads is not safe, and spawned workers would each re-import torch and the kernel
modules. Reruns hit Triton's cache, and cuobjdump's outputs (resource usage, SASS counts) are
cached by the cubin's bytes under $FUSED_INCEPTION_CACHE_DIR/cuobjdump (_cuobjdump_outputs):
disassembling was most of a rerun's time.

@triton.jit functions defined under TRITON_INTERPRET=1 are interpreter objects that cannot be
compiled (interpreter_set() says so; the command line then re-runs itself without it).

This module is named like the triton package; absolute imports keep `import triton` the real one.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import os
import pkgutil
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fused_inception.report import records
from fused_inception.report.records import (
    ARCHS,
    SASS_KINDS,
    ReportRequest,
    arch_number,
    cuobjdump_path,
    make_record,
    read_cache_entry,
    sass_counts,
    tool_cache_dir,
    write_cache_entry,
)
from fused_inception.report.specialization import (
    CapturedSpecialization,
    JitSpecialization,
    capture_specializations,
    googlenet_forwards,
)
from fused_inception.triton import INTERPRETER, KernelBuild

KERNEL_PACKAGE = "fused_inception.triton"

# Tensor-core instructions: mma.sync (sm_80 and later), wgmma.mma_async (sm_90).
_MMA_RE = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async)\.")
# The layout of a cuobjdump cache entry (in the key: entries of another layout are never read).
_CUOBJDUMP_CACHE_FORMAT = 1
# cuobjdump --dump-resource-usage: "Function <name>:" then " REG:40 STACK:0 SHARED:0 LOCAL:0 ...".
_FUNCTION_RE = re.compile(r"^\s*Function\s+(\S+?):\s*$")
_RESOURCE_RE = re.compile(r"\b(REG|STACK|SHARED|LOCAL):(\d+)")


def interpreter_set() -> bool:
    """Whether TRITON_INTERPRET is set now (read at every call: tests change it)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _module_error(module_name: str, exc: BaseException) -> dict:
    return make_record(module_name, "triton", None, None, error=f"{type(exc).__name__}: {exc}")


def listed_builds(
    modules: Sequence[str] | None = None, errors: list[dict] | None = None
) -> list[KernelBuild]:
    """The KernelBuilds of every module's `aot_builds()`, as listed (the configs).

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


def collect_builds(
    modules: Sequence[str] | None = None,
    errors: list[dict] | None = None,
    *,
    archs: Sequence[str] = ARCHS,
    capture: bool | None = None,
) -> list[KernelBuild]:
    """The builds the report compiles: the JIT's specializations of GoogLeNet's launches, named
    after their configs, and the configs no launch uses, as listed (see the module docstring).

    modules: as for listed_builds; captured specializations of kernels defined elsewhere are
             left out.
    errors:  as for listed_builds; a capture that fails is appended as an error record too (the
             configs are then compiled as listed).
    archs:   the archs to capture the specializations for (each captured build has one).
    capture: whether to capture (default: when the kernels are JITFunctions, i.e. the package
             was not imported under TRITON_INTERPRET=1, and `modules` has a module of
             fused_inception.triton); without it, listed_builds.
    """
    configs = listed_builds(modules, errors)
    if capture is None:
        ours = modules is None or any(m.startswith(f"{KERNEL_PACKAGE}.") for m in modules)
        capture = ours and not INTERPRETER
    if not capture:
        return configs
    try:
        captured = capture_specializations(googlenet_forwards(), archs)
    except Exception as exc:
        if errors is None:
            raise
        errors.append(_module_error("fused_inception.report.specialization (capture)", exc))
        return configs
    if modules is not None:
        captured = [c for c in captured if c.spec.fn.__module__ in modules]
    return specialized_builds(configs, captured)


def specialized_builds(
    configs: Sequence[KernelBuild], captured: Sequence[CapturedSpecialization]
) -> list[KernelBuild]:
    """One build per captured specialization, after the config it belongs to (in the order of
    `configs`; a config that none belongs to stays as listed), then those of unlisted configs."""
    per_config: list[list[KernelBuild]] = [[] for _ in configs]
    unlisted: list[KernelBuild] = []
    for entry in captured:
        index = _config_index(configs, entry.spec)
        config = configs[index] if index is not None else None
        build = _captured_build(entry, config)
        (per_config[index] if index is not None else unlisted).append(build)
    arch_order = {arch: i for i, arch in enumerate(ARCHS)}

    def order(build: KernelBuild) -> tuple:
        return build.kernel, arch_order.get(build.archs[0], len(ARCHS)), build.archs[0]

    builds: list[KernelBuild] = []
    for config, specialized in zip(configs, per_config, strict=True):
        builds.extend(sorted(specialized, key=order) if specialized else [config])
    return builds + sorted(unlisted, key=order)


def _constexpr_names(fn: Any) -> set[str]:
    """The arguments declared tl.constexpr (the JIT also makes some others constants)."""
    return {p.name for p in fn.params if p.is_constexpr}


def _by_name(fn: Any, constexprs: dict) -> dict:
    """constexprs keyed by argument name (ASTSource takes names or paths: (index,) for a plain
    argument); the paths into tuple arguments stay paths."""
    return {
        fn.arg_names[k[0]] if isinstance(k, tuple) and len(k) == 1 else k: v
        for k, v in constexprs.items()
    }


def _config_index(configs: Sequence[KernelBuild], spec: JitSpecialization) -> int | None:
    """The config of `configs` that `spec` is a specialization of: same function, same values
    of its tl.constexpr arguments, num_warps, num_stages and pointer types (dtypes)."""
    names = _constexpr_names(spec.fn)
    want = {k: v for k, v in _by_name(spec.fn, spec.constexprs).items() if k in names}
    warps_stages = (spec.options["num_warps"], spec.options["num_stages"])
    pointers = {a: t for a, t in spec.signature.items() if t.startswith("*")}
    for index, config in enumerate(configs):
        if (
            config.fn is spec.fn
            and {k: v for k, v in _by_name(config.fn, config.constexprs).items() if k in names}
            == want
            and (config.num_warps, config.num_stages) == warps_stages
            and all(config.signature.get(a) == t for a, t in pointers.items())
        ):
            return index
    return None


# Argument types the JIT marks tt.divisibility=16 when their value is a multiple of 16.
_DIVISIBILITY_TYPES = ("i32", "i64", "u32", "u64")


def specialization_tag(spec: JitSpecialization) -> str:
    """What the JIT specialized beyond the declared tl.constexprs, e.g.
    "{stride_xc=1,stride_oc=1;not16=height,width}": the arguments it made constants (with
    their values), integer arguments it typed other than i32 ("m:i64"), then, after "not16=",
    the int and pointer arguments it did not mark divisible by 16 (all others are)."""
    declared = _constexpr_names(spec.fn)
    parts = []
    constants = [
        f"{k}={v}" for k, v in _by_name(spec.fn, spec.constexprs).items() if k not in declared
    ]
    if constants:
        parts.append(",".join(constants))
    wide = [f"{a}:{t}" for a, t in spec.signature.items() if t in _DIVISIBILITY_TYPES[1:]]
    if wide:
        parts.append(",".join(wide))
    not16 = [
        a
        for i, (a, t) in enumerate(spec.signature.items())
        if (t.startswith("*") or t in _DIVISIBILITY_TYPES) and not spec.attrs.get((i,))
    ]
    if not16:
        parts.append("not16=" + ",".join(not16))
    return "{" + ";".join(parts) + "}"


_POINTER_DTYPES = {"*fp32": "float32", "*fp16": "float16", "*bf16": "bfloat16"}


def _unlisted_name(spec: JitSpecialization) -> tuple[str, str]:
    """(name, dtype) of a specialization whose config aot_builds() does not list: the family
    (the kernel's name without "_kernel"), the first pointer's dtype, the constexprs."""
    first = next((t for t in spec.signature.values() if t.startswith("*")), "")
    dtype = _POINTER_DTYPES.get(first, first.lstrip("*") or "none")
    declared = _constexpr_names(spec.fn)
    fields = [f"{k}={v}" for k, v in _by_name(spec.fn, spec.constexprs).items() if k in declared]
    fields += [f"warps={spec.options['num_warps']}", f"stages={spec.options['num_stages']}"]
    family = spec.fn.__name__.removesuffix("_kernel")
    return f"{family}[{dtype},{','.join(fields)}]", dtype


def _captured_build(entry: CapturedSpecialization, config: KernelBuild | None) -> KernelBuild:
    """The KernelBuild that compiles exactly entry's specialization, for its arch only."""
    spec = entry.spec
    name, dtype = (config.kernel, config.dtype) if config else _unlisted_name(spec)
    return KernelBuild(
        kernel=name + specialization_tag(spec),
        fn=spec.fn,
        signature=dict(spec.signature),
        constexprs=_by_name(spec.fn, spec.constexprs),
        dtype=dtype,
        num_warps=spec.options["num_warps"],
        num_stages=spec.options["num_stages"],
        options=dict(spec.options),
        attrs=dict(spec.attrs),
        archs=(spec.arch,),
        launches=tuple(entry.launches),
    )


@functools.cache
def _cuobjdump_key_prefix() -> bytes:
    """What every cuobjdump cache key starts with: the entry layout, the binary, the parser."""
    parts = [f"format {_CUOBJDUMP_CACHE_FORMAT}".encode()]
    for path in (cuobjdump_path(), records.__file__):
        parts.append(hashlib.sha256(Path(path).read_bytes()).digest())
    return b"\n".join(parts)


def _cuobjdump_outputs(cubin: bytes) -> tuple[str, dict[str, dict[str, int]]]:
    """cuobjdump's resource usage text of a cubin and sass_counts of its SASS, cached under
    tool_cache_dir("cuobjdump") by a SHA-256 of the cubin, the cuobjdump binary and the source
    of fused_inception/report/records.py (which parses both; editing it starts afresh).
    Disassembling is most of a cached Triton build's time in the report (about 0.5 s each)."""
    cache = tool_cache_dir("cuobjdump")
    entry = None
    if cache is not None:
        digest = hashlib.sha256(_cuobjdump_key_prefix())
        digest.update(cubin)
        entry = cache / f"{digest.hexdigest()}.json"
        cached = read_cache_entry(entry)
        if cached is not None and {"resources", "counts"} <= cached.keys():
            return cached["resources"], cached["counts"]
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.cubin")
        with open(path, "wb") as f:
            f.write(cubin)
        out, sass = (
            subprocess.run(
                [cuobjdump_path(), flag, path], capture_output=True, text=True, check=True
            ).stdout
            for flag in ("--dump-resource-usage", "-sass")
        )
    counts = sass_counts(sass)
    if entry is not None:
        write_cache_entry(entry, {"resources": out, "counts": counts})
    return out, counts


def cubin_resources(cubin: bytes, function: str) -> dict[str, int]:
    """REG, STACK, SHARED (static) and LOCAL of `function` in a cubin, per cuobjdump, and MMA
    SHFL, LDSM and LDGSTS, its static counts of tensor-core instructions, warp shuffles,
    ldmatrix and asynchronous copies in the SASS.

    Falls back to the maximum (the sum for MMA and SHFL) over all functions if `function` is
    not listed by that name.
    """
    out, counts = _cuobjdump_outputs(cubin)
    code = counts.get(function) or {k: sum(c[k] for c in counts.values()) for k in SASS_KINDS}
    return {
        **_resource_usage(out, function),
        "MMA": code["mma"],
        "SHFL": code["shuffles"],
        "LDSM": code["ldmatrix"],
        "LDGSTS": code["async_copies"],
    }


def _resource_usage(out: str, function: str) -> dict[str, int]:
    """REG, STACK, SHARED and LOCAL of `function` in `cuobjdump --dump-resource-usage` output."""
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
    """(source, target, options): what the report hands to triton.compile for build on arch.

    A captured build carries the JIT's own signature, constexprs, attrs and options, so these
    are the arguments JITFunction._do_compile gives triton.compile for that launch.
    """
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
    if build.archs is not None and arch not in build.archs:
        raise ValueError(f"this build is the specialization for {', '.join(build.archs)}")
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
        mma_instructions=resources["MMA"],
        shuffle_instructions=resources["SHFL"],
        ldmatrix_instructions=resources["LDSM"],
        async_copy_instructions=resources["LDGSTS"],
        compile_s=round(compile_s, 3),
        error=None,
    )


def triton_records(request: ReportRequest) -> Iterator[dict]:
    """Records of every Triton build (module import failures first, as error records)."""
    errors: list[dict] = []
    builds = collect_builds(request.modules, errors, archs=request.archs)
    yield from errors
    captured = sum(bool(b.launches) for b in builds)
    if captured:
        listed = sum(not b.launches for b in builds)
        print(
            f"triton: {captured} builds are the JIT's specializations of captured launches "
            f"(GoogLeNet forwards), {listed} configs no captured launch uses are compiled as "
            "listed",
            file=sys.stderr,
        )
    if request.no_cache:
        from triton import knobs

        knobs.compilation.always_compile = True
    for build in builds:
        if request.wants(build.kernel):
            for arch in request.archs:
                if build.archs is None or arch in build.archs:
                    yield compile_build(build, arch)
