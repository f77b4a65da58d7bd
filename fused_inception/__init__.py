"""fused_inception: fused kernels for GoogLeNet's Inception block.

    from fused_inception import FusedInception, fuse_inception
    model = fuse_inception(torchvision.models.googlenet(weights=None).eval())
    model = prepare_for_inference(model)  # also BN folded in the stem, channels_last, eval

See README.md for backends, guarantees and benchmarks.
"""

from __future__ import annotations

from . import fingerprint as _fingerprint  # noqa: F401  (see below)
from .backends import available_backends
from .backends import cpu_maxpool as _cpu_maxpool  # noqa: F401
from .backends import cpu_winograd as _cpu_winograd  # noqa: F401
from .backends import cuda as _cuda  # noqa: F401
from .configs import GOOGLENET_BLOCKS, BlockConfig
from .folded_unit import FoldedConvUnit
from .inference import is_prepared, prepare_for_inference, unprepare_for_inference
from .module import FusedInception
from .reference import FoldedParams, Inception, inception_ref
from .swap import fuse_inception, unfuse_inception

# The underscored imports above are the Python homes of the C++ operators (fused_inception/
# _ext.py lists them): importing them registers every fake kernel, which torch.compile and
# torch.library.opcheck need as soon as `import fused_inception` has run. None of them imports
# triton, and each registers nothing when the extension did not load.

__version__ = "0.1.0"

__all__ = [
    "GOOGLENET_BLOCKS",
    "BlockConfig",
    "FoldedConvUnit",
    "FoldedParams",
    "FusedInception",
    "Inception",
    "available_backends",
    "fuse_inception",
    "inception_ref",
    "is_prepared",
    "prepare_for_inference",
    "unfuse_inception",
    "unprepare_for_inference",
]


def __getattr__(name: str):
    # Submodules with heavier imports load on first use: fused_inception.models, .summary,
    # .recipe (the paper's training recipe and test-time crops), .train and .evaluate.
    if name in ("models", "summary", "bench", "recipe", "train", "evaluate"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
