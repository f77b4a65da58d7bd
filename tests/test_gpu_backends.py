"""The GPU backends end to end: FusedInception(backend="triton" | "cuda"), four kernels
writing one output (fused_inception/backends/sliced.py).

Without a GPU the kernels run on CPU tensors: Triton's under TRITON_INTERPRET=1, the CUDA C++
ones through the SIMT shim under FUSED_INCEPTION_EMULATE_CUDA=1 (conftest sets both), so the
shapes keep GoogLeNet's channel counts but shrink batch and spatial size. On a GPU the same
tests run the compiled kernels on CUDA tensors.
"""

from __future__ import annotations

import pytest
import torch
from helpers import (
    GOOGLENET_CASES,
    GPU_DEVICE,
    GPU_DTYPES,
    ODD_CASES,
    SMALL,
    assert_close_rel,
    backend_params,
    dtype_params,
    layout_params,
    odd_spatial,
    randomize_block,
)
from helpers import reference_f64 as ref64
from torch.utils._python_dispatch import TorchDispatchMode

from fused_inception import FusedInception, Inception
from fused_inception.module import resolve_weight_check


@pytest.fixture(params=backend_params("triton", "cuda"))
def backend(request) -> str:
    return request.param


def _run(backend, cfg, hw, batch, norm, k, layout, dtype, seed=0):
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm), seed).eval()
    fused = FusedInception.from_module(src, backend=backend).eval().to(GPU_DEVICE, dtype)
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(batch, cfg.in_channels, *hw, generator=gen).to(GPU_DEVICE, dtype)
    x = x.contiguous(memory_format=layout)
    with torch.no_grad():
        out = fused(x)
    assert out.dtype == x.dtype and out.device == x.device
    assert_close_rel(out.cpu(), ref64(fused.cpu(), x.cpu()), dtype)
    return out


FORMS = [pytest.param(True, 3, id="bn-k3"), pytest.param(False, 5, id="paper-k5")]


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", GOOGLENET_CASES)
def test_googlenet_blocks(backend, name, cfg, norm, k, dtype, layout):
    _run(backend, cfg, (4, 5), 1, norm, k, layout, dtype)


@pytest.mark.parametrize("layout", layout_params())
@pytest.mark.parametrize("norm,k", FORMS)
@pytest.mark.parametrize("name,cfg", ODD_CASES)
def test_odd_shapes(backend, name, cfg, norm, k, layout):
    _run(backend, cfg, odd_spatial(name, cfg.hw), 3, norm, k, layout, torch.float32)


@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
def test_odd_shape_all_dtypes(backend, dtype):
    cfg = SMALL
    _run(backend, cfg, (9, 10), 2, False, 5, torch.channels_last, dtype)


def test_empty_batch(backend):
    cfg = SMALL
    block = FusedInception(*cfg.args(), backend=backend).eval().to(GPU_DEVICE)
    with torch.no_grad():
        out = block(torch.randn(0, cfg.in_channels, 3, 4, device=GPU_DEVICE))
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


class _OperatorCalls(TorchDispatchMode):
    """Records the fused_inception operators called (name, shapes of their tensor arguments)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fused_inception":
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.calls.append((func.overloadpacket.__name__, shapes))
        return func(*args, **(kwargs or {}))


class _HostSyncs(TorchDispatchMode):
    """Records the operators that make the host wait for the device on a GPU: reading a value
    back (item, bool, equal, nonzero's data-dependent size) or copying across devices."""

    SYNCING = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique"}
    SYNCING |= {"_unique2", "allclose", "tolist"}

    def __init__(self):
        super().__init__()
        self.syncs: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        devices = {a.device for a in args if isinstance(a, torch.Tensor)}
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor):
            devices.add(out.device)
        if name in self.SYNCING or len(devices) > 1:
            self.syncs.append(name)
        return out


