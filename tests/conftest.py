"""Shared fixtures: block configs, backends that run here, dtype tolerances, float64 references."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import torch

# Without a GPU, Triton kernels run on CPU tensors in Triton's interpreter. Triton reads this
# when the @triton.jit functions are defined, so it is set before fused_inception is imported.
# Likewise the cuda backend's kernels run on CPU tensors through the SIMT shim.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("FUSED_INCEPTION_EMULATE_CUDA", "1")

import pytest  # noqa: E402
from torch import nn  # noqa: E402

from fused_inception import BlockConfig, inception_ref
from fused_inception.backends import available_backends
from fused_inception.backends.output import poison_outputs
from fused_inception.bench.cases import randomize_bn
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.folding import fold_block

# Relative tolerance, normwise: max|out - ref| <= tol * max|ref|.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float64: 1e-10}

# GoogLeNet's nine blocks keep their channel counts; the spatial size shrinks where a backend is
# slow here (the interpreter), never below 7.
GOOGLENET_CASES = [
    pytest.param(name, cfg, id=f"googlenet-{name}") for name, cfg in GOOGLENET_BLOCKS.items()
]

# Odd shapes: channels not multiples of 8 (or below 8), H != W, 1x1 images, batch 1.
ODD_CASES = [
    pytest.param("odd-a", BlockConfig(5, 3, 7, 9, 2, 6, 1, 5), id="odd-c5-5x5"),
    pytest.param("odd-b", BlockConfig(13, 17, 11, 19, 3, 5, 7, 1), id="odd-c13-1x1"),
    pytest.param("odd-c", BlockConfig(33, 1, 1, 1, 1, 1, 1, 4), id="odd-c33-ones"),
]


def odd_spatial(name: str, hw: int) -> tuple[int, int]:
    """H != W for the odd cases (keeps 1x1 as 1x1)."""
    return (hw, hw) if hw == 1 else (hw, hw + 3)


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


def randomize_block(block: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh random weights, biases and BN statistics (init values would make BN an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
    randomize_bn(block, gen, spread=0.2)
    return block


def reference_f64(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's eval-mode function in float64, from the formulas (reference.inception_ref)."""
    folded = fold_block(_float64_copy(block))
    return inception_ref(x.detach().double(), folded)


def _float64_copy(block: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(block).double()


def assert_close_rel(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> None:
    """Normwise relative check against a (float64) reference; NaN anywhere fails."""
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    assert not torch.isnan(out).any(), "output has NaN (an element left unwritten?)"
    err = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 1.0
    tol = TOLERANCES[dtype]
    assert err <= tol * max(scale, 1e-6), f"max abs err {err:.3e} > {tol:g} * {scale:.3e}"


def aot_report(kernels: str, backends: tuple[str, ...] = ("triton",)) -> list[dict]:
    """Records of `python -m fused_inception.report --kernels <kernels> --backends <backends>`
    for sm_80 and sm_90.

    Runs in a subprocess without TRITON_INTERPRET (interpreter kernels cannot be compiled); each
    record carries registers, shared_bytes, local_bytes (cuobjdump STACK + LOCAL: spills),
    tensor_cores and error.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "fused_inception.report", "--kernels", kernels]
        cmd += ["--backends", *backends]
        proc = subprocess.run(
            cmd + ["--json", path], env=env, capture_output=True, text=True, timeout=900
        )
        assert os.path.exists(path), proc.stdout[-2000:] + proc.stderr[-2000:]
        with open(path) as f:
            return json.load(f)
