"""Counting the cuda backend's launches on the SIMT shim, in the work report's launch format.

The CUDA C++ kernels run on CPU tensors through the SIMT shim (FUSED_INCEPTION_EMULATE_CUDA=1),
whose emulated PTX instructions count what hardware would otherwise tell
(csrc/simt/simt.h, LaunchStats): executed mma.sync multiply-adds, the global bytes cp.async
copies read (attributed to the launch's input tensors by address), and the bank-conflict degree
of every warp-wide shared-memory access. `count_shim()` turns them on around a forward
(fused_inception::emulated_counters_start / _stop) and yields the launches as dicts with the
fields of fused_inception.report.counting.LaunchCount.as_dict, so that the work report's
analysis treats both backends alike.

What the shim counts and what is derived here:
- counted: programs (CTAs), threads, executed MMA MACs, cp.async bytes read per input tensor,
  the shared-memory conflict counters;
- derived from the launch's shapes: the useful MACs (the block's multiply-adds the launch
  exists to compute, as the Triton launchers announce them) and the bytes stored (each output
  element once: the CUDA kernels store with plain stores, which the shim does not count; the
  parity tests with poisoned outputs show every element is written);
- not counted: the bias reads (plain loads, at most a few hundred bytes per CTA);
- the unique bytes of an input read by a launch (`read_bytes`, what the MODEL's DRAM rule
  charges): the shim counts every cp.async byte, not which bytes, so this is the smaller of the
  bytes loaded and the tensor's size, an upper bound (both kernels read each of their inputs
  whole, which the tests check as loaded >= size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fused_inception import _ext


class ShimLog:
    """What count_shim yields: `launches` (one dict per counted launch, in order, filled when
    the block exits) and `listener_calls` (how many operator calls the backend announced)."""

    def __init__(self) -> None:
        self.launches: list[dict] = []
        self.listener_calls = 0


def _pixels_and_channels(args: tuple, op: str) -> dict:
    """The shapes of one operator call (the arguments fused_inception/backends/blockwise.py
    passes), for the useful MACs and the stored bytes."""
    if op == "block_1x1_":
        x, w_x, _, w_pool, _, out, r, c1, _ = args
        m = x.shape[0] * x.shape[2] * x.shape[3]
        c_in, n_x, c_pool = x.shape[1], w_x.shape[1], w_pool.shape[1]
        item = x.element_size()
        return {
            "useful_macs": m * c_in * (n_x + c_pool),
            "written": {"out": m * (c1 + c_pool) * item, "r": m * (n_x - c1) * item},
            "tensors": {"x": x, "w_x": w_x, "w_pool": w_pool, "out": out, "r": r},
        }
    r, w2, _, w3, _, out, c2r, _, _ = args
    m, item = r.shape[0], r.element_size()
    c3r, c2, c3 = r.shape[1] - c2r, w2.shape[2], w3.shape[2]
    return {
        "useful_macs": m * (w2.shape[0] * c2r * c2 + w3.shape[0] * c3r * c3),
        "written": {"out": m * (c2 + c3) * item},
        "tensors": {"r": r, "w2": w2, "w3": w3, "out": out},
    }


def _launch_dict(op: str, regions: list[str], counters: dict, shapes: dict) -> dict:
    tensors = {}
    for name, t in shapes["tensors"].items():
        index = regions.index(name) if name in regions else None
        read = counters[f"region{index}_bytes"] if index is not None else 0
        written = shapes["written"].get(name, 0)
        span = t.numel() * t.element_size()
        tensors[name] = {
            "shape": list(t.shape),
            "itemsize": t.element_size(),
            "span_bytes": span,
            "key": [t.data_ptr()],
            "loaded_bytes": read,
            "stored_bytes": written,
            "read_bytes": min(read, span),
            "written_bytes": written,
        }
    attributed = sum(t["loaded_bytes"] for t in tensors.values())
    degrees = {
        kind: counters[f"{kind}_max_degree"]
        for kind in ("ldmatrix", "lds", "sts")
        if counters[f"{kind}_instructions"]
    }
    name = op.removesuffix("_")
    return {
        "kernel": name,
        "function": name,
        "grid": [counters["blocks"]],
        "listener_grid": None,
        "programs": counters["blocks"],
        "num_warps": counters["threads_per_block"] // 32,
        "num_stages": None,
        "constexprs": {},
        "useful_macs": shapes["useful_macs"],
        "mma_macs": counters["mma_macs"],
        "other_dot_macs": 0,
        "gathered": 0,
        "loaded_bytes": counters["cp_async_bytes"],
        "stored_bytes": sum(shapes["written"].values()),
        "atomic_elements": 0,
        "unattributed_bytes": counters["cp_async_bytes"] - attributed,
        "tensors": tensors,
        "dynamic_shared_bytes": counters["dynamic_shared_bytes"],
        "bank_conflict_degree": degrees,
        "shared_wavefronts_per_phase": {
            kind: counters[f"{kind}_wavefronts"] / counters[f"{kind}_phases"]
            for kind in degrees
            if counters[f"{kind}_phases"]
        },
    }


@contextlib.contextmanager
def count_shim() -> Iterator[ShimLog]:
    """Counts every emulated launch of fused_inception::block_1x1_ and block_kxk_ inside the
    block (CPU tensors, FUSED_INCEPTION_EMULATE_CUDA=1); `log.launches` holds them afterwards,
    in order. Counting is off again when the block exits, also after an error."""
    if "emulated" not in _ext.op("cuda_kernel_builds")():
        raise RuntimeError("counting on the shim needs the emulated build of the CUDA kernels")
    from fused_inception.backends import cuda as cuda_backend

    if cuda_backend.launch_listener is not None:
        raise RuntimeError("count_shim: a launch listener is already installed (nested counting)")
    log = ShimLog()
    calls: list[tuple[str, tuple]] = []
    cuda_backend.launch_listener = lambda op, args: calls.append((op, args))
    _ext.op("emulated_counters_start")()
    try:
        yield log
    finally:
        launches, names, values = _ext.op("emulated_counters_stop")()
        cuda_backend.launch_listener = None
    log.listener_calls = len(calls)
    width = len(names)
    if len(launches) != len(calls):
        raise RuntimeError(f"{len(calls)} operator calls but {len(launches)} counted launches")
    for i, ((op, args), launch) in enumerate(zip(calls, launches, strict=True)):
        logged_op, _, regions = launch.partition("|")
        if logged_op != f"fused_inception::{op}":
            raise RuntimeError(f"launch {i}: counted {logged_op}, called {op}")
        counters = dict(zip(names, values[i * width : (i + 1) * width], strict=True))
        shapes = _pixels_and_channels(args, op)
        log.launches.append(_launch_dict(op, regions.split(","), counters, shapes))
