"""The block as two launches writing into channel slices of one output (version 2).

The GPU backends share this structure and differ in the kernels and in where the pool branch
runs; each gives `forward` its launch sequence (`Launch`). The CUDA operators
(backends/cuda.py):
1. block_1x1_(x, w_x, b_x, w_pool, b_pool, out, r, c1, pool_off): every 1x1 convolution over x
   as one GEMM, b1 into out's channels [0, c1) and the reduced tensors r2 | r3 into the scratch
   rows r [N*H*W, c2r + c3r]; b4 from the 3x3/1 max-pool staged in shared memory with x's
   rows, into the last c4 channels. x is read by this launch only.
2. block_kxk_(r, w2, b2, w3, b3, out, c2r, off2, off3): b2 and b3, the kxk convolutions over
   r2 and r3 (zero padding), into their slices.
The Triton launchers (backends/triton.py; fused_inception/triton/block_1x1.py and
block_kxk.py), which cannot stage a tile's neighbours on chip (`pooled_in_scratch`):
1. block_1x1(x, w_x, b_x, out, r, c1): the GEMM as above, and x's max-pool streamed row by
   row into r's last C_in columns (r [N*H*W, c2r + c3r + C_in]);
2. block_kxk(r, w2, b2, w3, b3, w_pool, b_pool, out, off2, off3, off4): b2, b3 and the pool
   projection b4 over the pooled columns.
The one temporary is r.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor

from ..packing import BlockPacked
from .output import new_output, output_memory_format

# A backend's two launches: launch(x_rows, packed, out, r), x_rows x as NHWC rows, out the
# channels_last output, r the scratch rows (module docstring).
Launch = Callable[[Tensor, BlockPacked, Tensor, Tensor], None]


def device_guard(x: Tensor) -> contextlib.AbstractContextManager:
    """x's CUDA device made current around the launches: Triton launches on the current
    device and its stream, so a tensor on cuda:1 while cuda:0 is current would otherwise be
    read by kernels running on cuda:0 (the CUDA operators guard themselves too). A no-op for
    CPU tensors."""
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def offsets(packed: BlockPacked) -> tuple[int, int, int]:
    """The first output channels of b2, b3 and b4 (b1's is 0)."""
    c1, c2, c3 = packed.c1, packed.b2.shape[0], packed.b3.shape[0]
    return c1, c1 + c2, c1 + c2 + c3


def forward(
    x: Tensor,
    packed: BlockPacked,
    launch: Launch,
    name: str,
    dtypes: tuple[torch.dtype, ...],
    keep_reduced: bool = False,
    pooled_in_scratch: bool = False,
) -> Tensor | tuple[Tensor, Tensor, Tensor]:
    """Fused eval forward in two launches.

    x:   [N, Cin, H, W] (NCHW or channels_last), one of `dtypes`
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format (output_memory_format)

    The kernels run on NHWC rows, so NCHW input is converted once and the output back.
    keep_reduced: also return r2 and r3 (copies of the scratch's columns, [N, c, H, W]
    channels_last), for a backward that does not recompute them.
    pooled_in_scratch: the scratch rows also hold x's max-pool (C_in more columns; the Triton
    launches, module docstring).
    """
    if x.dtype not in dtypes:
        names = [str(d).removeprefix("torch.") for d in dtypes]
        listed = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
        raise TypeError(f"the {name} backend supports {listed}, got {x.dtype}")
    n, _, h, w = x.shape
    c1, c2r = packed.c1, packed.c2r
    c2, c3, c4 = packed.b2.shape[0], packed.b3.shape[0], packed.b_pool.shape[0]
    x_rows = x.contiguous(memory_format=torch.channels_last)
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    c_red = packed.w_x.shape[1] - c1
    if out.numel() != 0:
        columns = c_red + (x.shape[1] if pooled_in_scratch else 0)
        r = new_output((n * h * w, columns), x, torch.contiguous_format)
        with device_guard(x):
            launch(x_rows, packed, out, r)
    if output_memory_format(x) != torch.channels_last:
        out = out.contiguous()
    if not keep_reduced:
        return out
    if out.numel() == 0:
        r = x.new_zeros((n * h * w, c_red))
    return out, _nhwc(_copy(r[:, :c2r]), n, h, w), _nhwc(_copy(r[:, c2r:c_red]), n, h, w)


def _copy(rows: Tensor) -> Tensor:
    """A contiguous copy of some columns of r (clone, not contiguous(): a view of a one-row r
    is contiguous already, and the operator's outputs must not share memory)."""
    return rows.clone(memory_format=torch.contiguous_format)


def _nhwc(rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """[N*H*W, C] contiguous rows -> the [N, C, H, W] channels_last tensor they are."""
    return rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)
