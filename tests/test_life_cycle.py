"""Determinism and the module's life cycle: repeated forwards bit for bit, torch.save and load
(state_dict and whole module), deepcopy, conversion to float16 and bfloat16 after a float32 call,
and no stale folded weights after any kind of weight change; on every backend
(helpers.EVERY_BACKEND) where a backend is involved.
"""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from helpers import (
    EVERY_BACKEND,
    SMALL,
    assert_close_rel,
    backend_device,
    dtype_params,
    fused_on,
    randomize_block,
    tv_block,
)
from helpers import reference_f64 as ref64

from fused_inception import FusedInception
from fused_inception.folding import fold_block
from fused_inception.ops import inception_block


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16))
@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_repeated_forwards_are_bit_identical(backend, dtype):
    block = fused_on(tv_block(2), backend).to(dtype)
    x = torch.randn(2, SMALL.in_channels, 5, 6).to(backend_device(backend), dtype)
    with torch.no_grad():
        outs = [block(x) for _ in range(3)]
    op_out = inception_block(x, *fold_block(block), backend)  # the operator, repacking each call
    for out in outs[1:] + [op_out]:
        assert torch.equal(out, outs[0])


def test_state_dict_and_module_survive_torch_save():
    block = randomize_block(FusedInception(*SMALL.args(), branch3_kernel=5)).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 5)
    with torch.no_grad():
        expected = block(x)  # fills the packed cache before saving
    buf = io.BytesIO()
    torch.save(block.state_dict(), buf)
    buf.seek(0)
    fresh = FusedInception(*SMALL.args(), branch3_kernel=5).eval()
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    buf = io.BytesIO()
    torch.save(block, buf)
    buf.seek(0)
    whole = torch.load(buf, weights_only=False)
    assert whole._state is None
    with torch.no_grad():
        assert torch.equal(fresh(x), expected)
        assert torch.equal(whole(x), expected)


def test_deepcopy_after_a_call_is_independent():
    block = randomize_block(FusedInception(*SMALL.args())).eval()
    x = torch.randn(2, SMALL.in_channels, 4, 5)
    with torch.no_grad():
        expected = block(x)
        twin = copy.deepcopy(block)
        twin.branch3[1].conv.weight.mul_(-1.0)
        assert torch.equal(block(x), expected)
        assert_close_rel(twin(x), ref64(twin, x), torch.float32)
        assert not torch.allclose(twin(x), expected)


@pytest.mark.parametrize("dtype", dtype_params(torch.float16, torch.bfloat16))
@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_half_and_bfloat16_after_a_float32_call(backend, dtype):
    block = fused_on(tv_block(3), backend)
    x = torch.randn(1, SMALL.in_channels, 4, 5, device=backend_device(backend))
    with torch.no_grad():
        block(x)
        converted = block.half() if dtype == torch.float16 else block.bfloat16()
        out = converted(x.to(dtype))
    assert out.dtype == dtype
    assert_close_rel(out.cpu(), ref64(block.cpu(), x.cpu().to(dtype)), dtype)


@pytest.mark.parametrize("backend", EVERY_BACKEND)
def test_no_stale_folded_weights(backend):
    """Every kind of weight change after the first call is seen (per backend's packed cache)."""
    block = fused_on(tv_block(4), backend)
    dev = backend_device(backend)
    x = torch.randn(1, SMALL.in_channels, 4, 5, device=dev)

    def check():
        with torch.no_grad():
            assert_close_rel(block(x).cpu(), ref64(block.cpu(), x.cpu()), torch.float32)
        block.to(dev)

    check()
    with torch.no_grad():
        block.branch2[0].conv.weight.add_(0.5)  # in place
    check()
    block.branch3[1].conv.weight.data = torch.randn_like(block.branch3[1].conv.weight)  # .data
    check()
    block.load_state_dict(tv_block(5).state_dict())
    check()
    # BN running statistics updated by a training-mode forward (the composed path).
    before = block.branch4[1].bn.running_mean.clone()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block.train()(3.0 * torch.randn(4, SMALL.in_channels, 4, 5, device=dev) + 1.0)
    block.eval()
    assert not torch.equal(block.branch4[1].bn.running_mean.cpu(), before.cpu())
    check()
