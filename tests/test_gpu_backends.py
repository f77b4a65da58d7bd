"""FusedInception(backend="triton") end to end: the four Triton kernels writing one output.

Without a GPU the kernels run on CPU tensors under TRITON_INTERPRET=1 (set by conftest), so the
shapes keep GoogLeNet's channel counts but shrink batch and spatial size; on a GPU the same tests
run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch
from conftest import GOOGLENET_CASES, ODD_CASES, assert_close_rel, odd_spatial, randomize_block
from conftest import reference_f64 as ref64
from torch.utils._python_dispatch import TorchDispatchMode

from fused_inception import FusedInception, Inception
from fused_inception.backends import available_backends

pytestmark = pytest.mark.skipif(
    "triton" not in available_backends(),
    reason="the triton backend needs a CUDA device or TRITON_INTERPRET=1",
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _run(cfg, hw, batch, norm, k, layout, dtype, seed=0):
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm), seed).eval()
    fused = FusedInception.from_module(src, backend="triton").eval().to(DEVICE, DTYPES[dtype])
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, cfg.in_channels, *hw, generator=gen).to(DEVICE, DTYPES[dtype])
    x = x.contiguous(memory_format=LAYOUTS[layout])
    with torch.no_grad():
        out = fused(x)
    assert out.dtype == x.dtype and out.device == x.device
    assert_close_rel(out.cpu(), ref64(fused.cpu(), x.cpu()), DTYPES[dtype])
    return out


FORMS = [pytest.param(True, 3, id="bn-k3"), pytest.param(False, 5, id="paper-k5")]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", GOOGLENET_CASES)
def test_googlenet_blocks(name, cfg, norm, k, dtype, layout):
    _run(cfg, (4, 5), 1, norm, k, layout, dtype)


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", ODD_CASES)
def test_odd_shapes(name, cfg, norm, k, layout):
    _run(cfg, odd_spatial(name, cfg.hw), 3, norm, k, layout, "fp32")


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_odd_shape_all_dtypes(dtype):
    cfg = ODD_CASES[0].values[1]
    _run(cfg, (9, 10), 2, False, 5, "channels_last", dtype)


def test_empty_batch():
    cfg = ODD_CASES[0].values[1]
    block = FusedInception(*cfg.args(), backend="triton").eval().to(DEVICE)
    with torch.no_grad():
        out = block(torch.randn(0, cfg.in_channels, 3, 4, device=DEVICE))
    assert out.shape == (0, cfg.out_channels, 3, 4)


class _AllocationCounter(TorchDispatchMode):
    """Records every tensor that ATen allocates while active (shape of each new tensor)."""

    ALLOCATING = {"empty", "empty_strided", "empty_like", "zeros", "zeros_like", "full", "clone"}

    def __init__(self):
        super().__init__()
        self.allocations: list[tuple[int, ...]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # Zero-element tensors hold no data (Triton's launcher makes some); they are not
        # intermediates.
        if (
            func.overloadpacket.__name__.rstrip("_") in self.ALLOCATING
            and isinstance(out, torch.Tensor)
            and out.numel() > 0
        ):
            self.allocations.append(tuple(out.shape))
        return out


def test_reduced_tensors_are_not_materialized(monkeypatch):
    """One forward allocates exactly one tensor (the output) and launches four kernels, none of
    which receives a reduced tensor: r2/r3 live only inside the chain kernels."""
    import fused_inception.triton.chain_1x1_kxk as chain_mod
    import fused_inception.triton.conv1x1_slice as conv_mod

    cfg = GOOGLENET_CASES[0].values[1]
    block = randomize_block(FusedInception(*cfg.args(), backend="triton")).eval().to(DEVICE)
    x = torch.randn(1, cfg.in_channels, 4, 4, device=DEVICE)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        block(x)  # packs the weights (cached) outside the counted call
    launches: list[tuple[str, list[tuple[int, ...]]]] = []
    for module in (chain_mod, conv_mod):
        for attr in dir(module):
            kernel = getattr(module, attr)
            if type(kernel).__name__ in ("JITFunction", "InterpretedFunction", "Autotuner"):
                original = kernel.run

                def counted(*args, _name=attr, _run=original, **kwargs):
                    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
                    launches.append((_name, shapes))
                    return _run(*args, **kwargs)

                monkeypatch.setattr(kernel, "run", counted)
    counter = _AllocationCounter()
    with torch.no_grad(), counter:
        out = block(x)
    assert counter.allocations == [tuple(out.shape)], counter.allocations
    assert len(launches) == 4, launches
    reduced_shapes = {(1, cfg.ch3x3red, 4, 4), (1, cfg.ch5x5red, 4, 4), (16, cfg.ch3x3red)}
    for name, shapes in launches:
        assert not reduced_shapes & set(shapes), (name, shapes)
