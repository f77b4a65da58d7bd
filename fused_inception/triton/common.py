"""What the Triton kernel families (block_1x1.py, block_kxk.py) share.

Every family follows one scheme:
- the kernel is `<family>_kernel`; its runtime scalars are lower case (m, c_in, c1, c2r, ...,
  height, width, pixel strides stride_xm / stride_om) and its tl.constexpr arguments upper
  case (BLOCK_*, DOT_IN_FP32); tensors are NHWC rows [pixels, channels] (`pixel_stride`);
- `<Family>Config`, a NamedTuple of tile sizes ending in num_warps and num_stages;
  `pick_config(dtype, *, <channel counts>)` the GPU choice by shape (also under the
  interpreter, so tests can check it), and `INTERPRETER_OVERRIDES` the fields a launch under
  TRITON_INTERPRET=1 replaces (`launch_config`; FUSED_INCEPTION_GPU_CONFIGS=1 keeps the GPU's);
- the launcher `<family>(<tensors>, out, <offsets>)` validates with `check_launch_args` /
  `check_scratch_launch` (error types: fused_inception.checks), starts the kernel with `launch`
  or `launch_with` (never `kernel[grid](...)` itself: `launch` tells the launch listener, holds
  `launch_guard()` and lets the AOT report intercept the launch), the config chosen by
  `autotune.choose` among `tuning_candidates(...)` (the pick unless a GPU tunes), and returns
  out;
- `aot_builds()` lists every GPU build as `kernel_build(...)` records for the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..checks import as_channel_offset, check_no_overlap, check_same_device
from . import INTERPRETER, KernelBuild, cpu_tensors_allowed, launch_guard, launch_interceptor

# The dtypes every kernel is built for, and Triton's names of their pointers' element types.
TRITON_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}

# CUDA's grid limits: 2**31 - 1 blocks along x, 65535 along y.
_MAX_GRID = (2**31 - 1, 65535)


def dtype_name(dtype: torch.dtype) -> str:
    """How reports and build names spell a dtype: "float32", "float16" or "bfloat16"."""
    return str(dtype).removeprefix("torch.")


def dot_in_fp32(dtype: torch.dtype) -> bool:
    """DOT_IN_FP32: feed tl.dot fp32 operands. Only bf16 under the interpreter, whose bf16
    tl.dot is wrong; compiled kernels keep 16-bit operands on the tensor cores."""
    return INTERPRETER and dtype == torch.bfloat16


# FUSED_INCEPTION_GPU_CONFIGS=1: under the interpreter too, launch the exact tile
# configurations a GPU would use (slow, exact), so that the work a GPU would do can be counted
# here (python -m fused_inception.report --work). Read once, like TRITON_INTERPRET.
GPU_CONFIGS_ENV = "FUSED_INCEPTION_GPU_CONFIGS"
FORCE_GPU_CONFIGS = os.environ.get(GPU_CONFIGS_ENV, "0") == "1"


def launch_config(cfg: NamedTuple, interpreter_overrides: dict[str, int]) -> NamedTuple:
    """The config a launch uses: cfg on a GPU; under the interpreter, whose cost is per program
    and loop iteration, cfg with the family's larger chunks (`INTERPRETER_OVERRIDES`), unless
    FUSED_INCEPTION_GPU_CONFIGS=1 asks for the GPU's."""
    if INTERPRETER and not FORCE_GPU_CONFIGS:
        return cfg._replace(**interpreter_overrides)
    return cfg


def tuning_neighbours(
    pick: NamedTuple, other_block_m: NamedTuple, narrower: Sequence[NamedTuple]
) -> list[NamedTuple]:
    """A family's autotuning candidates (fused_inception/triton/autotune.py), the pick first:
    the config for the other BLOCK_M, 4 warps, 2 or 4 pipeline stages, and the family's
    narrower column blocks (`narrower`: the pick with one GEMM's blocks halved, its tail
    recomputed); no duplicates."""
    found = [
        pick,
        other_block_m,
        pick._replace(num_warps=4),
        pick._replace(num_stages=2),
        pick._replace(num_stages=4),
        *narrower,
    ]
    return list(dict.fromkeys(found))


# Who wants to hear of every launch (fused_inception.report.work counts the work of a forward):
# a callable (kernel, grid, useful_macs, rows) or None. `launch` calls note_launch just before
# it launches; without a listener it costs one comparison.
launch_listener = None


