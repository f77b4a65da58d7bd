"""Timing primitives shared by the benchmark CLI and the pytest-benchmark suite.

CPU: wall clock around each call, warm-up first, the candidates interleaved call by call (or in
short runs of calls each, `run_length`) so that drifts in clock speed or load hit all of them
alike, medians reported.
CUDA: CUDA events around each call after a synchronize, same interleaving.
Inputs rotate (`cycling`): each candidate walks through several distinct input tensors, together
larger than the last-level cache, so that no call finds its input already cached. Compilation
and other first-call costs are measured apart (`first_call_seconds`), never inside a median.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch


def _time_call(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def cycling(
    fn: Callable[[torch.Tensor], object], inputs: Sequence[torch.Tensor], start: int = 0
) -> Callable[[], object]:
    """A no-argument callable that calls `fn` on inputs[start], inputs[start + 1], ... in turn.

    Give each interleaved candidate a different `start` (spread over the list) so that the input
    one candidate just read is not the next one's.
    """
    position = start

    def call() -> object:
        nonlocal position
        x = inputs[position % len(inputs)]
        position += 1
        return fn(x)

    return call


def first_call_seconds(fn: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of one call, synchronized: the cost of a first call that compiles."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def samples_ms_interleaved(
    fns: Sequence[Callable[[], object]],
    device: torch.device,
    *,
    warmup: int = 2,
    repeats: int = 10,
    min_seconds: float = 0.0,
    run_length: int = 1,
) -> list[list[float]]:
    """Milliseconds of every timed call of each of `fns`, measured interleaved.

    Each round calls every function in turn, `run_length` times in a row (each call timed); at
    least `repeats` rounds are run, more until `min_seconds` of rounds have passed. With
    run_length 1 every call follows the other candidates' calls, which have taken the caches;
    with several, most calls follow calls of the same function, as in a loop that serves one
    model (a median is over every call, the first of each run included).
    """
    if run_length < 1:
        raise ValueError(f"run_length must be at least 1, got {run_length}")
    for _ in range(warmup):
        for fn in fns:
            fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    samples: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - start < min_seconds:
        for i, fn in enumerate(fns):
            for _ in range(run_length):
                samples[i].append(_time_call(fn, device))
        rounds += 1
    return samples
