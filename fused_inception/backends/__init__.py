"""Backend registry: which implementations of the fused block exist and which one runs.

A backend is a module with `prepare(FoldedParams) -> packed` (called once per weight change)
and `forward(x, packed) -> out` (the fused eval-mode block). "auto" picks the best available
backend for the input's device.
"""

from __future__ import annotations

import functools
import importlib
import os
from types import ModuleType

import torch

BACKENDS = ("cpu", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS

# Set to 1 to run the cuda backend's kernels on CPU tensors through the SIMT shim (csrc/simt/).
EMULATE_CUDA_ENV = "FUSED_INCEPTION_EMULATE_CUDA"


def check_backend_name(name: str) -> str:
    """Validate a backend name; ValueError listing the choices for an unknown one."""
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


def _triton_unavailable_reason() -> str | None:
    try:
        import triton  # noqa: F401

        from ..triton import cpu_tensors_allowed
    except ImportError as exc:
        return f"triton cannot be imported ({exc})"
    if not (cpu_tensors_allowed() or torch.cuda.is_available()):
        return "no CUDA device (TRITON_INTERPRET=1 runs its kernels on CPU tensors)"
    return None


def emulate_cuda() -> bool:
    """True if FUSED_INCEPTION_EMULATE_CUDA asks for the cuda backend on CPU tensors."""
    return os.environ.get(EMULATE_CUDA_ENV, "0").lower() in ("1", "true", "yes", "on")


@functools.cache
def cuda_kernel_builds() -> tuple[str, ...]:
    """Versions of the CUDA C++ kernels in this build: "cuda" (nvcc) and/or "emulated".

    The typed wrapper of the C++ operator fused_inception::cuda_kernel_builds (no tensors, so
    no fake kernel), here where the backend choice reads it.
    """
    from .. import _ext

    if not _ext.has_op("cuda_kernel_builds"):
        return ()  # (no extension, or one built before the CUDA backend existed)
    return tuple(_ext.op("cuda_kernel_builds")())


def _cuda_unavailable_reason(device_type: str | None = None) -> str | None:
    from .. import _ext

    if not _ext.has_extension():
        return f"the C++ extension did not load ({_ext.extension_error()})"
    builds = cuda_kernel_builds()
    gpu = "cuda" in builds and torch.cuda.is_available()
    emulated = "emulated" in builds and emulate_cuda()
    if device_type == "cuda" or (device_type is None and not emulated):
        if gpu:
            return None
        if "cuda" not in builds:
            return "this build has no nvcc-compiled kernels (built without nvcc or CUDA torch)"
        if device_type is None:
            return (
                f"no CUDA device ({EMULATE_CUDA_ENV}=1 runs its kernels on CPU tensors through "
                f"the SIMT shim)"
            )
        return None
    if emulated:
        return None
    if "emulated" not in builds:
        return "this build has no emulated kernels (built without the CUDA headers)"
    return f"backend 'cuda' runs on CPU tensors only with {EMULATE_CUDA_ENV}=1 (the SIMT shim)"


def backend_unavailable_reason(name: str) -> str | None:
    """None if `name` can run here, else why not."""
    check_backend_name(name)
    if name in ("auto", "cpu"):
        return None
    if name == "triton":
        return _triton_unavailable_reason()
    return _cuda_unavailable_reason()


def available_backends() -> list[str]:
    """Backends that can run on this machine, best first for their device."""
    return [name for name in BACKENDS if backend_unavailable_reason(name) is None]


@functools.cache
def _load(name: str) -> ModuleType:
    return importlib.import_module(f".{name}", __name__)


def _device_error(name: str, device: torch.device) -> str | None:
    if name == "cuda":
        if device.type not in ("cuda", "cpu"):
            return f"backend 'cuda' needs CUDA tensors, got input on {device}"
        return _cuda_unavailable_reason(device.type)
    if name == "triton" and device.type != "cuda":
        from ..triton import cpu_tensors_allowed

        if not (cpu_tensors_allowed() and device.type == "cpu"):
            return (
                f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), "
                f"got input on {device}"
            )
    return None


# What the GPU kernels (triton, cuda) compute in; "auto" runs any other dtype on the cpu backend.
GPU_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def resolve_backend(
    name: str, device: torch.device, dtype: torch.dtype | None = None
) -> tuple[str, ModuleType]:
    """The backend that runs a block whose input lives on `device` (and has `dtype`).

    "auto" takes the cpu backend (ATen primitives, any device) for a dtype the GPU kernels do
    not compute in (float64), as a drop-in block must; a backend named explicitly raises its
    own TypeError for it. Raises ValueError for an unknown name and RuntimeError for a backend
    that is not available or cannot run on `device`.
    """
    if device.type == "cpu" and (name == "auto" or name == "cpu"):
        # The common case, once per block forward: nothing below can refuse it.
        return "cpu", _load("cpu")
    check_backend_name(name)
    if name == "auto":
        if device.type == "cpu" or (dtype is not None and dtype not in GPU_KERNEL_DTYPES):
            name = "cpu"
        else:
            # Triton first: its kernels are software-pipelined (num_stages), the CUDA C++
            # ones are not; neither order is backed by a GPU measurement yet.
            for candidate in ("triton", "cuda"):
                if backend_unavailable_reason(candidate) is None:
                    name = candidate
                    break
            else:
                # The CPU backend is built from ATen primitives and runs on any device.
                name = "cpu"
    reason = backend_unavailable_reason(name) or _device_error(name, device)
    if reason is not None:
        raise RuntimeError(f"backend {name!r} is not available: {reason}")
    return name, _load(name)