class RowTiles(NamedTuple):
    """Which of a launch's programs run which pixel rows, so that work counted at one batch
    size can be scaled to another tile by tile (fused_inception.report.work_analysis).

    m rows (N*H*W of `images` images) in m // block_m full tiles, then tail tiles of
    block_m_tail (tiles.row_programs); kind(program id (x, y, z)) is "full" or "tail" for a
    program of such a tile, "image" for one whose work is a fixed part of an image (the pool
    programs)."""

    m: int
    block_m: int
    block_m_tail: int
    images: int
    kind: Callable[[tuple[int, int, int]], str]


def note_launch(
    kernel: str, grid: tuple[int, ...], useful_macs: int, rows: RowTiles | None = None
) -> None:
    """Tell the launch listener, if any, that `kernel` is launched on `grid`, that the
    multiply-adds it exists to compute (the block's useful work it covers) are useful_macs, and
    how its programs map to pixel rows (None: not said)."""
    if launch_listener is not None:
        launch_listener(kernel, grid, useful_macs, rows)


def launch(
    kernel: object,
    grid: tuple[int, ...],
    args: Sequence[object],
    constexprs: dict[str, object],
    *,
    num_warps: int,
    num_stages: int,
    op: str,
    useful_macs: int,
    rows: RowTiles | None = None,
) -> None:
    """Start `kernel[grid](*args, **constexprs, num_warps=..., num_stages=...)`: the one way
    every launcher of this package starts a Triton kernel.

    args:        the runtime arguments, in the kernel's order (tensors and ints, as the JIT
                 sees them: it specializes on their values, see report.specialization)
    constexprs:  the tl.constexpr arguments by name
    op, useful_macs, rows: what note_launch tells the launch listener (the launcher's name,
                 the multiply-adds the launch exists to compute, its programs' rows)
    Holds launch_guard() around the launch. While fused_inception.triton.intercept_launches is
    active, the interceptor receives (kernel, grid, args, options) instead and nothing runs.
    """
    note_launch(op, grid, useful_macs, rows)
    options = {**constexprs, "num_warps": num_warps, "num_stages": num_stages}
    interceptor = launch_interceptor()
    if interceptor is not None:
        interceptor(kernel, tuple(grid), tuple(args), options)
        return
    with launch_guard():
        kernel[grid](*args, **options)


def launch_with(
    kernel: object,
    grid: tuple[int, ...],
    args: Sequence[object],
    cfg: NamedTuple,
    dtype: torch.dtype,
    *,
    op: str,
    useful_macs: int,
    rows: RowTiles | None = None,
) -> None:
    """`launch` with a family config: each tile field of cfg is the tl.constexpr of its name in
    upper case (block_m_tail -> BLOCK_M_TAIL), num_warps and num_stages the launch options, and
    DOT_IN_FP32 follows dtype. The tuning report reads configs back by the same rule."""
    tiles = {k.upper(): v for k, v in cfg._asdict().items() if k not in _LAUNCH_OPTIONS}
    launch(
        kernel,
        grid,
        args,
        {**tiles, "DOT_IN_FP32": dot_in_fp32(dtype)},
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        op=op,
        useful_macs=useful_macs,
        rows=rows,
    )


_LAUNCH_OPTIONS = ("num_warps", "num_stages")


@triton.jit
def bias_relu_store(acc, bias_ptr, cols, mask_n, out_tile, out_row, col_off, mask_m):
    """out[rows, col_off + cols] = relu(acc + bias[cols]) in out's dtype (NaN propagates as in
    torch.relu); the epilogue of every kernel that writes one channel slice of the output."""
    bias = tl.load(bias_ptr + cols, mask=mask_n, other=0.0)
    y = tl.maximum(acc + bias[None, :], 0.0, propagate_nan=tl.PropagateNan.ALL)
    tl.store(
        out_tile + out_row[:, None] + (col_off + cols)[None, :],
        y.to(out_tile.dtype.element_ty),
        mask=mask_m[:, None] & mask_n[None, :],
    )


@triton.jit
def dot_acc(a, b, acc, DOT_IN_FP32: tl.constexpr):
    """acc + a @ b, accumulated in fp32 (tl.dot: tensor cores for fp16/bf16, exact fp32 FMAs
    for fp32); with DOT_IN_FP32 (`dot_in_fp32`) the operands are cast to fp32 first."""
    if DOT_IN_FP32:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision="ieee")


