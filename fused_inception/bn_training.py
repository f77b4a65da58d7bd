"""torchvision's block with BatchNorm in training mode, fused: batch statistics, normalisation,
ReLU and the output slices in a few passes, with its backward.

    out = bn_training_forward(block, x)      # what FusedInception runs for BN in training

Computes exactly what torchvision's Inception computes in training mode (each unit conv ->
BatchNorm2d with batch statistics -> ReLU; docs/design.md section 2 with BN unfolded) and updates
the BatchNorms' running statistics as BatchNorm2d does; only the order of the work differs:

- forward: x as rows [N*H*W, Cin] (its channels_last form); the three 1x1 convs that read x
  (b1, the reductions r2 and r3) as one 1x1 convolution (a GEMM, oneDNN's on the CPU) with
  their stacked weights; one reduction for the batch statistics of all their channels (ATen's
  batch_norm_update_stats, the reduction and running-statistic update BatchNorm2d itself
  runs); normalise + affine + ReLU straight into b1's slice of the block output (allocated
  once, channels_last: no cat) and into r2 / r3; the kxk convs (ATen / oneDNN, or by Winograd
  where it pays: cpu_winograd.conv_winograd) on r2 / r3,
  their statistics, normalised into their slices; the 3x3/1 max-pool (ceil_mode as
  torchvision's; on the CPU the package's pool, whose backward needs no indices), the
  projection, its statistics, its slice.
- backward: ReLU's backward per output slice (masks from the saved output) and for r2 / r3,
  BatchNorm's backward (ATen's native_batch_norm_backward) once for the three x-reading units'
  stacked channels, once per other unit; the kxk convs through cpu_winograd.kxk_backward
  (ATen's convolution_backward, or their gradients by Winograd where it pays); one
  input-gradient and one weight-gradient computation for the three 1x1 convs over x (two
  torch.mm GEMMs on Intel CPUs); the pool branch through the projection's backward and the
  max-pool's.

Saved for backward: x, the output, the pre-BN outputs of every unit (the stacked 1x1s, the two
kxk convs, the projection), r2 and r3, the pooled input (and its indices off the CPU), the batch
statistics and the weights: what torchvision's modules save, without the four branch outputs
besides the output.

A torch.autograd.Function rather than a torch.library custom op: its backward needs the
forward's intermediates (pre-BN outputs, r2/r3, statistics), which a custom op could only save
by returning them as outputs, and its forward updates the running statistics in place. Under
torch.compile FusedInception traces the composed modules instead (inductor fuses those itself).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import _ext
from .backends import cpu_onednn as onednn
from .backends import cpu_winograd as winograd
from .backends.cpu_maxpool import max_pool3x3, max_pool3x3_nhwc_backward_add_
from .backends.output import new_output, output_memory_format
from .units import block_units

# FusedInception's bn_training choices: which path a forward with BatchNorm in training mode
# takes. "auto": the fused path where it was measured faster than torchvision's modules, else
# the composed one. Measured (docs/measurements.md, "Training steps", single-threaded training
# steps, float32, channels_last, this project's 2-core AMD CPU): batch 8 1.14-1.40x on every
# block, batch 4 1.07-1.22x on the four blocks timed, batch 2 0.80-1.08x, batch 1 0.68-1.03x.
# So "auto" is the fused path on the CPU in float32 from batch 4.
BN_TRAINING_CHOICES = ("auto", "fused", "composed")
_AUTO_DTYPES = (torch.float32,)
_AUTO_MIN_BATCH = 4


def _own_pool(x_cl: Tensor) -> bool:
    """Whether the package's 3x3/1 max-pool and its index-free backward run for x_cl (CPU,
    channels_last, extension loaded)."""
    return (
        x_cl.device.type == "cpu"
        and x_cl.is_contiguous(memory_format=torch.channels_last)
        and _ext.has_op("max_pool3x3_nhwc_backward_add_")
    )


# max_pool2d_with_indices arguments of torchvision's branch4 pool: 3x3, stride 1, padding 1,
# dilation 1, ceil_mode=True.
_POOL_ARGS = ([3, 3], [1, 1], [1, 1], [1, 1], True)
# Unit indices (UNIT_NAMES order) of the 1x1 convs over x, computed as one 1x1 convolution.
_X_READERS = (0, 1, 3)


# The 1x1 convolutions run with dilation 2, which changes nothing for a 1x1 kernel but routes
# ATen's float32 CPU convolution (forward and backward) to oneDNN: for a single-threaded 1x1
# conv at batch < 16 ATen otherwise picks its im2col + BLAS path ("THNN is faster when
# single-threaded", Convolution.cpp), which on this project's AMD CPU (MKL's sgemm) took twice
# oneDNN's time, forward and backward (measured at 3a, 4e, 5b's 1x1 shapes, batch 8). Below
# about 200 rows (N*H*W; 5b at batch 1 and 2: 49 and 98) oneDNN's weight gradient was the slower
# one, so small inputs keep dilation 1, as do other devices and dtypes (float64 would take
# ATen's slow dilated-convolution loop: oneDNN has no float64).
_ONEDNN_MIN_ROWS = 196


def _dilation_1x1(x: Tensor) -> list[int]:
    rows = x.shape[0] * x.shape[2] * x.shape[3]
    onednn = x.device.type == "cpu" and x.dtype == torch.float32 and rows >= _ONEDNN_MIN_ROWS
    return [2, 2] if onednn else [1, 1]


def _conv1x1(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """[N, Cin, H, W] channels_last, [C, Cin, 1, 1] -> [N, C, H, W] channels_last."""
    y = torch.convolution(x, weight, bias, [1, 1], [0, 0], _dilation_1x1(x), False, [0, 0], 1)
    return y.contiguous(memory_format=torch.channels_last)


def _conv1x1_backward(
    dy_rows: Tensor, x: Tensor, weight: Tensor, shape, need_x: bool
) -> tuple[Tensor | None, Tensor]:
    """(grad of x [N, Cin, H, W] channels_last or None if not need_x, grad of weight
    [C, Cin, 1, 1]) of _conv1x1: ATen's convolution_backward, or on Intel CPUs in float32
    two torch.mm GEMMs on the rows (cpu_onednn.mkl_backward: MKL's sgemm faster there)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and onednn.mkl_backward():
        w_rows = weight.flatten(1)  # [C, Cin]
        grad_w = dy_rows.t().mm(_rows(x)).view(weight.shape)
        grad_x = _nchw(dy_rows.mm(w_rows), *shape) if need_x else None
        return grad_x, grad_w
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        _nchw(dy_rows, *shape), x, weight, None, [1, 1], [0, 0], _dilation_1x1(x), False,
        [0, 0], 1, [need_x, True, False],
    )  # fmt: skip
    if grad_x is not None:
        grad_x = grad_x.contiguous(memory_format=torch.channels_last)
    return grad_x, grad_w


