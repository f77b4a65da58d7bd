"""CUDA C++ backend: the whole eval-mode block as four launches of the kernels in csrc/cuda/.

The operators fused_inception::conv1x1_slice_ (b1, and b4 with the max-pool fused) and
fused_inception::chain_1x1_kxk_ (b2, b3) are bound in csrc/cuda_ops.cpp, which checks every
argument before a kernel runs; their typed wrappers and fake kernels are here. CUDA tensors run
the nvcc build; CPU tensors run the same sources compiled as plain C++ against the SIMT shim
(csrc/simt/), which is how CI executes them; that needs FUSED_INCEPTION_EMULATE_CUDA=1, because
it is slow and only meant for tests.
"""

from __future__ import annotations

from torch import Tensor

from .. import _ext
from ..checks import check_same_device
from . import sliced
from .sliced import prepare  # noqa: F401  (the backend interface)


def conv1x1_slice_(x: Tensor, w: Tensor, bias: Tensor, out: Tensor, c0: int, pool: bool) -> None:
    """out[:, c0 : c0 + C_out] = relu(conv1x1(maxpool3x3(x) if pool else x; w) + bias).

    x [N, C_in, H, W] and out [N, Ctot, H, W] channels_last, float32/float16/bfloat16; w
    [C_in, C_out] in x's dtype and bias [C_out] float32, contiguous (packing.prepare_conv1x1);
    out must not overlap them. Errors as fused_inception.checks says, before any kernel runs.
    """
    _ext.op("conv1x1_slice_")(x, w, bias, out, c0, pool)


@_ext.register_fake("conv1x1_slice_")
def _conv1x1_slice_fake(x, w, bias, out, c0, pool) -> None:
    check_same_device("fused_inception::conv1x1_slice_", x=x, w=w, bias=bias, out=out)


def chain_1x1_kxk_(
    x: Tensor, w_red: Tensor, b_red: Tensor, w_kxk: Tensor, b_kxk: Tensor, out: Tensor, c0: int
) -> None:
    """out[:, c0 : c0 + C_out] = relu(convKxK(relu(conv1x1(x; w_red) + b_red); w_kxk) + b_kxk).

    x and out as for conv1x1_slice_; w_red [C_in, C_red], w_kxk [K, K, C_red, C_out] (K 3 or 5)
    in x's dtype, b_red [C_red] and b_kxk [C_out] float32, contiguous (packing.prepare_chain).
    """
    _ext.op("chain_1x1_kxk_")(x, w_red, b_red, w_kxk, b_kxk, out, c0)


@_ext.register_fake("chain_1x1_kxk_")
def _chain_1x1_kxk_fake(x, w_red, b_red, w_kxk, b_kxk, out, c0) -> None:
    tensors = {"x": x, "w_red": w_red, "b_red": b_red, "w_kxk": w_kxk, "b_kxk": b_kxk, "out": out}
    check_same_device("fused_inception::chain_1x1_kxk_", **tensors)


def forward(x: Tensor, packed: sliced.SlicedPacked) -> Tensor:
    """x [N, Cin, H, W] -> [N, Ctot, H, W] in x's memory format (see sliced.forward)."""
    return sliced.forward(x, packed, conv1x1_slice_, chain_1x1_kxk_, "cuda")
