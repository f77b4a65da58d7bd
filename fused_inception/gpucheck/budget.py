"""The run's time budget: each stage's seconds, and whether time is left for more work."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator


class Budget:
    """Seconds allowed for the whole run, and the seconds each stage took.

    Stages run in order; `stage(name)` times one. `left()` is what remains of the total, which
    the stages that can stop early (the benchmark) consult before each case.
    """

    def __init__(self, total_s: float, clock: Callable[[], float] = time.perf_counter) -> None:
        self.total_s = total_s
        self._clock = clock
        self._start = clock()
        self.stages: dict[str, float] = {}

    def elapsed(self) -> float:
        return self._clock() - self._start

    def left(self) -> float:
        return self.total_s - self.elapsed()

    @contextlib.contextmanager
    def stage(self, name: str, log: Callable[[str], None] = print) -> Iterator[None]:
        """Time the stage `name`; print its start and its seconds against the budget."""
        log(f"== {name} (at {self.elapsed():.0f} s of a {self.total_s:.0f} s budget)")
        t0 = self._clock()
        try:
            yield
        finally:
            self.stages[name] = round(self._clock() - t0, 2)
            over = "" if self.left() >= 0 else f", {-self.left():.0f} s over the budget"
            log(f"== {name}: {self.stages[name]:.1f} s ({self.elapsed():.0f} s in all{over})")

    def as_dict(self) -> dict:
        return {
            "total_s": self.total_s,
            "elapsed_s": round(self.elapsed(), 2),
            "stages_s": dict(self.stages),
        }
