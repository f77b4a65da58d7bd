"""The eval operator inception_block_onednn on NCHW input: x is moved into NHWC and every branch
into its slice of the NCHW output by the operator's own transposing copies
(csrc/cpu/transpose.cpp: 16 x 16 AVX-512 blocks with 8 x 8 AVX2 and scalar edges, 8 x 8 AVX2
blocks, or a portable loop). The
convolutions are the same on both layouts, so the NCHW output must equal the channels_last
output bit for bit, on every shape's edges, with NaN and infinities passed through the ReLU."""

from __future__ import annotations

import os
import textwrap

import pytest
import torch
from helpers import ODD_CASES, assert_close_rel, randomize_block, run_at_capability
from helpers import reference_f64 as ref64

from fused_inception import FusedInception, Inception
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.folding import fold_block

pytestmark = pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)

# (config, H, W): GoogLeNet blocks at their sizes (784, 196 and 49 pixels: 16 x 16 and 8 x 8
# blocks with and without a remainder) and odd channel counts on odd images (fewer than 16
# pixels or channels: edges only).
CASES = [
    pytest.param(GOOGLENET_BLOCKS["3a"], 28, 28, id="3a"),
    pytest.param(GOOGLENET_BLOCKS["4e"], 14, 14, id="4e"),
    pytest.param(GOOGLENET_BLOCKS["5b"], 7, 7, id="5b"),
    *[pytest.param(p.values[1], 9, 13, id=p.id) for p in ODD_CASES],
    pytest.param(ODD_CASES[0].values[1], 11, 3, id="odd-a-11x3"),
]


def _packed(cfg, k=3):
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=False)).eval()
    return src, cpu.prepare(fold_block(FusedInception.from_module(src, backend="cpu")))


def _special_values(x):
    x[0, 0, 0, 0] = float("nan")
    x[-1, -1, -1, -1] = float("inf")
    x[0, -1, 1 % x.shape[2], :] = float("-inf")
    return x


@pytest.mark.parametrize("cfg,h,w", CASES)
@pytest.mark.parametrize("winograd", [False, True], ids=["direct", "winograd"])
@pytest.mark.parametrize("gemm", ["default", "onednn"])
def test_nchw_output_is_the_channels_last_output(cfg, h, w, winograd, gemm, monkeypatch):
    # "onednn": the 1x1s and direct KxKs on oneDNN, whose outputs are copied into the slices
    # with their ReLU (the copies' ReLU form); by default the own kernel stores them itself.
    if gemm == "onednn":
        monkeypatch.setattr(cpu_onednn, "OWN_GEMM", False)
    if winograd:  # every 3x3 through Winograd: its NCHW output is staged, then copied
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_IN_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_OUT_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_TILES", 0)
    else:
        monkeypatch.setattr(cpu_winograd, "ONEDNN_ENABLED", False)
    src, packed = _packed(cfg)
    for batch in (1, 3):
        x = _special_values(torch.randn(batch, cfg.in_channels, h, w))
        with torch.no_grad(), poison_outputs():
            got = cpu.forward(x, packed)
            want = cpu.forward(x.contiguous(memory_format=torch.channels_last), packed)
        assert got.is_contiguous(), "NCHW input gives an NCHW output"
        assert got.isnan().any() and got.isinf().any()
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), f"batch {batch}"
        finite = torch.randn(batch, cfg.in_channels, h, w)
        with torch.no_grad(), poison_outputs():
            assert_close_rel(cpu.forward(finite, packed), ref64(src, finite), torch.float32)


def test_strided_nchw_input_takes_the_general_copy():
    """x that is neither NCHW- nor channels_last-contiguous (a crop of a larger batch) is
    copied by ATen and gives the same bits as its contiguous copy."""
    cfg = GOOGLENET_BLOCKS["4a"]
    _, packed = _packed(cfg, k=5)
    big = _special_values(torch.randn(2, cfg.in_channels + 4, 16, 16))
    x = big[:, 2:-2, 1:-1, 1:-1]
    assert not x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), poison_outputs():
        got, want = cpu.forward(x, packed), cpu.forward(x.contiguous(), packed)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


@pytest.mark.parametrize("shape", [(2, 64, 14, 14), (3, 9, 7, 11)], ids=str)
def test_standalone_winograd_nchw_is_its_channels_last(shape):
    """conv3x3_relu_winograd (a prepared network's 3x3 unit) on NCHW x: x moved into NHWC and
    the result into the NCHW output by the same copies, the same bits as channels_last x."""
    gen = torch.Generator().manual_seed(3)
    x = _special_values(torch.randn(shape, generator=gen))
    weight, bias = torch.randn(17, shape[1], 3, 3, generator=gen), torch.randn(17, generator=gen)
    grouped = cpu_onednn.conv_weight(cpu_winograd.grouped_weight(weight))
    op = torch.ops.fused_inception.conv3x3_relu_winograd
    got = op(x, grouped, bias, 7)
    want = op(x.contiguous(memory_format=torch.channels_last), grouped, bias, 7)
    assert got.is_contiguous() and got.isnan().any()
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


_PORTABLE_CHECK = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, "TESTS")
    from helpers import randomize_block
    from fused_inception import FusedInception, Inception
    from fused_inception.backends import cpu, cpu_winograd
    from fused_inception.configs import BlockConfig
    from fused_inception.folding import fold_block
    assert torch.backends.cpu.get_cpu_capability() == sys.argv[1]
    cpu_winograd.ONEDNN_MIN_IN_CHANNELS = cpu_winograd.ONEDNN_MIN_OUT_CHANNELS = 0
    cpu_winograd.ONEDNN_MIN_TILES = 0
    gen = torch.Generator().manual_seed(5)
    for cfg, h, w in [(BlockConfig(13, 17, 11, 19, 3, 5, 7, 1), 9, 13),
                      (BlockConfig(24, 8, 8, 16, 8, 8, 16, 14), 14, 14)]:
        src = randomize_block(Inception(*cfg.args(), branch3_kernel=3, norm=False)).eval()
        packed = cpu.prepare(fold_block(FusedInception.from_module(src, backend="cpu")))
        x = torch.randn(2, cfg.in_channels, h, w, generator=gen)
        x[0, 0, 0, 0] = float("nan")
        x[1, -1, -1, -1] = float("inf")
        with torch.no_grad():
            got = cpu.forward(x, packed)
            want = cpu.forward(x.contiguous(memory_format=torch.channels_last), packed)
        assert got.is_contiguous() and got.isnan().any()
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (cfg, h, w)
    print("ok")
    """
)


@pytest.mark.parametrize("capability", ["DEFAULT", "AVX2"])
def test_copies_at_each_capability(capability):
    # At capability DEFAULT the operator takes the portable transposing loop, at AVX2 the
    # vector one (as at AVX512): CI runs AVX-512, so this runs the other paths.
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    run_at_capability(_PORTABLE_CHECK.replace("TESTS", tests_dir), capability)
