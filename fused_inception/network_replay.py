"""Whole-network replay: a prepared torchvision GoogLeNet's eval forward on the CPU without the
per-module Python around its operators.

Each fused block and folded unit replays its last eval call by itself (module.py _planned), but
a forward still pays, per module, nn.Module.__call__, the forward's dispatch and the replay's own
global checks (autograd, tracing, autocast, the settings policy, the plan lookup), each with
cold caches inside the network. prepare_for_inference (inference.py) attaches a NetworkReplay
to a torchvision GoogLeNet (that class itself, whose forward is a chain of module calls and
tensor functions) as its `_compiled_call_impl`: the slot nn.Module.__call__ calls instead of
its own call path when it is set (nn.Module.compile() sets it too: a model compiled before it
is prepared keeps its compiled call, and compiling it afterwards replaces the replay; pickling
and copy.deepcopy drop it, as they drop a compiled call). Measured on the project's 2-core
Xeon: a batch-1 forward 0.95-0.99x the time (README "Whole-model inference").

What a call does:
- anything but one plain CPU tensor in eval mode with no autograd recording, autocast, tracing,
  compiling, torch function mode, hooks on the model or global module hooks runs the model's
  own call (`_call_impl`), unchanged;
- otherwise the model's forward, traced by torch.fx with every submodule a leaf (so the graph
  holds only the forward's own code: module calls and tensor functions; traced again when the
  model's attributes or children change), runs node by node (_Program), each activation freed
  after its last use;
- a module the graph calls runs its forward() directly (what __call__ does where neither it
  nor the process has hooks; hooks on one make the model's own call run). For each input
  layout, the first calls record (_Program._record): every module's forward() runs, and the
  fused blocks', folded units' and NHWC max-pools' last calls become the layout's steps
  (_LayoutPlan), which later calls make directly while a snapshot of the model and of every
  module the graph calls (taken after the recording: attributes, children, hooks, caches)
  still matches, the settings policies hold (read once per forward) and each block's and
  unit's own checks pass (its plan for that layout, its structure snapshot, its weights: all
  before the first operator where the graph calls only the package's and torch.nn's modules,
  else each just before its call). Anything else runs that module's forward() and records
  again. So every output is the one the model's own call computes: the same operators on the
  same arguments.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch
import torch.fx
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

from .folded_unit import FoldedConvUnit
from .module import FusedInception, replay_allowed
from .nhwc_pool import NhwcMaxPool2d
from .structure import StructureSnapshot, _has_hooks

# Whether attached replays run (tests switch it off to compare with the model's own call).
ENABLED = True
# Input layouts (shape, strides, dtype) a replay keeps plans for (then it starts over).
MAX_LAYOUTS = 4
# Recording calls per layout before a plan that still lacks some module's plan is kept as it is.
MAX_RECORDINGS = 4
# Traces of the forward per replay before it gives up (a structure that never stays the same).
MAX_TRACES = 16

# torch's process-wide module hooks (any set: the model's own call runs); None where this torch
# lacks one of them (the replay then never runs).
_GLOBAL_HOOK_NAMES = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
)
_GLOBAL_HOOKS = tuple(getattr(_torch_module, name, None) for name in _GLOBAL_HOOK_NAMES)
# Modules whose last call the replay makes itself: the fused blocks' and units' plans, the
# max-pools' direct operator call (NhwcMaxPool2d._fast).
_REPLAYED = (FusedInception, FoldedConvUnit, NhwcMaxPool2d)
_FORWARD_METHODS = ("forward", "_forward", "_transform_input", "eager_outputs")
_KNOWN_MODULES = ("fused_inception.", "torch.nn.")


def replayable(model: nn.Module) -> bool:
    """True if `model` is a torchvision GoogLeNet (that class itself: its forward is a chain of
    module calls and tensor functions) with no instance attribute in place of its forward's
    methods, on a torch with the module call slot and global hooks the replay relies on."""
    try:
        from torchvision.models import GoogLeNet
    except ImportError:  # (torchvision is the reference, not a dependency)
        return False
    return (
        type(model) is GoogLeNet
        and not any(name in model.__dict__ for name in _FORWARD_METHODS)
        and hasattr(nn.Module, "_compiled_call_impl")
        and all(hooks is not None for hooks in _GLOBAL_HOOKS)
    )


def attach(model: nn.Module) -> bool:
    """Attach a NetworkReplay to `model` where replayable(model) holds and its call slot is free
    (or already holds one); True if the model has one now."""
    current = model.__dict__.get("_compiled_call_impl")
    if isinstance(current, NetworkReplay):
        return True
    if current is not None or not replayable(model):
        return False
    model._compiled_call_impl = NetworkReplay(model)
    return True


def detach(model: nn.Module) -> None:
    """Remove the model's NetworkReplay (a compiled call or anything else there stays)."""
    if isinstance(model.__dict__.get("_compiled_call_impl"), NetworkReplay):
        del model.__dict__["_compiled_call_impl"]


