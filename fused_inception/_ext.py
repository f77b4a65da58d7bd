"""Loads the compiled extension `fused_inception._C` and wraps its operators.

Importing `_C` registers the operators with PyTorch's dispatcher (`torch.ops.fused_inception.*`);
the module itself defines no Python functions. When it is missing (not built) or does not load
(for example, built against another torch), this module still imports: `has_extension()` is then
False and `extension_error()` says why, for the error messages of the callers.
"""

from __future__ import annotations

import torch
from torch import Tensor

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


def _require_extension(op_name: str) -> None:
    if _EXTENSION_ERROR is not None:
        raise RuntimeError(
            f"fused_inception.{op_name} needs the C++ extension fused_inception._C, which is not "
            f"available: {_EXTENSION_ERROR}"
        )


def max_pool3x3_nhwc(x: Tensor) -> Tensor:
    """3x3 max-pool with stride 1 and padding 1 (padding counts as -inf) of an NHWC tensor.

    Computes exactly `torch.nn.functional.max_pool2d(x, 3, 1, 1)` on the CPU, NaN and infinities
    included: a window holding a NaN gives its last NaN in row-major order, and of equal maxima
    (-0.0 and +0.0) the first one. The one difference is in the bits of bfloat16 NaNs: this keeps
    the input NaN's bits, while torch's vectorised kernels rewrite some of them as 0xFFFF.

    Arguments:
        x: [N, C, H, W], float32, float64, float16 or bfloat16, on the CPU, channels_last-
            contiguous (`x.contiguous(memory_format=torch.channels_last)` makes it so).
    Returns:
        out: [N, C, H, W], channels_last, same dtype; a new tensor.
    """
    _require_extension("max_pool3x3_nhwc")
    return torch.ops.fused_inception.max_pool3x3_nhwc(x)


# Fake (meta) kernels of the C++ operators, so torch.compile and torch.library.opcheck can trace
# them: each returns an empty tensor with the real kernel's shape, dtype and strides, or None for
# the operators that write into `out`. The CUDA-kernel operators exist only in builds that have
# them (csrc/cuda_ops.cpp).
def _check_same_device(op: str, **tensors: Tensor) -> None:
    # A fake kernel also runs for real when one operand is a meta tensor (Meta outranks CPU and
    # CUDA in dispatch): refuse mixed devices there instead of silently doing nothing.
    devices = {name: t.device for name, t in tensors.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{name} on {device}" for name, device in devices.items())
        raise RuntimeError(
            f"fused_inception::{op}: all tensors must be on one device, got {listed}"
        )


def _register_fake_kernels() -> None:
    ns = torch.ops.fused_inception

    @torch.library.register_fake("fused_inception::max_pool3x3_nhwc")
    def _max_pool3x3_nhwc_fake(x: Tensor) -> Tensor:
        torch._check(x.dim() == 4, lambda: f"max_pool3x3_nhwc: expected 4-D x, got {x.dim()}-D")
        return torch.empty(
            x.shape, dtype=x.dtype, device=x.device, memory_format=torch.channels_last
        )

    @torch.library.register_fake("fused_inception::winograd_f2x3_input")
    def _winograd_input_fake(
        r: Tensor, n: int, h: int, w: int, tile_begin: int = 0, tile_count: int | None = None
    ) -> Tensor:
        if tile_count is None:  # the tiles from tile_begin on; one per 2x2 outputs, per image
            tile_count = n * ((h + 1) // 2) * ((w + 1) // 2) - tile_begin
        return r.new_empty((tile_count, 16, r.shape[1]))

    @torch.library.register_fake("fused_inception::winograd_f2x3_output_")
    def _winograd_output_fake(
        m: Tensor,
        bias: Tensor,
        out: Tensor,
        n: int,
        h: int,
        w: int,
        tile_begin: int = 0,
        tile_count: int | None = None,
    ):
        _check_same_device("winograd_f2x3_output_", m=m, bias=bias, out=out)
        return None

    @torch.library.register_fake("fused_inception::fingerprint")
    def _fingerprint_fake(tensors: list[Tensor]) -> Tensor:
        return torch.empty((), dtype=torch.int64, device=tensors[0].device)

    if hasattr(ns, "conv1x1_slice_"):

        @torch.library.register_fake("fused_inception::conv1x1_slice_")
        def _conv1x1_slice_fake(x, w, bias, out, c0: int, pool: bool):
            _check_same_device("conv1x1_slice_", x=x, w=w, bias=bias, out=out)
            return None

    if hasattr(ns, "chain_1x1_kxk_"):

        @torch.library.register_fake("fused_inception::chain_1x1_kxk_")
        def _chain_1x1_kxk_fake(x, w_red, b_red, w_kxk, b_kxk, out, c0: int):
            _check_same_device(
                "chain_1x1_kxk_", x=x, w_red=w_red, b_red=b_red, w_kxk=w_kxk, b_kxk=b_kxk, out=out
            )
            return None


if _EXTENSION_ERROR is None:
    _register_fake_kernels()
