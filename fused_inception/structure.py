"""Which modules FusedInception may replace, and when a fused block must not run its kernels.

A module is replaced only when it provably computes the Inception block (DESIGN in README,
"The function"), checked two ways, both needed:
- `structure_error`: the layout the kernels read: branch1, branch2[0..1], branch3[0..1],
  branch4[0..1]; units conv [-> BatchNorm] -> ReLU with stride 1, 'same' zero padding, 1x1 /
  3x3 / 3x3-or-5x5 kernels; a 3x3/1 max-pool. Cheap; also run again whenever a fused block's
  structure changes (`structure_key`).
- `function_error`: the module's own forward, on a float64 copy with random weights and BN
  statistics, against `inception_ref` of the same weights. It catches what the layout cannot
  show: extra logic in a forward (a residual, another concatenation order, a post-concat BN),
  units that skip the ReLU or use another activation, a forward replaced on the instance.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from . import _ext
from .folding import fold_block
from .reference import inception_ref
from .units import BRANCHES, UNIT_NAMES, block_units

# float64 probe: relative difference allowed between the module's forward and inception_ref
# (both in float64; the fold is the only rounding, about 1e-16).
PROBE_TOLERANCE = 1e-9
PROBE_HW = (5, 6)


def structure_error(module: nn.Module) -> str | None:
    """None if `module` has the layout the fused kernels compute, else why not."""
    for name in BRANCHES:
        if not hasattr(module, name):
            return f"it has no {name}"
    try:
        units = block_units(module)
        pool = module.branch4[0]
    except (TypeError, IndexError, AttributeError, KeyError) as exc:
        return f"branches are not laid out as branch2[0..1], branch3[0..1], branch4[0..1] ({exc})"
    if not isinstance(pool, nn.MaxPool2d) or _pair(pool.kernel_size) != (3, 3):
        return f"branch4[0] must be a 3x3 MaxPool2d, got {pool}"
    if (_pair(pool.stride), _pair(pool.padding), _pair(pool.dilation)) != ((1, 1),) * 3:
        return f"branch4[0] must be a 3x3 max-pool with stride 1, padding 1, got {pool}"
    for path, unit in zip(UNIT_NAMES, units, strict=True):
        problem = _unit_error(unit)
        if problem is not None:
            return f"{path}: {problem}"
    kernels = [_pair(u.conv.kernel_size) for u in units]
    for i in (0, 1, 3, 5):
        if kernels[i] != (1, 1):
            return f"{UNIT_NAMES[i]} must be a 1x1 conv, got kernel {kernels[i]}"
    if kernels[2] != (3, 3):
        return f"branch2.1 must be a 3x3 conv, got kernel {kernels[2]}"
    if kernels[4] not in ((3, 3), (5, 5)):
        return f"branch3.1 must be a 3x3 or 5x5 conv, got kernel {kernels[4]}"
    c_in = units[0].conv.in_channels
    for i in (1, 3, 5):
        if units[i].conv.in_channels != c_in:
            return f"{UNIT_NAMES[i]} reads {units[i].conv.in_channels} channels, not {c_in}"
    for red, conv in ((1, 2), (3, 4)):
        if units[red].conv.out_channels != units[conv].conv.in_channels:
            return f"{UNIT_NAMES[conv]} does not read {UNIT_NAMES[red]}'s output channels"
    extra = [
        name
        for name, child in module.named_children()
        if name not in BRANCHES and any(True for _ in _state(child))
    ]
    if extra:
        return (
            f"it has submodules with parameters or buffers besides the branches ({extra}), "
            "which a FusedInception would not keep"
        )
    return None


def _state(module: nn.Module):
    yield from module.parameters()
    yield from module.buffers()


def _pair(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _unit_error(unit: nn.Module) -> str | None:
    conv = getattr(unit, "conv", None)
    if not isinstance(conv, nn.Conv2d):
        what = "nothing" if conv is None else type(conv).__name__
        hint = ""
        if isinstance(conv, nn.Sequential):  # torch.ao's fused ConvReLU2d / ConvBn2d / ...
            hint = (
                " (units fused for quantization, such as torch.ao's ConvReLU2d from "
                "fuse_model(), are not supported: fuse the Inception blocks before that)"
            )
        return f".conv must be a Conv2d, got {what}{hint}"
    k = _pair(conv.kernel_size)
    if (
        _pair(conv.stride) != (1, 1)
        or _pair(conv.dilation) != (1, 1)
        or conv.groups != 1
        or conv.padding_mode != "zeros"
        or k[0] != k[1]
        or k[0] % 2 != 1
        or not _same_padding(conv.padding, k[0])
    ):
        return f"conv must have stride 1, 'same' zero padding, no dilation or groups, got {conv}"
    return unit_parts_error(unit)


def unit_parts_error(unit: nn.Module) -> str | None:
    """None if a conv unit's `.bn` (if any) is a BatchNorm2d with running statistics and its
    other children are ReLUs, else why not (the checks every foldable unit needs)."""
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


def _same_padding(padding, k: int) -> bool:
    """padding=k//2 on both sides, written as ints or as 'same' (or 'valid' for a 1x1)."""
    if padding == "same":
        return True
    if padding == "valid":
        return k == 1
    return _pair(padding) == (k // 2, k // 2)


def function_error(module: nn.Module) -> str | None:
    """None if `module`'s forward computes the Inception block of its units, else why not.

    Runs the module's own forward once on a float64 CPU copy whose weights, biases and BN
    statistics are replaced by random values (so a zero or identity initialisation cannot hide
    a difference), hooks removed, in eval mode, against `inception_ref` on the same weights.
    Requires `structure_error(module) is None`. The module itself is not touched.
    """
    try:
        probe = copy.deepcopy(module)
    except Exception as exc:  # any module that refuses to be copied is not checked
        return f"it cannot be copied for the float64 check of its forward ({exc})"
    probe = probe.to_empty(device="cpu") if _has_meta(probe) else probe.cpu()
    probe = probe.to(torch.float64).eval()
    gen = torch.Generator().manual_seed(0x1CE)
    with torch.no_grad():
        for m in probe.modules():
            m._forward_hooks.clear()
            m._forward_pre_hooks.clear()
            m._backward_hooks.clear()
            m._backward_pre_hooks.clear()
        for p in probe.parameters():
            fan_in = max(1, p[0].numel()) if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) / fan_in**0.5)
        for m in probe.modules():
            if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None:
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
        c_in = block_units(probe)[0].conv.in_channels
        x = torch.randn(2, c_in, *PROBE_HW, generator=gen, dtype=torch.float64)
        expected = inception_ref(x, fold_block(probe))
        try:
            with torch.autocast("cpu", enabled=False):
                got = probe(x)
        except Exception as exc:
            return f"its forward fails on a float64 probe input ({type(exc).__name__}: {exc})"
    if not isinstance(got, Tensor) or got.shape != expected.shape:
        shape = tuple(got.shape) if isinstance(got, Tensor) else type(got).__name__
        return (
            f"its forward returns {shape} for a {tuple(x.shape)} input, not the Inception "
            f"block's {tuple(expected.shape)}"
        )
    err = (got.double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    if not err <= PROBE_TOLERANCE * scale:  # (NaN fails too)
        return (
            "its forward computes another function than the Inception block of its units "
            f"(relative difference {err / scale:.2g} on a float64 probe: extra logic in "
            "forward, another activation, another concatenation order?)"
        )
    return None


def _has_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in _state(module))


