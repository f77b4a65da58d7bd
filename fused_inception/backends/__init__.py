"""Backend registry: which implementations of the fused block exist and which one runs.

A backend is a module with `prepare(FoldedParams) -> packed` (called once per weight change)
and `forward(x, packed) -> out` (the fused eval-mode block). "auto" picks the best available
backend for the input's device.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from types import ModuleType

import torch

BACKENDS = ("cpu", "triton", "cuda")
BACKEND_CHOICES = ("auto",) + BACKENDS

# Backends that exist by name but are not part of this build yet, with the reason.
_NOT_BUILT = {
    "cuda": "the CUDA C++ kernels are not part of this release yet",
}

_poison_outputs = False


@contextlib.contextmanager
def poison_outputs(enabled: bool = True) -> Iterator[None]:
    """While enabled, outputs that backends allocate are pre-filled with NaN.

    Tests use it so that an element a kernel forgets to write fails the parity check instead
    of passing on whatever memory happened to hold.
    """
    global _poison_outputs
    previous, _poison_outputs = _poison_outputs, enabled
    try:
        yield
    finally:
        _poison_outputs = previous


def new_output(shape: tuple[int, ...], like: torch.Tensor, memory_format: torch.memory_format):
    """Allocate a backend's output (NaN-filled while poison_outputs is on)."""
    out = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format)
    if _poison_outputs:
        out.fill_(float("nan"))
    return out


def check_backend_name(name: str) -> str:
    """Validate a backend name; ValueError listing the choices for an unknown one."""
    if name not in BACKEND_CHOICES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return name


def _triton_unavailable_reason() -> str | None:
    try:
        import triton  # noqa: F401

        from ..triton import INTERPRETER
    except ImportError as exc:
        return f"triton cannot be imported ({exc})"
    if not (INTERPRETER or torch.cuda.is_available()):
        return "no CUDA device (TRITON_INTERPRET=1 runs its kernels on CPU tensors)"
    return None


def backend_unavailable_reason(name: str) -> str | None:
    """None if `name` can run here, else why not."""
    check_backend_name(name)
    if name in ("auto", "cpu"):
        return None
    if name == "triton":
        return _triton_unavailable_reason()
    return _NOT_BUILT.get(name)


def available_backends() -> list[str]:
    """Backends that can run on this machine, best first for their device."""
    return [name for name in BACKENDS if backend_unavailable_reason(name) is None]


def _load(name: str) -> ModuleType:
    return importlib.import_module(f".{name}", __name__)


def _device_error(name: str, device: torch.device) -> str | None:
    if name == "cuda" and device.type != "cuda":
        return f"backend 'cuda' needs CUDA tensors, got input on {device}"
    if name == "triton" and device.type != "cuda":
        from ..triton import INTERPRETER

        if not (INTERPRETER and device.type == "cpu"):
            return (
                f"backend 'triton' needs CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), "
                f"got input on {device}"
            )
    return None


def resolve_backend(name: str, device: torch.device) -> tuple[str, ModuleType]:
    """The backend that runs a block whose input lives on `device`.

    Raises ValueError for an unknown name and RuntimeError for a backend that is not available
    or cannot run on `device`.
    """
    check_backend_name(name)
    if name == "auto":
        if device.type == "cpu":
            name = "cpu"
        else:
            for candidate in ("cuda", "triton"):
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
