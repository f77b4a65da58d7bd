"""The CPU backend's float32 convolution paths (oneDNN, Winograd F(2x2, 3x3), direct), each
forced in turn, against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import GOOGLENET_CASES, ODD_CASES, assert_close_rel, odd_spatial, randomize_block
from helpers import reference_f64 as ref64

from fused_inception import FusedInception, Inception, _ext
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.folding import fold_block

pytestmark = pytest.mark.skipif(
    not _ext.has_extension(), reason=f"fused_inception._C is not built: {_ext.extension_error()}"
)


@pytest.fixture(params=["onednn", "onednn-python", "winograd", "direct"])
def conv_path(request, monkeypatch):
    """Force every eligible 3x3 conv onto one path: oneDNN (float32's default where torch has
    oneDNN; "onednn" the eval forward's C++ operator inception_block_onednn, "onednn-python" the
    same block from Python, as training's forward runs it), or without it Winograd or the direct
    convolution (the policy there uses both)."""
    on_onednn = request.param.startswith("onednn")
    monkeypatch.setattr(cpu_onednn, "ENABLED", on_onednn)
    onednn_calls = []
    real_conv = cpu_onednn.conv
    monkeypatch.setattr(cpu_onednn, "conv", lambda *a: (onednn_calls.append(1), real_conv(*a))[1])
    block_calls = []
    if request.param == "onednn-python":
        monkeypatch.setattr(cpu, "_BLOCK_OP", None)
    elif cpu._BLOCK_OP is not None:
        real_block = cpu._BLOCK_OP
        monkeypatch.setattr(cpu, "_BLOCK_OP", lambda *a: (block_calls.append(1), real_block(*a))[1])
    if request.param == "winograd":
        monkeypatch.setattr(cpu_winograd, "MIN_PIXELS", 0)
        monkeypatch.setattr(cpu_winograd, "MIN_IN_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "MIN_OUT_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "TILES_PER_CHUNK", 5)  # several chunks, ragged last
    else:
        monkeypatch.setattr(cpu_winograd, "MIN_PIXELS", 10**9)
    calls = []
    real = cpu_winograd.conv3x3_relu_into
    monkeypatch.setattr(
        cpu_winograd, "conv3x3_relu_into", lambda *a: (calls.append(1), real(*a))[1]
    )
    yield request.param
    assert bool(calls) == (request.param == "winograd"), f"{len(calls)} Winograd calls"
    assert bool(onednn_calls) == (request.param == "onednn-python"), (
        f"{len(onednn_calls)} oneDNN calls from Python"
    )
    assert bool(block_calls) == (request.param == "onednn"), f"{len(block_calls)} operator calls"


def _parity(cfg, hw, batch, norm, k, layout):
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm)).eval()
    fused = FusedInception.from_module(src, backend="cpu").eval()
    x = torch.randn(batch, cfg.in_channels, *hw).contiguous(memory_format=layout)
    with torch.no_grad():
        out = fused(x)
    assert_close_rel(out, ref64(src, x), torch.float32)


@pytest.mark.parametrize("name,cfg", GOOGLENET_CASES)
def test_googlenet_blocks(name, cfg, conv_path):
    _parity(cfg, (cfg.hw, cfg.hw), 2, True, 3, torch.channels_last)


@pytest.mark.parametrize("name,cfg", ODD_CASES)
@pytest.mark.parametrize("norm,k", [(True, 3), (False, 5)], ids=["bn-k3", "paper-k5"])
def test_odd_shapes(name, cfg, norm, k, conv_path):
    _parity(cfg, odd_spatial(name, cfg.hw), 3, norm, k, torch.contiguous_format)


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
@pytest.mark.parametrize("name", ["3a", "4e", "5b"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_block_operator_is_the_python_path(name, layout):
    """The eval forward's C++ operator and the same block from Python give the same bits, with
    plain weights (a shape's first call) and reordered ones (later calls), batch 1 and 2, on
    input holding NaN and infinities (the ReLU must keep NaN, as torch's does)."""
    cfg = GOOGLENET_BLOCKS[name]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=5, norm=False)).eval()
    packed = cpu.prepare(fold_block(FusedInception.from_module(src, backend="cpu")))
    for batch in (1, 2):
        x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw).contiguous(memory_format=layout)
        x[0, 3, 2, 2] = float("nan")
        x[-1, 5, 0, :] = float("inf")
        for call in range(3):
            with torch.no_grad(), poison_outputs():
                got = cpu.forward(x, packed)
                want = cpu._forward(x, packed, keep_reduced=False)[0]
            where = f"batch {batch}, call {call}"
            assert got.stride() == want.stride(), where
            assert got.isnan().any(), where
            assert torch.equal(got.view(torch.int32), want.view(torch.int32)), where