def inception_error(module: nn.Module) -> str | None:
    """None if `module` may be replaced by a FusedInception: structure, then function."""
    return structure_error(module) or function_error(module)


# Attribute values that define what a module computes: numbers, strings, flags and tuples of
# them (a conv's stride and padding, a BN's eps, every module's `training`).
_PLAIN = (bool, int, float, str, tuple, type(None))


def structure_key(block: nn.Module) -> tuple:
    """Changes when a module, parameter or buffer of `block` is replaced or added, or any plain
    attribute of a module changes.

    Covers `bn.eps = 0.5`, `conv.padding = ...`, a unit swapped for another module, a child put
    in training mode, `conv.weight = nn.Parameter(...)`. The tensors' contents are not part of
    it (see fingerprint.py); their identities are, so a list of them stays valid as long as the
    key does.
    """
    key = []
    stack = [block]
    while stack:
        m = stack.pop()
        key.append(id(m))
        key.append(type(m))
        key.extend((k, v) for k, v in m.__dict__.items() if k[0] != "_" and isinstance(v, _PLAIN))
        key.extend(map(id, m._parameters.values()))
        key.extend(map(id, m._buffers.values()))
        stack.extend(c for c in m._modules.values() if c is not None)
    return tuple(key)


class StructureSnapshot:
    """A cheap re-check that `structure_key(block)` and `hooked_modules(block)` (`hooked`) still
    hold what they held when the snapshot was taken.

    structure_key builds a tuple of a few hundred items on every call (about 50 us for a block,
    a large part of a batch-1 forward); matches() compares each module's `__dict__` with a
    shallow copy (C-level: the values are mostly the same objects, and a changed plain
    attribute, `training` included, compares unequal) and the identities of its parameters,
    buffers and children, and whether it has hooks: about 2x faster. It errs one way only:
    True means both are unchanged; False may be spurious (a tensor-valued attribute
    replaced by an equal one), and the caller then recomputes structure_key.

    With the extension, matches() is one C call (fused_inception._C.snapshot_matches,
    csrc/structure_check.cpp) making the same comparisons: 37 us -> 7.4 us for a block
    (the Python loop, `_matches_python`, stays for builds without it and for the rare module
    whose parameter, buffer or child dict is not an exact dict). On CPython up to 3.11 it first
    reads the version tags of the dicts compared (`_tags`, snapshot_tags): all unchanged, the
    answer is True without the comparisons.
    """

    __slots__ = ("_block", "_entries", "_tags", "hooked")

    def __init__(self, block: nn.Module, modules: list[nn.Module] | None = None) -> None:
        """A snapshot of `block` and all its submodules, or with `modules` of block and those
        modules only (not their submodules: the network replay's, network_replay.py, whose
        fused blocks and units check their own); `hooked` then holds the class names of those
        of `modules` that have hooks."""
        # Strong references: the ids compared stay those of live objects (no id reuse).
        self._block = block
        self._entries = [
            (
                m,
                m.__dict__.copy(),
                tuple(map(id, m._parameters.values())),
                tuple(map(id, m._buffers.values())),
                tuple(map(id, m._modules.values())),
                m is not block and _has_hooks(m),
            )
            for m in (_walk(block) if modules is None else [block, *modules])
        ]
        # The dicts' version tags, for the C check's fast answer (None without them).
        self._tags = _SNAPSHOT_TAGS(self._entries) if _SNAPSHOT_TAGS is not None else None
        self.hooked = (
            hooked_modules(block)
            if modules is None
            else [type(entry[0]).__name__ for entry in self._entries if entry[5]]
        )

    def matches(self) -> bool:
        """True if nothing structure_key or hooked_modules read has changed."""
        if _SNAPSHOT_MATCHES is not None:
            same = _SNAPSHOT_MATCHES(self._block, self._entries, self._tags)
            if same is not None:
                return same
        return self._matches_python()

    def c_args(self) -> tuple:
        """(block, entries, tags): the arguments with which _C.snapshot_matches makes matches()'s
        check (_C.replay_checked makes it so; module._fast_context)."""
        return self._block, self._entries, self._tags

    def _matches_python(self) -> bool:
        """matches() as a Python loop (the C function's specification)."""
        block = self._block
        try:
            for m, d, params, buffers, children, hooked in self._entries:
                if (
                    m.__dict__ != d
                    or tuple(map(id, m._parameters.values())) != params
                    or tuple(map(id, m._buffers.values())) != buffers
                    or tuple(map(id, m._modules.values())) != children
                    or (m is not block and _has_hooks(m) != hooked)
                ):
                    return False
        except Exception:  # noqa: BLE001  a replaced tensor or array attribute, compared by
            # value, raises (an ambiguous truth value) or any __eq__ may: count it as a change
            return False
        return True


