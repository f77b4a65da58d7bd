"""Triton kernels of the fused Inception block (the "triton" backend).

Version 2, two launches per block, one file per kernel family: block_1x1.py (every 1x1
convolution over x as one GEMM: b1 into its output slice, the reduced tensors r2 | r3 into
scratch rows, and x's 3x3/1 max-pool streamed into the same rows) and block_kxk.py (b2 and
b3, the kxk convolutions over the scratch rows with their taps loaded by address, and b4, the
pool projection over the pooled rows); what they
share (naming scheme, config selection, argument validation, AOT build records) is in
common.py. Every family lists the kernel builds it uses in `aot_builds()`, which
`python -m fused_inception.report` compiles ahead of time for sm_80 and sm_90.

This module itself imports neither triton nor torch, so that the backend registry can ask
whether the interpreter is on without loading them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

# Read once, like Triton itself reads it when the @triton.jit functions are defined.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"

# Triton's interpreter is not thread-safe: while a kernel runs it swaps the functions of
# triton.language for its own (process-wide), and a second thread's launch restores or re-swaps
# them under the first one's feet (four threads at once: three InterpreterErrors). Every launch
# of this package goes through launch_guard(), which serializes them under the interpreter
# only; compiled launches on a GPU take no lock.
_INTERPRETER_LOCK = threading.Lock()


def launch_guard() -> contextlib.AbstractContextManager:
    """The context to hold around one Triton kernel launch (a lock under the interpreter)."""
    return _INTERPRETER_LOCK if INTERPRETER else contextlib.nullcontext()


# Who receives every launch instead of Triton (common.launch), or None. The AOT report
# (fused_inception.report.triton) sets one to record the exact arguments of real forwards, so
# that it compiles the specialization Triton's JIT would compile for them; see
# intercept_launches.
_launch_interceptor: Callable | None = None


@contextlib.contextmanager
def intercept_launches(interceptor: Callable) -> Iterator[None]:
    """While active, common.launch calls interceptor(kernel, grid, args, options) and launches
    nothing (options: the constexpr keyword arguments, num_warps and num_stages, exactly as the
    launch would pass them to `kernel[grid](*args, **options)`).

    Since nothing runs, CPU tensors are accepted without the interpreter (cpu_tensors_allowed):
    the report runs the triton backend's forward on CPU tensors of GoogLeNet's real shapes, whose
    sizes, strides and 16-byte-aligned data pointers are what the JIT specializes on. Not
    reentrant, and process-wide (the report captures in one thread)."""
    global _launch_interceptor
    if _launch_interceptor is not None:
        raise RuntimeError("launches are already intercepted")
    _launch_interceptor = interceptor
    try:
        yield
    finally:
        _launch_interceptor = None


def launch_interceptor() -> Callable | None:
    """The active interceptor of intercept_launches, or None."""
    return _launch_interceptor


def cpu_tensors_allowed() -> bool:
    """Whether the triton backend and its launchers accept CPU tensors: under the interpreter
    (which runs the kernels on them) or while launches are intercepted (nothing runs)."""
    return INTERPRETER or _launch_interceptor is not None


@dataclass(frozen=True)
class KernelBuild:
    """One compiled configuration of one Triton kernel, for the ahead-of-time report.

    kernel:     record name, e.g. "conv1x1_slice[float16,POOL=0,BM=64,BN=64,BK=32,warps=4,stages=3]"
    fn:         the @triton.jit function (a JITFunction; not available under the interpreter)
    signature:  argument name -> Triton type string ("*fp16", "*fp32", "i32", "i64", "fp32",
                "constexpr"), every argument of fn in order
    constexprs: constexpr argument name -> value
    dtype:      "float32", "float16" or "bfloat16" (tensor cores are required for 16-bit)
    attrs:      ASTSource attrs, e.g. {(arg_index,): [["tt.divisibility", 16]]}
    options:    more options for triton.compile (a captured build: all of the JIT's)
    archs:      the archs this build is for (None: every arch); a build captured from a launch
                is the JIT's specialization for one arch
    launches:   the captured launches that run this build, e.g. "3a torchvision float16 N=8
                channels_last" (empty for a build as aot_builds() lists it)

    A kernel module's aot_builds() lists its configs with the specialization kernel_build
    assumes; the report (fused_inception.report.triton) replaces each config that GoogLeNet's
    forwards launch by the specializations Triton's JIT computes for those launches.
    """

    kernel: str
    fn: object
    signature: dict[str, str]
    constexprs: dict[str, object]
    dtype: str
    num_warps: int = 4
    num_stages: int = 2
    options: dict[str, object] = field(default_factory=dict)
    attrs: dict | None = None
    archs: tuple[str, ...] | None = None
    launches: tuple[str, ...] = ()
