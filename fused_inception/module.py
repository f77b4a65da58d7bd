"""FusedInception: a drop-in Inception block that runs fused kernels (swap.py swaps it in).

Data flows one way: this module validates input, folds BatchNorm and caches each backend's
packed parameters (until a weight or buffer changes); the backends only see tensors.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from . import _ext
from .backends import check_backend_name, resolve_backend
from .bn_training import bn_training_composed_reason, bn_training_forward, check_bn_training
from .fingerprint import fingerprint, version_key
from .folding import fold_block, fold_overflow
from .ops import inception_block, inception_block_saving
from .reference import Inception
from .structure import (
    StructureSnapshot,
    bn_in_training,
    hooked_modules,
    inception_error,
    structure_error,
    structure_state,
)
from .units import OUTPUT_UNITS, block_units, has_batch_norm

# How an eval forward tells that the weights changed since they were packed (README "Weights,
# attributes and hooks"): "content" hashes their bytes (every write is seen), "version" reads
# autograd's version counters and the storages' addresses (cheaper; blind to .data and numpy).
WEIGHT_CHECKS = {"content": fingerprint, "version": version_key}
# "auto" (the default): "content" for weights on the CPU, "version" on other devices, where a
# content check reads a hash back to the host (a synchronisation per block forward).
WEIGHT_CHECK_CHOICES = ("auto", *WEIGHT_CHECKS)


def resolve_weight_check(value: str, device: torch.device) -> str:
    """The check an eval forward with weights on `device` makes for weight_check `value`."""
    if value == "auto":
        return "content" if device.type == "cpu" else "version"
    return value


# Reasons already warned about (each kind once per process): "bn-training", "hooks", ...
_warned: set[str] = set()

# Attributes of a module's __dict__ that hold the hook dicts nn.Module.__call__ runs.
_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
)


def _warn_composed_once(kind: str, reason: str) -> None:
    if kind not in _warned:
        _warned.add(kind)
        warnings.warn(
            f"FusedInception: {reason}, so it runs the composed (unfused) PyTorch path, which "
            "matches torchvision exactly but is not faster. (Shown once.)",
            stacklevel=4,
        )


class _EagerState:
    """What an eager forward knows about a block until its structure or contents change.

    skey:     structure_key of the block when this was built
    problem:  structure_error then (the block was changed after fusion into something else)
    tensors:  the block's parameters and buffers (the same objects while skey holds)
    weights:  WEIGHT_CHECKS value of `tensors` that `packed` and `overflow` belong to (with
              weights the backend reads in place, `live`: their identities and layouts, and
              the check of the others only)
    hashed:   (the live weights, the other tensors), the last split made
    live:     the backend's live_candidates, and (signature, live weights) last asked for
    packed:   backend name -> that backend's packed parameters
    overflow: compute dtype -> fold_overflow (None: the folded weights fit)
    snapshot: StructureSnapshot that says skey still holds without recomputing it, and caches
              hooked_modules meanwhile
    bn_training: bn_in_training then (every unit's `training` is part of skey)
    has_bn:   has_batch_norm then (which units have a BatchNorm is part of skey)
    plans:    (x's shape, strides, dtype) -> _Plan: the eval fast path for CPU inputs
              (_planned), emptied with `packed`
    fast:     the context of the last replay the Python checks verified, for _C.replay_checked
              (_fast_context; None: none, or dropped with the plans)
    """

    __slots__ = (
        "skey",
        "problem",
        "tensors",
        "weights",
        "hashed",
        "live",
        "packed",
        "overflow",
        "snapshot",
        "bn_training",
        "has_bn",
        "plans",
        "fast",
    )

    def __init__(
        self,
        skey: tuple,
        problem: str | None,
        tensors: list[Tensor],
        bn_training: bool,
        has_bn: bool,
    ) -> None:
        self.skey, self.problem, self.tensors = skey, problem, tensors
        self.bn_training, self.has_bn = bn_training, has_bn
        self.weights: object = None
        self.hashed: tuple[tuple[int, ...], list[Tensor]] | None = None
        self.live: list | None = None
        self.packed: dict[str, object] = {}
        self.overflow: dict[torch.dtype, str | None] = {}
        self.snapshot: StructureSnapshot | None = None
        self.plans: dict[tuple, _Plan] = {}
        self.fast: tuple | None = None


# Input layouts a block keeps eval plans for (a batch size or image size more starts over).
_MAX_PLANS = 8


class _Plan:
    """An eval forward's call, replayed by an eval fast path (FusedInception._planned,
    FoldedConvUnit._planned) while nothing it rests on has changed.

    call:      what is called: the backend (its run_plan; forward_plan made the arguments), or
               a FoldedConvUnit's (kind, whether x is made channels_last first)
    args:      the call's arguments after x
    checks:    (entry, value) for each weight the backend checks itself (its value when `args`
               were made; backends/cpu.py forward_plan)
    policy_of: the settings the arguments depend on (the backend's plan_policy, or
               folded_unit._plan_policy); `policy` is its value then
    check:     the weight check (WEIGHT_CHECKS value) of the module's own check
    ready:     False until a second forward made the same call (some weights are reordered
               for a shape from its second call on: the plan replays the lasting ones)
    """

    __slots__ = ("call", "args", "checks", "policy_of", "policy", "check", "ready")

    def __init__(self, call, args: tuple, checks: list, policy_of, check) -> None:
        self.call, self.args, self.checks = call, args, checks
        self.policy_of, self.policy, self.check = policy_of, policy_of(), check
        self.ready = False

    def same_call(self, other: _Plan) -> bool:
        """True if `other` makes the same call on the same settings: the same tensors
        (identity), equal other arguments, the same checks with the same values."""
        return (
            self.call == other.call
            and self.policy == other.policy
            and self.check is other.check
            and len(self.args) == len(other.args)
            and all(
                p is q or (not isinstance(p, Tensor) and not isinstance(q, Tensor) and p == q)
                for p, q in zip(self.args, other.args, strict=True)
            )
            and len(self.checks) == len(other.checks)
            and all(
                e is f and v == w for (e, v), (f, w) in zip(self.checks, other.checks, strict=True)
            )
        )


def _keep_plan(plans: dict[tuple, _Plan], x: Tensor, plan: _Plan) -> None:
    """Keep the call an eval forward on x just made as x's layout's plan; a second forward
    making the same call makes it ready. At most _MAX_PLANS layouts (then it starts over)."""
    key = (x.shape, x.stride(), x.dtype)
    old = plans.get(key)
    if old is not None and old.same_call(plan):
        old.ready = True
        return
    if len(plans) >= _MAX_PLANS:
        plans.clear()
    plans[key] = plan


def _ready_plan(state, x: Tensor) -> _Plan | None:
    """The ready plan of x's layout in `state.plans` if a replay may be considered at all: a CPU
    tensor, no autograd, tracing or autocast (replay_allowed), the plan's settings unchanged,
    and the module's structure, attributes and hooks unchanged (`state.snapshot`); else None.
    The weights are the caller's to check. (ONNX export traces with torch.jit, strict
    torch.export compiles and non-strict export's inputs are not plain tensors, so this covers
    exports too.)"""
    if not replay_allowed(x):
        return None
    plan = state.plans.get((x.shape, x.stride(), x.dtype))
    if plan is None or not plan.ready:
        return None
    snapshot = state.snapshot
    if plan.policy_of() != plan.policy or snapshot is None or not snapshot.matches():
        return None
    return plan


def replay_allowed(x: Tensor) -> bool:
    """Whether a plan's direct call (_ext.direct_op) may stand in for the full forward on x now:
    a CPU tensor, no autograd recording, tracing, compiling, torch function mode or autocast.
    With the extension, one C call asks all but torch.compile's flag (_C.replay_modes,
    csrc/replay_modes.cpp: after a block's kernels, 2-3x less time than asking each in Python)."""
    if _REPLAY_MODES is not None:
        return _REPLAY_MODES(x) and not torch.compiler.is_compiling()
    return (
        x.is_cpu
        and not torch.is_grad_enabled()
        and _ext.direct_calls_allowed()
        and not torch.is_autocast_enabled("cpu")
    )