class Operand(NamedTuple):
    """A tensor argument of a launcher besides x and out.

    dims: its shape in symbols, e.g. ("C_in", "C_out"); "C_in" is x's channels, the other
          symbols are bound by the first operand that has them and must agree after.
    fp32: biases are float32; every other operand has x's dtype.
    """

    name: str
    tensor: Tensor
    dims: tuple[str, ...]
    fp32: bool = False


def _bind_dims(op: str, operand: Operand, sizes: dict[str, int]) -> None:
    shape = tuple(operand.tensor.shape)
    bound = dict(sizes)
    ok = len(shape) == len(operand.dims)
    for symbol, size in zip(operand.dims, shape, strict=False):
        ok = ok and bound.setdefault(symbol, size) == size
    if not ok:
        pattern = ", ".join(operand.dims)
        known = ", ".join(str(sizes.get(symbol, symbol)) for symbol in operand.dims)
        raise ValueError(f"{op}: {operand.name} must be [{pattern}] = [{known}], got {shape}")
    sizes.update(bound)


def _check_operands(
    op: str, operands: Sequence[Operand], dtype: torch.dtype, ref: str, sizes: dict[str, int]
) -> dict[str, int]:
    """Each operand: `dtype` (float32 for biases), the shape its dims say, contiguous; returns
    `sizes` with every symbol bound."""
    for operand in operands:
        want = torch.float32 if operand.fp32 else dtype
        if operand.tensor.dtype != want:
            why = "biases are float32" if operand.fp32 else f"{ref}'s dtype"
            raise TypeError(
                f"{op}: {operand.name} must be {want} ({why}), got {operand.tensor.dtype}"
            )
        _bind_dims(op, operand, sizes)
        if not operand.tensor.is_contiguous():
            raise ValueError(
                f"{op}: {operand.name} must be contiguous (as fused_inception.packing makes it), "
                f"got strides {operand.tensor.stride()}"
            )
    return sizes


def check_launch_args(
    op: str, x: Tensor, out: Tensor, c_off: object, operands: Sequence[Operand]
) -> tuple[dict[str, int], int]:
    """Refuse, before any launch, what the kernels cannot see themselves; (sizes, c_off).

    x:   [N, C_in, H, W], float32/float16/bfloat16, any strides
    out: [N, Ctot, H, W], x's dtype, any strides; the kernel writes channels [c_off, c_off +
         C_out) only, which must fit (None: the launcher checks its slices itself), and out
         must not overlap x or any operand
    operands: contiguous, of the shapes their dims say (sizes: the symbols bound, C_out
         among them); all tensors on one device, CUDA unless under the interpreter
         or while launches are intercepted (cpu_tensors_allowed).
    """
    tensors = {"x": x, "out": out, **{o.name: o.tensor for o in operands}}
    for name, t in tensors.items():
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if x.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: x must be float32, float16 or bfloat16, got {x.dtype}")
    if x.dim() != 4 or out.dim() != 4:
        raise ValueError(
            f"{op}: x and out must be 4-D [N, C, H, W], got {tuple(x.shape)} and {tuple(out.shape)}"
        )
    n, c_in, h, w = x.shape
    sizes = _check_operands(op, operands, x.dtype, "x", {"C_in": c_in})
    if out.dtype != x.dtype:
        raise TypeError(f"{op}: out must have x's dtype {x.dtype}, got {out.dtype}")
    if out.shape[0] != n or tuple(out.shape[2:]) != (h, w):
        raise ValueError(
            f"{op}: out must be [N, Ctot, H, W] = [{n}, Ctot, {h}, {w}], got {tuple(out.shape)}"
        )
    if c_off is not None:
        c_off = as_channel_offset(op, c_off)
        c_out, c_tot = sizes["C_out"], out.shape[1]
        if not 0 <= c_off <= c_tot - c_out:
            raise ValueError(
                f"{op}: channels [{c_off}, {c_off} + {c_out}) do not fit in out's {c_tot} channels"
            )
    check_same_device(op, **tensors)
    if x.device.type != "cuda" and not cpu_tensors_allowed():
        raise RuntimeError(
            f"{op}: x is on {x.device}; Triton kernels need CUDA tensors (or TRITON_INTERPRET=1)"
        )
    check_no_overlap(op, out, **{k: v for k, v in tensors.items() if k != "out"})
    return sizes, c_off


