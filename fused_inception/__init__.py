"""fused_inception: fused kernels for GoogLeNet's Inception block.

    from fused_inception import FusedInception, fuse_inception
    model = fuse_inception(torchvision.models.googlenet(weights=None).eval())

See README.md for backends, guarantees and benchmarks.
"""

from __future__ import annotations

from .backends import available_backends
from .configs import GOOGLENET_BLOCKS, BlockConfig
from .module import FusedInception
from .reference import FoldedParams, Inception, inception_ref
from .swap import fuse_inception, unfuse_inception

__version__ = "0.1.0"

__all__ = [
    "GOOGLENET_BLOCKS",
    "BlockConfig",
    "FoldedParams",
    "FusedInception",
    "Inception",
    "available_backends",
    "fuse_inception",
    "inception_ref",
    "unfuse_inception",
]


def __getattr__(name: str):
    # Submodules with heavier imports load on first use: fused_inception.models, .summary.
    if name in ("models", "summary", "bench"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