_REPLAY_MODES = _ext.c_function("replay_modes")


def _layout_key(tensors: list[Tensor]) -> tuple:
    """((t.data_ptr(), t.stride()), ...): the live weights' addresses and strides. One C call
    with the extension (_C.layout_key, csrc/version_key.cpp), Python where it cannot tell."""
    if _LAYOUT_KEY is not None:
        key = _LAYOUT_KEY(tensors)
        if key is not None:
            return key
    return tuple((t.data_ptr(), t.stride()) for t in tensors)


_LAYOUT_KEY = _ext.c_function("layout_key")

# One replay's checks and call in C (None: a build without it, which keeps the Python path),
# and the C form of each weight check it makes.
_REPLAY_CHECKED = _ext.c_function("replay_checked")
_C_CHECKS = {
    fingerprint: _ext.c_function("fingerprint"),
    version_key: _ext.c_function("version_key"),
}


def _fast_context(state: _EagerState, plan: _Plan, x: Tensor) -> tuple | None:
    """The context with which _C.replay_checked (csrc/replay_checked.cpp) makes a replay that
    the Python checks (_ready_plan, _weights_hold) just verified, with the same checks in one C
    call: x's layout, the global modes, the plan's policy, the structure snapshot, the live
    weights' layout key, the weight check's value, the backend's own checks and the operator
    call, each against what it was now. It holds while those hold: the plan's arguments were
    made for exactly these weights, settings and structure. None where a piece has no C form
    (a build without it, no structure snapshot, a backend without a direct handle); the Python
    path then stays."""
    handle = getattr(plan.call, "direct_handle", None)
    check = _C_CHECKS.get(plan.check)
    snapshot = state.snapshot
    if _REPLAY_CHECKED is None or handle is None or check is None or snapshot is None:
        return None
    own = []
    for entry, seen in plan.checks:
        own_check = _C_CHECKS.get(entry[2])
        if own_check is None or not isinstance(entry, list):
            return None
        own.append((own_check, entry, seen))
    live = state.live
    layout = (live[0], live[1][3]) if live is not None else (None, None)
    if live is not None and live[2]:
        # state.weights is (live[1], the check of the others), and live[1] held just now
        hashed, expected = state.hashed[1], state.weights[1]
    else:
        hashed, expected = state.tensors, state.weights
    return (
        tuple(x.shape),
        x.stride(),
        x.dtype,
        plan.policy_of,
        plan.policy,
        *snapshot.c_args(),
        *layout,
        check,
        hashed,
        expected,
        tuple(own),
        handle,
        tuple(plan.args),
    )


