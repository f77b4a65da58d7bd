"""The block as one PyTorch operator: fused_inception::inception_block, forward and backward.

    out = torch.ops.fused_inception.inception_block(x, *folded_params, backend)

Registered with torch.library.custom_op, so autograd, torch.compile (one opaque node per block,
traced by its fake kernel) and autocast all see a single operator.

What is fused and what is ATen:
- forward: the backend's fused kernels (backends/cpu.py, triton, cuda): b1 | b2 | b3 | b4 into
  one output (the triton backend passes r2 | r3 between its two launches in a scratch).
- backward: ATen primitives, MKL GEMMs and, on the CPU in float32, the training Winograd
  operators (backends/cpu_winograd.py kxk_backward: the wide 3x3s' input and weight gradients
  by F(4x4, 3x3), 4x fewer multiply-adds, and 28x28 5x5s' by F(4x4, 5x5)). It is dominated
  by the weight and input gradients of the kxk convolutions and of the 1x1 GEMMs; a fused
  backward kernel would save only the reduced tensors' round trip, which is small next to
  those. The backward shares the forward's structure: the three 1x1 convolutions that read x
  get their weight gradient from one GEMM and their input gradient from another.

What forward saves: x, the output and the weights (plus the two reduction biases, needed to
recompute r2/r3); nothing of size N*H*W*C except x and out. Backward recomputes r2 and r3 with
one GEMM over x and the max-pool (with indices) from x; the ReLU masks of the four branch
outputs come from the saved output (out > 0, what ReLU's own backward reads) and those of r2/r3
from the recomputed tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _ext  # (also loads the C++ library that declares the operator schemas)
from .backends import cpu_onednn as onednn
from .backends import cpu_winograd as winograd
from .backends import resolve_backend
from .backends.cpu_maxpool import max_pool3x3, max_pool3x3_nhwc_backward_add_
from .backends.output import output_memory_format
from .reference import FoldedParams

# The weights and biases in FoldedParams order, after x.
_PARAM_NAMES = FoldedParams._fields


@torch.library.custom_op("fused_inception::inception_block", mutates_args=())
def inception_block(
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2r: Tensor,
    b2r: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3r: Tensor,
    b3r: Tensor,
    w3: Tensor,
    b3: Tensor,
    w4: Tensor,
    b4: Tensor,
    backend: str,
) -> Tensor:
    """The Inception block (docs/design.md section 2) from folded parameters, on a backend.

    x:        [N, Cin, H, W] (NCHW or channels_last)
    w1, b1:   [c1, Cin, 1, 1], [c1]
    w2r, b2r: [c2r, Cin, 1, 1], [c2r]
    w2, b2:   [c2, c2r, 3, 3], [c2]
    w3r, b3r: [c3r, Cin, 1, 1], [c3r]
    w3, b3:   [c3, c3r, K, K], [c3]     (K = 3 or 5)
    w4, b4:   [c4, Cin, 1, 1], [c4]
    backend:  "cpu", "triton", "cuda" or "auto" (resolved for x's device)
    out:      [N, c1 + c2 + c3 + c4, H, W] in x's memory format

    The weights are packed for the backend on every call: in training they change every step,
    and the eval fast path (FusedInception under no_grad) keeps its own packed cache.
    """
    params = FoldedParams(w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4)
    check_block_args(x, params)
    _, impl = resolve_backend(backend, x.device, x.dtype)
    return impl.forward(x, impl.prepare(params))


def check_block_args(x: Tensor, p: FoldedParams) -> None:
    """Refuse, before any kernel runs, arguments the block cannot compute with.

    TypeError for a non-tensor, a non-floating x or a parameter of another dtype; ValueError for
    a shape that does not chain (x's channels, each 1x1 conv's input, each kxk conv's reduced
    channels and odd kernel size 3 or 5, the biases' lengths); RuntimeError for a parameter on
    another device than x or an empty image (H or W = 0; an empty batch is fine). Messages name
    the argument, the expected and the actual value.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"inception_block: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"inception_block: x must be 4-D [N, Cin, H, W], got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"inception_block: x must be floating-point, got {x.dtype}")
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise RuntimeError(
            f"inception_block: x must have H >= 1 and W >= 1, got {tuple(x.shape)} "
            "(torchvision's block refuses an empty image too)"
        )
    c_in = x.shape[1]
    for name, t in zip(_PARAM_NAMES, p, strict=True):
        if not isinstance(t, Tensor):
            raise TypeError(f"inception_block: {name} must be a torch.Tensor, got {type(t)}")
        if t.dtype != x.dtype:
            raise TypeError(f"inception_block: {name} is {t.dtype}, x is {x.dtype}")
        if t.device != x.device:
            raise RuntimeError(f"inception_block: {name} is on {t.device}, x on {x.device}")
    # (weight, bias, input channels it must read, allowed kernel sizes)
    convs = {
        "1": (p.w1, p.b1, c_in, (1,)),
        "2r": (p.w2r, p.b2r, c_in, (1,)),
        "2": (p.w2, p.b2, p.w2r.shape[0], (3, 5)),
        "3r": (p.w3r, p.b3r, c_in, (1,)),
        "3": (p.w3, p.b3, p.w3r.shape[0], (3, 5)),
        "4": (p.w4, p.b4, c_in, (1,)),
    }
    for tag, (weight, bias, reads, kernels) in convs.items():
        k = weight.shape[-1] if weight.dim() == 4 else -1
        if weight.dim() != 4 or weight.shape[1] != reads or weight.shape[2:] != (k, k):
            raise ValueError(
                f"inception_block: w{tag} must be [C, {reads}, K, K], got {tuple(weight.shape)}"
            )
        if k not in kernels or weight.shape[0] == 0:
            raise ValueError(
                f"inception_block: w{tag} must have kernel size {' or '.join(map(str, kernels))} "
                f"and at least one output channel, got {tuple(weight.shape)}"
            )
        if tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(
                f"inception_block: b{tag} must be [{weight.shape[0]}], got {tuple(bias.shape)}"
            )


@inception_block.register_fake
def _inception_block_fake(x, w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4, backend):
    # Also the Meta kernel: a meta parameter next to a CPU x dispatches here, so check devices.
    check_block_args(x, FoldedParams(w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4))
    n, _, h, w = x.shape
    c_out = w1.shape[0] + w2.shape[0] + w3.shape[0] + w4.shape[0]
    return torch.empty(
        (n, c_out, h, w), dtype=x.dtype, device=x.device, memory_format=output_memory_format(x)
    )


@torch.library.custom_op("fused_inception::inception_block_saving", mutates_args=())
def inception_block_saving(
    x: Tensor,
    w1: Tensor,
    b1: Tensor,
    w2r: Tensor,
    b2r: Tensor,
    w2: Tensor,
    b2: Tensor,
    w3r: Tensor,
    b3r: Tensor,
    w3: Tensor,
    b3: Tensor,
    w4: Tensor,
    b4: Tensor,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    """inception_block that also returns the reduced tensors, which its backward then reads
    instead of recomputing them (FusedInception(recompute=False)).

    Arguments as inception_block's. Returns (out, r2, r3): out as inception_block's;
    r2 = relu(conv1x1(x; w2r) + b2r) [N, c2r, H, W] and r3 likewise [N, c3r, H, W], both
    channels_last, not differentiable. The backends that produce them in their forward pass
    them on (cpu; triton and cuda for their two-launch kernels); otherwise one GEMM over x
    computes them here, the work the backward would have recomputed.
    """
    params = FoldedParams(w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4)
    check_block_args(x, params)
    _, impl = resolve_backend(backend, x.device, x.dtype)
    packed = getattr(impl, "prepare_training", impl.prepare)(params)
    saving = getattr(impl, "forward_saving", None)
    result = saving(x, packed) if saving is not None else None
    if result is not None:
        return result
    r2, r3 = _reduce(_rows(x), w2r, b2r, w3r, b3r)
    n, _, h, w = x.shape
    return impl.forward(x, packed), _nchw(r2, n, h, w), _nchw(r3, n, h, w)


@inception_block_saving.register_fake
def _(x, w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4, backend):
    out = _inception_block_fake(x, w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4, backend)
    n, _, h, w = x.shape

    def reduced(c: int) -> Tensor:
        return torch.empty(
            (n, c, h, w), dtype=x.dtype, device=x.device, memory_format=torch.channels_last
        )

    return out, reduced(w2r.shape[0]), reduced(w3r.shape[0])


def _setup_context(ctx, inputs, output) -> None:
    x, w1, _, w2r, b2r, w2, _, w3r, b3r, w3, _, w4, _, _ = inputs
    # The activations saved are x and out only; r2/r3 and the pooled x are recomputed.
    ctx.save_for_backward(x, output, w1, w2r, b2r, w2, w3r, b3r, w3, w4)
    ctx.saved_reduced = False


def _setup_context_saving(ctx, inputs, output) -> None:
    x, w1, _, w2r, b2r, w2, _, w3r, b3r, w3, _, w4, _, _ = inputs
    out, r2, r3 = output
    # x, out and the reduced tensors; the pooled x is recomputed.
    ctx.save_for_backward(x, out, w1, w2r, b2r, w2, w3r, b3r, w3, w4, r2, r3)
    ctx.saved_reduced = True
    ctx.mark_non_differentiable(r2, r3)


def _reduce(x_rows: Tensor, w2r: Tensor, b2r: Tensor, w3r: Tensor, b3r: Tensor):
    """relu(x @ [w2r | w3r] + [b2r | b3r]) as two contiguous row tensors [N*H*W, c2r / c3r]."""
    w_red = torch.cat([w2r.flatten(1), w3r.flatten(1)])
    r = torch.addmm(torch.cat([b2r, b3r]), x_rows, w_red.t()).relu_()
    c2r = w2r.shape[0]
    # Copies (clone: a view of a one-row r is contiguous already): the operator's outputs
    # must not share memory.
    fmt = torch.contiguous_format
    return r[:, :c2r].clone(memory_format=fmt), r[:, c2r:].clone(memory_format=fmt)


def _rows(t_nchw: Tensor) -> Tensor:
    """[N, C, H, W] -> [N*H*W, C] rows of its NHWC form (a view when already channels_last)."""
    n, c, h, w = t_nchw.shape
    return t_nchw.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(-1, c)


def _nchw(rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """[N*H*W, C] rows -> an [N, C, H, W] (channels_last) view."""
    return rows.reshape(n, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def _onednn_backward(g_rows: Tensor) -> bool:
    """Whether the 1x1 backward GEMMs of g_rows run on oneDNN rather than torch.mm: float32 on
    a CPU with oneDNN where cpu_onednn.mkl_backward does not hold."""
    return (
        g_rows.device.type == "cpu"
        and onednn.available(g_rows.dtype)
        and g_rows.shape[0] > 0
        and not onednn.mkl_backward()
    )


def _input_grad_rows(g_rows: Tensor, weight: Tensor, n: int, h: int, w: int) -> Tensor:
    """g_rows @ weight: the input gradient [N*H*W, Cin] of 1x1 convolutions with weight
    [Cout, Cin] whose pre-activation gradient is g_rows [N*H*W, Cout].

    float32 on a CPU with oneDNN, unless cpu_onednn.mkl_backward (Intel CPUs: torch.mm): a
    oneDNN 1x1 convolution of g (as NHWC) with weight^T, 1.5-2x the throughput of torch.mm's
    MKL GEMM on the AMD CPUs measured (backends/cpu_onednn.py).
    """
    if _onednn_backward(g_rows):
        g_nhwc = _nchw(g_rows.contiguous(), n, h, w)
        w_t = onednn.conv_weight(weight.t().reshape(weight.shape[1], weight.shape[0], 1, 1))
        return _rows(onednn.conv(g_nhwc, w_t, None))
    return g_rows.mm(weight)


def _weight_grad(g_rows: Tensor, x_rows: Tensor, n: int, h: int, w: int) -> Tensor:
    """g_rows^T @ x_rows: the weight gradient [Cout, Cin] of 1x1 convolutions over x_rows
    [N*H*W, Cin] whose pre-activation gradient is g_rows [N*H*W, Cout].

    float32 on a CPU with oneDNN: ATen's convolution_backward of a 1x1 convolution with
    dilation 2 (the same function for a 1x1 kernel), for which ATen takes oneDNN (with
    dilation 1, one thread and batch < 16 it takes its im2col + MKL path); reading the NHWC
    rows as they are, 1.0-1.6x torch.mm's throughput on the AMD CPUs measured. Else (and on
    Intel CPUs: cpu_onednn.mkl_backward) torch.mm.
    """
    if _onednn_backward(g_rows):
        c_out, c_in = g_rows.shape[1], x_rows.shape[1]
        g_nhwc, x_nhwc = _nchw(g_rows.contiguous(), n, h, w), _nchw(x_rows.contiguous(), n, h, w)
        weight = g_rows.new_empty((c_out, c_in, 1, 1))  # its values are not read
        _, grad_w, _ = torch.ops.aten.convolution_backward(
            g_nhwc, x_nhwc, weight, None, [1, 1], [0, 0], [2, 2], False, [0, 0], 1,
            [False, True, False],
        )  # fmt: skip
        return grad_w.reshape(c_out, c_in)
    return g_rows.t().mm(x_rows)


def _sum_rows(g_rows: Tensor) -> Tensor:
    """Bias gradient [C] of [rows, C], accumulated in at least float32."""
    acc = torch.promote_types(g_rows.dtype, torch.float32)
    return g_rows.sum(0, dtype=acc).to(g_rows.dtype)


def _backward_saving(ctx, grad_out: Tensor, _grad_r2, _grad_r3):
    return _backward(ctx, grad_out)


def _backward(ctx, grad_out: Tensor):
    saved = ctx.saved_tensors
    x, out, w1, w2r, b2r, w2, w3r, b3r, w3, w4 = saved[:10]
    needs = dict(zip(("x",) + _PARAM_NAMES, ctx.needs_input_grad, strict=False))
    grads: dict[str, Tensor | None] = dict.fromkeys(needs)
    n, c_in, h, w = x.shape
    c1, c2, c3 = w1.shape[0], w2.shape[0], w3.shape[0]

    # Gradient at each branch's pre-activation: ReLU's backward, masked by the saved output.
    g_rows = _rows(torch.ops.aten.threshold_backward(grad_out, out, 0))
    g1, g2, g3, g4 = torch.split(g_rows, [c1, c2, c3, w4.shape[0]], dim=1)
    x_rows = _rows(x)

    # b2, b3: r2 and r3 (saved by inception_block_saving, else recomputed from x in one GEMM),
    # then the kxk convolutions' backward (cpu_winograd.kxk_backward: ATen's, or Winograd
    # where it pays) and the reductions' ReLU masks (r > 0).
    # x_readers: the 1x1 convs over x (b1, r2, r3) with their pre-activation gradients.
    if ctx.saved_reduced:
        reduced = {"2": saved[10], "3": saved[11]}
    else:
        r2, r3 = _reduce(x_rows, w2r, b2r, w3r, b3r)
        reduced = {"2": _nchw(r2, n, h, w), "3": _nchw(r3, n, h, w)}
    x_readers = [("1", g1, w1)]
    for tag, w_red, w_kxk, g_kxk in (("2", w2r, w2, g2), ("3", w3r, w3, g3)):
        need_red = needs["x"] or needs[f"w{tag}r"] or needs[f"b{tag}r"]
        mask = [need_red, needs[f"w{tag}"], needs[f"b{tag}"]]
        if not any(mask):
            continue
        r = reduced[tag]
        # Input and weight gradients by Winograd where that pays (cpu_winograd.kxk_backward),
        # the rest by ATen's convolution_backward.
        grad_r, grads[f"w{tag}"], grads[f"b{tag}"] = winograd.kxk_backward(
            _nchw(g_kxk, n, h, w), r, w_kxk, mask
        )
        if need_red:
            g_red = _rows(torch.ops.aten.threshold_backward(grad_r, r, 0))
            x_readers.append((f"{tag}r", g_red, w_red))

    # 1x1 convs over x: weight gradients G^T x in one GEMM, input gradient G W in another.
    x_readers = [
        (tag, g, wt)
        for tag, g, wt in x_readers
        if needs["x"] or needs[f"w{tag}"] or needs[f"b{tag}"]
    ]
    grad_x_rows = None
    if x_readers:
        g_cat = torch.cat([g for _, g, _ in x_readers], dim=1)
        w_cat = torch.cat([wt.flatten(1) for _, _, wt in x_readers])
        need_w = any(needs[f"w{t}"] for t, _, _ in x_readers)
        grad_w_cat = _weight_grad(g_cat, x_rows, n, h, w) if need_w else None
        col = 0
        for tag, g, wt in x_readers:
            width = g.shape[1]
            if needs[f"w{tag}"]:
                grads[f"w{tag}"] = grad_w_cat[col : col + width].reshape(wt.shape)
            if needs[f"b{tag}"]:
                grads[f"b{tag}"] = _sum_rows(g)
            col += width
        if needs["x"]:
            grad_x_rows = _input_grad_rows(g_cat, w_cat, n, h, w)

    # b4: the 3x3/1 max-pool recomputed; projection GEMMs; the pool's backward. On the CPU the
    # package's pool and its index-free backward (csrc/cpu/max_pool3x3*.cpp: the same gradient
    # as ATen's, without recomputing and storing int64 indices); elsewhere ATen's with indices.
    if needs["x"] or needs["w4"] or needs["b4"]:
        x_nhwc = x.contiguous(memory_format=torch.channels_last)
        own_pool = x.device.type == "cpu" and _ext.has_op("max_pool3x3_nhwc_backward_add_")
        pool_args = ([3, 3], [1, 1], [1, 1], [1, 1], True)  # ceil_mode as torchvision's
        indices = None
        if own_pool:
            pooled = max_pool3x3(x_nhwc) if needs["w4"] else None
        else:
            pooled, indices = torch.ops.aten.max_pool2d_with_indices(x_nhwc, *pool_args)
        if needs["w4"]:
            grads["w4"] = _weight_grad(g4, _rows(pooled), n, h, w).reshape(w4.shape)
        if needs["b4"]:
            grads["b4"] = _sum_rows(g4)
        if needs["x"]:
            grad_pooled = _nchw(_input_grad_rows(g4, w4.flatten(1), n, h, w), n, h, w)
            # grad_x_rows exists: b1 reads x, so x_readers is never empty when x needs a grad.
            if own_pool:
                # Added into the 1x1 convs' input gradient in the same pass: no pool-gradient
                # tensor and no add (each a fresh x-sized buffer, page faults included).
                grad_pooled = grad_pooled.contiguous(memory_format=torch.channels_last)
                grad_x_rows = grad_x_rows.contiguous()
                max_pool3x3_nhwc_backward_add_(_nchw(grad_x_rows, n, h, w), grad_pooled, x_nhwc)
            else:
                grad_x_rows = grad_x_rows + _rows(
                    torch.ops.aten.max_pool2d_with_indices_backward(
                        grad_pooled, x_nhwc, *pool_args, indices
                    )
                )

    if needs["x"]:
        grad_x = _nchw(grad_x_rows, n, h, w)
        grads["x"] = grad_x.contiguous(memory_format=output_memory_format(x))
    return tuple(grads[name] for name in ("x",) + _PARAM_NAMES) + (None,)


inception_block.register_autograd(_backward, setup_context=_setup_context)
inception_block_saving.register_autograd(_backward_saving, setup_context=_setup_context_saving)


def _autocast_kernel(device_type: str, op):
    """Autocast rule: run the block in the autocast dtype, as torchvision's block does.

    Under autocast torchvision's block returns the autocast dtype (its convolutions run in it,
    and BatchNorm and ReLU keep their input's dtype): bfloat16 on the CPU, float16 (or the
    chosen dtype) on CUDA. torch.library.register_autocast casts to one fixed dtype; this rule
    reads the active one. float64 tensors are left alone, as autocast does.
    """

    def kernel(*args):
        dtype = torch.get_autocast_dtype(device_type)
        cast = [
            a.to(dtype)
            if isinstance(a, Tensor)
            and a.is_floating_point()
            and a.dtype != torch.float64
            and a.device.type == device_type
            else a
            for a in args
        ]
        with torch.autocast(device_type, enabled=False):
            return op(*cast)

    return kernel


_autocast_lib = torch.library.Library("fused_inception", "IMPL")
for _device_type, _key in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
    for _name, _op in (
        ("inception_block", inception_block),
        ("inception_block_saving", inception_block_saving),
    ):
        _autocast_lib.impl(_name, _autocast_kernel(_device_type, _op), _key)
