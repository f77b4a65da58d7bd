"""Count the work of Triton launches by running them under Triton's interpreter.

Under TRITON_INTERPRET=1 every Triton operation of a kernel goes through one object,
`triton.runtime.interpreter.InterpreterBuilder`, and every launch through
`triton.runtime.interpreter.GridExecutor.__call__`. `count_work()` wraps those for the length
of a `with` block and records, per launch (`LaunchCount`):

- executed dot multiply-adds: for every `tl.dot` (and `tl.dot_scaled`) the M*N*K of its operand
  tiles (times any batch dimension), as tensor-core MACs when both operands are 16-bit floats
  (fp16/bf16: what the GPU runs on tensor cores), else in `other_dot_macs` (fp32 and the rest);
- gathered elements: the size of every `tl.gather` result;
- bytes loaded and stored: for every load and store (plain, masked, through a tensor
  descriptor: they all end in `create_masked_load` / `create_masked_store`), the elements whose
  mask is true times the pointer's element size, attributed to the kernel argument (tensor)
  whose memory the pointer falls in, plus the unique bytes of each tensor read and written
  (element-granular first touches); atomics count as a load and a store of each element;
- the kernel function actually run, its grid, programs, constexprs, num_warps and num_stages;
- what the package's launcher told `fused_inception.triton.common.launch_listener`: its kernel
  name, grid and useful multiply-adds (None for a launch that told nothing), and how its
  programs map to pixel rows (`common.RowTiles`): then the counts above (and the programs) are
  also summed per kind of program ("full" and "tail" row tiles, "image" parts) in `by_kind`,
  which is what lets fused_inception.report.work_analysis scale a count to another batch size
  tile by tile.

Counting needs the interpreter (CPU tensors): under a compiled launch nothing is counted.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np


@dataclass
class TensorUse:
    """One tensor argument of one launch and what the launch did with it.

    name: the kernel argument's name without its "_ptr" suffix ("x", "w_red", "out");
    key:  (address, span in bytes): the same memory in two launches has the same key;
    shape, itemsize: the tensor's; span: bytes from its first to its last element;
    loaded_bytes / stored_bytes: every masked-true element loaded / stored, times its size;
    read_bytes / written_bytes: the unique bytes of it loaded / stored at least once.
    """

    name: str
    key: tuple[int, int]
    shape: tuple[int, ...]
    itemsize: int
    span: int
    loaded_bytes: int = 0
    stored_bytes: int = 0
    _read: np.ndarray | None = field(default=None, repr=False)
    _written: np.ndarray | None = field(default=None, repr=False)

    @property
    def read_bytes(self) -> int:
        """Unique bytes of this tensor that the launch loaded."""
        return 0 if self._read is None else int(self._read.sum()) * self.itemsize

    @property
    def written_bytes(self) -> int:
        """Unique bytes of this tensor that the launch stored."""
        return 0 if self._written is None else int(self._written.sum()) * self.itemsize

    def touch(self, addresses: np.ndarray, nbytes: int, store: bool) -> None:
        """Record that `addresses` (inside this tensor) were loaded or stored, nbytes in all."""
        offsets = (addresses - np.uint64(self.key[0])) // np.uint64(self.itemsize)
        attr = "_written" if store else "_read"
        seen = getattr(self, attr)
        if seen is None:
            seen = np.zeros(max(1, self.span // self.itemsize), dtype=bool)
            setattr(self, attr, seen)
        seen[offsets.astype(np.int64)] = True
        if store:
            self.stored_bytes += nbytes
        else:
            self.loaded_bytes += nbytes

    def as_dict(self) -> dict:
        """Plain-JSON form."""
        return {
            "shape": list(self.shape),
            "itemsize": self.itemsize,
            "span_bytes": self.span,
            "key": list(self.key),
            "loaded_bytes": self.loaded_bytes,
            "stored_bytes": self.stored_bytes,
            "read_bytes": self.read_bytes,
            "written_bytes": self.written_bytes,
        }


@dataclass
class LaunchCount:
    """The counted work of one kernel launch (see the module docstring)."""

    kernel: str
    useful_macs: int | None
    listener_grid: tuple[int, ...] | None
    function: str = ""
    grid: tuple[int, ...] = ()
    num_warps: int | None = None
    num_stages: int | None = None
    constexprs: dict = field(default_factory=dict)
    mma_macs: int = 0
    other_dot_macs: int = 0
    gathered: int = 0
    loaded_bytes: int = 0
    stored_bytes: int = 0
    atomic_elements: int = 0
    unattributed_bytes: int = 0
    tensors: dict[str, TensorUse] = field(default_factory=dict)
    rows: dict | None = None  # RowTiles' numbers, if the launcher told them
    by_kind: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def programs(self) -> int:
        """Programs (CTAs) of the launch: the product of its grid."""
        return int(np.prod(self.grid)) if self.grid else 0

    def as_dict(self) -> dict:
        """Plain-JSON form (tensors by argument name)."""
        return {
            "kernel": self.kernel,
            "function": self.function,
            "grid": list(self.grid),
            "listener_grid": None if self.listener_grid is None else list(self.listener_grid),
            "programs": self.programs,
            "num_warps": self.num_warps,
            "num_stages": self.num_stages,
            "constexprs": self.constexprs,
            "useful_macs": self.useful_macs,
            "mma_macs": self.mma_macs,
            "other_dot_macs": self.other_dot_macs,
            "gathered": self.gathered,
            "loaded_bytes": self.loaded_bytes,
            "stored_bytes": self.stored_bytes,
            "atomic_elements": self.atomic_elements,
            "unattributed_bytes": self.unattributed_bytes,
            "tensors": {name: t.as_dict() for name, t in self.tensors.items()},
            "rows": self.rows,
            "by_kind": self.by_kind,
        }


# What by_kind sums per kind of program.
KIND_COUNTERS = (
    "programs", "mma_macs", "other_dot_macs", "gathered", "loaded_bytes", "stored_bytes",
)  # fmt: skip


class WorkLog:
    """What count_work yields: `launches` (one LaunchCount per executed launch, in order) and
    `listener_calls` (how many launches the package's launchers announced)."""

    def __init__(self) -> None:
        self.launches: list[LaunchCount] = []
        self.listener_calls = 0
        self.noted: LaunchCount | None = None  # told by the listener, not yet launched
        self.current: LaunchCount | None = None
        self._kind_of = None  # the current launch's RowTiles.kind
        self._bucket: dict[str, int] | None = None  # by_kind entry of the running program
        self._starts = np.zeros(0, dtype=np.uint64)
        self._ends = np.zeros(0, dtype=np.uint64)
        self._uses: list[TensorUse] = []

    # The launch: the listener first (package launchers), then the executor.
    def listen(self, kernel: str, grid: tuple[int, ...], useful_macs: int, rows=None) -> None:
        self.listener_calls += 1
        self.noted = LaunchCount(kernel, int(useful_macs), tuple(int(g) for g in grid))
        self._kind_of = None if rows is None else rows.kind
        if rows is not None:
            self.noted.rows = {
                "m": int(rows.m),
                "block_m": int(rows.block_m),
                "block_m_tail": int(rows.block_m_tail),
                "images": int(rows.images),
            }

    def begin(self, executor, args: tuple, kwargs: dict) -> None:
        launch = self.noted or LaunchCount("", None, None)
        if self.noted is None:
            self._kind_of = None
        self.noted = None
        self._bucket = None
        fn = executor.fn
        launch.function = getattr(fn, "__name__", str(fn))
        launch.kernel = launch.kernel or launch.function
        launch.num_warps = kwargs.get("num_warps")
        launch.num_stages = kwargs.get("num_stages")
        params = inspect.signature(fn).parameters
        bound = inspect.signature(fn).bind_partial(
            *args, **{k: v for k, v in kwargs.items() if k in params}
        )
        launch.constexprs = {
            k: v
            for k, v in bound.arguments.items()
            if k in executor.constexprs and isinstance(v, (bool, int, float, str))
        }
        uses = []
        for name, value in bound.arguments.items():
            if hasattr(value, "data_ptr") and hasattr(value, "element_size"):
                uses.append(_tensor_use(name.removesuffix("_ptr"), value))
        uses.sort(key=lambda u: u.key[0])
        launch.tensors = {u.name: u for u in uses}
        self._uses = uses
        self._starts = np.array([u.key[0] for u in uses], dtype=np.uint64)
        self._ends = np.array([u.key[0] + u.span for u in uses], dtype=np.uint64)
        grid = executor.grid
        if callable(grid):
            grid = launch.listener_grid or ()
        launch.grid = tuple(int(g) for g in grid)
        self.current = launch

    def end(self) -> None:
        if self.current is not None:
            self.launches.append(self.current)
        self.current = None
        self._kind_of = self._bucket = None

    def program(self, x: int, y: int, z: int) -> None:
        """The interpreter starts program (x, y, z) of the current launch."""
        if self.current is None or self._kind_of is None:
            return
        kind = self._kind_of((int(x), int(y), int(z)))
        bucket = self.current.by_kind.get(kind)
        if bucket is None:
            bucket = self.current.by_kind[kind] = dict.fromkeys(KIND_COUNTERS, 0)
        bucket["programs"] += 1
        self._bucket = bucket

    def _add(self, key: str, value: int) -> None:
        setattr(self.current, key, getattr(self.current, key) + value)
        if self._bucket is not None:
            self._bucket[key] += value

    # The operations.
    def memory(self, ptrs, mask, store: bool) -> None:
        launch = self.current
        if launch is None:
            return
        data = np.asarray(ptrs.data)
        valid = np.broadcast_to(np.asarray(mask.data, dtype=bool), data.shape)
        addresses = data[valid].astype(np.uint64, copy=False)
        if addresses.size == 0:
            return
        size = max(1, ptrs.get_element_ty().primitive_bitwidth // 8)
        nbytes = int(addresses.size) * size
        self._add("stored_bytes" if store else "loaded_bytes", nbytes)
        if not self._uses:
            launch.unattributed_bytes += nbytes
            return
        which = np.searchsorted(self._starts, addresses, side="right").astype(np.int64) - 1
        lo, hi = which.min(), which.max()
        if lo == hi and lo >= 0 and addresses.max() < self._ends[lo]:
            self._uses[lo].touch(addresses, nbytes, store)
            return
        inside = (which >= 0) & (addresses < self._ends[np.maximum(which, 0)])
        launch.unattributed_bytes += int((~inside).sum()) * size
        for i in np.unique(which[inside]):
            part = addresses[inside & (which == i)]
            self._uses[i].touch(part, int(part.size) * size, store)

    def dot(self, a, b, tensor_cores: bool | None = None) -> None:
        launch = self.current
        if launch is None:
            return
        a_shape, b_shape = np.shape(a.data), np.shape(b.data)
        macs = int(np.prod(a_shape)) * int(b_shape[-1])
        if tensor_cores is None:
            tensor_cores = all(
                h.dtype.is_floating() and h.dtype.primitive_bitwidth == 16 for h in (a, b)
            )
        self._add("mma_macs" if tensor_cores else "other_dot_macs", macs)

    def gather(self, indices) -> None:
        if self.current is not None:
            self._add("gathered", int(np.size(indices.data)))


def _tensor_use(name: str, t) -> TensorUse:
    shape = tuple(int(s) for s in t.shape)
    itemsize = int(t.element_size())
    if t.numel() == 0:
        span = 0
    else:
        span = (
            sum((s - 1) * abs(st) for s, st in zip(shape, t.stride(), strict=True)) + 1
        ) * itemsize
    return TensorUse(name, (int(t.data_ptr()), span), shape, itemsize, span)


def _wrap(cls, name: str, before, saved: list) -> None:
    original = getattr(cls, name)
    saved.append((cls, name, original))

    def wrapper(self, *args, **kwargs):
        before(*args, **kwargs)
        return original(self, *args, **kwargs)

    wrapper.__wrapped__ = original
    setattr(cls, name, wrapper)


@contextlib.contextmanager
def count_work() -> Iterator[WorkLog]:
    """Count every Triton launch inside the block; yields the WorkLog it fills.

    Installs the package's launch listener (restoring the previous one after) and wraps the
    interpreter's builder and grid executor (restored after). Needs TRITON_INTERPRET=1 set
    before triton and fused_inception were imported. Not thread-safe (nor is the interpreter).
    """
    from triton.runtime import interpreter

    from fused_inception.triton import INTERPRETER, common

    if not INTERPRETER:
        raise RuntimeError(
            "count_work needs TRITON_INTERPRET=1 set before fused_inception's import"
        )
    counter = WorkLog()
    builder = interpreter.InterpreterBuilder
    saved: list = []
    _wrap(builder, "create_masked_load", lambda p, m, *a, **k: counter.memory(p, m, False), saved)
    _wrap(
        builder, "create_masked_store", lambda p, v, m, *a, **k: counter.memory(p, m, True), saved
    )
    _wrap(builder, "create_dot", lambda a, b, *r, **k: counter.dot(a, b), saved)
    _wrap(
        builder, "create_dot_scaled", lambda a, _s, _f, b, *r, **k: counter.dot(a, b, True), saved
    )
    _wrap(builder, "create_gather", lambda src, idx, *a, **k: counter.gather(idx), saved)
    _wrap(builder, "set_grid_idx", lambda x, y, z: counter.program(x, y, z), saved)

    def atomic(ptr, mask) -> None:
        counter.memory(ptr, mask, False)
        counter.memory(ptr, mask, True)
        if counter.current is not None:
            counter.current.atomic_elements += int(np.broadcast_to(mask.data, ptr.data.shape).sum())

    _wrap(builder, "create_atomic_rmw", lambda _op, p, _v, m, *a, **k: atomic(p, m), saved)
    _wrap(
        builder,
        "create_atomic_cas",
        lambda p, *a, **k: atomic(p, _AllTrue(np.shape(p.data))),
        saved,
    )
    executor = interpreter.GridExecutor
    original_call = executor.__call__

    def call(self, *args, **kwargs):
        counter.begin(self, args, kwargs)
        try:
            return original_call(self, *args, **kwargs)
        finally:
            counter.end()

    executor.__call__ = call
    previous_listener = common.launch_listener
    common.launch_listener = counter.listen
    try:
        yield counter
    finally:
        common.launch_listener = previous_listener
        executor.__call__ = original_call
        for cls, name, original in reversed(saved):
            setattr(cls, name, original)


class _AllTrue:
    """A mask handle that is true everywhere (atomic_cas has none)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.data = np.ones(shape, dtype=bool)