class FusedInception(Inception):
    """Inception block (GoogLeNet) computed by fused kernels, for inference and training.

    Same constructor arguments and state_dict keys as torchvision.models.googlenet.Inception
    (norm=True) or the paper's conv+bias form (norm=False); `branch3_kernel` is 3 in torchvision
    and 5 in the paper. `weight_check` says how an eval forward tells that the weights changed
    since it packed them: "content" (a hash of their bytes, every write is seen), "version"
    (autograd's version counters: cheaper, blind to writes through .data or numpy) or "auto"
    (default: "content" for CPU weights, "version" for CUDA weights, where hashing would read
    a value back to the host on every forward); README "Weights, attributes and hooks".
    `recompute` says what a training-mode forward keeps for its backward: True keeps x and the
    output only and the backward recomputes the reduced tensors r2 and r3 (one GEMM over x;
    less memory), False keeps r2 and r3 too (no recompute; (c2r + c3r) / Ctot more saved
    activations, 23% for block 4e), None (default) the faster of the two,
    False (docs/measurements.md, "Training steps", has the measurement).
    `bn_training` says what a forward with BatchNorm in training mode runs: "fused" (the fused
    BN-training path, fused_inception/bn_training.py), "composed" (torchvision's modules) or
    "auto" (default: "fused" on the CPU in float32 from batch 4, where it was measured faster,
    "composed" elsewhere); README "Training with BatchNorm".

    x:   [N, in_channels, H, W] (NCHW or channels_last), H, W >= 1
    out: [N, ch1x1 + ch3x3 + ch5x5 + pool_proj, H, W], channel order b1 | b2 | b3 | b4,
         in x's memory format.

    What runs (README "What runs when"):
    - eval without autograd: the fused backend ("auto": the best for x's device) on weights
      folded and packed once, cached until a weight, buffer or attribute changes (the cache is
      keyed on the weights' bytes, so writes through .data or numpy are seen too);
    - training in the paper form (no BN), or an eval forward that autograd records: the
      operator fused_inception::inception_block (fused forward, recompute-based backward;
      fused_inception/ops.py) on weights folded with differentiable torch ops;
    - training with every unit's BatchNorm in training mode: the fused BN-training path
      (batch statistics, running statistics and backward as torchvision's; see bn_training);
    - the composed PyTorch path (exactly torchvision's computation), with a warning once per
      reason, when the fused kernels would not compute the same thing: BatchNorm in training
      mode where bn_training does not choose the fused path (or only some units' BN in
      training mode), hooks on a submodule (they fire only there), BN-folded weights beyond
      the range of a 16-bit dtype, a structure changed after fusion;
    - standard operators (conv, BN, ReLU, max-pool, cat) under torch.jit.trace / script and
      ONNX export, one call_module node under torch.fx; the operator under torch.compile and
      torch.export.
    """

    # TorchScript compiles `forward`'s scripting branch only: the caches, the source module
    # and the properties computed in Python are not part of a scripted block.
    __jit_ignored_attributes__ = ["_state", "_source", "recompute"]
    # A class default for blocks pickled before the option existed.
    recompute: bool | None = None
    __jit_unused_properties__ = ["in_channels", "out_channels"]
    # The default for blocks pickled before the option existed (an instance attribute otherwise).
    bn_training = "auto"

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
        weight_check: str = "auto",
        recompute: bool | None = None,
        bn_training: str = "auto",
    ) -> None:
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
        self._init_fused(backend, weight_check, None, recompute, bn_training)

    def _init_fused(
        self,
        backend: str,
        weight_check: str,
        source: nn.Module | None,
        recompute: bool | None = None,
        bn_training: str = "auto",
    ) -> None:
        """The fields a FusedInception adds to an Inception, however it was made."""
        check_backend_name(backend)
        check_weight_check(weight_check)
        check_recompute(recompute)
        check_bn_training(bn_training)
        self.backend = backend
        self.weight_check = weight_check
        self.recompute = recompute
        self.bn_training = bn_training
        self.__dict__["_state"] = None
        # The module it was made from, for unfuse_inception; outside _modules so that
        # state_dict and .to() ignore it.
        self.__dict__["_source"] = source

    @property
    def in_channels(self) -> int:
        return self.branch1.conv.in_channels

    @property
    def out_channels(self) -> int:
        units = block_units(self)
        return sum(units[i].conv.out_channels for i in OUTPUT_UNITS)

    def extra_repr(self) -> str:
        check = "" if self.weight_check == "auto" else f", weight_check={self.weight_check!r}"
        if self.bn_training != "auto":
            check += f", bn_training={self.bn_training!r}"
        recompute = "" if self.recompute is None else f", recompute={self.recompute}"
        return f"backend={self.backend!r}{check}{recompute}"

    @classmethod
    def from_module(
        cls,
        module: nn.Module,
        backend: str = "auto",
        *,
        weight_check: str = "auto",
        recompute: bool | None = None,
        bn_training: str = "auto",
    ) -> FusedInception:
        """A FusedInception computing the same function as an Inception block `module`.

        `module` is torchvision's Inception or any module with branch1, branch2[0..1],
        branch3[0..1] and branch4[0..1] (a 3x3/1 max-pool, then a unit), each unit holding
        `.conv` (with or without bias) and an optional `.bn`, whose forward computes the
        Inception block (checked on a float64 probe: structure.function_error). Kernel sizes
        are read from the weights. ValueError, saying why, for any other module.

        The new block holds the source's branch modules themselves (no copy), so its state_dict,
        named parameters and submodule hooks are the source's, and it shares the source's own
        hooks; deep-copy the source first for an independent block.
        """
        check_backend_name(backend)
        check_weight_check(weight_check)
        check_recompute(recompute)
        check_bn_training(bn_training)
        problem = inception_error(module)
        if problem is not None:
            raise ValueError(f"cannot fuse {type(module).__name__}: {problem}")
        return cls._from_checked(module, backend, weight_check, recompute, bn_training)

    @classmethod
    def _from_checked(
        cls,
        module: nn.Module,
        backend: str,
        weight_check: str,
        recompute: bool | None = None,
        bn_training: str = "auto",
    ) -> FusedInception:
        """from_module after its checks (fuse_inception has made them already)."""
        fused = cls._around(module)
        fused._init_fused(backend, weight_check, module, recompute, bn_training)
        for name in _HOOK_DICTS:  # the same dicts: the source's hook handles remove them here too
            if name in module.__dict__:
                fused.__dict__[name] = module.__dict__[name]
        return fused

    def to_unfused(self) -> nn.Module:
        """The eager block this one computes: the module it was made from, or a reference one.

        Shares this block's submodules, so nothing is copied either way.
        """
        return self._source if self._source is not None else Inception._around(self)

    def refresh(self) -> None:
        """Drop the folded and packed weights; the next forward rebuilds them.

        With weight_check="content" ("auto" on the CPU) never needed for correctness (every
        weight, buffer and attribute change is seen): it frees the packed copies' memory. With
        "version" ("auto" on a GPU), call it after a write the version counters miss (through
        .data or numpy).
        """
        self.__dict__["_state"] = None

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_scripting():
            return self._composed(x)
        return self._forward_python(x)

    def _composed(self, x: Tensor) -> Tensor:
        """The block from its submodules: exactly torchvision's computation, any mode."""
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    @torch.jit.unused
    def _forward_python(self, x: Tensor) -> Tensor:
        if not torch.compiler.is_compiling() and type(x) is Tensor:
            state = self.__dict__.get("_state")
            if state is not None and state.plans:
                fast = state.fast
                if fast is not None:
                    # The last verified replay's checks and call in one C call (None: a check
                    # does not hold, and _planned decides).
                    out = _REPLAY_CHECKED(x, fast)
                    if out is not None:
                        return out
                out = self._planned(state, x)
                if out is not None:
                    return out
        if isinstance(x, torch.fx.Proxy):
            return self._fx_node(x)
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
            # Standard operators, reading the parameters as the module holds them: what a
            # TorchScript or ONNX runtime runs without this package.
            return self._composed(x)
        conv = self.branch1.conv
        self._check_input(x, conv)
        if torch.compiler.is_compiling():
            # No Python caches in a graph; each block is one node of the operator.
            if bn_in_training(self) or hooked_modules(self):
                return self._composed(x)
            return self._operator(x)
        # The structure and the weights are checked once per forward (each walks the modules
        # or hashes the weights: a large part of a batch-1 forward's time).
        structure = self._structure_state()
        reason = self._composed_reason(x, structure)
        if reason is None and structure.bn_training:
            return bn_training_forward(self, x)
        autocast = _autocast_enabled(x)
        recorded = autocast or self._needs_autograd(x)
        state = None
        live: tuple[Tensor, ...] = ()
        if reason is None and not recorded:
            name, impl = resolve_backend(self.backend, x.device, x.dtype)  # refuses before any work
            if getattr(impl, "live_weights", None) is not None:
                live = self._live_weights(structure, impl, x)
            state = self._weights_state(structure, conv.weight, live)
        if reason is None:
            reason = self._overflow_reason(x, state, structure, autocast)
        if reason is not None:
            _warn_composed_once(*reason)
            return self._composed(x)
        if recorded:
            # Folding with torch ops keeps BN's gamma/beta and the conv weights in the autograd
            # graph; the operator's autocast rule sets the dtype.
            return self._operator(x)
        packed = state.packed.get(name)
        if packed is None:
            folded = fold_block(self)
            if live:
                check = resolve_weight_check(self.weight_check, conv.weight.device)
                packed = impl.prepare_block(self, folded, WEIGHT_CHECKS[check])
            else:
                packed = impl.prepare(folded)
            state.packed[name] = packed
        plan_of = getattr(impl, "forward_plan", None)
        if plan_of is None or torch.is_grad_enabled() or type(x) is not Tensor or not x.is_cpu:
            return impl.forward(x, packed)
        made = plan_of(x, packed)
        if made is None:
            return impl.forward(x, packed)
        check = WEIGHT_CHECKS[resolve_weight_check(self.weight_check, x.device)]
        _keep_plan(state.plans, x, _Plan(impl, made[0], made[1], impl.plan_policy, check))
        return impl.run_plan(x, made[0])

    def _planned(self, state: _EagerState, x: Tensor) -> Tensor | None:
        """The eval fast path: the backend call of the last eval forward on x's layout (shape,
        strides, dtype; CPU tensors), made again without the checks and argument assembly around
        it, if everything that call rested on still holds; else None (the full forward runs).

        What it checks, cheaply, is what the full forward would find: no autograd, autocast,
        tracing or export; the backend's settings (plan_policy); the structure, attributes and
        hooks (the structure snapshot); the weights (the same weight check as _weights_state:
        the live weights' identities, addresses and strides, the others' content hash); and
        the weights the backend checks itself. Any difference and the full forward runs, which
        repacks, refolds or falls back as it always does.
        """
        plan = _ready_plan(state, x)
        if plan is None or not self._weights_hold(state, plan):
            return None
        state.fast = _fast_context(state, plan, x)
        return self._replay_call(plan, x)

    @staticmethod
    def _weights_hold(state: _EagerState, plan: _Plan) -> bool:
        """Whether the weights are those `plan` was made with: the live weights' addresses and
        strides, the block's weight check (state.weights) and the backend's own checks."""
        live = state.live
        if live is not None:
            if _layout_key(live[0]) != live[1][3]:
                return False
            if live[2]:
                weights = (live[1], plan.check(state.hashed[1]))
            else:
                weights = plan.check(state.tensors)
        else:
            weights = plan.check(state.tensors)
        if weights != state.weights:
            return False
        return all(entry[3] == seen and entry[2]([entry[1]]) == seen for entry, seen in plan.checks)

    @staticmethod
    def _replay_call(plan: _Plan, x: Tensor) -> Tensor:
        """The plan's backend call on x (after _ready_plan's and _weights_hold's checks; the
        network replay, network_replay.py, makes them for a whole forward first)."""
        return plan.call.replay_plan(x, plan.args)

    def _operator(self, x: Tensor) -> Tensor:
        """The block as the operator on differentiable folded weights: inception_block, or
        inception_block_saving when the backward is to read the reduced tensors."""
        args = (x, *fold_block(self, differentiable=True), self.backend)
        # Only a training forward saves the reduced tensors: an eval forward that autograd
        # records (or torch.export traces) keeps the plain operator. recompute=None (the
        # default) saves: measured faster (docs/measurements.md, "Training steps").
        if self.recompute or not self.training:
            return inception_block(*args)
        return inception_block_saving(*args)[0]

    def _fx_node(self, x: torch.fx.Proxy) -> torch.fx.Proxy:
        """Under torch.fx tracing: the block as one call_module node (the GraphModule then
        calls this module, fused), or its standard operators when it is the traced root."""
        tracer = x.tracer
        if getattr(tracer, "root", None) is self:
            return self._composed(x)
        return tracer.create_proxy("call_module", tracer.path_of_module(self), (x,), {})

    def _structure_state(self) -> _EagerState:
        """The cached state for the block's current structure (a new one when it changed)."""
        return structure_state(
            self,
            lambda skey: _EagerState(
                skey,
                structure_error(self),
                list(self.parameters()) + list(self.buffers()),
                bn_in_training(self),
                has_batch_norm(self),
            ),
        )

    def _live_weights(self, state: _EagerState, impl, x: Tensor) -> tuple[Tensor, ...]:
        """impl.live_weights(self, x), asked again only when its inputs change: the candidates'
        identities (state), addresses and strides, x's dtype and device, impl.live_policy()."""
        if state.live is None:
            state.live = [impl.live_candidates(self), None, ()]
        candidates = state.live[0]
        key = (
            x.dtype,
            x.device,
            impl.live_policy(),
            _layout_key(candidates),
        )
        if key != state.live[1]:
            state.live[1:] = [key, impl.live_weights(self, x)]
        return state.live[2]

    def _weights_state(
        self,
        structure: _EagerState | None = None,
        weight: Tensor | None = None,
        live: tuple[Tensor, ...] = (),
    ) -> _EagerState:
        """The cached state, emptied of packed weights if any weight or buffer changed
        (`structure`: _structure_state() if already taken in this forward; `weight`:
        branch1.conv.weight if already read).

        `live`: weights the backend reads in place on every call or checks itself where it
        uses a form made from them (backend live_weights, as _live_weights returned them): this
        check leaves their contents out and keys on _live_weights's key instead, which says
        which tensors they are and their layouts (a change of either, or of the set, empties
        the cache like a changed weight).

        Inside a CUDA graph capture the weights are not re-hashed (that reads a value back to
        the host): a captured graph replays the weights it captured.
        """
        state = structure if structure is not None else self._structure_state()
        if weight is None:
            weight = self.branch1.conv.weight
        if state.weights is None or not (
            weight.is_cuda and torch.cuda.is_current_stream_capturing()
        ):
            check = resolve_weight_check(self.weight_check, weight.device)
            if live:
                # `live` is _live_weights's cached tuple, a function of its key (the candidates'
                # addresses and strides, x's dtype and device, the policy): the key stands for
                # which tensors are left out and their layouts.
                if state.hashed is None or state.hashed[0] is not live:
                    skip = set(map(id, live))
                    state.hashed = (live, [t for t in state.tensors if id(t) not in skip])
                weights = (state.live[1], WEIGHT_CHECKS[check](state.hashed[1]))
            else:
                weights = WEIGHT_CHECKS[check](state.tensors)
            if weights != state.weights:
                state.weights = weights
                state.packed.clear()
                state.overflow.clear()
                state.plans.clear()
                state.fast = None
        return state

    def _composed_reason(
        self, x: Tensor, structure: _EagerState | None = None
    ) -> tuple[str, str] | None:
        """(kind, reason) if the fused kernels would not compute what the modules do now."""
        structure = structure if structure is not None else self._structure_state()
        if structure.bn_training:
            reason = bn_training_composed_reason(self, x, self.bn_training, _autocast_enabled(x))
            if reason is not None:
                return reason
        hooked = structure.snapshot.hooked
        if hooked:
            return "hooks", f"submodules {hooked} have hooks, which fire only when they run"
        problem = structure.problem
        if problem is not None:
            return "structure", f"it was changed after fusion into another function: {problem}"
        return None

    def _overflow_reason(
        self,
        x: Tensor,
        state: _EagerState | None = None,
        structure: _EagerState | None = None,
        autocast: bool | None = None,
    ) -> tuple[str, str] | None:
        """("overflow", reason) if BN-folded weights do not fit x's compute dtype, else None
        (`state`, `structure`, `autocast`: _weights_state() / _structure_state() /
        _autocast_enabled(x) if already taken)."""
        structure = structure if structure is not None else self._structure_state()
        if not structure.has_bn or x.is_meta:
            return None
        if state is None:
            state = self._weights_state(structure)
        if autocast is None:
            autocast = _autocast_enabled(x)
        dtype = torch.get_autocast_dtype(x.device.type) if autocast else x.dtype
        if dtype not in state.overflow:
            state.overflow[dtype] = fold_overflow(self, dtype)
        problem = state.overflow[dtype]
        return None if problem is None else ("overflow", problem)

    def _check_input(self, x: Tensor, conv: nn.Module | None = None) -> None:
        """The input errors, before any work (`conv`: branch1.conv if already read)."""
        if not isinstance(x, Tensor):
            raise TypeError(f"FusedInception expects a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(
                f"FusedInception expects a 4-D input [N, C, H, W], got shape {tuple(x.shape)}"
            )
        if conv is None:
            conv = self.branch1.conv
        if x.shape[1] != conv.in_channels:
            raise ValueError(
                f"FusedInception expects {conv.in_channels} input channels, "
                f"got {x.shape[1]} (input shape {tuple(x.shape)})"
            )
        if x.shape[2] == 0 or x.shape[3] == 0:
            raise RuntimeError(
                f"FusedInception expects H >= 1 and W >= 1, got input shape {tuple(x.shape)} "
                "(torchvision's block refuses an empty image too)"
            )
        if not x.is_floating_point():
            raise TypeError(f"FusedInception expects a floating-point input, got {x.dtype}")
        weight = conv.weight
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

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_state"] = None  # packed tensors are derived data; rebuilt on demand
        return state


def _autocast_enabled(x: Tensor) -> bool:
    """True under torch.autocast for x's device type (autocast leaves float64 alone)."""
    if x.dtype == torch.float64:
        return False
    try:
        return torch.is_autocast_enabled(x.device.type)
    except RuntimeError:  # a device type autocast does not know (meta, ...)
        return False


def check_recompute(value: object) -> None:
    """TypeError for a recompute that is not True, False or None."""
    if value not in (True, False, None) or not isinstance(value, (bool, type(None))):
        raise TypeError(f"recompute must be True, False or None (the default), got {value!r}")


def check_weight_check(value: str) -> None:
    """ValueError listing the choices for an unknown weight_check."""
    if value not in WEIGHT_CHECK_CHOICES:
        choices = ", ".join(map(repr, WEIGHT_CHECK_CHOICES))
        raise ValueError(f"unknown weight_check {value!r}; choose one of {choices}")