class UnitParams(NamedTuple):
    """One conv -> BatchNorm -> ReLU unit's parameters and BatchNorm state.

    weight:        [C_out, C_in, K, K]   conv weight
    bias:          [C_out] or None       conv bias (torchvision's convs have none)
    gamma:         [C_out] or None       BN weight (None: affine=False)
    beta:          [C_out] or None       BN bias
    eps:           BN eps
    running_mean:  [C_out] or None       updated in place (None: no running statistics)
    running_var:   [C_out] or None       updated in place, with the unbiased batch variance
    factor:        the running statistics' update factor (BatchNorm2d's
                   exponential_average_factor: momentum, or 1 / num_batches_tracked)
    """

    weight: Tensor
    bias: Tensor | None
    gamma: Tensor | None
    beta: Tensor | None
    eps: float
    running_mean: Tensor | None
    running_var: Tensor | None
    factor: float


def _rows(t: Tensor) -> Tensor:
    """[N, C, H, W] channels_last -> its [N*H*W, C] rows (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def _nchw(rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """[N*H*W, C] rows -> an [N, C, H, W] channels_last view (strided if rows is a slice)."""
    return rows.unflatten(0, (n, h, w)).permute(0, 3, 1, 2)


def _cat(tensors: list[Tensor | None], like: list[Tensor], fill: float) -> Tensor:
    """The per-unit vectors stacked, a missing one (None) as `fill` of its unit's length."""
    parts = [
        torch.full_like(ref, fill) if t is None else t for t, ref in zip(tensors, like, strict=True)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


class _Group(NamedTuple):
    """Batch statistics and affine terms of the channels of one or more stacked units.

    mean, var:     [C] batch mean and biased variance (what BatchNorm2d normalises with)
    invstd:        [C] 1 / sqrt(var + eps)
    gamma:         [C] BN weights (ones where affine=False)
    scale, shift:  [C] gamma * invstd and beta - mean * scale: normalised = y * scale + shift
    """

    mean: Tensor
    var: Tensor
    invstd: Tensor
    gamma: Tensor
    scale: Tensor
    shift: Tensor


def _batch_stats(y: Tensor, units: list[UnitParams]) -> tuple[Tensor, Tensor]:
    """(mean, biased variance) per channel of y ([N, C, H, W] channels_last, the stacked units'
    pre-BN output), the units' running statistics updated.

    ATen's batch_norm_update_stats is the reduction and the update BatchNorm2d's CPU kernel
    runs, so both come out bitwise as torch's (per channel, however many channels are stacked).
    Stacked units with running statistics and one factor are updated in one call, through
    their buffers stacked and copied back.
    """
    tracked = [u.running_mean is not None for u in units]
    if not any(tracked):
        return torch.batch_norm_update_stats(y, None, None, 0.0)
    if all(tracked) and len({u.factor for u in units}) == 1:
        if len(units) == 1:
            u = units[0]
            return torch.batch_norm_update_stats(y, u.running_mean, u.running_var, u.factor)
        running_mean = torch.cat([u.running_mean for u in units])
        running_var = torch.cat([u.running_var for u in units])
        mean, var = torch.batch_norm_update_stats(y, running_mean, running_var, units[0].factor)
        couts = [u.weight.shape[0] for u in units]
        for u, m, v in zip(units, running_mean.split(couts), running_var.split(couts), strict=True):
            u.running_mean.copy_(m)
            u.running_var.copy_(v)
        return mean, var
    # Units with different factors or some without running statistics: one call each.
    stats, lo = [], 0
    for u in units:
        hi = lo + u.weight.shape[0]
        stats.append(
            torch.batch_norm_update_stats(y[:, lo:hi], u.running_mean, u.running_var, u.factor)
        )
        lo = hi
    return torch.cat([m for m, _ in stats]), torch.cat([v for _, v in stats])


def _group(y: Tensor, units: list[UnitParams]) -> _Group:
    """Statistics of y ([N, C, H, W] channels_last, the stacked units' pre-BN output)."""
    mean, var = _batch_stats(y, units)
    couts = [u.weight.shape[0] for u in units]
    eps = torch.cat([var.new_full((c,), u.eps) for c, u in zip(couts, units, strict=True)])
    invstd = (var + eps).sqrt().reciprocal()
    like = [mean.new_empty(c) for c in couts]
    gamma = _cat([u.gamma for u in units], like, 1.0)
    beta = _cat([u.beta for u in units], like, 0.0)
    scale = gamma * invstd
    return _Group(mean, var, invstd, gamma, scale, beta - mean * scale)


def _normalize_relu(y_rows: Tensor, g: _Group, lo: int, hi: int, out_rows: Tensor) -> None:
    """out_rows = relu(y_rows[:, lo:hi] * scale + shift) for the channels lo:hi of a group."""
    torch.addcmul(g.shift[lo:hi], y_rows[:, lo:hi], g.scale[lo:hi], out=out_rows)
    out_rows.relu_()


def _relu_backward(
    grad_rows: Tensor, out_rows: Tensor, lo: int, hi: int, into: Tensor | None = None
) -> Tensor:
    """ReLU's backward of the channels lo:hi (grad where out > 0), into `into` or a new
    contiguous [rows, hi - lo] tensor."""
    if into is None:
        into = grad_rows.new_empty((grad_rows.shape[0], hi - lo))
    return torch.ops.aten.threshold_backward.grad_input(
        grad_rows[:, lo:hi], out_rows[:, lo:hi], 0, grad_input=into
    )


def _bn_backward(g_rows: Tensor, y_rows: Tensor, grp: _Group, shape) -> tuple[Tensor, ...]:
    """BatchNorm's training backward on rows: (grad of y, grad of gamma, grad of beta)."""
    n, h, w = shape
    dy, dgamma, dbeta = torch.ops.aten.native_batch_norm_backward(
        _nchw(g_rows, n, h, w), _nchw(y_rows, n, h, w), grp.gamma, None, None, grp.mean, grp.invstd,
        True, 0.0, [True, True, True],
    )  # fmt: skip
    return _rows(dy.contiguous(memory_format=torch.channels_last)), dgamma, dbeta


class _BNTrainingBlock(torch.autograd.Function):
    """The block in training mode: forward and backward (module docstring). `state` holds each
    unit's (eps, running_mean, running_var, factor); the running statistics are updated."""

    @staticmethod
    def forward(ctx, x: Tensor, state: tuple[tuple, ...], *flat: Tensor | None):
        units = [UnitParams(*flat[4 * i : 4 * i + 4], *state[i]) for i in range(6)]
        n, c_in, h, w = x.shape
        x_cl = x.contiguous(memory_format=torch.channels_last)
        readers = [units[i] for i in _X_READERS]
        c1, c2r, c3r = (u.weight.shape[0] for u in readers)
        c2, c3, c4 = units[2].weight.shape[0], units[4].weight.shape[0], units[5].weight.shape[0]
        out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
        out_rows = _rows(out)

        # The three 1x1 convs over x: one convolution, one statistics pass over its channels.
        w_red = torch.cat([u.weight for u in readers])
        b_red = None
        if any(u.bias is not None for u in readers):
            b_red = _cat([u.bias for u in readers], [u.weight[:, 0, 0, 0] for u in readers], 0.0)
        y_red = _rows(_conv1x1(x_cl, w_red, b_red))
        g_red = _group(_nchw(y_red, n, h, w), readers)
        _normalize_relu(y_red, g_red, 0, c1, out_rows[:, :c1])
        r_bufs = []
        col, lo = c1, c1
        for i, c_r, c_kxk in ((2, c2r, c2), (4, c3r, c3)):
            r_rows = y_red.new_empty((n * h * w, c_r))
            _normalize_relu(y_red, g_red, lo, lo + c_r, r_rows)
            lo += c_r
            r = _nchw(r_rows, n, h, w)
            unit = units[i]
            k = unit.weight.shape[-1]
            if winograd.training_winograd(r, unit.weight):  # no ReLU (BN comes first)
                y = winograd.conv_winograd(r, unit.weight, unit.bias, relu=False)
            else:
                y = torch.convolution(r, unit.weight, unit.bias, [1, 1], [k // 2] * 2, [1, 1],
                                      False, [0, 0], 1)  # fmt: skip
                y = y.contiguous(memory_format=torch.channels_last)
            grp = _group(y, [unit])
            _normalize_relu(_rows(y), grp, 0, c_kxk, out_rows[:, col : col + c_kxk])
            r_bufs.append((r, y, grp))
            col += c_kxk

        # The pool branch: 3x3/1 max-pool, projection, statistics, slice. On the CPU the
        # package's pool, whose backward needs no indices (cpu_maxpool.py); else ATen's with
        # indices.
        indices = None
        if _own_pool(x_cl):
            pooled = max_pool3x3(x_cl)
        else:
            pooled, indices = torch.ops.aten.max_pool2d_with_indices(x_cl, *_POOL_ARGS)
        pooled = pooled.contiguous(memory_format=torch.channels_last)
        unit = units[5]
        y4 = _rows(_conv1x1(pooled, unit.weight, unit.bias))
        g4 = _group(_nchw(y4, n, h, w), [unit])
        _normalize_relu(y4, g4, 0, c4, out_rows[:, col:])

        (r2, y2, grp2), (r3, y3, grp3) = r_bufs
        ctx.save_for_backward(
            x_cl, out, y_red, r2, y2, r3, y3, pooled, indices, y4,
            *(u.weight for u in units),
        )  # fmt: skip
        ctx.groups = (g_red, grp2, grp3, g4)
        ctx.has_bias = [u.bias is not None for u in units]
        ctx.affine = [u.gamma is not None for u in units]
        ctx.x_format = output_memory_format(x)
        return out.contiguous(memory_format=ctx.x_format)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        # Each temporary is dropped as soon as it is used: every saved tensor stays alive until
        # this returns, so the step's peak memory is the saved set plus what is alive here.
        x_cl, out, y_red, r2, y2, r3, y3, pooled, indices, y4, *weights = ctx.saved_tensors
        g_red, grp2, grp3, g4 = ctx.groups
        n, _, h, w = x_cl.shape
        shape = (n, h, w)
        c1, c2r, c3r = (weights[i].shape[0] for i in _X_READERS)
        c2, c3 = weights[2].shape[0], weights[4].shape[0]
        grads: list[Tensor | None] = [None] * 24  # weight, bias, gamma, beta per unit
        grad_rows = _rows(grad_out.contiguous(memory_format=torch.channels_last))
        out_rows = _rows(out)
        need_x = ctx.needs_input_grad[0]

        # The pool branch: ReLU and BN backward, the projection's and the max-pool's backward.
        col = c1 + c2 + c3
        dy4, grads[22], grads[23] = _bn_backward(
            _relu_backward(grad_rows, out_rows, col, out_rows.shape[1]), y4, g4, shape
        )
        w4 = weights[5]
        grads[21] = dy4.sum(0) if ctx.has_bias[5] else None
        grad_pooled, grads[20] = _conv1x1_backward(dy4, pooled, w4, shape, need_x)
        del dy4
        # The max-pool's backward: with the package's operator it is added into the 1x1
        # convolutions' input gradient at the end (no tensor of its own, no separate add;
        # grad_pooled, x-sized, stays alive until then instead); else ATen's, with indices, now.
        grad_x = None
        if need_x and indices is None:
            grad_pooled = grad_pooled.contiguous(memory_format=torch.channels_last)
        elif need_x:
            grad_x = torch.ops.aten.max_pool2d_with_indices_backward(
                grad_pooled, x_cl, *_POOL_ARGS, indices
            )
            del grad_pooled

        # kxk units: ReLU and BN backward, conv backward, then the reductions' ReLU masks into
        # one buffer next to b1's gradient, for one BN backward of the three 1x1 units.
        g_red_rows = y_red.new_empty(y_red.shape)
        _relu_backward(grad_rows, out_rows, 0, c1, g_red_rows[:, :c1])
        col, lo = c1, c1
        for i, r, y, grp, c_r, c_kxk in ((2, r2, y2, grp2, c2r, c2), (4, r3, y3, grp3, c3r, c3)):
            dy, grads[4 * i + 2], grads[4 * i + 3] = _bn_backward(
                _relu_backward(grad_rows, out_rows, col, col + c_kxk), _rows(y), grp, shape
            )
            weight = weights[i]
            # ATen's convolution_backward, or a 3x3's gradients by Winograd F(4x4, 3x3) where
            # that pays (cpu_winograd.kxk_backward)
            grad_r, grads[4 * i], grads[4 * i + 1] = winograd.kxk_backward(
                _nchw(dy, *shape), r, weight, [True, True, ctx.has_bias[i]]
            )
            del dy
            grad_r = _rows(grad_r.contiguous(memory_format=torch.channels_last))
            _relu_backward(grad_r, _rows(r), 0, c_r, g_red_rows[:, lo : lo + c_r])
            del grad_r
            col += c_kxk
            lo += c_r

        # The three 1x1 convs over x: one BN backward, one convolution backward.
        dy_red, dgamma, dbeta = _bn_backward(g_red_rows, y_red, g_red, shape)
        del g_red_rows
        split = [c1, c2r, c3r]
        for i, dg, db, dy in zip(
            _X_READERS, dgamma.split(split), dbeta.split(split), dy_red.split(split, dim=1),
            strict=True,
        ):  # fmt: skip
            grads[4 * i + 1 : 4 * i + 4] = [dy.sum(0) if ctx.has_bias[i] else None, dg, db]
        w_red = torch.cat([weights[i] for i in _X_READERS])
        grad_x_red, grad_w_red = _conv1x1_backward(dy_red, x_cl, w_red, shape, need_x)
        del dy_red
        for i, gw in zip(_X_READERS, grad_w_red.split(split), strict=True):
            grads[4 * i] = gw
        if need_x and grad_x is None:
            max_pool3x3_nhwc_backward_add_(grad_x_red, grad_pooled, x_cl)
            del grad_pooled
            grad_x = grad_x_red.contiguous(memory_format=ctx.x_format)
        elif need_x:
            grad_x += grad_x_red
            del grad_x_red
            grad_x = grad_x.contiguous(memory_format=ctx.x_format)
        for i, affine in enumerate(ctx.affine):
            if not affine:
                grads[4 * i + 2] = grads[4 * i + 3] = None
        return grad_x, None, *grads


def bn_training_units(block: nn.Module) -> list[UnitParams]:
    """The six units' parameters and BatchNorm state of a block whose units all have a
    BatchNorm2d in training mode, counting this batch as BatchNorm2d's forward does.

    num_batches_tracked += 1 for each BatchNorm that tracks running statistics; factor =
    momentum, or 1 / num_batches_tracked when momentum is None (a cumulative average);
    running statistics None for a BatchNorm with track_running_stats=False.
    """
    units = []
    for unit in block_units(block):
        bn = unit.bn
        running_mean = running_var = None
        factor = 0.0 if bn.momentum is None else bn.momentum
        if bn.track_running_stats:
            running_mean, running_var = bn.running_mean, bn.running_var
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
                if bn.momentum is None:
                    factor = 1.0 / float(bn.num_batches_tracked)
        params = (unit.conv.weight, unit.conv.bias, bn.weight, bn.bias)
        units.append(UnitParams(*params, bn.eps, running_mean, running_var, factor))
    return units


def bn_training_block(x: Tensor, units: list[UnitParams]) -> Tensor:
    """The block with batch statistics, differentiable in x and every parameter; the units'
    running statistics updated in place (as BatchNorm2d's training forward does).

    x:      [N, Cin, H, W] (NCHW or channels_last), N*H*W >= 2
    units:  the six units in UNIT_NAMES order (bn_training_units)
    out:    [N, c1 + c2 + c3 + c4, H, W] in x's memory format (backends/output.py)
    """
    flat = [t for u in units for t in u[:4]]
    state = tuple((float(u.eps), u.running_mean, u.running_var, u.factor) for u in units)
    return _BNTrainingBlock.apply(x, state, *flat)


def bn_training_forward(block: nn.Module, x: Tensor) -> Tensor:
    """A block's training forward with batch statistics (all six units conv -> BN -> ReLU, every
    BN in training mode): the output, differentiable, and the running statistics updated.

    x:   [N, Cin, H, W] (NCHW or channels_last), N*H*W >= 2
    out: [N, Cout, H, W] in x's memory format
    """
    with torch.no_grad():
        units = bn_training_units(block)
    return bn_training_block(x, units)


def check_bn_training(value: str) -> None:
    """ValueError listing the choices for an unknown bn_training."""
    if value not in BN_TRAINING_CHOICES:
        choices = ", ".join(map(repr, BN_TRAINING_CHOICES))
        raise ValueError(f"unknown bn_training {value!r}; choose one of {choices}")


def bn_training_composed_reason(
    block: nn.Module, x: Tensor, mode: str, autocast: bool
) -> tuple[str, str] | None:
    """None if a block with a BatchNorm in training mode runs the fused path on x under
    bn_training `mode` (autocast: whether torch.autocast is on for x), else ("bn-training",
    why it runs the composed modules)."""
    units = block_units(block)
    why = None
    if mode == "composed":
        why = "bn_training='composed'"
    elif not all(getattr(u, "bn", None) is not None and u.bn.training for u in units):
        why = "only some units have a BatchNorm in training mode"
    elif autocast:
        why = "under autocast"
    elif x.shape[0] * x.shape[2] * x.shape[3] < 2:
        why = "one value per channel (BatchNorm2d refuses it)"
    elif mode == "auto" and (
        x.device.type != "cpu" or x.dtype not in _AUTO_DTYPES or x.shape[0] < _AUTO_MIN_BATCH
    ):
        why = (
            f"the fused training path is the default only on the CPU in float32 from batch "
            f"{_AUTO_MIN_BATCH}, where it was measured faster (x is {x.dtype}, batch "
            f"{x.shape[0]}, on {x.device.type}; bn_training='fused' forces it)"
        )
    if why is None:
        return None
    return "bn-training", f"BatchNorm in training mode uses batch statistics ({why})"
