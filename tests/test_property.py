"""Property-based parity: random block configurations, shapes, dtypes, layouts and forms, on every
backend that runs here, forward and backward, against float64 references.

hypothesis draws small channel counts (1-6), batch 0-3 and H, W 1-9, both forms (BN or paper)
and both branch3 kernels, the layout (NCHW, channels_last, or a strided view), and the dtype.
Forward: the eval fast path (no autograd) against the block's float64 function. Backward: the
eval forward with autograd, which runs the operator fused_inception::inception_block (fused
forward, ATen backward); gradients of the input and of every parameter against a float64 copy
of the block, in float32/float64 (16-bit gradients through ReLU masks taken from 16-bit outputs
are not comparable elementwise to float64 ones).

The example budget is fixed and the search derandomized, so CI runs the same examples each time;
triton runs under Triton's interpreter and cuda through the SIMT shim (both on CPU tensors) when
there is no GPU, which is why their budgets are smaller.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import (
    GPU,
    GPU_DTYPES,
    LAYOUTS,
    TOLERANCES,
    assert_close_rel,
    backend_device,
    randomize_block,
)
from helpers import reference_f64 as ref64
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.models.googlenet import Inception as TvInception

from fused_inception import FusedInception, Inception
from fused_inception.backends import available_backends

# Examples per backend: about 1 minute each on 2 loaded cores without a GPU.
BUDGET = {"cpu": 80, "triton": 16, "cuda": 40}
# The dtypes drawn on each backend, in the order hypothesis draws from.
BACKEND_DTYPES = {
    "cpu": [torch.float64, torch.float32, torch.bfloat16],
    "triton": list(GPU_DTYPES),
    "cuda": list(GPU_DTYPES),
}
# The layouts of LAYOUTS, and a strided view.
DRAWN_LAYOUTS = [*LAYOUTS, "strided"]


@st.composite
def block_cases(draw, backend: str) -> dict:
    # Interpreter cost grows with tiles x programs: triton keeps batch and pixels smaller.
    small = backend == "triton" and not GPU
    return {
        "channels": [draw(st.integers(1, 6)) for _ in range(7)],
        "norm": draw(st.booleans()),
        "k": draw(st.sampled_from([3, 5])),
        "batch": draw(st.integers(0, 2 if small else 3)),
        "hw": (draw(st.integers(1, 9)), draw(st.integers(1, 6 if small else 9))),
        "dtype": draw(st.sampled_from(BACKEND_DTYPES[backend])),
        "layout": draw(st.sampled_from(DRAWN_LAYOUTS)),
        "seed": draw(st.integers(0, 2**16)),
    }


def _input(case: dict, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf, x): x is the leaf itself or, for "strided", a view of it with gaps."""
    n, (h, w), c = case["batch"], case["hw"], case["channels"][0]
    gen = torch.Generator().manual_seed(case["seed"])
    if case["layout"] == "strided":
        leaf = torch.randn(n, c + 2, h, 2 * w, generator=gen, dtype=torch.float64).to(dtype)
        return leaf, leaf[:, 1 : 1 + c, :, ::2]
    leaf = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    leaf = leaf.contiguous(memory_format=LAYOUTS[case["layout"]])
    return leaf, leaf


def _source(case: dict):
    if case["norm"] and case["k"] == 3:
        block = TvInception(*case["channels"])
    else:
        block = Inception(*case["channels"], branch3_kernel=case["k"], norm=case["norm"])
    return randomize_block(block, case["seed"]).eval()


def _check(case: dict, backend: str) -> None:
    device = backend_device(backend)
    dtype = case["dtype"]
    src = _source(case)
    fused = FusedInception.from_module(copy.deepcopy(src), backend=backend).eval()
    fused = fused.to(device, dtype)
    leaf, x = _input(case, dtype)

    with torch.no_grad():
        out = fused(x.to(device)).cpu()
    assert out.dtype == dtype
    assert_close_rel(out, ref64(src, x), dtype)
    if dtype not in (torch.float32, torch.float64):
        return

    leaf_dev = leaf.detach().to(device).requires_grad_()
    x_dev = _input_view(case, leaf_dev)
    out = fused(x_dev)
    assert "inception_block" in type(out.grad_fn).__name__
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(case["seed"] + 1))
    grads = torch.autograd.grad(out, [leaf_dev, *fused.parameters()], grad_out.to(device, dtype))

    ref = copy.deepcopy(src).double()
    leaf64 = leaf.detach().double().requires_grad_()
    out64 = ref(_input_view(case, leaf64))
    grads64 = torch.autograd.grad(out64, [leaf64, *ref.parameters()], grad_out.double())
    names = ["x"] + [name for name, _ in ref.named_parameters()]
    for name, g, g64 in zip(names, grads, grads64, strict=True):
        assert_close_rel(g.cpu(), g64, dtype, what=f"gradient of {name}")


def _input_view(case: dict, leaf: torch.Tensor) -> torch.Tensor:
    if case["layout"] == "strided":
        return leaf[:, 1 : 1 + case["channels"][0], :, ::2]
    return leaf


def _property_test(backend: str):
    @pytest.mark.skipif(backend not in available_backends(), reason=f"no {backend} backend")
    @settings(
        max_examples=BUDGET[backend],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=block_cases(backend))
    def test(case):
        _check(case, backend)

    test.__doc__ = f"Random blocks on the {backend} backend match float64, forward and backward."
    return test


test_property_cpu = _property_test("cpu")
test_property_triton = _property_test("triton")
test_property_cuda = _property_test("cuda")


def test_tolerances_cover_the_drawn_dtypes():
    assert {d for ds in BACKEND_DTYPES.values() for d in ds} <= set(TOLERANCES)
