"""Autotuning of the Triton launches on a GPU, over a small config space pruned ahead of time.

Each launcher (block_1x1, block_kxk) has a model's choice of tile sizes (`pick_config`, the
roofline model of tiles.py) and a few alternatives around it (`tuning_candidates`: the other
pixel-row tile, narrower output blocks, 4 warps, 2 or 4 pipeline stages). On a GPU the first
launch of a shape times every candidate that the compile report found clean for the GPU's arch
and keeps the fastest for that shape; later launches of the shape use it without timing.

- Pruned ahead of time: `python -m fused_inception.report --tuning --write` compiles, for
  sm_80 and sm_90, the JIT's specializations of every candidate of GoogLeNet's launches and
  writes tuning_table.json next to this module: per arch, kernel family and dtype, the configs
  whose every specialization compiled without spills, without stack, with tensor cores and
  within the arch's shared memory ("clean"), and why the others were refused. A candidate that
  is not clean for the running arch is never launched; the model's pick always is (the main
  compile report checks it). On an arch the table does not list (neither sm_80 nor sm_90) only
  the pick runs: nothing is tuned there.
- Keyed by shape: the launcher's integer arguments (m = N*H*W, the channel counts, H, W, the
  strides and offsets), the dtype and the device. A new batch size is a new key.
- Off under the interpreter (its cost per program says nothing about a GPU), while a CUDA graph
  is being captured (a key tuned before is used; otherwise the pick, not remembered), and with
  FUSED_INCEPTION_AUTOTUNE=0 (the pick everywhere).
- A candidate that fails to compile or launch is skipped (its error kept in `results()`).
- The timed launches write the same outputs as the final one (every launch overwrites its
  output slices and scratch), which runs after tuning with the chosen config.
- fp32 is not tuned: its tl.dot runs on FMAs with 64 x 64 tiles, the one config that compiles
  without spills.

Tests force tuning under the interpreter with a fake timer (`forced`), so the selection, the
cache and the pruning run in CI; the timer used on a GPU is `cuda_event_timer`.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from . import INTERPRETER

ENV = "FUSED_INCEPTION_AUTOTUNE"
TABLE_PATH = Path(__file__).with_name("tuning_table.json")
TABLE_FORMAT = 1
# The archs the compile report checks (and so the table can list).
TABLE_ARCHS = ("sm_80", "sm_90")
# cuda_event_timer: launches per timed round, rounds (the median is kept).
TIMED_LAUNCHES = 10
TIMED_ROUNDS = 5


@dataclass
class Tuned:
    """What tuning found for one key: the chosen config, every candidate's time in seconds
    (None: it failed, see errors), and the errors by config."""

    config: NamedTuple
    times: dict[NamedTuple, float | None] = field(default_factory=dict)
    errors: dict[NamedTuple, str] = field(default_factory=dict)


_lock = threading.Lock()
_results: dict[tuple, Tuned] = {}
# forced(): (timer, arch) while a test forces tuning; capture_candidates(): True while the
# tuning report captures every candidate's launch.
_forced: tuple[Callable, str] | None = None
_capture_all = False


def results() -> dict[tuple, Tuned]:
    """A copy of the tuned keys and what was chosen for each."""
    with _lock:
        return dict(_results)


def clear() -> None:
    """Forget every tuned key (the next launch of each shape tunes again)."""
    with _lock:
        _results.clear()


def env_enabled() -> bool:
    return os.environ.get(ENV, "1") != "0"


@contextlib.contextmanager
def forced(timer: Callable[[Callable[[], None]], float], arch: str = "sm_90") -> Iterator[None]:
    """Tune even where tuning is off (under the interpreter, on CPU tensors), timing each
    candidate with timer(run) and pruning by the table's entries for `arch`. For tests; clears
    the results before and after."""
    global _forced
    if arch not in TABLE_ARCHS:
        raise ValueError(f"arch must be one of {TABLE_ARCHS}, got {arch!r}")
    clear()
    _forced = (timer, arch)
    try:
        yield
    finally:
        _forced = None
        clear()


@contextlib.contextmanager
def capture_candidates() -> Iterator[None]:
    """While launches are intercepted (fused_inception.triton.intercept_launches), have every
    launcher launch each of its candidates (each reaches the interceptor; nothing runs), then
    the pick. How the tuning report finds the specializations to compile."""
    global _capture_all
    _capture_all = True
    try:
        yield
    finally:
        _capture_all = False


@lru_cache(maxsize=1)
def table() -> dict:
    """The committed tuning table (empty archs if the file is missing or of another format)."""
    try:
        data = json.loads(TABLE_PATH.read_text())
    except (OSError, ValueError):
        return {"format": TABLE_FORMAT, "archs": {}}
    if data.get("format") != TABLE_FORMAT:
        return {"format": TABLE_FORMAT, "archs": {}}
    return data


def clean_configs(family: str, dtype_name: str, arch: str) -> set[tuple[int, ...]] | None:
    """The configs the table lists as clean for family/dtype on arch, or None if the table has
    no entry for them (nothing is tuned there)."""
    entry = table()["archs"].get(arch, {}).get(family, {}).get(dtype_name)
    if entry is None:
        return None
    return {tuple(item["config"]) for item in entry["clean"]}


def device_arch(device: Any) -> str | None:
    """ "sm_80" / "sm_90" for a CUDA device of those archs, else None."""
    import torch

    if device.type != "cuda":
        return None
    major, minor = torch.cuda.get_device_capability(device)
    arch = f"sm_{major}{minor}"
    return arch if arch in TABLE_ARCHS else None


def _graph_capturing() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def cuda_event_timer(run: Callable[[], None]) -> float:
    """Seconds per launch of run(): one untimed launch (compiles), then TIMED_ROUNDS rounds of
    TIMED_LAUNCHES launches between CUDA events on the current stream; the median round."""
    import torch

    run()
    torch.cuda.synchronize()
    rounds = []
    for _ in range(TIMED_ROUNDS):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(TIMED_LAUNCHES):
            run()
        end.record()
        end.synchronize()
        rounds.append(start.elapsed_time(end) * 1e-3 / TIMED_LAUNCHES)
    return statistics.median(rounds)


def _unique(configs: Sequence[NamedTuple]) -> list[NamedTuple]:
    seen: dict[NamedTuple, None] = {}
    for cfg in configs:
        seen.setdefault(cfg, None)
    return list(seen)


def choose(
    family: str,
    key: tuple,
    device: Any,
    dtype_name: str,
    pick: NamedTuple,
    candidates: Callable[[], Sequence[NamedTuple]],
    check: Callable[[NamedTuple], None],
    run: Callable[[NamedTuple], None],
) -> NamedTuple:
    """The config for one launch of `family`.

    key:        the launch's shape (its integer arguments); the device and dtype are added
    pick:       the model's config (common.launch_config applied), the answer whenever nothing
                is tuned; the launcher has checked it can launch
    candidates: the alternatives (pick among them or not), called only when tuning
    check:      the launcher's checks of a config for this shape (int32 tile offsets, grid
                limits): a candidate for which it raises ValueError is left out
    run:        launches one config (the timer calls it; it writes the launch's outputs)
    """

    def usable(cfg: NamedTuple) -> bool:
        try:
            check(cfg)
        except ValueError:
            return False
        return True

    if _capture_all:
        for cfg in _unique([*candidates(), pick]):
            if usable(cfg):
                run(cfg)
        return pick
    if _forced is not None:
        timer, arch = _forced
    elif INTERPRETER or not env_enabled():
        return pick
    else:
        timer, arch = cuda_event_timer, device_arch(device)
        if arch is None:
            return pick
    full_key = (family, dtype_name, str(device), *key)
    with _lock:
        tuned = _results.get(full_key)
    if tuned is not None:
        return tuned.config
    if _forced is None and _graph_capturing():
        return pick
    clean = clean_configs(family, dtype_name, arch)
    if clean is None:
        return pick
    space = [pick] + [
        c for c in _unique(candidates()) if c != pick and tuple(c) in clean and usable(c)
    ]
    tuned = Tuned(pick)
    if len(space) > 1:
        for cfg in space:
            try:
                tuned.times[cfg] = float(timer(lambda cfg=cfg: run(cfg)))
            except Exception as exc:  # a candidate that fails to compile or launch is skipped
                if cfg == pick:
                    raise
                tuned.times[cfg] = None
                tuned.errors[cfg] = f"{type(exc).__name__}: {exc}"
        timed = [(t, i) for i, t in enumerate(tuned.times.values()) if t is not None]
        tuned.config = space[min(timed)[1]]
    with _lock:
        _results[full_key] = tuned
    return tuned.config
