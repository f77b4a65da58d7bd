"""Every operator that writes into a caller's tensor refuses an `out` that overlaps an input.

The kernels read x and the weights while other tiles already store into out, so an aliased out
gave wrong results silently (conv1x1_slice_(x, w, b, out=x, 0, pool=True) was off by up to 9.1).
Checked for the C++ operators (conv1x1_slice_, chain_1x1_kxk_ through the SIMT shim or a GPU;
winograd_f2x3_output_) and the Triton launchers (under the interpreter without a GPU): out is the
input itself, out overlaps an input partially (one inside the other's storage), out shares a
storage with an input without intersecting it (refused too: the check is conservative), and
two storages over the same memory (numpy views). Each error names both arguments, and nothing
is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import pytest
import torch

from fused_inception import _ext
from fused_inception.backends import cuda_kernel_builds

# conftest sets TRITON_INTERPRET=1 without a GPU, before fused_inception.triton is imported.
from fused_inception.triton.block_1x1 import block_1x1
from fused_inception.triton.block_kxk import block_kxk

GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if GPU else "cpu")
HAS_CUDA_OPS = ("cuda" if GPU else "emulated") in cuda_kernel_builds()
OPS = torch.ops.fused_inception if _ext.has_extension() else None


class Case(NamedTuple):
    """An operator: its named tensor arguments (out included) and how to call it."""

    inputs: dict[str, torch.Tensor]
    out: torch.Tensor
    call: Callable[..., object]  # call(**inputs, out=out)


def _cl(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, device=DEVICE).contiguous(memory_format=torch.channels_last)


def _conv_tensors() -> dict[str, torch.Tensor]:
    # cin == Ctot == Cout, so that out = x is a call valid in every other respect.
    return {"x": _cl(1, 8, 5, 5), "w": torch.randn(8, 8, device=DEVICE), "bias": torch.randn(8)}


def _chain_tensors() -> dict[str, torch.Tensor]:
    return {
        "x": _cl(1, 8, 5, 5),
        "w_red": torch.randn(8, 4, device=DEVICE),
        "b_red": torch.randn(4, device=DEVICE),
        "w_kxk": torch.randn(3, 3, 4, 8, device=DEVICE),
        "b_kxk": torch.randn(8, device=DEVICE),
    }


def _cases() -> dict[str, Callable[[], Case]]:
    def cpp_conv():
        t = _conv_tensors()
        t["bias"] = t["bias"].to(DEVICE)
        return Case(
            t, _cl(1, 8, 5, 5), lambda x, w, bias, out: OPS.conv1x1_slice_(x, w, bias, out, 0, True)
        )

    def cpp_chain():
        return Case(
            _chain_tensors(),
            _cl(1, 8, 5, 5),
            lambda x, w_red, b_red, w_kxk, b_kxk, out: OPS.chain_1x1_kxk_(
                x, w_red, b_red, w_kxk, b_kxk, out, 0
            ),
        )

    def winograd():
        m, bias = torch.randn(16, 9, 4), torch.randn(4)  # 1 image of 5x5: 9 tiles
        return Case(
            {"m": m, "bias": bias},
            torch.randn(25, 4),
            lambda m, bias, out: OPS.winograd_f2x3_output_(m, bias, out, 1, 5, 5),
        )

    def triton_1x1():
        # x [1, 8, 5, 5] -> b1 (2 channels) into out [1, 8, 5, 5], r (4 columns, then x's
        # pool in 8).
        t = {
            "x": _cl(1, 8, 5, 5),
            "w_x": torch.randn(8, 6, device=DEVICE),
            "b_x": torch.randn(6, device=DEVICE),
            "r": torch.empty(25, 12, device=DEVICE),
        }
        return Case(t, _cl(1, 8, 5, 5), lambda out, **a: block_1x1(**a, out=out, c1=2))

    def triton_kxk():
        # r [25, 9] (r2: 4 columns, r3: 2, pooled x: 3) -> b2 (4 channels), b3 (2), b4 (2)
        # into out [1, 8, 5, 5].
        t = {
            "r": torch.randn(25, 9, device=DEVICE),
            "w2": torch.randn(9, 4, 4, device=DEVICE),
            "b2": torch.randn(4, device=DEVICE),
            "w3": torch.randn(25, 2, 2, device=DEVICE),
            "b3": torch.randn(2, device=DEVICE),
            "w4": torch.randn(3, 2, device=DEVICE),
            "b4": torch.randn(2, device=DEVICE),
        }
        return Case(
            t, _cl(1, 8, 5, 5), lambda out, **a: block_kxk(**a, out=out, off2=0, off3=4, off4=6)
        )

    return {
        "conv1x1_slice_": cpp_conv,
        "chain_1x1_kxk_": cpp_chain,
        "winograd_f2x3_output_": winograd,
        "triton-block_1x1": triton_1x1,
        "triton-block_kxk": triton_kxk,
    }


CASES = _cases()


def _requirements(op: str):
    if op in ("conv1x1_slice_", "chain_1x1_kxk_") and not HAS_CUDA_OPS:
        return pytest.mark.skip(reason=f"no CUDA kernels runnable here ({cuda_kernel_builds()})")
    if op == "winograd_f2x3_output_" and not _ext.has_extension():
        return pytest.mark.skip(reason=f"no extension: {_ext.extension_error()}")
    return []


def _inputs_of(op: str) -> list:
    names = CASES[op]().inputs
    return [pytest.param(op, name, id=f"{op}-{name}", marks=_requirements(op)) for name in names]


ALL_INPUTS = [p for op in CASES for p in _inputs_of(op)]
X_INPUTS = [p for p in ALL_INPUTS if p.values[1] == "x"]


def _place(buf: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """A tensor with like's shape, layout and values at element `offset` of the flat buf."""
    region = buf[offset : offset + like.numel()]
    if like.dim() == 4 and not like.is_contiguous():  # channels_last
        n, c, h, w = like.shape
        placed = region.view(n, h, w, c).permute(0, 3, 1, 2)
    else:
        placed = region.view(like.shape)
    placed.copy_(like)
    return placed


