"""Loads the compiled extension `fused_inception._C`.

Importing `_C` registers the operators with PyTorch's dispatcher (`torch.ops.fused_inception.*`);
the module's Python functions are the per-forward checks `snapshot_matches` and
`version_key` (`c_function(name)`). When it is missing (not built) or does not load
(for example, built against another torch), this module still imports: `has_extension()` is then
False and `extension_error()` says why, for the error messages of the callers.

Each C++ operator has one Python home, where its typed wrapper and its fake kernel sit next to
each other (`register_fake` below registers it only when the loaded build has the operator):
- max_pool3x3_nhwc, _backward:            fused_inception/backends/cpu_maxpool.py
- max_pool_nhwc, global_avg_pool_nhwc:    fused_inception/backends/cpu_maxpool.py
- linear_rows:                            fused_inception/rows_linear.py
- winograd_f2x3_input, _output_:          fused_inception/backends/cpu_winograd.py
- conv3x3_weight_grad_winograd:           fused_inception/backends/cpu_winograd.py
- conv1x1_slice_, chain_1x1_kxk_:         fused_inception/backends/cuda.py
- fingerprint:                            fused_inception/fingerprint.py
- cuda_kernel_builds (no tensors, no fake): fused_inception/backends/__init__.py
`import fused_inception` imports all of them, so every fake kernel is registered by then.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

_BUILD_HINT = (
    "build it with `python setup.py build_ext --inplace` (in the source tree) or "
    "`pip install --no-build-isolation .`"
)

try:
    from fused_inception import _C  # noqa: F401  (importing registers the operators)
except Exception as exc:  # any failure to load must leave `import fused_inception` working
    _EXTENSION_ERROR: str | None = f"{type(exc).__name__}: {exc}; {_BUILD_HINT}"
else:
    _EXTENSION_ERROR = None


def has_extension() -> bool:
    """True if `fused_inception._C` loaded and its operators are registered."""
    return _EXTENSION_ERROR is None


def extension_error() -> str | None:
    """Why `fused_inception._C` could not be loaded, or None if it loaded."""
    return _EXTENSION_ERROR


def has_op(name: str) -> bool:
    """True if the loaded build registers fused_inception::<name> (the CUDA-kernel operators
    exist only in builds that have the kernels, csrc/cuda_ops.cpp)."""
    return _EXTENSION_ERROR is None and hasattr(torch.ops.fused_inception, name)


def op(name: str) -> Callable:
    """torch.ops.fused_inception.<name>; RuntimeError saying why if the extension is missing."""
    if _EXTENSION_ERROR is not None:
        raise RuntimeError(
            f"fused_inception::{name} needs the C++ extension fused_inception._C, which is not "
            f"available: {_EXTENSION_ERROR}"
        )
    return getattr(torch.ops.fused_inception, name)


def c_function(name: str) -> Callable | None:
    """`_C.<name>`, one of the module's Python functions (the per-forward checks
    `snapshot_matches`, csrc/structure_check.cpp, and `version_key`, csrc/version_key.cpp), or
    None when the extension is missing or was built without it."""
    if _EXTENSION_ERROR is not None:
        return None
    return getattr(_C, name, None)


def direct_op(name: str) -> Callable | None:
    """fused_inception::<name> called through the C++ dispatcher without torch.ops' Python layer
    and schema matching (`_C.call_op`, csrc/call_op.cpp: the same kernels, autograd and
    inference-mode handling): for the eval fast paths' replays, whose arguments were checked
    when the call was planned. Arguments by position only, of the types the schema takes
    (tensors, None, bools, ints, floats, lists of ints). None when the extension, the C
    function or the operator is missing."""
    call, handle = c_function("call_op"), direct_handle(name)
    if call is None or handle is None:
        return None
    return functools.partial(call, handle)


def direct_handle(name: str) -> int | None:
    """The handle with which `_C.call_op` calls fused_inception::<name> (direct_op's first
    argument; _C.replay_checked takes it), or None where that call is not available."""
    handle_of = c_function("op_handle")
    if handle_of is None or not has_op(name):
        return None
    return handle_of(name)


def direct_calls_allowed() -> bool:
    """Whether a direct_op call may stand in for its torch.ops call now: not under a torch
    function mode (which sees torch.ops calls, not direct ones), tracing or torch.compile."""
    return not (
        torch._C._is_torch_function_mode_enabled()
        or torch._C._is_tracing()
        or torch.compiler.is_compiling()
    )


def register_fake(name: str) -> Callable[[Callable], Callable]:
    """Decorator: the fake (meta) kernel of fused_inception::<name>, registered when this build
    has the operator, so that torch.compile and torch.library.opcheck can trace it. It returns
    an empty tensor with the real kernel's shape, dtype and strides, or None for an operator
    that writes into `out`."""

    def decorate(fake: Callable) -> Callable:
        if has_op(name):
            torch.library.register_fake(f"fused_inception::{name}")(fake)
        return fake

    return decorate
