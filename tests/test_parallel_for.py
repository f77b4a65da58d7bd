"""The CPU operators' parallel loop (csrc/cpu/parallel.h): each thread takes its static range in
steps, and a thread done with its own takes steps from the back of the others'. Seen through
torch.ops.fused_inception.parallel_for_probe: per item, how many times the loop's function saw it
and the thread that took it."""

from __future__ import annotations

import time

import pytest
import torch

import fused_inception  # noqa: F401  (loads the extension)


def probe(n: int, grain: int, threads: int, hold_first: bool = False) -> torch.Tensor:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return torch.ops.fused_inception.parallel_for_probe(n, grain, hold_first)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "n, grain", [(0, 1), (1, 1), (2, 1), (3, 1), (7, 2), (5, 100), (64, 1), (100, 7), (4099, 3)]
)
def test_every_item_is_taken_exactly_once(n, grain, threads):
    seen = probe(n, grain, threads)
    assert seen.shape == (n, 2)
    assert torch.equal(seen[:, 0], torch.ones(n, dtype=torch.long))
    # No more threads than the items allow in grains
    assert seen[:, 1].unique().numel() <= max(1, min(threads, -(-n // grain)))


@pytest.mark.parametrize("n, grain", [(64, 1), (65, 4), (9, 1)])
def test_a_stalled_thread_has_the_tail_of_its_range_taken_over(n, grain):
    # Thread 0 waits at item 0 (up to 10 s) until another thread has taken an item of its range:
    # only a thread taking over the back of that range can, so without the take-over this times
    # out.
    start = time.monotonic()
    seen = probe(n, grain, 2, hold_first=True)
    assert time.monotonic() - start < 5.0
    assert torch.equal(seen[:, 0], torch.ones(n, dtype=torch.long))
    first_range = -(-n // 2)
    others = (seen[:first_range, 1] != 0).nonzero().flatten()
    assert others.numel() > 0, "no item of the stalled thread's range was taken over"
    # Thread 0 took its range from the front, the other thread from the back: one cut.
    assert torch.equal(others, torch.arange(others[0].item(), first_range))
    if seen[0, 1] == 0:  # thread 0 started in time: its first step (half, >= a grain) is its own
        assert others[0].item() >= min(first_range, max(grain, first_range // 2))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="n >= 0 and grain_size >= 1"):
        torch.ops.fused_inception.parallel_for_probe(-1, 1, False)
    with pytest.raises(ValueError, match="grain_size"):
        torch.ops.fused_inception.parallel_for_probe(4, 0, False)