def check_grid(op: str, grid: tuple[int, int]) -> None:
    """ValueError for a launch grid past CUDA's limits (a larger one would not run at all)."""
    if not (grid[0] <= _MAX_GRID[0] and grid[1] <= _MAX_GRID[1]):
        raise ValueError(
            f"{op}: the launch grid {grid} exceeds CUDA's {_MAX_GRID}; split the batch or the "
            f"channels"
        )


# How build names abbreviate config fields.
_FIELD_NAMES = {
    "th": "TH", "tw": "TW", "block_m": "BM", "block_n": "BN", "block_r": "BR", "block_k": "BK",
    "block_n2": "BN2", "block_r2": "BR2",
    "block_n3": "BN3", "block_r3": "BR3", "block_n4": "BN4", "block_r4": "BR4",
    "block_w": "BW", "block_c": "BC", "block_m_tail": "BMT", "block_n_tail": "BNT",
    "block_n2_tail": "BN2T", "block_n3_tail": "BN3T", "block_n4_tail": "BN4T",
    "merge_tail": "MT",
    "num_warps": "warps", "num_stages": "stages",
}  # fmt: skip


def kernel_build(
    family: str,
    fn: object,
    dtype: torch.dtype,
    cfg: NamedTuple,
    variant: dict[str, object],
    constexprs: dict[str, object],
    *,
    fp32_pointers: Sequence[str] = (),
    divisible: Sequence[str] = (),
) -> KernelBuild:
    """The ahead-of-time build of `fn` (a family's kernel) for dtype and cfg: one config.

    variant:    the constexprs that select a kernel variant (POOL, K), named in the build name;
    constexprs: every other constexpr argument's value (an int argument given here is compiled
                as that constant, as the JIT does with ints equal to 1).
    Its signature comes from fn's arguments: "constexpr" for those two, a pointer for each
    `*_ptr` (to float32 for `fp32_pointers`, else to dtype), "i32" for the rest. `divisible`
    lists the arguments to mark as multiples of 16 (tt.divisibility attrs).
    The name reads "<family>[<dtype>,<variant>=..,BM=..,...,warps=..,stages=..]".

    That signature is an assumption. Triton's JIT specializes on each launch's argument values
    (fused_inception.report.specialization), so the report compiles, for every config that
    GoogLeNet's forwards launch, the specializations the JIT computes for those launches
    (matched to this build by fn, the tl.constexpr values, num_warps, num_stages and the
    pointer types), and this build as it is only for a config no captured launch uses.
    """
    constexprs = {**variant, **constexprs}
    ty = TRITON_DTYPES[dtype]
    signature = {}
    for arg in fn.arg_names:
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg.endswith("_ptr"):
            signature[arg] = "*fp32" if arg in fp32_pointers else f"*{ty}"
        else:
            signature[arg] = "i32"
    fields = [f"{k}={int(v)}" for k, v in variant.items()]
    fields += [f"{_FIELD_NAMES[k]}={v}" for k, v in cfg._asdict().items()]
    names = list(signature)
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in divisible} or None
    return KernelBuild(
        kernel=f"{family}[{dtype_name(dtype)},{','.join(fields)}]",
        fn=fn,
        signature=signature,
        constexprs=constexprs,
        dtype=dtype_name(dtype),
        num_warps=cfg.num_warps,
        num_stages=cfg.num_stages,
        attrs=attrs,
    )


# Checks of the version-2 launchers (block_1x1.py, block_kxk.py), which take NHWC rows: x and
# out row-major [pixels, channels] with a pixel stride, the scratch r dense.


def pixel_stride(op: str, name: str, t: Tensor) -> int:
    """The distance between pixels of the 4-D tensor t [N, C, H, W] taken as NHWC rows: its
    channels contiguous and every pixel that many elements after the previous one (so a
    channels_last-contiguous tensor, or a channel slice of one); ValueError otherwise."""
    n, c, h, w = t.shape
    s = t.stride(3) if w > 1 else (t.stride(2) if h > 1 else max(c, t.stride(0)))
    want = (h * w * s, 1, w * s, s)
    strided = [a == b for size, a, b in zip(t.shape, t.stride(), want, strict=True) if size > 1]
    if s < c or not all(strided):
        raise ValueError(
            f"{op}: {name} must be NHWC rows (channels contiguous, one stride between pixels, "
            f"e.g. channels_last-contiguous), got strides {t.stride()} for shape "
            f"{tuple(t.shape)}; use .contiguous(memory_format=torch.channels_last)"
        )
    return s