def _expect_refusal(case: Case, name: str, out: torch.Tensor, memory: torch.Tensor) -> None:
    before = memory.clone()
    with pytest.raises(ValueError, match=f"out overlaps {name}"):  # fused_inception.checks
        case.call(**case.inputs, out=out)
    # Bitwise: out's uninitialized bytes may hold NaNs, which torch.equal never calls equal.
    same = torch.equal(memory.reshape(-1).view(torch.uint8), before.reshape(-1).view(torch.uint8))
    assert same, "memory was written before the error"


def _sharing(op: str, name: str, out_at, input_at) -> tuple[Case, torch.Tensor]:
    """The case with out and input `name` placed in one flat buffer, at the element offsets
    out_at(out, input) and input_at(out, input)."""
    case = CASES[op]()
    like = case.inputs[name]
    buf = torch.randn(2 * (case.out.numel() + like.numel()) + 64, device=like.device)
    out = _place(buf, out_at(case.out, like), case.out)
    inputs = dict(case.inputs)
    inputs[name] = _place(buf, input_at(case.out, like), like)
    return Case(inputs, out, case.call), buf


@pytest.mark.parametrize("op,name", X_INPUTS)
def test_out_is_x(op, name):
    case = CASES[op]()
    x = case.inputs["x"]
    _expect_refusal(case._replace(inputs={**case.inputs, "x": x}), "x", x, x)


@pytest.mark.parametrize("op,name", ALL_INPUTS)
def test_out_overlaps_an_input_partially(op, name):
    """The input starts in the middle of out's memory and runs past its end."""
    case, buf = _sharing(op, name, lambda out, t: 0, lambda out, t: out.numel() // 2)
    _expect_refusal(case, name, case.out, buf)


@pytest.mark.parametrize("op,name", ALL_INPUTS)
def test_one_inside_the_other(op, name):
    """The smaller of out and the input lies inside the other's memory (e.g. a weight carved
    out of the output buffer, or the output written into a weight's storage)."""

    def at(this, other):
        return lambda out, t: 1 if (out, t)[this].numel() < (out, t)[other].numel() else 0

    case, buf = _sharing(op, name, at(0, 1), at(1, 0))
    _expect_refusal(case, name, case.out, buf)


@pytest.mark.parametrize("op,name", X_INPUTS)
def test_disjoint_views_of_one_storage_are_refused(op, name):
    """Conservative: sharing a storage is enough (no caller needs it; proving disjointness of
    two strided views in general is what at::get_overlap_status gives up on)."""
    case, buf = _sharing(op, name, lambda out, t: 0, lambda out, t: out.numel() + 8)
    _expect_refusal(case, "x", case.out, buf)


@pytest.mark.parametrize("op,name", X_INPUTS)
def test_two_storages_over_the_same_memory(op, name):
    """torch.from_numpy of two overlapping numpy views: two storages, one memory."""
    case = CASES[op]()
    if case.out.device.type != "cpu":
        pytest.skip("numpy memory is host memory")
    x = case.inputs["x"]
    array = np.random.default_rng(0).standard_normal(case.out.numel() + x.numel(), np.float32)
    half = case.out.numel() // 2
    out = _place(torch.from_numpy(array[: case.out.numel()]), 0, case.out)
    x2 = _place(torch.from_numpy(array[half : half + x.numel()]), 0, x)
    assert out.untyped_storage().data_ptr() != x2.untyped_storage().data_ptr()
    _expect_refusal(
        Case({**case.inputs, "x": x2}, out, case.call), "x", out, torch.from_numpy(array)
    )
