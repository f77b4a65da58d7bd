"""A dependency-free progress line for the training and evaluation commands.

On a terminal it redraws one line ("\r"); elsewhere (logs, pipes) it prints a line every
`every` updates and at the end.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """[#####.....] done/total, images/s since start, and the fields given to update()."""

    def __init__(
        self, total: int, prefix: str = "", *, stream: TextIO | None = None, every: int = 10
    ) -> None:
        self.total, self.prefix, self.every = total, prefix, max(1, every)
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = self.images = self.updates = 0
        self.start = time.perf_counter()

    def images_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.images / elapsed if elapsed > 0 else 0.0

    def line(self, **fields: float) -> str:
        width = 20
        filled = width * self.done // max(self.total, 1)
        text = f"{self.prefix}[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}"
        text += "".join(f" {k} {v:.4g}" for k, v in fields.items())
        return text + f" {self.images_per_s():.1f} images/s"

    def update(self, steps: int = 1, images: int = 0, **fields: float) -> None:
        """Count `steps` done and `images` processed; show the line with `fields` (loss=...)."""
        self.done += steps
        self.images += images
        self.updates += 1
        if self.tty:
            print("\r" + self.line(**fields), end="", file=self.stream, flush=True)
        elif self.updates % self.every == 0 or self.done >= self.total:
            print(self.line(**fields), file=self.stream, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=self.stream, flush=True)