def replay_of(model: nn.Module) -> NetworkReplay | None:
    """The model's NetworkReplay, or None."""
    replay = model.__dict__.get("_compiled_call_impl")
    return replay if isinstance(replay, NetworkReplay) else None


class NetworkReplay:
    """The call slot of a prepared model (see the module docstring). `replays` counts the calls
    it ran (the others ran the model's own call)."""

    def __init__(self, model: nn.Module) -> None:
        self._model = weakref.ref(model)  # (the model holds this object)
        self._cls = type(model)
        self._program: _Program | None = None
        self._traces = 0
        self.replays = 0

    def __call__(self, *args, **kwargs):
        model = self._model()
        if torch.compiler.is_compiling():  # (first: what torch.compile sees is the plain call)
            return model._call_impl(*args, **kwargs)
        out = self._replayed(model, args, kwargs) if ENABLED else None
        return model._call_impl(*args, **kwargs) if out is None else out

    def _replayed(self, model: nn.Module, args: tuple, kwargs: dict) -> Tensor | None:
        if kwargs or len(args) != 1 or model.training or type(model) is not self._cls:
            return None
        x = args[0]
        if type(x) is not Tensor or not replay_allowed(x) or _hooked(model):
            return None
        program = self._current_program(model)
        out = None if program is None else program.run(x)
        if out is not None:
            self.replays += 1
        return out

    def _current_program(self, model: nn.Module) -> _Program | None:
        program = self._program
        if program is not None and program.snapshot.matches():
            return program
        self._program = None
        if self._traces >= MAX_TRACES or not replayable(model):
            return None
        self._traces += 1
        try:
            graph = _LeafTracer().trace(model)
        except Exception:  # noqa: BLE001  a forward torch.fx cannot trace runs as it is
            return None
        self._program = _Program(model, graph)
        return self._program


def _hooked(model: nn.Module) -> bool:
    """Hooks on the model itself or process-wide module hooks."""
    return _has_hooks(model) or any(_GLOBAL_HOOKS)


