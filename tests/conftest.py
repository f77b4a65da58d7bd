"""What pytest needs here: the environment the package is imported under, and the fixtures
(NaN-poisoned outputs, no TF32, the backends that run natively). Shared helpers are in
helpers.py."""

from __future__ import annotations

import os

import torch

# Without a GPU, Triton kernels run on CPU tensors in Triton's interpreter. Triton reads this
# when the @triton.jit functions are defined, so it is set before fused_inception is imported.
# Likewise the cuda backend's kernels run on CPU tensors through the SIMT shim.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("FUSED_INCEPTION_EMULATE_CUDA", "1")

import pytest  # noqa: E402

from fused_inception.backends import available_backends  # noqa: E402
from fused_inception.backends.output import poison_outputs  # noqa: E402


@pytest.fixture(autouse=True)
def _poisoned_outputs():
    """Every backend output starts as NaN: an element a kernel does not write fails parity."""
    with poison_outputs(True):
        yield


@pytest.fixture(autouse=True)
def _no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


# Backends that run at native speed here: the GPU backends only on a GPU. Under Triton's
# interpreter (or the CUDA shim) a backend has its own test file with shrunken shapes.
NATIVE_BACKENDS = [b for b in available_backends() if b == "cpu" or torch.cuda.is_available()]


@pytest.fixture(params=NATIVE_BACKENDS)
def backend(request) -> str:
    return request.param