# The C structure check and its dict tags (None without the extension).
_SNAPSHOT_MATCHES = _ext.c_function("snapshot_matches")
_SNAPSHOT_TAGS = _ext.c_function("snapshot_tags")


def structure_state(module: nn.Module, make_state):
    """The state cached in `module.__dict__["_state"]` for the module's current structure.

    Kept while a StructureSnapshot of the module still matches; otherwise kept if
    structure_key(module) equals the state's `skey`, else replaced by make_state(skey). The
    state gets a fresh `snapshot` either way (taken after the assignment: the module's own
    `__dict__`, which holds `_state`, is part of it). FusedInception and FoldedConvUnit cache
    their folded weights this way; a state needs `skey` and `snapshot` attributes.
    """
    state = module.__dict__.get("_state")
    if state is not None and state.snapshot is not None and state.snapshot.matches():
        return state
    skey = structure_key(module)
    if state is None or state.skey != skey:
        state = make_state(skey)
        module.__dict__["_state"] = state
    state.snapshot = StructureSnapshot(module)
    return state


def _walk(block: nn.Module) -> list[nn.Module]:
    """block and every submodule (each once per path, as structure_key walks them)."""
    out, stack = [], [block]
    while stack:
        m = stack.pop()
        out.append(m)
        stack.extend(c for c in m._modules.values() if c is not None)
    return out


def _has_hooks(m: nn.Module) -> bool:
    return bool(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks
    )


def hooked_modules(block: nn.Module) -> list[str]:
    """Names of `block`'s submodules (not block itself) with forward or backward hooks."""
    return [
        name
        for name, m in block.named_modules()
        if name
        and (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
    ]


def bn_in_training(block: nn.Module) -> bool:
    """True if any unit's BatchNorm is in training mode (it then uses batch statistics)."""
    return any(
        getattr(unit, "bn", None) is not None and unit.bn.training for unit in block_units(block)
    )
