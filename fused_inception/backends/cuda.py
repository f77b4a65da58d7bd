"""CUDA C++ backend: the whole eval-mode block in the kernels of csrc/cuda/.

float16 and bfloat16 run version 2, two launches with tensor-core mainloops (mma.sync,
ldmatrix, cp.async pipelines): the operators fused_inception::block_1x1_ and block_kxk_, in
the Triton backend's structure (backends/blockwise.py). float32 runs version 1, four launches
on CUDA cores: fused_inception::conv1x1_slice_ (b1, and b4 with the max-pool fused) and
chain_1x1_kxk_ (b2, b3; backends/sliced.py). All are bound in csrc/cuda_ops.cpp, which checks
every argument before a kernel runs; their typed wrappers and fake kernels are here.
CUDA tensors run the nvcc build; CPU tensors run the same sources compiled as plain C++ against
the SIMT shim (csrc/simt/), which is how CI executes them; that needs
FUSED_INCEPTION_EMULATE_CUDA=1, because it is slow and only meant for tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _ext
from ..checks import check_same_device
from ..packing import BlockPacked, prepare_block
from ..reference import FoldedParams
from . import blockwise, sliced

SIXTEEN_BIT = (torch.float16, torch.bfloat16)
SUPPORTED_DTYPES = (torch.float32, *SIXTEEN_BIT)


# Who wants to hear of every version-2 operator call (fused_inception.report.shim_counting
# counts the work of a forward on the shim): a callable (op, args) or None, called just before
# the operator with its name ("block_1x1_" or "block_kxk_") and its arguments.
launch_listener = None


def prepare(p: FoldedParams) -> BlockPacked | sliced.SlicedPacked:
    """Pack folded parameters once (cached by the module until the weights change): version
    2's layouts for 16-bit weights, version 1's for float32."""
    if p.w1.dtype in SIXTEEN_BIT:
        return prepare_block(p)
    return sliced.prepare(p)


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


def block_1x1_(
    x: Tensor, w_x: Tensor, b_x: Tensor, w_pool: Tensor, b_pool: Tensor, out: Tensor, r: Tensor,
    c1: int, pool_off: int,
) -> None:  # fmt: skip
    """b1 -> out[:, :c1], r2 | r3 -> r, b4 -> out[:, pool_off:pool_off + C4] (float16/bfloat16).

    x, out [N, C, H, W] channels_last; w_x [C_in, n_x] and w_pool [C_in, C4] in x's dtype, b_x
    and b_pool float32 (packing.prepare_block); r [N*H*W, n_x - c1] contiguous, x's dtype.
    """
    args = (x, w_x, b_x, w_pool, b_pool, out, r, c1, pool_off)
    if launch_listener is not None:
        launch_listener("block_1x1_", args)
    _ext.op("block_1x1_")(*args)


@_ext.register_fake("block_1x1_")
def _block_1x1_fake(x, w_x, b_x, w_pool, b_pool, out, r, c1, pool_off) -> None:
    tensors = {"x": x, "w_x": w_x, "b_x": b_x, "w_pool": w_pool, "b_pool": b_pool, "out": out}
    check_same_device("fused_inception::block_1x1_", **tensors, r=r)


def block_kxk_(
    r: Tensor, w2: Tensor, b2: Tensor, w3: Tensor, b3: Tensor, out: Tensor, c2r: int, off2: int,
    off3: int,
) -> None:  # fmt: skip
    """b2 -> out[:, off2:off2 + C2], b3 -> out[:, off3:off3 + C3] (float16/bfloat16).

    r [N*H*W, c2r + c3r] (block_1x1_'s scratch); w2 [9, c2r, C2], w3 [K*K, c3r, C3] in r's
    dtype, b2 and b3 float32; out [N, C, H, W] channels_last.
    """
    args = (r, w2, b2, w3, b3, out, c2r, off2, off3)
    if launch_listener is not None:
        launch_listener("block_kxk_", args)
    _ext.op("block_kxk_")(*args)


@_ext.register_fake("block_kxk_")
def _block_kxk_fake(r, w2, b2, w3, b3, out, c2r, off2, off3) -> None:
    tensors = {"r": r, "w2": w2, "b2": b2, "w3": w3, "b3": b3, "out": out}
    check_same_device("fused_inception::block_kxk_", **tensors)


def _launch(x_rows: Tensor, packed: BlockPacked, out: Tensor, r: Tensor) -> None:
    """The two launches of version 2 (blockwise.Launch)."""
    off2, off3, off4 = blockwise.offsets(packed)
    block_1x1_(
        x_rows, packed.w_x, packed.b_x, packed.w_pool, packed.b_pool, out, r, packed.c1, off4
    )
    block_kxk_(r, packed.w2, packed.b2, packed.w3, packed.b3, out, packed.c2r, off2, off3)


def forward(x: Tensor, packed: BlockPacked | sliced.SlicedPacked) -> Tensor:
    """x [N, Cin, H, W] -> [N, Ctot, H, W] in x's memory format: two launches for 16-bit
    (blockwise.forward), four for float32 (sliced.forward)."""
    if isinstance(packed, BlockPacked):
        return blockwise.forward(x, packed, _launch, "cuda", SIXTEEN_BIT)
    return sliced.forward(x, packed, conv1x1_slice_, chain_1x1_kxk_, "cuda")


def forward_saving(
    x: Tensor, packed: BlockPacked | sliced.SlicedPacked
) -> tuple[Tensor, Tensor, Tensor] | None:
    """forward, also returning r2 and r3 where the kernels produce them (16-bit: version 2's
    scratch); None for float32, whose version-1 kernels keep them on chip."""
    if not isinstance(packed, BlockPacked):
        return None
    return blockwise.forward(x, packed, _launch, "cuda", SIXTEEN_BIT, keep_reduced=True)