def _watch_triton_launches(monkeypatch) -> list[tuple[str, list[tuple[int, ...]]]]:
    import fused_inception.triton.block_1x1 as block_1x1
    import fused_inception.triton.block_kxk as block_kxk

    launches: list[tuple[str, list[tuple[int, ...]]]] = []
    for module in (block_1x1, block_kxk):
        for attr in dir(module):
            kernel = getattr(module, attr)
            if type(kernel).__name__ in ("JITFunction", "InterpretedFunction", "Autotuner"):
                original = kernel.run

                def counted(*args, _name=attr, _run=original, **kwargs):
                    shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
                    launches.append((_name, shapes))
                    return _run(*args, **kwargs)

                monkeypatch.setattr(kernel, "run", counted)
    return launches


def test_what_one_forward_allocates_and_launches(backend, monkeypatch):
    """Version 2 (triton, and cuda in 16-bit): two launches and two allocations, the output and
    the scratch rows that the first launch writes and the second reads (r2 | r3; triton's also
    hold the pooled x); no other pooled tensor, no branch output, no concatenation. cuda
    float32 (version 1): one allocation (the output) and four launches, none of which receives
    a reduced tensor."""
    cfg = GOOGLENET_CASES[0].values[1]
    pooled = cfg.in_channels if backend == "triton" else 0
    scratch = (16, cfg.ch3x3red + cfg.ch5x5red + pooled)
    for dtype in (torch.float16, torch.float32):
        block = randomize_block(FusedInception(*cfg.args(), backend=backend)).eval()
        block = block.to(GPU_DEVICE, dtype)
        x = torch.randn(1, cfg.in_channels, 4, 4, device=GPU_DEVICE, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            block(x)  # packs the weights (cached) outside the counted call
        counter, operators = _AllocationCounter(), _OperatorCalls()
        if backend == "triton":
            launches = _watch_triton_launches(monkeypatch)
            with torch.no_grad(), counter:
                out = block(x)
            assert [name for name, _ in launches[-2:]] == ["block_1x1_kernel", "block_kxk_kernel"]
            assert len(launches) == 2
            monkeypatch.undo()
        else:
            with torch.no_grad(), counter, operators:
                out = block(x)
            # (fingerprint hashes the weights for the packed-weight cache: not a block kernel)
            launches = [(name, shapes) for name, shapes in operators.calls if name != "fingerprint"]
        names = [name for name, _ in launches]
        if backend == "triton" or dtype == torch.float16:
            if backend == "cuda":
                assert names == ["block_1x1_", "block_kxk_"], names
            assert sorted(counter.allocations) == sorted([tuple(out.shape), scratch])
            assert scratch in launches[0][1] and scratch in launches[1][1]
            continue
        assert names == ["conv1x1_slice_", "chain_1x1_kxk_", "chain_1x1_kxk_", "conv1x1_slice_"]
        assert counter.allocations == [tuple(out.shape)], counter.allocations
        reduced_shapes = {(1, cfg.ch3x3red, 4, 4), (1, cfg.ch5x5red, 4, 4), (16, cfg.ch3x3red)}
        for name, shapes in launches:
            assert not reduced_shapes & set(shapes), (name, shapes)


def test_eval_forward_never_syncs_the_host(backend):
    """An eval forward makes no host synchronisation (CUDA graph and "reduce-overhead" friendly):
    with the weight check a CUDA device uses by default ("auto" resolves to "version" there),
    no operator reads a value back or copies across devices. The detector is shown to see one:
    the content check (the default on the CPU) reads its hash back with item()."""
    assert resolve_weight_check("auto", torch.device("cuda")) == "version"
    assert resolve_weight_check("auto", torch.device("cpu")) == "content"
    cfg = GOOGLENET_CASES[0].values[1]
    check = "auto" if GPU_DEVICE.type == "cuda" else "version"
    for dtype in (torch.float16, torch.float32):
        block = FusedInception(*cfg.args(), backend=backend, weight_check=check)
        block = randomize_block(block).eval().to(GPU_DEVICE, dtype)
        x = torch.randn(1, cfg.in_channels, 4, 4, device=GPU_DEVICE, dtype=dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            block(x)  # packs the weights once
            with _HostSyncs() as mode:
                block(x)
        assert mode.syncs == [], (dtype, mode.syncs)
    if GPU_DEVICE.type == "cpu":
        block.weight_check = "content"
        with torch.no_grad(), _HostSyncs() as mode:
            block(x)
        assert "_local_scalar_dense" in mode.syncs
