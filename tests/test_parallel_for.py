"""The CPU operators' parallel loops (csrc/cpu/parallel.h). parallel_for: each thread takes its
static range in steps, and a thread done with its own takes steps from the back of the others'.
Seen through torch.ops.fused_inception.parallel_for_probe: per item, how many times the loop's
function saw it and the thread that took it. parallel_for_ordered (the block operator's GEMMs
in one loop, the KxKs after the 1x1 that writes their input): tasks taken one at a time in order,
a job's tasks starting once the jobs it waits for have ended; seen through
parallel_for_ordered_probe."""

from __future__ import annotations

import time

import pytest
import torch

import fused_inception  # noqa: F401  (loads the extension)


def on_threads(threads: int, op, *args) -> torch.Tensor:
    """op(*args) with torch's thread count set to `threads` for the call."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return op(*args)
    finally:
        torch.set_num_threads(before)


def probe(n: int, grain: int, threads: int, hold_first: bool = False) -> torch.Tensor:
    return on_threads(threads, torch.ops.fused_inception.parallel_for_probe, n, grain, hold_first)


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
    # Thread 0 took its range from the front, the other thread from the back: one cut. (How far
    # the cut is from the front depends on when thread 0 started: where the other thread had
    # taken over all but item 0 before, thread 0's first step was item 0 alone.)
    assert torch.equal(others, torch.arange(others[0].item(), first_range))


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="n >= 0 and grain_size >= 1"):
        torch.ops.fused_inception.parallel_for_probe(-1, 1, False)
    with pytest.raises(ValueError, match="grain_size"):
        torch.ops.fused_inception.parallel_for_probe(4, 0, False)


def ordered(tasks, after, threads, hold=-1, throw=-1) -> torch.Tensor:
    op = torch.ops.fused_inception.parallel_for_ordered_probe
    return on_threads(threads, op, tasks, after, hold, throw)


def assert_ordered(seen: torch.Tensor, tasks: list[int], after: list[int]) -> None:
    """Every task ran once; each started after every task of the jobs it waits for had ended;
    each thread's `next` was the task it ran next (-1 after its last)."""
    total = sum(tasks)
    assert seen.shape == (total, 5)
    assert torch.equal(seen[:, 0], torch.ones(total, dtype=torch.long))
    ends = torch.tensor(tasks).cumsum(0).tolist()
    for j, (count, wait) in enumerate(zip(tasks, after, strict=True)):
        first = ends[j] - count
        if wait and count and ends[wait - 1] > 0:
            assert seen[first : ends[j], 2].min() > seen[: ends[wait - 1], 3].max(), (
                f"job {j} started before the jobs it waits for had ended"
            )
    for thread in seen[:, 1].unique().tolist():
        mine = (seen[:, 1] == thread).nonzero().flatten()
        mine = mine[seen[mine, 2].argsort()]  # in the order it ran them
        assert seen[mine[:-1], 4].tolist() == mine[1:].tolist()
        assert seen[mine[-1], 4].item() == -1


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize(
    "tasks, after",
    [
        ([], []),
        ([1], [0]),
        ([4, 3, 5], [0, 1, 1]),  # the block's loop: 1x1 over x, b4's 1x1, two KxKs
        ([2, 0, 3, 1], [0, 1, 2, 3]),  # an empty job, each waiting for all before it
        ([7, 5], [0, 0]),
        ([1, 9], [0, 1]),
    ],
)
def test_ordered_tasks_run_once_after_what_they_wait_for(tasks, after, threads):
    seen = ordered(tasks, after, threads)
    assert_ordered(seen, tasks, after)
    if threads == 1:  # in order on the calling thread
        assert torch.equal(seen[:, 2].argsort(), torch.arange(sum(tasks)))


@pytest.mark.parametrize("threads", [2, 3])
def test_an_ordered_job_waits_for_a_stalled_task(threads):
    # Task 0 (job 0) stalls until another task has started, then 20 ms more: the other threads
    # take the rest of job 0 and job 1's tasks, and job 2's wait for job 0 (and 1) must hold
    # them until task 0 has ended; a job-2 task that did not wait starts before it ends.
    tasks, after = [3, 4, 6], [0, 0, 2]
    start = time.monotonic()
    seen = ordered(tasks, after, threads, hold=0)
    assert time.monotonic() - start < 5.0
    assert_ordered(seen, tasks, after)
    assert seen[1:7, 1].ne(seen[0, 1]).any(), "no other thread ran while task 0 stalled"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("throw", [0, 5])
def test_an_ordered_task_that_throws_ends_the_loop(throw, threads):
    # The error reaches the caller and no thread is left waiting on the task that threw (task 0:
    # job 1 waits for it); the next call runs normally.
    with pytest.raises(RuntimeError, match=f"task {throw} throws"):
        ordered([3, 4, 2], [0, 1, 2], threads, throw=throw)
    assert_ordered(ordered([3, 4, 2], [0, 1, 2], threads), [3, 4, 2], [0, 1, 2])


def test_ordered_bad_arguments_name_the_problem():
    with pytest.raises(RuntimeError, match="one `after` per job"):
        ordered([1, 2], [0], 2)
    with pytest.raises(RuntimeError, match="wait only for jobs before it"):
        ordered([1, 2], [0, 2], 2)
    with pytest.raises(ValueError, match="task counts >= 0"):
        ordered([1, -2], [0, 0], 2)