@pytest.mark.parametrize("hw", [(1, 1), (1, 4), (2, 2), (3, 5), (6, 7)])
def test_operators_against_conv2d(hw):
    """The three steps alone, on row-strided input and output slices poisoned with NaN."""
    h, w = hw
    n, c_in, c_out = 3, 7, 9
    gen = torch.Generator().manual_seed(1)
    storage = torch.randn(n * h * w, c_in + 4, generator=gen)
    r_rows = storage[:, 2 : 2 + c_in]
    weight = torch.randn(c_out, c_in, 3, 3, generator=gen)
    bias = torch.randn(c_out, generator=gen)
    out_storage = torch.full((n * h * w, c_out + 3), float("nan"))
    out_rows = out_storage[:, 1 : 1 + c_out]
    cpu_winograd.conv3x3_relu_into(
        r_rows, cpu_winograd.transform_weight(weight), bias, out_rows, n, h, w
    )
    r_nchw = r_rows.double().reshape(n, h, w, c_in).permute(0, 3, 1, 2)
    ref = F.relu(F.conv2d(r_nchw, weight.double(), bias.double(), padding=1))
    assert_close_rel(out_rows, ref.permute(0, 2, 3, 1).reshape(n * h * w, c_out), torch.float32)
    assert torch.isnan(out_storage[:, 0]).all() and torch.isnan(out_storage[:, -2:]).all()


def test_operator_errors():
    ops = torch.ops.fused_inception
    with pytest.raises(ValueError, match="N\\*H\\*W"):
        ops.winograd_f2x3_input(torch.randn(10, 4), 1, 3, 3)
    with pytest.raises(TypeError, match="float32"):
        ops.winograd_f2x3_input(torch.randn(9, 4, dtype=torch.float64), 1, 3, 3)
    with pytest.raises(ValueError, match="stride 1"):
        ops.winograd_f2x3_input(torch.randn(4, 9).t(), 1, 3, 3)
    with pytest.raises(ValueError, match="must be \\[16"):
        ops.winograd_f2x3_output_(torch.randn(16, 3, 5), torch.randn(5), torch.empty(9, 5), 1, 3, 3)


def test_tile_ranges_compose():
    """Any split of the tiles into ranges gives what one call over all of them gives, bit for
    bit; ranges cross image boundaries (2 images of 5x7: 12 tiles each)."""
    ops = torch.ops.fused_inception
    n, h, w, c_in, c_out = 2, 5, 7, 6, 5
    tiles = n * 3 * 4
    gen = torch.Generator().manual_seed(3)
    r = torch.randn(n * h * w, c_in + 2, generator=gen)[:, 1 : 1 + c_in]
    u, bias = torch.randn(16, c_in, c_out, generator=gen), torch.randn(c_out, generator=gen)
    v_all = ops.winograd_f2x3_input(r, n, h, w)
    m_all = torch.bmm(v_all.transpose(0, 1), u)
    out_all = torch.full((n * h * w, c_out), float("nan"))
    ops.winograd_f2x3_output_(m_all, bias, out_all, n, h, w)
    bounds = [0, 1, 5, 11, 12, 13, 20, tiles]
    out = torch.full_like(out_all, float("nan"))
    for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
        v = ops.winograd_f2x3_input(r, n, h, w, begin, end - begin)
        assert torch.equal(v, v_all[begin:end])
        m = torch.bmm(v.transpose(0, 1), u)
        ops.winograd_f2x3_output_(m, bias, out, n, h, w, begin, end - begin)
        if end < tiles:  # rows of tiles after the range are not written yet
            assert torch.isnan(out).any()
    assert torch.equal(out, out_all)
    tail = ops.winograd_f2x3_input(r, n, h, w, 20)  # tile_count None: to the last tile
    assert torch.equal(tail, v_all[20:])


def test_workspace_is_bounded_by_tiles_not_images(monkeypatch):
    """One 40x40 image is 400 tiles: each transform step holds TILES_PER_CHUNK of them at most
    (chunks used to be whole images, 3.5 GiB of V and M for one 1024x1024 image into 3a)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class RecordTiles(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.tiles = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if func is torch.ops.fused_inception.winograd_f2x3_input.default:
                self.tiles.append(result.shape[0])
            if func is torch.ops.aten.bmm.default:
                self.tiles.append(result.shape[1])
            return result

    monkeypatch.setattr(cpu_winograd, "TILES_PER_CHUNK", 98)
    n, h, w, c_in, c_out = 1, 40, 40, 8, 4
    r = torch.randn(n * h * w, c_in)
    weight, bias = torch.randn(c_out, c_in, 3, 3), torch.randn(c_out)
    u = cpu_winograd.transform_weight(weight)
    out = torch.full((n * h * w, c_out), float("nan"))
    with RecordTiles() as mode:
        cpu_winograd.conv3x3_relu_into(r, u, bias, out, n, h, w)
    assert mode.tiles and max(mode.tiles) <= 98, mode.tiles
    assert sum(mode.tiles) == 2 * 400  # every tile once through each step
    ref = F.relu(F.conv2d(r.double().reshape(1, h, w, c_in).permute(0, 3, 1, 2),
                          weight.double(), bias.double(), padding=1))  # fmt: skip
    assert_close_rel(out, ref.permute(0, 2, 3, 1).reshape(n * h * w, c_out), torch.float32)