def check_column_split(op: str, name: str, value: object, limit: int) -> int:
    """A column count that splits a matrix: an int in [0, limit] (TypeError, ValueError)."""
    value = as_channel_offset(op, value)
    if not 0 <= value <= limit:
        raise ValueError(f"{op}: {name} must be in [0, {limit}], got {value}")
    return value


def check_slice(op: str, name: str, offset: object, width: int, total: int) -> int:
    """A channel offset whose slice [offset, offset + width) fits in `total` channels."""
    offset = as_channel_offset(op, offset)
    if not 0 <= offset <= total - width:
        raise ValueError(
            f"{op}: channels [{offset}, {offset} + {width}) ({name}) do not fit in out's "
            f"{total} channels"
        )
    return offset


def check_scratch(
    op: str, r: Tensor, shape: tuple[int, int], x: Tensor, out: Tensor, operands: Sequence[Operand]
) -> None:
    """The scratch rows r that block_1x1 writes: x's dtype and device, `shape`, contiguous, and
    overlapping neither x, out nor any operand."""
    if not isinstance(r, Tensor):
        raise TypeError(f"{op}: r must be a torch.Tensor, got {type(r).__name__}")
    if r.dtype != x.dtype:
        raise TypeError(f"{op}: r must have x's dtype {x.dtype}, got {r.dtype}")
    if tuple(r.shape) != tuple(shape) or not r.is_contiguous():
        raise ValueError(
            f"{op}: r must be a contiguous {list(shape)} matrix, got shape {tuple(r.shape)} "
            f"and strides {r.stride()}"
        )
    check_same_device(op, x=x, r=r)
    check_no_overlap(op, out, r=r)
    check_no_overlap(op, r, written="r", x=x, **{o.name: o.tensor for o in operands})


def check_scratch_launch(
    op: str, r: Tensor, out: Tensor, operands: Sequence[Operand]
) -> dict[str, int]:
    """check_launch_args for a launcher that reads the scratch rows r [N*H*W, C] instead of x:
    out [N, C_tot, H, W] NHWC rows of r's dtype; operands as check_launch_args; (sizes)."""
    if not isinstance(r, Tensor):
        raise TypeError(f"{op}: r must be a torch.Tensor, got {type(r).__name__}")
    if r.dtype not in TRITON_DTYPES:
        raise TypeError(f"{op}: r must be float32, float16 or bfloat16, got {r.dtype}")
    n, _, h, w = out.shape
    if r.dim() != 2 or r.shape[0] != n * h * w or not r.is_contiguous():
        raise ValueError(
            f"{op}: r must be contiguous rows [N*H*W, C] = [{n * h * w}, C] for out "
            f"{tuple(out.shape)}, got shape {tuple(r.shape)} and strides {r.stride()}"
        )
    sizes = _check_operands(op, operands, r.dtype, "r", {})
    if out.dtype != r.dtype:
        raise TypeError(f"{op}: out must have r's dtype {r.dtype}, got {out.dtype}")
    pixel_stride(op, "out", out)
    tensors = {"r": r, "out": out, **{o.name: o.tensor for o in operands}}
    check_same_device(op, **tensors)
    if r.device.type != "cuda" and not cpu_tensors_allowed():
        raise RuntimeError(
            f"{op}: r is on {r.device}; Triton kernels need CUDA tensors (or TRITON_INTERPRET=1)"
        )
    check_no_overlap(op, out, **{k: v for k, v in tensors.items() if k != "out"})
    return sizes


def check_int32_tile(op: str, block_m: int, *row_widths: int, width: int) -> None:
    """The kernels' in-tile offsets are int32: a tile of block_m rows plus `width` rows of
    neighbours (the pool's or the taps' reach), times the widest row, must fit."""
    span = (block_m + width + 1) * max(row_widths)
    if span >= 2**31:
        raise ValueError(
            f"{op}: a {block_m}-row tile with rows of {max(row_widths)} elements spans {span} "
            f"elements, more than the kernel's int32 tile offsets"
        )