class _LeafTracer(torch.fx.Tracer):
    """Every submodule a leaf: the graph holds the root forward's own code only."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return True


class _Program:
    """The traced forward as a list of steps, with the snapshot it holds for and its plans per
    input layout."""

    def __init__(self, model: nn.Module, graph: torch.fx.Graph) -> None:
        nodes = list(graph.nodes)
        index = {node: i for i, node in enumerate(nodes)}
        self.modules: dict[int, nn.Module] = {}
        # (op, target, args, kwargs): Nodes as _Slots, kwargs None for flat arguments
        self.steps: list[tuple] = []
        for node in nodes:
            args = torch.fx.node.map_arg(node.args, lambda n: _Slot(index[n]))
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: _Slot(index[n]))
            target = node.target
            if node.op == "call_module":
                target = model.get_submodule(node.target)
                self.modules[index[node]] = target
            elif node.op == "get_attr":
                target = node.target.split(".")
            flat = not kwargs and not any(isinstance(a, (tuple, list, dict)) for a in args)
            self.steps.append((node.op, target, args, None if flat else kwargs))
        # The slots each step is the last user of: freed right after it, as the forward drops
        # a tensor it rebinds (kept to the end, the activations took new, cold memory on every
        # step: the batch-1 network took no less time than the model's own call).
        last_use: dict[int, int] = {}
        for node in nodes:
            for used in node.all_input_nodes:
                last_use[index[used]] = index[node]
        self.frees: list[tuple[int, ...]] = [() for _ in nodes]
        for slot, user in last_use.items():
            self.frees[user] += (slot,)
        # The modules the graph calls (the replay calls their forward(): their hooks are looked
        # for before each recording, and a layout plan's snapshot covers them after it), and
        # the snapshot of what the graph itself rests on: the model's attributes and children,
        # and those of the modules on the way to a called one ("a.b": a). What a called module
        # holds is its own forward's to check (the blocks' and units' steps check it as their
        # own replays do), so their caches may come and go without a new trace.
        self.called = tuple(dict.fromkeys(self.modules.values()))
        # Only the package's and torch.nn's modules: none changes another module's weights or
        # structure, or torch's grad or autocast modes, in its forward, so the replayed calls'
        # checks may all run first (_LayoutPlan).
        self.known = all(type(m).__module__.startswith(_KNOWN_MODULES) for m in self.called)
        paths = [node.target.split(".") for node in nodes if node.op == "call_module"]
        between = {".".join(parts[:k]) for parts in paths for k in range(1, len(parts))}
        self.snapshot = StructureSnapshot(model, [model.get_submodule(p) for p in sorted(between)])
        self.model = weakref.ref(model)
        self.plans: dict[tuple, _LayoutPlan] = {}

    def run(self, x: Tensor) -> Tensor | None:
        """The forward on x: the layout's plan while it holds, else recorded anew; None where a
        module the graph calls has hooks (they fire in the model's own call)."""
        key = (x.shape, x.stride(), x.dtype)
        plan = self.plans.get(key)
        if (
            plan is not None
            and not plan.fell_back
            and (plan.complete or plan.recordings >= MAX_RECORDINGS)
            and not plan.hooked
            and plan.snapshot.matches()  # (hooks too)
            and plan.policies_hold()
            and plan.checks_hold()
        ):
            return self._execute(x, plan.steps, None)
        if any(map(_has_hooks, self.called)):
            return None
        return self._record(x, key)

    def _record(self, x: Tensor, key: tuple) -> Tensor:
        """Run the forward with each module's own forward, noting the input layouts of the
        modules it replays, and make the layout's plan from what those calls left."""
        seen: dict[int, tuple] = {}
        out = self._execute(x, {}, seen)
        old = self.plans.get(key)
        if old is None and len(self.plans) >= MAX_LAYOUTS:
            self.plans.clear()
        # (recordings in a row that left some module without a plan)
        before = old.recordings if old is not None and not old.complete else 0
        self.plans[key] = _LayoutPlan(
            self.model(), self.modules, self.called, seen, before + 1, self.known
        )
        return out

    def _execute(self, x: Tensor, planned: dict[int, Callable], seen: dict | None):
        """The graph on x: a step of `planned` where it has one, else each module's forward();
        with `seen`, note there the input layouts of the fused blocks and units."""
        values: list = [None] * len(self.steps)
        frees = self.frees
        for i, (op, target, args, kwargs) in enumerate(self.steps):
            if op == "placeholder":
                values[i] = x
                continue
            if kwargs is None:  # (flat arguments, no keywords: most nodes)
                args = tuple([values[a.i] if a.__class__ is _Slot else a for a in args])
                kwargs = _NO_KWARGS
            else:
                args = _resolve(args, values)
                kwargs = _resolve(kwargs, values)
            for slot in frees[i]:
                values[slot] = None
            if op == "call_module":
                step = planned.get(i)
                if step is not None:
                    values[i] = step(*args, **kwargs)
                    continue
                if seen is not None and isinstance(target, _REPLAYED) and len(args) == 1:
                    t = args[0]
                    if type(t) is Tensor:
                        seen[i] = (t.shape, t.stride(), t.dtype)
                values[i] = target.forward(*args, **kwargs)
            elif op == "call_function":
                values[i] = target(*args, **kwargs)
            elif op == "call_method":
                values[i] = getattr(args[0], target)(*args[1:], **kwargs)
            elif op == "get_attr":
                obj = self.model()
                for name in target:
                    obj = getattr(obj, name)
                values[i] = obj
            else:  # output
                return args[0]
        raise RuntimeError("the traced forward has no output")


_NO_KWARGS: dict = {}


class _Slot:
    """A node's value in _Program._execute (slot i)."""

    __slots__ = ("i",)

    def __init__(self, i: int) -> None:
        self.i = i


def _resolve(arg, values: list):
    """arg with each _Slot replaced by its value, in nested tuples, lists and dicts too."""
    if isinstance(arg, _Slot):
        return values[arg.i]
    if isinstance(arg, (tuple, list)):
        return type(arg)(_resolve(a, values) for a in arg)
    if isinstance(arg, dict):
        return {k: _resolve(v, values) for k, v in arg.items()}
    return arg


class _LayoutPlan:
    """For one input layout: the steps that replay a module's last call (recorded by
    _Program._record: a fused block's or unit's ready plan, a max-pool's direct call), their
    checks, and a snapshot of the model and of every module the graph calls, taken after that
    recording (their attributes, hooks and caches: a block's or unit's state, a pool's call),
    on which the steps rest.

    With `upfront` (the graph calls only the package's and torch.nn's modules) every step's
    checks run before the forward (checks_hold): hashing the weights between the operators
    took the caches from them (a prototype of the batch-1 network with each check just before
    its call took 0.998-1.067x the time of the same checks first, nine runs in one process on
    the project's 2-core Xeon, 2026-12-06); otherwise each step checks itself just before its
    call.
    A step whose input has another layout than recorded runs its module's forward()."""

    def __init__(
        self,
        model: nn.Module,
        modules: dict[int, nn.Module],
        called: tuple[nn.Module, ...],
        seen: dict[int, tuple],
        recordings: int,
        upfront: bool,
    ) -> None:
        self.steps: dict[int, Callable] = {}
        self.checks: list[Callable[[], bool]] = []
        self.policies: dict[Callable, object] = {}
        self.recordings = recordings
        self.upfront = upfront
        self.complete = True  # every module seen left a call to replay
        self.fell_back = False  # a step ran its module's forward(): record again
        for i, key in seen.items():
            step = self._step(modules[i], key)
            if step is None:
                self.complete = False
            else:
                self.steps[i] = step
        self.snapshot = StructureSnapshot(model, list(called))
        # (hooks a forward registered while recording: their module's forward() is not called)
        self.hooked = bool(self.snapshot.hooked)

    def policies_hold(self) -> bool:
        """The settings every recorded plan was made under hold still (each policy read once)."""
        return all(policy_of() == value for policy_of, value in self.policies.items())

    def checks_hold(self) -> bool:
        """Every step's checks (upfront), in the forward's order."""
        return all(check() for check in self.checks)

    def _step(self, module: nn.Module, key: tuple) -> Callable | None:
        if isinstance(module, NhwcMaxPool2d):
            fast = module.__dict__.get("_fast")
            if fast is None or tuple(fast[0][:3]) != key:
                return None
            # (its arguments, in the pool's attributes, are in the plan's snapshot)
            return self._guarded(module, key, lambda t, op=fast[1], a=fast[2]: op(t, *a), None)
        state = module.__dict__.get("_state")
        plan = state.plans.get(key) if state is not None else None
        if plan is None or not plan.ready or plan.policy_of() != plan.policy:
            return None
        if self.policies.setdefault(plan.policy_of, plan.policy) != plan.policy:
            return None

        def check() -> bool:
            """_ready_plan's checks but the settings (policies_hold, once per forward) and the
            global modes (NetworkReplay._replayed; per step without upfront), then the
            weights. The state is the one the plan's snapshot saw (in the module's dict), so
            the plan is current if the state still holds it for this layout."""
            return (
                state.plans.get(key) is plan
                and state.snapshot.matches()
                and module._weights_hold(state, plan)
            )

        return self._guarded(module, key, lambda t: module._replay_call(plan, t), check)

    def _guarded(self, module: nn.Module, key: tuple, call: Callable, check) -> Callable:
        """call(t) on an input of the recorded layout after `check` (kept for checks_hold with
        upfront), else the module's forward(t)."""
        upfront = self.upfront
        if upfront and check is not None:
            self.checks.append(check)

        def step(t: Tensor) -> Tensor:
            if (
                type(t) is Tensor
                and t.shape == key[0]
                and t.dtype == key[2]
                and t.stride() == key[1]
                and (upfront or (replay_allowed(t) and (check is None or check())))
            ):
                return call(t)
            self.fell_back = True
            return module.forward(t)

        return step
