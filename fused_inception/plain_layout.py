"""The plain weight layout: convolution weights that the CPU backend's own kernel reads in place.

A weight [Cout, Cin, K, K] is in the plain layout when its output channels are contiguous and
its rows (ky, kx, ci) lie `ldb` floats apart, with ldb at least Cout rounded up to 16 and the
padding readable: the kernel (csrc/cpu/gemm_panels.h, plain_weight_ldb) then takes the weight
as its GEMM's B matrix as it is, with no packed copy. Several weights with the same Cin and K
can share one buffer, side by side in each row: the three 1x1 convolutions over a block's
input are then one GEMM over one matrix.

prepare_for_inference lays out the weights of its CPU float32 FusedInception blocks this way
(`relayout_block`). What that buys: the cpu backend reads the 1x1 weights and the direct KxK
ones in place, so they need no packed copy and the block's content check leaves them out (a
write through any alias, .data or numpy included, is read by the next forward; a KxK weight's
Winograd form is checked by the calls that use it), and every weight the kernel reads is read
once per forward, not hashed and then read again as a copy (README "Backends": the
measurement). The values, shapes, dtypes, parameters and state_dict keys stay; only the
strides change. Module.to(memory_format=...) keeps a plain weight as it is (torch takes it as
contiguous already): `make_dense` (unprepare_for_inference calls it) makes them dense again.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .units import block_units

_LANES = 16  # the kernel's panel width: each row is padded to a multiple of it


def plain_views(weights: list[Tensor]) -> list[Tensor]:
    """Copies of `weights` ([c_i, Cin, K, K], the same Cin, K, dtype and device) in one new
    buffer [K, K, Cin, ldb], ldb = sum(c_i) rounded up to 16, plus 16 where that is an even
    multiple of 16 (the padding zeros): weight i is the view [c_i, Cin, K, K] of columns
    [sum(c_<i), sum(c_<=i)) of every row.

    Rows an odd number of 16-float (64-byte) lines apart: the kernel reads a panel's rows one
    line each, and rows an even number of lines apart fall into a fraction of the cache's sets
    (with 2^j lines per row, 1/2^j of them), so a panel of more rows than those sets hold was
    evicted from L1 and L2 before its next tile read it again. Measured on a 2-core Zen 3 EPYC
    (AVX2; 2026-12-07): one convolution on one thread, warm, 14x14 832 -> 512 at 88.7 GFLOP/s
    with rows 528 floats apart against 60.5 with 512 (packed panels: 92.5), 7x7 192 -> 384 3x3
    88.8 (400) against 63.8 (384); the benchmark's prepared blocks at batch 1 (the two layouts
    interleaved in one process) 5b 0.846x the time, 5a 0.922x, 4a 0.928x, the other blocks
    0.98-1.04x, the network 0.974-0.998x (three runs); batch 8: 4e 0.981x, 3b 1.010x, 5b
    1.004-1.031x, the network 0.91-1.05x (three runs on a noisy host: level within its noise)."""
    first = weights[0]
    _, c_in, kh, kw = first.shape
    widths = [w.shape[0] for w in weights]
    ldb = -(-sum(widths) // _LANES) * _LANES
    if ldb // _LANES % 2 == 0:
        ldb += _LANES
    buf = first.new_zeros((kh, kw, c_in, ldb))
    views, col = [], 0
    for w, c in zip(weights, widths, strict=True):
        view = buf[..., col : col + c].permute(3, 2, 0, 1)
        view.copy_(w)
        views.append(view)
        col += c
    return views


def is_plain(w: Tensor) -> bool:
    """True if `w` is a 4-D float32 CPU weight in the plain layout (plain_weight_ldb's rule)."""
    if w.dim() != 4 or w.dtype != torch.float32 or w.device.type != "cpu" or w.is_mkldnn:
        return False
    c_out, c_in, kh, kw = w.shape
    if kh != kw or kh % 2 == 0 or kh > 7 or c_out < 1 or c_in < 1:
        return False
    s0, s1, s2, s3 = w.stride()
    padded = -(-c_out // _LANES) * _LANES
    ldb = s1 if c_in > 1 else s3 if kh > 1 else padded
    if (c_out > 1 and s0 != 1) or ldb < padded:
        return False
    if kh > 1 and (s3 != c_in * ldb or s2 != kh * c_in * ldb):
        return False
    end = w.storage_offset() + (kh * kw * c_in - 1) * ldb + padded
    return end * w.element_size() <= w.untyped_storage().nbytes()


def span(w: Tensor) -> Tensor:
    """A dense 1-D view of the memory `w`'s elements lie in, from its first element to its last
    (a plain weight's row padding included), sharing w's version counter: what a check of w's
    contents hashes (the fingerprint hashes a non-dense tensor through a dense copy: with the
    padded 3x3 weights hashed that way, 4e and 4c at batch 1 took 1.22-1.25x the time on a Zen 3
    EPYC, 2026-12-07). Every element of w is in it, so every
    change of w changes its hash; a write to the padding, which nothing reads, changes it too."""
    extent = 1 + sum((n - 1) * s for n, s in zip(w.shape, w.stride(), strict=True))
    return w.detach().as_strided((extent if w.numel() else 0,), (1,), w.storage_offset())


def x_weights_view(w1: Tensor, w2r: Tensor, w3r: Tensor) -> Tensor | None:
    """The three 1x1 weights over x as one plain weight [c1 + c2r + c3r, Cin, 1, 1] (a view) if
    they lie side by side in one plain buffer (as relayout_block leaves them), else None."""
    c1, c2r = w1.shape[0], w2r.shape[0]
    same = w1.stride() == w2r.stride() == w3r.stride() and w1.dtype == w2r.dtype == w3r.dtype
    ptr = w1.untyped_storage().data_ptr()
    if not (
        same
        and w1.device.type == "cpu"
        and not w1.is_mkldnn
        and w2r.untyped_storage().data_ptr() == ptr
        and w3r.untyped_storage().data_ptr() == ptr
        and w2r.storage_offset() == w1.storage_offset() + c1
        and w3r.storage_offset() == w1.storage_offset() + c1 + c2r
        and w1.shape[1:] == w2r.shape[1:] == w3r.shape[1:]
    ):
        return None
    c = c1 + c2r + w3r.shape[0]
    view = w1.as_strided((c, *w1.shape[1:]), w1.stride(), w1.storage_offset())
    return view if is_plain(view) else None


def relayout_block(block: nn.Module) -> None:
    """Lay out the six conv weights of an Inception-structured block in the plain layout, in
    place (each Parameter keeps its identity, values and shape; `.data` becomes a view): the
    three 1x1s over x in one buffer, the pool projection, the two KxK weights each in their own.
    """
    convs = [unit.conv for unit in block_units(block)]
    with torch.no_grad():
        for group in ((0, 1, 3), (2,), (4,), (5,)):
            weights = [convs[i].weight for i in group]
            for w, view in zip(weights, plain_views([w.detach() for w in weights]), strict=True):
                w.data = view


def relayout_fits(block: nn.Module) -> bool:
    """True if relayout_block applies: float32 CPU conv weights, all square odd kernels of at
    most 7 and the three 1x1s over x of one input width."""
    convs = [unit.conv for unit in block_units(block)]
    for conv in convs:
        w = conv.weight
        if w.dtype != torch.float32 or w.device.type != "cpu" or w.dim() != 4:
            return False
        if w.shape[2] != w.shape[3] or w.shape[2] % 2 == 0 or w.shape[2] > 7:
            return False
    return len({convs[i].weight.shape[1:] for i in (0, 1, 3)}) == 1


def make_dense(model: nn.Module, memory_format: torch.memory_format) -> None:
    """Every 4-D parameter of `model` in the plain layout back to a dense tensor in
    `memory_format` (Module.to keeps it as it is: torch takes a plain-layout weight, which is not
    channels_last, as already contiguous)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 4 and is_plain(p) and not p.is_contiguous(memory_format=memory_format):
                p.data = p.data.contiguous(memory_format=memory_format)
