"""CPU backend: the fused eval-mode block on ATen's CPU primitives (oneDNN / BLAS).

What makes it faster than the eager block (measured by `python -m fused_inception.bench`):
- BatchNorm is folded into the convs once (fold_block), so no BN passes over memory;
- the three 1x1 convolutions that read x run as one GEMM [N*H*W, Cin] x [Cin, c1 + c2r + c3r];
- everything runs in NHWC (channels_last), where a 1x1 conv is a plain GEMM and a branch's
  channel slice of the output is a strided column block [N*H*W, c] with row stride Ctot;
- each branch's bias+ReLU epilogue writes straight into its slice of one preallocated output
  (no torch.cat); the pool branch's GEMM writes into its slice directly;
- float32 runs every convolution (the GEMM over x, the kxk ones, the pool's projection) as a
  oneDNN convolution (cpu_onednn.py), its ReLU applied as it is copied into its slice: 2-2.5x
  the throughput of torch's MKL GEMMs on the AMD CPUs measured, where it also beats Winograd
  on MKL's batched GEMMs; the eval operator runs the wide 3x3s (b2's) as Winograd F(2x2, 3x3)
  with its 16 GEMMs as one grouped oneDNN convolution (on Intel AVX-512 CPUs one torch.bmm,
  MKL's batched SGEMM, faster there: cpu_onednn.mkl_winograd), which does beat the direct one
  (cpu_winograd.onednn_winograd_pays);
- without oneDNN (or for float64 / 16-bit), the 3x3 convolutions run as Winograd F(2x2, 3x3)
  where that pays (cpu_winograd.py), 2.25x fewer multiply-adds, and the GEMMs as addmm;
- the pool branch's max-pool is this package's separable C++ operator.
NCHW input is converted once; the output has the input's memory format.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _ext, plain_layout
from ..folding import fold_unit
from ..reference import FoldedParams
from ..units import block_units
from . import cpu_onednn as onednn
from . import cpu_winograd as winograd
from .cpu_maxpool import max_pool3x3
from .output import new_output, output_memory_format, output_poisoned


class CpuPacked(NamedTuple):
    """Folded parameters in the layouts the CPU path wants.

    w_x:  [Cin, c1 + c2r + c3r]  the three 1x1 convs that read x, K-major for addmm (on the
          oneDNN path w_x, w2, w3 and w4 are views of `onednn`'s weights, not read as data)
    b_x:  [c1 + c2r + c3r]
    w2:   [c2, c2r, 3, 3] channels_last       b2: [c2]
    w3:   [c3, c3r, K, K] channels_last       b3: [c3]
          (prepare_training on oneDNN: w2, w3 and onednn's "2", "3" as given)
    w4:   [Cin, c4]                           b4: [c4]
    u2, u3: [16, c_red, c] Winograd-transformed w2/w3 where that path exists (3x3, float32)
            and oneDNN does not, else None
    onednn: the convolution weights for oneDNN (float32 with oneDNN: "x" [c1 + c2r + c3r, Cin,
            1, 1], "2", "3", "pool" [c4, Cin, 1, 1]), else None
    plain:  the block's own weights in the plain layout (plain_layout.py) that the own kernel
            reads in place, by tag ("x": the three 1x1s over x as one view, "pool", "2", "3"),
            with their BatchNorm scales (tag -> [Cout] float32, or None without BatchNorm):
            those convolutions compute relu(scale * conv + bias), BatchNorm unfolded. Only
            from prepare_block, on CPUs where own_gemm_direct holds; "x" and "pool" are then
            not packed, and none of them is hashed by the block's weight check (live_weights)
    checks: tag ("2", "3") -> [unit, its weight, the weight check, its value when the folded
            weight in `onednn` was made] for a plain KxK weight: the calls that use a form made
            from it (Winograd's) check it themselves and refold it when it changed
    """

    w_x: Tensor
    b_x: Tensor
    w2: Tensor
    b2: Tensor
    w3: Tensor
    b3: Tensor
    w4: Tensor
    b4: Tensor
    c1: int
    c2r: int
    c3r: int
    u2: Tensor | None
    u3: Tensor | None
    onednn: onednn.Weights | None
    plain: dict[str, tuple[Tensor, Tensor | None]] | None = None
    checks: dict[str, list] | None = None


def live_candidates(block: nn.Module) -> tuple[Tensor, ...]:
    """The weights live_weights may return: the block's six conv weights, asked once per block
    structure; live_weights is asked again only when their identities, addresses or strides,
    x's dtype or device, or live_policy change."""
    return tuple(unit.conv.weight for unit in block_units(block))


def live_policy() -> bool:
    """Whether the own kernel runs the 1x1s and direct KxKs (cpu_onednn.own_gemm_direct),
    which live_weights depends on besides its arguments."""
    return onednn.own_gemm_direct()


def live_weights(block: nn.Module, x: Tensor) -> tuple[Tensor, ...]:
    """The conv weights of `block` that the block's weight check may leave out on an eval
    forward on x: those in the plain layout (plain_layout.py; the three 1x1s over x only side
    by side in one buffer), for float32 CPU x on the eval operator where the own kernel runs
    the 1x1s and direct KxKs (live_policy). Else (). The operator reads the 1x1s and a direct
    KxK in place; a KxK weight's Winograd form, made from it, is checked by the calls that use
    it (CpuPacked.checks) with the block's check, so a batch-1 call whose KxK runs directly
    (the 7x7 blocks) hashes nothing of it."""
    if _BLOCK_OP is None or x.dtype != torch.float32 or x.device.type != "cpu":
        return ()
    if not live_policy():
        return ()
    w1, w2r, w2, w3r, w3, w4 = live_candidates(block)
    live = (w1, w2r, w3r) if plain_layout.x_weights_view(w1, w2r, w3r) is not None else ()
    return live + tuple(w for w in (w2, w3, w4) if plain_layout.is_plain(w))


def prepare_block(block: nn.Module, p: FoldedParams, check) -> CpuPacked:
    """prepare, plus the block's plain-layout weights that the own kernel reads in place
    (CpuPacked.plain) where the 1x1s run on it (cpu_onednn.own_gemm_direct), and the checks of
    the plain KxK weights (CpuPacked.checks; `check`: the block's weight check, e.g.
    fingerprint.fingerprint)."""
    packed = prepare(p)
    if packed.onednn is None or not onednn.own_gemm_direct():
        return packed
    units = block_units(block)
    weights = [unit.conv.weight for unit in units]
    scales = [_bn_scale(unit) for unit in units]
    plain: dict[str, tuple[Tensor, Tensor | None]] = {}
    x_view = plain_layout.x_weights_view(weights[0], weights[1], weights[3])
    if x_view is not None:
        group = [scales[i] for i in (0, 1, 3)]
        if any(s is not None for s in group):
            widths = [weights[i].shape[0] for i in (0, 1, 3)]
            pairs = zip(group, widths, strict=True)
            group = [s if s is not None else torch.ones(c) for s, c in pairs]
            plain["x"] = (x_view, torch.cat(group))
        else:
            plain["x"] = (x_view, None)
    checks: dict[str, list] = {}
    for tag, i in (("2", 2), ("3", 4), ("pool", 5)):
        if plain_layout.is_plain(weights[i]):
            plain[tag] = (weights[i], scales[i])
            if tag != "pool":  # its padded rows' span: hashed in place (plain_layout.span)
                span = plain_layout.span(weights[i])
                checks[tag] = [units[i], span, check, check([span])]
    return packed._replace(plain=plain or None, checks=checks or None)


def _checked(packed: CpuPacked, tag: str) -> list | None:
    """Before a call uses a form made from the KxK weight `tag` (Winograd's): where the block's
    check leaves that weight out (CpuPacked.checks), check it here, and if it changed since its
    folded copy was made, fold it again and forget what was made from the old copy. Returns
    that CpuPacked.checks entry (None: the weight is in the block's check)."""
    entry = (packed.checks or {}).get(tag)
    if entry is None:
        return None
    unit, weight, check, seen = entry
    now = check([weight])
    if now != seen:
        folded, _ = fold_unit(unit)
        packed.onednn.replace(tag, onednn.conv_weight(folded))
        entry[3] = now
    return entry


def _bn_scale(unit: nn.Module) -> Tensor | None:
    """gamma / sqrt(running_var + eps) of the unit's BatchNorm (float64 math, float32 result),
    the factor fold_unit puts into the weight; None without BatchNorm."""
    bn = getattr(unit, "bn", None)
    if bn is None:
        return None
    with torch.no_grad():
        var = bn.running_var.double()
        gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(var)
        return (gamma / torch.sqrt(var + bn.eps)).float()


def prepare(p: FoldedParams) -> CpuPacked:
    """Pack folded parameters once (cached by the module until the weights change; a training
    forward packs on every call, so the oneDNN path copies each weight at most once)."""
    return _prepare(p, training=False)


def prepare_training(p: FoldedParams) -> CpuPacked:
    """prepare() for one training forward (forward_saving, fused_inception::
    inception_block_saving): the kxk weights on the oneDNN path as they are, not copied
    channels_last. oneDNN reorders a plain weight inside every call anyway (results and time
    alike), and F(4x4, 3x3) reads a contiguous weight in place; the copies took 0.2-0.7 ms a
    step (4e-5b at batch 8)."""
    return _prepare(p, training=True)


def _prepare(p: FoldedParams, training: bool) -> CpuPacked:
    b_x = torch.cat([p.b1, p.b2r, p.b3r]).contiguous()
    if onednn.available(p.w1.dtype) and p.w1.device.type == "cpu":
        # One copy (the concatenation; the kxk and pool weights only if not channels_last
        # already); CpuPacked's addmm layouts are views of these, read for their shapes only.
        plain = {"x": torch.cat([p.w1, p.w2r, p.w3r]), "2": p.w2, "3": p.w3, "pool": p.w4}
        kept = ("2", "3") if training else ()  # (prepare_training)
        weights = onednn.Weights(
            {
                k: w.detach() if k in kept else onednn.conv_weight(w.detach())
                for k, w in plain.items()
            }
        )
        w = weights.plain
        return CpuPacked(
            w_x=w["x"].flatten(1).t(), b_x=b_x, w2=w["2"], b2=p.b2.contiguous(),
            w3=w["3"], b3=p.b3.contiguous(), w4=w["pool"].flatten(1).t(), b4=p.b4.contiguous(),
            c1=p.w1.shape[0], c2r=p.w2r.shape[0], c3r=p.w3r.shape[0], u2=None, u3=None,
            onednn=weights,
        )  # fmt: skip
    return CpuPacked(
        w_x=torch.cat([p.w1, p.w2r, p.w3r]).flatten(1).t().contiguous(),
        b_x=b_x,
        w2=p.w2.contiguous(memory_format=torch.channels_last),
        b2=p.b2.contiguous(),
        w3=p.w3.contiguous(memory_format=torch.channels_last),
        b3=p.b3.contiguous(),
        w4=p.w4.flatten(1).t().contiguous(),
        b4=p.b4.contiguous(),
        c1=p.w1.shape[0],
        c2r=p.w2r.shape[0],
        c3r=p.w3r.shape[0],
        u2=_winograd_weight(p.w2),
        u3=_winograd_weight(p.w3),
        onednn=None,
    )


def _winograd_weight(weight: Tensor) -> Tensor | None:
    return winograd.transform_weight(weight) if winograd.available_for(weight) else None


def forward(x: Tensor, packed: CpuPacked) -> Tensor:
    """Fused eval forward on the CPU (see _forward).

    float32 on oneDNN is one call of the C++ operator fused_inception::inception_block_onednn
    (csrc/cpu/block_onednn.cpp), _forward_onednn's computation without its per-operator Python
    overhead, which matters at batch 1, and with the wide 3x3 convolutions as Winograd
    F(2x2, 3x3) on a grouped oneDNN GEMM (the transformed weight made on first use and
    reordered for one chunk of tiles from a shape's second call on, as the other weights are;
    the own kernel's panels or MKL's matrices where cpu_onednn.own_gemm or mkl_winograd say);
    _forward_onednn itself (direct convolutions only) stays for forward_saving and builds
    without the operator.
    """
    plan = forward_plan(x, packed)
    if plan is not None:
        return run_plan(x, plan[0])
    return _forward(x, packed, keep_reduced=False)[0]


def forward_plan(x: Tensor, packed: CpuPacked) -> tuple[tuple, list[tuple[list, object]]] | None:
    """What forward(x, packed) calls the operator with, or None where it does not call it:
    (the operator's arguments after x, the KxK checks they rest on).

    The checks are (CpuPacked.checks entry, its value now) for each plain KxK weight whose
    Winograd form the arguments hold (checked, and refolded if it changed, on the way). The
    same arguments stay right for another x of the same shape, strides, dtype and device while
    plan_policy() and the block's weights are unchanged and every check's weight still has
    that value (FusedInception's eval fast path, module.py)."""
    if packed.onednn is None or x.dtype != torch.float32 or _BLOCK_OP is None:
        return None
    weights, shape = packed.onednn, tuple(x.shape)
    n, _, h, w = shape
    own = onednn.own_gemm()  # Winograd's GEMMs on the own kernel too (AVX2, AMD AVX-512)
    own_direct = onednn.own_gemm_direct()  # the 1x1s and direct KxKs on it, as panels
    mkl = onednn.mkl_winograd()  # Winograd's GEMMs the own kernel does not take on torch.bmm
    chunk = winograd.onednn_chunk(n, h, w, mkl and not own)
    live = packed.plain or {}
    kxk, use_winograd, direct, scales, checks = [], [], [], [], []
    for tag, c_red in (("2", packed.c2r), ("3", packed.c3r)):
        tile = winograd.onednn_tile(weights.plain[tag].shape, n, h, w)
        if tile > 0:
            entry = _checked(packed, tag)
            if entry is not None:
                checks.append((entry, entry[3]))
        plain = weights.plain[tag]
        use_winograd.append(tile > 0)
        # F(4x4, 3x3) recomputes directly, from the plain weight, where it meets NaN or inf
        direct.append(plain if tile == 4 else None)
        scale = None  # BatchNorm's, where the weight is read in place
        if own and (tile == 2 or (tile == 4 and winograd.own_f4_gemm(n, h, w))):
            # the transformed weight's 16 or 36 GEMMs as the own kernel's panels
            make = lambda p=plain, t=tile: winograd.grouped_panels(p, t)  # noqa: E731
            kxk.append(weights.panels(f"{tag}w{tile}", make))
        elif use_winograd[-1] and mkl:  # its GEMMs as one batched product (MKL's)
            make = lambda p=plain, t=tile: winograd.grouped_matrices(p, t)  # noqa: E731
            kxk.append(weights.panels(f"{tag}m{tile}", make))
        elif use_winograd[-1]:  # the transformed weight, reordered for one chunk's V
            make = lambda p=plain, t=tile: winograd.grouped_weight(p, t)  # noqa: E731
            gemm_input = winograd.onednn_gemm_input(c_red, chunk, tile, n, h, w)
            groups = winograd.positions(tile)
            kxk.append(weights.derived(f"{tag}w{tile}", make, gemm_input, groups=groups))
        elif own_direct and tag in live:  # read in place, BatchNorm's scale unfolded
            kxk.append(live[tag][0])
            scale = live[tag][1]
        elif own_direct:
            kxk.append(weights.panels(tag))
        else:  # reordered for the kxk convolution's input, r2 or r3
            kxk.append(weights.get(tag, (n, c_red, h, w)))
        scales.append(scale)
    scale_x = scale_pool = None
    if own_direct:
        w_x, scale_x = live["x"] if "x" in live else (weights.panels("x"), None)
        w_pool, scale_pool = live["pool"] if "pool" in live else (weights.panels("pool"), None)
    else:
        w_x, w_pool = weights.get("x", shape), weights.get("pool", shape)
    args = (
        w_x, packed.b_x, kxk[0], packed.b2, kxk[1], packed.b3, w_pool, packed.b4,
        packed.c1, packed.c2r, output_poisoned(), use_winograd[0], use_winograd[1], chunk,
        direct[0], direct[1], scale_x, scales[0], scales[1], scale_pool, onednn.nchw_scatter(),
    )  # fmt: skip
    return args, checks


def run_plan(x: Tensor, args: tuple) -> Tensor:
    """The operator on x and forward_plan's arguments."""
    return _BLOCK_OP(x, *args)


def replay_plan(x: Tensor, args: tuple) -> Tensor:
    """run_plan for an eval fast path's replay: the operator called without torch.ops' Python
    layer (_ext.direct_op), which inside a network costs 30 us per call with cold caches."""
    return (_BLOCK_DIRECT or _BLOCK_OP)(x, *args)


def plan_policy() -> tuple:
    """Every setting besides the packed weights and x that forward_plan's arguments depend on:
    the operator, the own kernel's and Winograd's switches and thresholds, output poisoning.
    A setting forward_plan reads must be here, or a plan made before it changed would be
    replayed after (tests/test_eval_plan.py changes each)."""
    # (own_gemm and own_gemm_direct follow OWN_GEMM, or torch's CPU capability)
    return (
        _BLOCK_OP,
        onednn.own_gemm(),
        onednn.own_gemm_direct(),
        onednn.mkl_winograd(),
        onednn.nchw_scatter(),
        *winograd.onednn_settings(),
        output_poisoned(),
    )


# The operator's overload, resolved once (None in builds without it).
_BLOCK_OP = (
    _ext.op("inception_block_onednn").default if _ext.has_op("inception_block_onednn") else None
)
_BLOCK_DIRECT = _ext.direct_op("inception_block_onednn")
# replay_plan's call for _C.replay_checked (module._fast_context): call_op's handle of the
# operator, None where replay_plan does not call it directly.
direct_handle = _BLOCK_DIRECT.args[0] if _BLOCK_DIRECT is not None else None


def forward_saving(x: Tensor, packed: CpuPacked) -> tuple[Tensor, Tensor, Tensor]:
    """forward, also returning r2 and r3 (after their ReLU) for a backward that does not
    recompute them: ([N, Ctot, H, W], [N, c2r, H, W], [N, c3r, H, W]), the last two
    channels_last and not sharing memory with anything else."""
    out, r2, r3 = _forward(x, packed, keep_reduced=True)
    return out, r2, r3


def _forward(x: Tensor, packed: CpuPacked, keep_reduced: bool):
    """Fused forward on the CPU: (out, r2, r3), the last two None unless keep_reduced.

    x:   [N, Cin, H, W], any memory format
    out: [N, c1 + c2 + c3 + c4, H, W] in x's memory format (channels_last or contiguous)

    Peak memory: besides x and out, at most one whole-tensor temporary at a time next to the
    NHWC copy of x (NCHW input only): first the pooled x, then the GEMM output y = b1 | r2 | r3
    (with the NHWC copy already freed), then, for NCHW input, the NCHW copy of out. Each is
    released as soon as it has been read (`del`); the Winograd workspace is bounded by tiles.
    At 1x192x1024x1024 into block 3a, peak growth over x: 2.5 GiB for NCHW input and 1.9 GiB
    for channels_last, where torchvision's eager block takes 3.1 GiB (it was 5.9 and 5.2 GiB).
    """
    n, c_in, h, w = x.shape
    c1 = packed.c1
    c2, c3, c4 = packed.w2.shape[0], packed.w3.shape[0], packed.w4.shape[1]
    rows = n * h * w
    out = new_output((n, c1 + c2 + c3 + c4, h, w), x, torch.channels_last)
    out_rows = out.permute(0, 2, 3, 1).view(rows, out.shape[1])

    if packed.onednn is not None and x.dtype == torch.float32:
        r2, r3 = _forward_onednn(x, packed, out_rows)
        out = out.contiguous(memory_format=output_memory_format(x))
        return (out, r2, r3) if keep_reduced else (out, None, None)
    x_nhwc = x.contiguous(memory_format=torch.channels_last)  # x itself if channels_last
    # b4 first, so the pooled tensor is gone before the GEMM output exists: 3x3/1 max-pool
    # (-inf padding), then the 1x1 projection GEMM straight into its slice.
    pooled = max_pool3x3(x_nhwc)
    b4_slice = out_rows[:, c1 + c2 + c3 :]
    torch.addmm(packed.b4, _rows(pooled), packed.w4, out=b4_slice)
    b4_slice.relu_()
    del pooled

    # b1 | r2 | r3 from one GEMM over x; b1's ReLU epilogue stores into its output slice.
    y = torch.addmm(packed.b_x, _rows(x_nhwc), packed.w_x)
    del x_nhwc  # frees the NHWC copy of an NCHW x
    torch.clamp_min(y[:, :c1], 0, out=out_rows[:, :c1])
    reduced = y[:, c1:].relu_()
    del y
    _kxk_into(reduced, packed, out_rows, n, h, w)
    r2 = r3 = None
    if keep_reduced:
        r2 = _nhwc(reduced[:, : packed.c2r].clone(memory_format=torch.contiguous_format), n, h, w)
        r3 = _nhwc(reduced[:, packed.c2r :].clone(memory_format=torch.contiguous_format), n, h, w)
    del reduced

    return out.contiguous(memory_format=output_memory_format(x)), r2, r3


def _forward_onednn(x: Tensor, packed: CpuPacked, out_rows: Tensor) -> tuple[Tensor, Tensor]:
    """The block by oneDNN convolutions (bias in their epilogue); each branch's ReLU is applied
    as its result is copied into its slice of out_rows (oneDNN writes dense tensors only). The
    wide 3x3s as Winograd F(4x4, 3x3) and the 5x5s as F(4x4, 5x5) where a training step takes
    them (cpu_winograd.training_winograd, conv_winograd).
    Returns r2 and r3 ([N, c, H, W] channels_last, after their ReLU).

    Temporaries, each freed once read: the NHWC copy of an NCHW x (until y exists), the pooled
    x and b4, then y = b1 | r2 | r3, then the ReLU'd copies of r2 and r3 (y freed) and one kxk
    convolution's output at a time.
    """
    weights = packed.onednn
    c1, c2r = packed.c1, packed.c2r
    c2, c3 = packed.w2.shape[0], packed.w3.shape[0]
    x_nhwc = x.contiguous(memory_format=torch.channels_last)  # x itself if channels_last
    pooled = max_pool3x3(x_nhwc)
    b4 = onednn.conv(pooled, weights.get("pool", x.shape), packed.b4)
    del pooled
    torch.clamp_min(_rows(b4), 0, out=out_rows[:, c1 + c2 + c3 :])
    del b4
    y = onednn.conv(x_nhwc, weights.get("x", x.shape), packed.b_x)  # b1 | r2 | r3
    del x_nhwc
    torch.clamp_min(_rows(y[:, :c1]), 0, out=out_rows[:, :c1])
    r2 = onednn.relu_channels_last(y[:, c1 : c1 + c2r])
    r3 = onednn.relu_channels_last(y[:, c1 + c2r :])
    del y
    col = c1
    for tag, r, c_b, bias in (("2", r2, c2, packed.b2), ("3", r3, c3, packed.b3)):
        plain = weights.plain[tag]
        if winograd.training_winograd(r, plain):
            # F(4x4, 3x3) or F(4x4, 5x5) where a training step takes it (the weight transformed
            # on the call: a training step's weights change every step), its ReLU applied
            z = winograd.conv_winograd(r, plain, bias, relu=True)
            out_rows[:, col : col + c_b].copy_(_rows(z))
        else:
            z = onednn.conv(r, weights.get(tag, r.shape), bias)
            torch.clamp_min(_rows(z), 0, out=out_rows[:, col : col + c_b])
        del z
        col += c_b
    return r2, r3


def _nhwc(rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """[N*H*W, C] contiguous rows -> the [N, C, H, W] channels_last tensor they are."""
    return rows.view(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def _rows(t_nhwc: Tensor) -> Tensor:
    """[N, C, H, W] channels_last -> its [N*H*W, C] rows (a view)."""
    n, c, h, w = t_nhwc.shape
    return t_nhwc.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _kxk_into(reduced: Tensor, packed: CpuPacked, out_rows: Tensor, n: int, h: int, w: int) -> None:
    """b2 and b3: relu(convKxK(r) + b) into their slices of out_rows. r2 | r3 = reduced.

    The kxk convolutions read the reduced tensors as NHWC views (zero padding applies to r):
    Winograd F(2,3) where it pays, which stores relu(conv + bias) into the slice itself;
    oneDNN's direct convolution otherwise, with the ReLU applied while storing. A function of
    its own so that each branch's temporaries are freed when it returns.
    """
    c2r, c3r = packed.c2r, packed.c3r
    col = packed.c1
    for c_red, red_off, weight, u, bias in (
        (c2r, 0, packed.w2, packed.u2, packed.b2),
        (c3r, c2r, packed.w3, packed.u3, packed.b3),
    ):
        c_b = weight.shape[0]
        r_rows = reduced[:, red_off : red_off + c_red]
        out_slice = out_rows[:, col : col + c_b]
        if u is not None and winograd.winograd_pays(h, w, c_red, c_b):
            winograd.conv3x3_relu_into(r_rows, u, bias, out_slice, n, h, w)
        else:
            r_nchw = r_rows.reshape(n, h, w, c_red).permute(0, 3, 1, 2)
            z = F.conv2d(r_nchw, weight, bias, padding=weight.shape[-1] // 2)
            torch.clamp_min(z.permute(0, 2, 3, 1).reshape(n * h * w, c_b), 0, out=out_slice)
            del z
        col += c_b
