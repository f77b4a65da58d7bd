"""The nine Inception block configurations of GoogLeNet (Szegedy et al. 2015, Table 1).

This is the one place these numbers live; tests, benchmarks and the model import them.
"""

from __future__ import annotations

from typing import NamedTuple


class BlockConfig(NamedTuple):
    """Constructor arguments of one Inception block plus its spatial size at 224x224 input."""

    in_channels: int
    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    hw: int

    @property
    def out_channels(self) -> int:
        return self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj

    def args(self) -> tuple[int, int, int, int, int, int, int]:
        """The seven positional constructor arguments of an Inception block."""
        return tuple(self[:7])  # type: ignore[return-value]


GOOGLENET_BLOCKS: dict[str, BlockConfig] = {
    "3a": BlockConfig(192, 64, 96, 128, 16, 32, 32, 28),
    "3b": BlockConfig(256, 128, 128, 192, 32, 96, 64, 28),
    "4a": BlockConfig(480, 192, 96, 208, 16, 48, 64, 14),
    "4b": BlockConfig(512, 160, 112, 224, 24, 64, 64, 14),
    "4c": BlockConfig(512, 128, 128, 256, 24, 64, 64, 14),
    "4d": BlockConfig(512, 112, 144, 288, 32, 64, 64, 14),
    "4e": BlockConfig(528, 256, 160, 320, 32, 128, 128, 14),
    "5a": BlockConfig(832, 256, 160, 320, 32, 128, 128, 7),
    "5b": BlockConfig(832, 384, 192, 384, 48, 128, 128, 7),
}
