"""FoldedConvUnit: a conv -> BatchNorm -> ReLU unit (torchvision's BasicConv2d) that computes, in
eval mode, one convolution with BatchNorm folded into its weight and bias.

prepare_for_inference (inference.py) swaps it in for the units outside the Inception blocks
(GoogLeNet's stem convolutions and the auxiliary heads' convolution): like FusedInception it
holds the source's `conv` and `bn` themselves, so the state_dict keys, parameters and buffers
stay the source's, and it keeps the folded weights until a weight, buffer or attribute changes.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _ext
from .backends import cpu_onednn as onednn
from .backends import cpu_winograd as winograd
from .folding import fold_unit
from .module import (
    _HOOK_DICTS,
    WEIGHT_CHECKS,
    _keep_plan,
    _Plan,
    _ready_plan,
    check_weight_check,
    resolve_weight_check,
)
from .structure import StructureSnapshot, structure_state, unit_parts_error

# float64 probe of a unit's own forward against relu(bn(conv(x))) (the fold is the only rounding).
PROBE_TOLERANCE = 1e-9
_PROBE_EXTRA = (4, 5)  # the probe input's H, W beyond the kernel's span
_warned: set[str] = set()


def unit_error(module: nn.Module) -> str | None:
    """None if `module` is a conv -> BatchNorm(eval statistics) -> ReLU unit, else why not.

    The layout: a Conv2d `.conv`, a BatchNorm2d `.bn` with running statistics, no other child
    but ReLUs. The function: the module's own forward, on a float64 copy with random weights,
    BN statistics and input in eval mode, equals relu(bn(conv(x))) (a forward that skips the
    ReLU, adds a residual or does anything else is refused).
    """
    conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
    if not isinstance(conv, nn.Conv2d):
        return f".conv must be a Conv2d, got {type(conv).__name__}"
    if not isinstance(bn, nn.BatchNorm2d):
        return f".bn must be a BatchNorm2d, got {type(bn).__name__}"
    problem = unit_parts_error(module)
    if problem is not None:
        return problem
    if bn.num_features != conv.out_channels:
        return f".bn has {bn.num_features} features, .conv {conv.out_channels} outputs"
    return _function_error(module)


def _function_error(module: nn.Module) -> str | None:
    try:
        probe = copy.deepcopy(module).cpu().to(torch.float64).eval()
    except Exception as exc:  # a module that refuses to be copied is not checked
        return f"it cannot be copied for the float64 check of its forward ({exc})"
    gen = torch.Generator().manual_seed(0xF01D)
    with torch.no_grad():
        for m in probe.modules():
            for name in _HOOK_DICTS:
                getattr(m, name).clear()
        for p in probe.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in**0.5)
        probe.bn.running_mean.copy_(torch.randn(probe.bn.num_features, generator=gen) * 0.3)
        probe.bn.running_var.copy_(torch.rand(probe.bn.num_features, generator=gen) + 0.5)
        conv = probe.conv
        # a map larger than the dilated kernel, whatever the padding and stride
        span = [d * (k - 1) + 1 for k, d in zip(conv.kernel_size, conv.dilation, strict=True)]
        hw = [extent + extra for extent, extra in zip(span, _PROBE_EXTRA, strict=True)]
        x = torch.randn(2, conv.in_channels, *hw, generator=gen, dtype=torch.float64)
        expected = F.relu(probe.bn(probe.conv(x)))
        try:
            got = probe(x.clone())  # (a clone: torchvision's ReLU is in place)
        except Exception as exc:
            return f"its forward fails on a float64 probe input ({type(exc).__name__}: {exc})"
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        return f"its forward returns {shape}, not relu(bn(conv(x)))'s {tuple(expected.shape)}"
    err = (got - expected).abs().max().item()
    scale = max(expected.abs().max().item(), 1e-300)
    if not err <= PROBE_TOLERANCE * scale:  # (NaN fails too)
        return (
            "its forward computes another function than relu(bn(conv(x))) (relative difference "
            f"{err / scale:.2g} on a float64 probe)"
        )
    return None


class _FoldState:
    """The folded weights of a unit until its structure (skey, re-checked by `snapshot`, which
    also knows its hooks) or contents (weights) change."""

    __slots__ = ("skey", "snapshot", "tensors", "weights", "folded", "packed", "plans")

    def __init__(self, skey: tuple, tensors: list[Tensor]) -> None:
        self.skey, self.tensors = skey, tensors
        self.snapshot: StructureSnapshot | None = None
        self.weights: object = None
        # dtype of the folded pair -> (weight, bias), or None: the fold overflows that dtype
        self.folded: dict[torch.dtype, tuple[Tensor, Tensor] | None] = {}
        # (input shape, Winograd chunk, tile) -> the float32 folded weight reordered for
        # oneDNN (_onednn_conv_relu, or its Winograd form), and ("panels", tile) -> the own
        # kernel's (_panels: _GEMM_OP's, or F(4x4, 3x3)'s for _WINOGRAD_OP)
        self.packed: dict[tuple, Tensor] = {}
        # (x's shape, strides, dtype) -> _Plan of FoldedConvUnit._call's call, (kind, to_cl):
        # the eval fast path for CPU inputs (FoldedConvUnit._planned), emptied with `folded`
        # and `packed`
        self.plans: dict[tuple, _Plan] = {}


def _plan_policy() -> tuple:
    """Every setting besides the folded weights and x that FoldedConvUnit._call's choice and
    arguments depend on (a setting it reads must be here; tests/test_eval_plan.py changes
    each)."""
    return (
        _GEMM_OP,
        _WINOGRAD_OP,
        onednn.ENABLED,
        onednn.own_gemm(),
        onednn.own_gemm_direct(),
        onednn.mkl_winograd(),
        *winograd.onednn_settings(),
    )


class FoldedConvUnit(nn.Module):
    """conv -> BatchNorm -> ReLU, computed in eval mode as ReLU(conv(x, W', b')) with BatchNorm
    folded into W', b' (W' = W * g / sqrt(v + eps), b' = beta + (b - m) * g / sqrt(v + eps),
    computed in float64, kept in the conv weight's dtype and memory format).

    Holds the source unit's `conv` and `bn` (no copy): the same state_dict keys, parameters and
    buffers, and the source's own hooks. Make one with `from_module`; `to_unfused()` gives the
    source back.

    x:   [N, conv.in_channels, H, W] (NCHW or channels_last)
    out: [N, conv.out_channels, H', W'], the memory format the convolution picks (channels_last
         when the weight or x is)

    What runs: the folded convolution in eval mode without autograd recording (the folded
    weights cached until a weight, buffer or attribute changes, seen as FusedInception sees it:
    `weight_check`); exactly relu(bn(conv(x))) in every other case: training mode (BatchNorm's
    batch statistics and running-stat updates), autograd recording, hooks on `conv` or `bn`,
    autocast, a fold beyond the dtype's range (warned once), torch.jit trace / script, torch.fx,
    ONNX export, torch.compile.
    """

    __jit_ignored_attributes__ = ["_state", "_source"]

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, weight_check: str = "auto") -> None:
        super().__init__()
        check_weight_check(weight_check)
        self.conv = conv
        self.bn = bn
        self.weight_check = weight_check
        self.__dict__["_state"] = None
        self.__dict__["_source"] = None

    @classmethod
    def from_module(cls, module: nn.Module, *, weight_check: str = "auto") -> FoldedConvUnit:
        """A FoldedConvUnit computing what the unit `module` computes (ValueError if it is not a
        conv -> BN -> ReLU unit: unit_error says why). Shares its conv, bn and hooks."""
        problem = unit_error(module)
        if problem is not None:
            raise ValueError(f"cannot fold {type(module).__name__}: {problem}")
        unit = cls(module.conv, module.bn, weight_check)
        unit.training = module.training
        unit.__dict__["_source"] = module
        for name in _HOOK_DICTS:  # the same dicts: the source's hook handles remove them here too
            if name in module.__dict__:
                unit.__dict__[name] = module.__dict__[name]
        return unit

    def to_unfused(self) -> nn.Module:
        """The source unit, holding this unit's current conv and bn (or a new torchvision-like
        unit if this one was not made by from_module)."""
        source = self._source
        if source is None:
            return _Unit(self.conv, self.bn)
        source.conv, source.bn = self.conv, self.bn
        source.training = self.training
        return source

    def extra_repr(self) -> str:
        return "" if self.weight_check == "auto" else f"weight_check={self.weight_check!r}"

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._composed(x)
        return self._forward_python(x)

    def _composed(self, x: Tensor) -> Tensor:
        """torchvision's BasicConv2d computation, any mode."""
        return F.relu(self.bn(self.conv(x)))

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        if type(x) is Tensor and not torch.compiler.is_compiling():
            state = self.__dict__.get("_state")
            if state is not None and state.plans:
                out = self._planned(state, x)
                if out is not None:
                    return out
        if self._standard_ops(x):
            return self._composed(x)
        state = structure_state(
            self, lambda skey: _FoldState(skey, list(self.parameters()) + list(self.buffers()))
        )
        if state.snapshot.hooked:  # hooks on conv or bn fire only when they run
            return self._composed(x)
        folded = self._folded(state, x.dtype)
        if folded is None:
            return self._composed(x)
        weight, bias = folded
        call = self._call(x, weight, bias)
        if call is None:
            return F.relu_(self.conv._conv_forward(x, weight, bias))
        kind, args, to_cl, x_call = call
        if x.is_cpu and type(x) is Tensor and not torch.is_grad_enabled():
            check = WEIGHT_CHECKS[resolve_weight_check(self.weight_check, x.device)]
            _keep_plan(state.plans, x, _Plan((kind, to_cl), args, [], _plan_policy, check))
        return self._run(kind, x_call, args)

    def _call(
        self, x: Tensor, weight: Tensor, bias: Tensor
    ) -> tuple[str, tuple, bool, Tensor] | None:
        """The convolution call an eval forward makes on x with the folded (weight, bias):
        (kind, its arguments after x, whether x is made channels_last first, that x), or None
        (the conv module's own convolution)."""
        if not _onednn_conv_relu_fits(self.conv, x):
            return None
        conv, to_cl = self.conv, False
        gemm = lambda: (self._panels(weight), bias, conv.stride[0], conv.padding[0])  # noqa: E731
        if weight.is_contiguous(memory_format=torch.channels_last):
            if _first_layer_fits(conv):  # x in any layout, channels_last out
                return "gemm", gemm(), False, x
            x, to_cl = x.contiguous(memory_format=torch.channels_last), True
        if _own_gemm_fits(conv, x):  # channels_last in and out
            return "gemm", gemm(), to_cl, x
        tile = _winograd_tile(conv, x)
        if tile:
            # channels_last in and so out, as oneDNN's direct convolution returns it
            x = x.contiguous(memory_format=torch.channels_last)
            n, _, h, w = x.shape
            chunk = winograd.onednn_chunk(n, h, w)
            own = winograd.own_f4_unit_chunk(n, h, w) if tile == 4 and onednn.own_gemm() else 0
            if own:  # its 36 GEMMs on the own kernel, as panels
                chunk, grouped = own, self._panels(weight, tile)
            elif onednn.mkl_winograd():  # its GEMMs as one batched product (MKL's)
                chunk = winograd.onednn_chunk(n, h, w, True)
                grouped = self._kept(
                    ("matrices", tile), lambda: winograd.grouped_matrices(weight, tile)
                )
            else:
                grouped = self._packed(weight, x.shape, chunk, tile)
            # F(4x4, 3x3) recomputes directly, from the folded weight, on NaN or inf
            direct = weight if tile == 4 else None
            return "winograd", (grouped, bias, chunk, direct), True, x
        return "onednn", (self._packed(weight, x.shape), bias), to_cl, x

    def _run(self, kind: str, x: Tensor, args: tuple, replay: bool = False) -> Tensor:
        """_call's convolution on x (made channels_last already where the call says so); for a
        replay (_planned) the operators are called without torch.ops' Python layer
        (_ext.direct_op)."""
        if kind == "gemm":
            return ((replay and _GEMM_DIRECT) or _GEMM_OP)(x, *args)
        if kind == "winograd":
            return ((replay and _WINOGRAD_DIRECT) or _WINOGRAD_OP)(x, *args)
        return _onednn_conv_relu(self.conv, x, *args)

    def _planned(self, state: _FoldState, x: Tensor) -> Tensor | None:
        """The eval fast path (FusedInception._planned's, for a unit): the last eval forward's
        convolution call on x's layout (CPU tensors), made again if no autograd, autocast or
        tracing, the same settings (_plan_policy), the same structure, attributes and hooks
        (the structure snapshot) and the same weights (the unit's weight check) say it is
        what the full forward would make; else None."""
        plan = _ready_plan(state, x)
        if plan is None or not self._weights_hold(state, plan):
            return None
        return self._replay_call(plan, x)

    @staticmethod
    def _weights_hold(state: _FoldState, plan: _Plan) -> bool:
        """Whether the weights are those `plan` was made with (the unit's weight check)."""
        return plan.check(state.tensors) == state.weights

    def _replay_call(self, plan: _Plan, x: Tensor) -> Tensor:
        """The plan's convolution on x (after _ready_plan's and _weights_hold's checks; the
        network replay, network_replay.py, makes them for a whole forward first)."""
        kind, to_cl = plan.call
        if to_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._run(kind, x, plan.args, replay=True)

    def _packed(
        self, weight: Tensor, shape: torch.Size, chunk: int | None = None, tile: int = 2
    ) -> Tensor:
        """The folded float32 weight in the blocked layout oneDNN picks for inputs of `shape`
        (reordered once per shape while the weights stay: ONNX Runtime prepacks its weights
        the same way; a dense weight is reordered on every call). With `chunk`: the Winograd
        weight of `tile` (cpu_winograd.grouped_weight) reordered for its grouped GEMM of
        `chunk` tiles."""
        packed = self._state.packed
        key = (tuple(shape), chunk, tile)
        if key not in packed:
            if len(packed) >= _PACKED_SHAPES:
                packed.clear()
            conv = self.conv
            if chunk is None:
                packed[key] = onednn.reorder(
                    weight, shape, conv.padding, conv.stride, conv.dilation, conv.groups
                )
            else:
                n, _, h, w = shape
                gemm_input = winograd.onednn_gemm_input(conv.in_channels, chunk, tile, n, h, w)
                grouped = winograd.grouped_weight(weight, tile)
                packed[key] = onednn.reorder(grouped, gemm_input, groups=winograd.positions(tile))
        return packed[key]

    def _panels(self, weight: Tensor, tile: int = 0) -> Tensor:
        """The folded weight as the own kernel's panels, kept while the weights stay: packed as
        it is (cpu_onednn.pack_panels), or with `tile` 4 its F(4x4, 3x3) transform's 36 GEMM
        weights (cpu_winograd.grouped_panels)."""
        if tile:
            return self._kept(("panels", tile), lambda: winograd.grouped_panels(weight, tile))
        return self._kept(("panels", 0), lambda: onednn.pack_panels(weight))

    def _kept(self, key: tuple, make) -> Tensor:
        """make() (a form of the folded weight: the own kernel's panels, MKL's Winograd matrices
        [P, Cin, Cout] from cpu_winograd.grouped_matrices), made once and kept while the
        weights stay."""
        packed = self._state.packed
        if key not in packed:
            packed[key] = make()
        return packed[key]

    def _standard_ops(self, x: Tensor) -> bool:
        """True where the composed path must run (see the class docstring), hooks aside: those
        come with the structure check in _forward_python."""
        if isinstance(x, torch.fx.Proxy) or not isinstance(x, Tensor):
            return True
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            return True
        if torch.compiler.is_compiling() or self.training or self.bn.training:
            return True
        weight = self.conv.weight
        if x.dtype != weight.dtype or x.device != weight.device or x.is_meta:
            return True  # (the composed path raises the conv's own error for a mismatch)
        if x.dim() != 4 or x.shape[1] != self.conv.in_channels:
            return True  # (the same: torch's error names the shapes, before any kernel runs)
        if torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        ):
            return True
        return torch.is_autocast_enabled(x.device.type)

    def _folded(self, state: _FoldState, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        """The folded (weight, bias) in `dtype`, from `state`'s cache or folded now; None (warned
        once) if the fold does not fit `dtype`."""
        check = resolve_weight_check(self.weight_check, self.conv.weight.device)
        weights = WEIGHT_CHECKS[check](state.tensors)
        if weights != state.weights:
            state.weights = weights
            state.folded.clear()
            state.packed.clear()
            state.plans.clear()
        if dtype not in state.folded:
            state.folded[dtype] = self._fold(dtype)
        return state.folded[dtype]

    def _fold(self, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        weight, bias = fold_unit(self)  # float64 inside, cast to the conv weight's dtype
        if not (bool(torch.isfinite(weight).all()) and bool(torch.isfinite(bias).all())):
            if "overflow" not in _warned:
                _warned.add("overflow")
                warnings.warn(
                    "FoldedConvUnit: the BatchNorm-folded weights do not fit "
                    f"{dtype}, so the unit runs conv -> BN -> ReLU unfolded. (Shown once.)",
                    stacklevel=4,
                )
            return None
        if self.conv.weight.is_contiguous(memory_format=torch.channels_last):
            weight = weight.contiguous(memory_format=torch.channels_last)
        return weight, bias

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_state"] = None  # the folded tensors are derived data; rebuilt on demand
        return state


def _onednn_conv_relu_fits(conv: nn.Conv2d, x: Tensor) -> bool:
    """True where oneDNN's convolution (the operator inductor uses on the CPU) computes the
    unit's conv: float32 CPU tensors, zero padding given as numbers."""
    return (
        x.device.type == "cpu"
        and onednn.available(x.dtype)
        and conv.padding_mode == "zeros"
        and not isinstance(conv.padding, str)
    )


def _winograd_tile(conv: nn.Conv2d, x: Tensor) -> int:
    """The Winograd tile (cpu_winograd.onednn_tile: 2 or 4; 0: none) of the unit's convolution
    on a grouped oneDNN GEMM, the own kernel's or MKL's (fused_inception::conv3x3_relu_winograd;
    cpu_onednn.own_gemm, mkl_winograd): 3x3, stride 1, padding
    1, no dilation or groups, and wide enough to pay (cpu_winograd.onednn_winograd_pays:
    GoogLeNet's conv3, 64 -> 192 at 56x56, is). F(4x4, 3x3) where the block operator would
    take it."""
    if not (
        _WINOGRAD_OP is not None
        and tuple(conv.stride) == (1, 1)
        and tuple(conv.padding) == (1, 1)
        and tuple(conv.dilation) == (1, 1)
        and conv.groups == 1
    ):
        return 0
    n, _, h, w = x.shape
    return winograd.onednn_tile(conv.weight.shape, n, h, w)


def _own_gemm_fits(conv: nn.Conv2d, x: Tensor) -> bool:
    """True where the unit's convolution runs on the package's own kernel
    (csrc/cpu/gemm_panels.cpp), on channels_last x (moved there for a channels_last weight, as
    oneDNN's path does, so the channels_last output is the one oneDNN's would be), no dilation
    or groups, where cpu_onednn.own_gemm_direct says so (AVX2 and AVX-512 CPUs): a plain 1x1
    convolution (stride 1, no padding; GoogLeNet's conv2 and the auxiliary heads' convs), or a
    square odd kernel of at most 7 on fewer than 16 input channels with equal strides and
    padding at most K // 2 (a first layer: GoogLeNet's conv1, 7x7/2 on 3 channels; on AVX-512
    CPUs the tiles of csrc/cpu/first_layer.cpp). Measured faster than oneDNN for both on an
    AVX2 and an AVX-512 CPU (README "Backends")."""
    if _GEMM_OP is None or conv.groups != 1:
        return False
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    if tuple(conv.dilation) != (1, 1) or not x.is_contiguous(memory_format=torch.channels_last):
        return False
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return onednn.own_gemm_direct()
    return _first_layer_shape(conv)


def _first_layer_fits(conv: nn.Conv2d) -> bool:
    """_own_gemm_fits's first layers with a kernel of 3 to 7, for x in any layout: the kernel
    copies such an x into a zero-padded NHWC buffer itself (its taps are kernel rows), so an
    NCHW image needs no channels_last copy first; the output is channels_last, as oneDNN's path
    returns it for the channels_last weight this is asked for."""
    return (
        _GEMM_OP is not None
        and conv.groups == 1
        and tuple(conv.dilation) == (1, 1)
        and conv.kernel_size[0] > 1
        and _first_layer_shape(conv)
    )


def _first_layer_shape(conv: nn.Conv2d) -> bool:
    """A first layer the own kernel takes where cpu_onednn.own_gemm_direct says so (AVX2 and
    AVX-512 CPUs): a square odd kernel of at most 7 on fewer than 16 input channels, equal
    strides and padding at most K // 2."""
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    return (
        onednn.own_gemm_direct()
        and kh == kw
        and kh % 2 == 1
        and kh <= 7
        and sh == sw
        and ph == pw
        and ph <= kh // 2
        and conv.in_channels < 16
    )


_GEMM_OP = _ext.op("conv_bias_relu_nhwc").default if _ext.has_op("conv_bias_relu_nhwc") else None

_WINOGRAD_OP = winograd._CONV3X3_OP  # (resolved once, in cpu_winograd; None without it)
_GEMM_DIRECT = _ext.direct_op("conv_bias_relu_nhwc")
_WINOGRAD_DIRECT = _ext.direct_op("conv3x3_relu_winograd")


def _onednn_conv_relu(conv: nn.Conv2d, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """ReLU(conv(x, weight, bias)): oneDNN's convolution, then torch's in-place ReLU, in x's
    memory format. Not oneDNN's fused ReLU: it maps NaN to 0, where torch's ReLU (and so
    torchvision's unit) keeps NaN (backends/cpu_onednn.py).

    x: [N, Cin, H, W]  weight: [Cout, Cin / groups, kh, kw], dense or oneDNN-reordered
    bias: [Cout]       out: [N, Cout, H', W']

    Against F.conv2d it avoids, for a 1x1 convolution in channels_last, ATen's slower path
    (GoogLeNet's conv2 at batch 8, one thread, on this project's CPU: 2.3 ms against 7.8 ms
    with oneDNN's fused ReLU, in one interleaved measurement).
    """
    return onednn.conv(
        x, weight, bias, conv.padding, conv.stride, conv.dilation, conv.groups
    ).relu_()


_PACKED_SHAPES = 8  # input shapes a unit keeps packed weights for


class _Unit(nn.Module):
    """conv -> BN -> ReLU, torchvision's BasicConv2d computation (to_unfused of a unit made
    without a source)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))
