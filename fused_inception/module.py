"""FusedInception: a drop-in Inception block that runs fused kernels, and the model swappers.

Data flows one way: this module validates input, folds BatchNorm and caches each backend's
packed parameters (until a weight or buffer changes); the backends only see tensors.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .backends import check_backend_name, resolve_backend
from .folding import block_units, fold_block, has_batch_norm, param_signature
from .ops import inception_block
from .reference import ConvUnit, Inception

_UNIT_PATHS = ("branch1", "branch2.0", "branch2.1", "branch3.0", "branch3.1", "branch4.1")
_warned_composed = False


def _warn_composed_once(reason: str) -> None:
    global _warned_composed
    if not _warned_composed:
        _warned_composed = True
        warnings.warn(
            f"FusedInception: {reason}, so it runs the composed (unfused) PyTorch path, which "
            "matches torchvision exactly but is not faster; eval mode and the paper form (no "
            "BN) run the fused operator. (Shown once.)",
            stacklevel=3,
        )


class FusedInception(Inception):
    """Inception block (GoogLeNet) computed by fused kernels, for inference and training.

    Same constructor arguments and state_dict keys as torchvision.models.googlenet.Inception
    (norm=True) or the paper's conv+bias form (norm=False); `branch3_kernel` is 3 in torchvision
    and 5 in the paper.

    x:   [N, in_channels, H, W] (NCHW or channels_last)
    out: [N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W], channel order b1 | b2 | b3 | b4,
         in x's memory format.

    What runs (README "What runs when"):
    - eval without autograd: the fused backend ("auto": the best for x's device) on weights
      folded and packed once, cached until a weight or buffer changes;
    - training in the paper form (no BN), or an eval forward that autograd records: the
      operator fused_inception::inception_block (fused forward, recompute-based backward;
      fused_inception/ops.py) on weights folded with differentiable torch ops;
    - training with BN: the composed PyTorch path, because BN needs the batch statistics of
      each conv output before its ReLU, which a single fused pass does not produce. It is
      exactly torchvision's computation (running-statistic updates included); it says so once.
    Under torch.compile every mode except BN training calls the operator (no Python caches),
    so each block is one opaque node of the graph.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3red: int,
        ch3x3: int,
        ch5x5red: int,
        ch5x5: int,
        pool_proj: int,
        *,
        branch3_kernel: int = 3,
        norm: bool = True,
        backend: str = "auto",
    ) -> None:
        check_backend_name(backend)
        super().__init__(
            in_channels,
            ch1x1,
            ch3x3red,
            ch3x3,
            ch5x5red,
            ch5x5,
            pool_proj,
            branch3_kernel=branch3_kernel,
            norm=norm,
        )
        self.backend = backend
        self._packed_cache: tuple | None = None
        self._source: nn.Module | None = None

    @property
    def in_channels(self) -> int:
        return self.branch1.conv.in_channels

    @property
    def out_channels(self) -> int:
        units = block_units(self)
        return sum(units[i].conv.out_channels for i in (0, 2, 4, 5))

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"

    @classmethod
    def from_module(cls, module: nn.Module, backend: str = "auto") -> FusedInception:
        """A FusedInception computing the same function as an Inception-structured `module`.

        `module` is torchvision's Inception or any module with branch1, branch2[0..1],
        branch3[0..1] and branch4[0..1] (a 3x3/1 max-pool, then a unit), each unit holding
        `.conv` (with or without bias) and an optional `.bn`. Kernel sizes are read from the
        weights. The new block shares the source's conv and BN modules (no copy), so its
        state_dict and named parameters are the source's; deep-copy the source first for an
        independent block.
        """
        check_backend_name(backend)
        problem = inception_structure_error(module)
        if problem is not None:
            raise ValueError(f"cannot fuse {type(module).__name__}: {problem}")
        units = [ConvUnit.wrap(u.conv, getattr(u, "bn", None)) for u in block_units(module)]
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.branch1 = units[0]
        fused.branch2 = nn.Sequential(units[1], units[2])
        fused.branch3 = nn.Sequential(units[3], units[4])
        fused.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True), units[5]
        )
        fused.backend = backend
        fused._packed_cache = None
        # Kept for unfuse_inception, outside _modules so state_dict and .to() ignore it.
        fused.__dict__["_source"] = module
        fused.train(module.training)
        return fused

    def to_unfused(self) -> nn.Module:
        """The eager block this one computes: the module it was made from, or a reference one.

        Shares this block's conv and BN modules, so nothing is copied either way.
        """
        if self._source is not None:
            return self._source
        block = Inception.__new__(Inception)
        nn.Module.__init__(block)
        block.branch1, block.branch2 = self.branch1, self.branch2
        block.branch3, block.branch4 = self.branch3, self.branch4
        block.train(self.training)
        return block

    def _check_input(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"FusedInception expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"FusedInception expects a 4-D input [N, C, H, W], got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"FusedInception expects {self.in_channels} input channels, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        if not x.is_floating_point():
            raise TypeError(f"FusedInception expects a floating-point input, got {x.dtype}")
        weight = self.branch1.conv.weight
        if x.device != weight.device:
            raise RuntimeError(
                f"input is on {x.device} but the block's parameters are on {weight.device}"
            )
        if x.dtype != weight.dtype and not _autocast_enabled(x):
            raise TypeError(
                f"input dtype {x.dtype} does not match the block's parameters ({weight.dtype}); "
                f"convert one of them, e.g. block.to({x.dtype})"
            )

    def _needs_autograd(self, x: Tensor) -> bool:
        if not torch.is_grad_enabled():
            return False
        return x.requires_grad or any(p.requires_grad for p in self.parameters())

    def _packed(self, name: str, impl) -> object:
        key = (name, param_signature(self))
        if self._packed_cache is None or self._packed_cache[0] != key:
            self._packed_cache = (key, impl.prepare(fold_block(self)))
        return self._packed_cache[1]

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        compiling = torch.compiler.is_compiling()
        if self.training and has_batch_norm(self):
            if not compiling:
                _warn_composed_once("training mode with BatchNorm uses batch statistics")
            return super().forward(x)
        if compiling or _autocast_enabled(x) or self._needs_autograd(x):
            # Folding with torch ops keeps BN's gamma/beta and the conv weights in the autograd
            # graph (and in a compiled graph); the operator's autocast rule sets the dtype.
            return inception_block(x, *fold_block(self, differentiable=True), self.backend)
        name, impl = resolve_backend(self.backend, x.device)
        return impl.forward(x, self._packed(name, impl))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed_cache"] = None  # packed tensors are derived data; rebuilt on demand
        return state


def _autocast_enabled(x: Tensor) -> bool:
    """True under torch.autocast for x's device type (autocast leaves float64 alone)."""
    if x.dtype == torch.float64:
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (meta, ...)
        return False


def inception_structure_error(module: nn.Module) -> str | None:
    """None if `module` has the Inception block structure the fused kernels compute, else why."""
    for name in ("branch1", "branch2", "branch3", "branch4"):
        if not hasattr(module, name):
            return f"it has no {name}"
    try:
        units = block_units(module)
        pool = module.branch4[0]
    except (TypeError, IndexError, AttributeError) as exc:
        return f"branches are not laid out as branch2[0..1], branch3[0..1], branch4[0..1] ({exc})"
    if not isinstance(pool, nn.MaxPool2d) or _pair(pool.kernel_size) != (3, 3):
        return f"branch4[0] must be a 3x3 MaxPool2d, got {pool}"
    if (
        _pair(pool.stride) != (1, 1)
        or _pair(pool.padding) != (1, 1)
        or _pair(pool.dilation)
        != (
            1,
            1,
        )
    ):
        return f"branch4[0] must be a 3x3 max-pool with stride 1, padding 1, got {pool}"
    for path, unit in zip(_UNIT_PATHS, units, strict=True):
        problem = _unit_error(unit)
        if problem is not None:
            return f"{path}: {problem}"
    kernels = [_pair(u.conv.kernel_size) for u in units]
    for i in (0, 1, 3, 5):
        if kernels[i] != (1, 1):
            return f"{_UNIT_PATHS[i]} must be a 1x1 conv, got kernel {kernels[i]}"
    if kernels[2] != (3, 3):
        return f"branch2.1 must be a 3x3 conv, got kernel {kernels[2]}"
    if kernels[4] not in ((3, 3), (5, 5)):
        return f"branch3.1 must be a 3x3 or 5x5 conv, got kernel {kernels[4]}"
    c_in = units[0].conv.in_channels
    for i in (1, 3, 5):
        if units[i].conv.in_channels != c_in:
            return f"{_UNIT_PATHS[i]} reads {units[i].conv.in_channels} channels, not {c_in}"
    for red, conv in ((1, 2), (3, 4)):
        if units[red].conv.out_channels != units[conv].conv.in_channels:
            return f"{_UNIT_PATHS[conv]} does not read {_UNIT_PATHS[red]}'s output channels"
    return None


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _unit_error(unit: nn.Module) -> str | None:
    conv = getattr(unit, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        return "has no .conv Conv2d"
    k = _pair(conv.kernel_size)
    if (
        _pair(conv.stride) != (1, 1)
        or _pair(conv.dilation) != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or k[0] != k[1]
        or _pair(conv.padding) != (k[0] // 2, k[1] // 2)
    ):
        return f"conv must have stride 1, 'same' zero padding, no dilation or groups, got {conv}"
    bn = getattr(unit, "bn", None)
    if bn is not None:
        if not isinstance(bn, nn.BatchNorm2d):
            return f".bn must be a BatchNorm2d, got {type(bn).__name__}"
        if not bn.track_running_stats or bn.running_mean is None:
            return ".bn has no running statistics, so it cannot be folded for inference"
    extra = [
        name
        for name, child in unit.named_children()
        if name not in ("conv", "bn") and not isinstance(child, nn.ReLU)
    ]
    if extra:
        return f"unexpected submodules {extra} (a unit is conv [-> bn] -> ReLU)"
    return None


def fuse_inception(model: nn.Module, backend: str = "auto") -> nn.Module:
    """Swap every Inception block inside `model` for a FusedInception, in place.

    The state_dict is unchanged (the fused blocks share the original conv/BN modules).
    Returns the model, or a FusedInception if `model` itself is an Inception block.
    Blocks named like Inception blocks but computing something else are left alone, with a
    warning that says why.
    """
    check_backend_name(backend)
    if _is_candidate(model):
        return _fuse_one(model, backend, "model") or model
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if _is_candidate(child):
                fused = _fuse_one(child, backend, child_name)
                if fused is not None:
                    setattr(parent, child_name, fused)
    return model


def unfuse_inception(model: nn.Module) -> nn.Module:
    """Reverse fuse_inception: put the eager blocks back (sharing the same parameters)."""
    if isinstance(model, FusedInception):
        return model.to_unfused()
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, FusedInception):
                setattr(parent, child_name, child.to_unfused())
    return model


def _is_candidate(module: nn.Module) -> bool:
    return not isinstance(module, FusedInception) and all(
        hasattr(module, f"branch{i}") for i in range(1, 5)
    )


def _fuse_one(module: nn.Module, backend: str, name: str) -> FusedInception | None:
    problem = inception_structure_error(module)
    if problem is not None:
        warnings.warn(
            f"fuse_inception: left {name} ({type(module).__name__}) as is: {problem}", stacklevel=2
        )
        return None
    return FusedInception.from_module(module, backend=backend)
