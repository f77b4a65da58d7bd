"""The CPU backend's float32 convolution paths (oneDNN, Winograd F(2x2, 3x3), direct), each
forced in turn, against float64 references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import GOOGLENET_CASES, ODD_CASES, assert_close_rel, odd_spatial, randomize_block
from helpers import reference_f64 as ref64
from torchvision.models.googlenet import Inception as TvInception

from fused_inception import FusedInception, Inception, _ext
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.folding import fold_block

pytestmark = pytest.mark.skipif(
    not _ext.has_extension(), reason=f"fused_inception._C is not built: {_ext.extension_error()}"
)


@pytest.fixture(
    params=[
        "onednn",
        "onednn-own-gemm",
        "onednn-winograd",
        "onednn-mkl",
        "onednn-f4",
        "onednn-f4-own",
        "onednn-f4-mkl",
        "onednn-python",
        "winograd",
        "direct",
    ]
)
def conv_path(request, monkeypatch):
    """Force every eligible 3x3 conv onto one path: oneDNN (float32's default where torch has
    oneDNN; "onednn" the eval forward's C++ operator inception_block_onednn with its own policy,
    Winograd on a grouped oneDNN GEMM for the wide 3x3s and direct convolutions otherwise, and
    its 1x1 convolutions on oneDNN; "onednn-own-gemm" the same with the 1x1s on the package's
    own GEMM (csrc/cpu/gemm_panels.cpp); "onednn-winograd" the operator with every 3x3 as
    Winograd, in chunks of 5 tiles with a padded last one, on the own GEMM; "onednn-f4" the
    operator with every 3x3 as Winograd F(4x4, 3x3) on oneDNN's GEMM, in chunks of 5 tiles with
    a padded last one (the policy's F(4x4, 3x3) is also in "onednn"); "onednn-f4-own" the same
    on the own GEMM, the last chunk short (cpu_winograd.own_f4_gemm); "onednn-mkl" and
    "onednn-f4-mkl" those of "onednn-winograd" and "onednn-f4" as one batched matrix product
    (torch.bmm, cpu_onednn.mkl_winograd), the last chunk short; "onednn-python" the
    same block from Python, as training's forward runs it, all direct), or without it Winograd
    or the direct convolution (the policy there uses both)."""
    on_onednn = request.param.startswith("onednn")
    own_gemm = request.param in ("onednn-own-gemm", "onednn-winograd", "onednn-f4-own")
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", own_gemm)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", request.param.endswith("-mkl"))
    f4 = request.param.startswith("onednn-f4")
    if request.param in ("onednn-winograd", "onednn-mkl") or f4:
        # "onednn-winograd": F(2x2, 3x3), whose GEMMs the own kernel runs; "onednn-mkl" on MKL
        monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", f4)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_MIN_TILES", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_IN_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_OUT_CHANNELS", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_TILES", 0)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_TILES_PER_CHUNK", 5)
        monkeypatch.setattr(cpu_winograd, "MKL_TILES_PER_CHUNK", 5)
    monkeypatch.setattr(cpu_onednn, "ENABLED", on_onednn)
    onednn_calls = []
    real_conv = cpu_onednn.conv
    monkeypatch.setattr(cpu_onednn, "conv", lambda *a: (onednn_calls.append(1), real_conv(*a))[1])
    block_calls = []
    if request.param == "onednn-python":
        monkeypatch.setattr(cpu, "_BLOCK_OP", None)
    elif cpu._BLOCK_OP is not None:
        real_block = cpu._BLOCK_OP
        monkeypatch.setattr(
            cpu,
            "_BLOCK_OP",
            lambda *a: (
                block_calls.append(
                    (a[1].dim(), a[12], a[15], a[16], _gemm_weight(a[3], a[4], a[12]))
                ),
                real_block(*a),
            )[1],
        )
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
    assert bool(block_calls) == (
        request.param.startswith("onednn") and request.param != "onednn-python"
    ), f"{len(block_calls)} operator calls"
    if block_calls and _ext.has_op("conv_bias_relu_nhwc"):  # w_x as panels (3-D) or oneDNN's (4-D)
        assert {call[0] for call in block_calls} == {3 if own_gemm else 4}
    # the Winograd b2's GEMM weight: the own kernel's panels, MKL's matrices or oneDNN's
    want = "panels" if own_gemm else "matrices" if request.param.endswith("-mkl") else "onednn"
    if f4:  # every Winograd b2 is F(4x4, 3x3) (none on 1x1 images)
        for _, winograd2, d2, _, kind in block_calls:
            assert (d2 is not None) == winograd2 and kind[0] == (36 if winograd2 else 0)
    if request.param in ("onednn-winograd", "onednn-mkl"):  # every branch is F(2x2, 3x3)
        assert all(d2 is None and d3 is None for _, _, d2, d3, _ in block_calls)
    if request.param in ("onednn-winograd", "onednn-mkl") or f4:
        assert all(kind[1] == want for _, w2, _, _, kind in block_calls if w2), block_calls


def _gemm_weight(w2: torch.Tensor, b2: torch.Tensor, winograd2: bool) -> tuple[int, str]:
    """The operator's w2 as b2's Winograd GEMM weight: (its positions P, and "panels" for the
    own kernel's [P, ceil(Cout / 16), Cin, 16], "matrices" for MKL's [P, Cin, Cout], "onednn"
    for oneDNN's grouped [P * Cout, Cin, 1, 1], plain or reordered), or (0, "direct")."""
    if not winograd2:
        return 0, "direct"
    if w2.layout == torch.strided and w2.dim() == 3:
        return w2.shape[0], "matrices"
    if w2.layout == torch.strided and w2.shape[-1] == 16 and w2.shape[0] in (16, 36):
        return w2.shape[0], "panels"
    return w2.shape[0] // b2.shape[0], "onednn"


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
def test_block_operator_is_the_python_path(name, layout, monkeypatch):
    """With its 3x3s on direct convolutions, the eval forward's C++ operator and the same block
    from Python give the same bits, with plain weights (a shape's first call) and reordered ones
    (later calls), batch 1 and 2, on input holding NaN and infinities (the ReLU must keep NaN,
    as torch's does). Its Winograd path is checked against float64 in the parity tests."""
    monkeypatch.setattr(cpu_winograd, "ONEDNN_ENABLED", False)
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", False)  # (own GEMM: tests/test_gemm_panels.py)
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


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
@pytest.mark.parametrize("batch", [1, 8])
def test_operator_takes_winograd_for_the_wide_3x3s(batch, monkeypatch):
    """By default the eval operator runs b2's 3x3 of every GoogLeNet block (64-192 -> 128-384
    channels) as Winograd where the batch has at least ONEDNN_MIN_TILES 2x2 tiles (not 5a and
    5b at batch 1: 16 tiles), as F(4x4, 3x3) where it also has ONEDNN_F4_MIN_TILES 4x4 tiles, or
    OWN_F4_MIN_TILES where the own kernel runs Winograd's GEMMs (its GEMMs on oneDNN's or the
    own kernel: tests/test_gemm_panels.py), and b3's narrow 3x3 (16-48
    input channels) directly; the transformed
    weight is reordered for one chunk of tiles from a shape's second call on, and the output
    matches float64 on poisoned outputs with NaN kept where torchvision keeps it."""
    flags = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(
        cpu, "_BLOCK_OP", lambda *a: (flags.append((*a[12:15], a[15] is not None)), real(*a))[1]
    )
    for name, cfg in GOOGLENET_BLOCKS.items():
        src = randomize_block(Inception(*cfg.args(), branch3_kernel=3, norm=True)).eval()
        fused = FusedInception.from_module(src, backend="cpu").eval()
        x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw).contiguous(
            memory_format=torch.channels_last
        )
        x[0, 1, cfg.hw // 2, 3] = float("nan")
        with torch.no_grad(), poison_outputs():
            outs = [fused(x) for _ in range(2)]
            ref = ref64(src, x)
        tiles = batch * ((cfg.hw + 1) // 2) ** 2
        wide = tiles >= cpu_winograd.ONEDNN_MIN_TILES
        assert wide == (batch == 8 or cfg.hw > 7), name
        # MKL's batched GEMMs (Intel AVX-512 CPUs) take larger chunks than oneDNN's grouped one
        mkl = cpu_onednn.mkl_winograd() and not cpu_onednn.own_gemm()
        per = cpu_winograd.MKL_TILES_PER_CHUNK if mkl else cpu_winograd.ONEDNN_TILES_PER_CHUNK
        chunk = min(tiles, per)
        # F(4x4, 3x3) where there are ONEDNN_F4_MIN_TILES 4x4 tiles: 3a and 3b at batch 1 (49
        # tiles), every block at batch 8 (5a and 5b: 8 * 2 * 2 = 32); with the own kernel's
        # GEMMs (AVX2 CPUs) from OWN_F4_MIN_TILES: 4a-4e at batch 1 too (16 tiles)
        own = cpu_onednn.own_gemm()
        least = cpu_winograd.OWN_F4_MIN_TILES if own else cpu_winograd.ONEDNN_F4_MIN_TILES
        f4 = wide and batch * (-(-cfg.hw // 4)) ** 2 >= least
        assert f4 == (wide and (batch == 8 or cfg.hw >= (14 if own else 28))), name
        assert flags[-1] == (wide, False, chunk, f4), name
        for out in outs:
            assert torch.equal(out.isnan(), ref.isnan()), name
            finite = ref.isfinite()
            assert_close_rel(out[finite], ref[finite], torch.float32)


@pytest.mark.parametrize("own", [True, False], ids=["own-gemm", "onednn-gemm"])
def test_f4_threshold_follows_where_the_gemms_run(own, monkeypatch):
    """onednn_tile: F(4x4, 3x3) from OWN_F4_MIN_TILES 4x4 tiles where the own kernel runs
    Winograd's GEMMs (the 14x14 blocks at batch 1: 16 tiles), from ONEDNN_F4_MIN_TILES where
    oneDNN or MKL do; F(2x2, 3x3) below, direct below ONEDNN_MIN_TILES 2x2 tiles."""
    if own and not cpu_onednn._HAS_OWN_KERNEL:
        pytest.skip("this build has no own kernel (conv_bias_relu_nhwc)")
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", own)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_MIN_TILES", 32)
    monkeypatch.setattr(cpu_winograd, "OWN_F4_MIN_TILES", 16)
    shape = (208, 96, 3, 3)
    assert cpu_winograd.onednn_tile(shape, 1, 28, 28) == 4  # 49 4x4 tiles
    assert cpu_winograd.onednn_tile(shape, 1, 14, 14) == (4 if own else 2)  # 16
    assert cpu_winograd.onednn_tile(shape, 1, 13, 12) == 2  # 12
    assert cpu_winograd.onednn_tile(shape, 1, 7, 7) == 0  # 16 2x2 tiles: direct
    assert cpu_winograd.onednn_tile(shape, 8, 7, 7) == 4  # 32
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_MIN_TILES", 8)  # the lower of the two counts
    assert cpu_winograd.onednn_tile(shape, 1, 13, 12) == 4
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
    assert cpu_winograd.onednn_tile(shape, 1, 28, 28) == 2


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
def test_operator_refuses_bad_winograd_arguments():
    """A Winograd branch needs the transformed [16 * c, c_red, 1, 1] weight and a positive
    chunk: anything else is refused by name before any convolution runs."""
    cfg = GOOGLENET_BLOCKS["4a"]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=3, norm=False)).eval()
    packed = cpu.prepare(fold_block(FusedInception.from_module(src, backend="cpu")))
    plain = packed.onednn.plain
    grouped = cpu_onednn.conv_weight(cpu_winograd.grouped_weight(plain["2"]))
    x = torch.randn(1, cfg.in_channels, 6, 6).contiguous(memory_format=torch.channels_last)
    args = [x, plain["x"], packed.b_x, grouped, packed.b2, plain["3"], packed.b3, plain["pool"],
            packed.b4, packed.c1, packed.c2r, False, True, False, 4]  # fmt: skip
    out = cpu._BLOCK_OP(*args)
    ref = ref64(src, x)
    assert_close_rel(out, ref, torch.float32)
    for index, value, match in [
        (3, plain["2"], "w2 must be the transformed weight"),
        (3, grouped[:-16], "w2 must be the transformed weight"),
        (14, 0, "winograd_tiles must be positive"),
    ]:
        bad = list(args)
        bad[index] = value
        with pytest.raises(ValueError, match=match):
            cpu._BLOCK_OP(*bad)
    bad = list(args)
    bad[13] = True  # b3 as Winograd with its direct weight
    with pytest.raises(ValueError, match="w3 must be the transformed weight"):
        cpu._BLOCK_OP(*bad)
    # F(4x4, 3x3): the [36 * c, c_red, 1, 1] weight and the plain one for a direct recompute
    grouped4 = cpu_onednn.conv_weight(cpu_winograd.grouped_weight(plain["2"], 4))
    args4 = args[:3] + [grouped4] + args[4:] + [plain["2"]]
    assert_close_rel(cpu._BLOCK_OP(*args4), ref, torch.float32)
    for index, value, match in [
        (15, None, "F\\(4x4, 3x3\\) needs direct2"),
        (15, plain["2"][:, :-1], "direct2 must be"),
        (3, grouped4[:-1], "w2 must be the transformed weight"),
    ]:
        bad = list(args4)
        bad[index] = value
        with pytest.raises(ValueError, match=match):
            cpu._BLOCK_OP(*bad)
    with pytest.raises(TypeError, match="direct2 must be float32"):
        cpu._BLOCK_OP(*args4[:15], plain["2"].double())
    # MKL's matrices [P, c_red, c]: F(2x2, 3x3) and F(4x4, 3x3) (with its plain weight)
    for tile, extra in ((2, []), (4, [plain["2"]])):
        matrices = cpu_winograd.grouped_matrices(plain["2"], tile)
        good = args[:3] + [matrices] + args[4:] + extra
        assert_close_rel(cpu._BLOCK_OP(*good), ref, torch.float32)
        for value, match in [
            (matrices[:, :-1], r"w2 as matrices must be \[16 or 36, 96, 208\]"),
            (matrices[:, :, :-1], r"w2 as matrices must be \[16 or 36, 96, 208\]"),
            (matrices.double(), "w2 must be a contiguous float32"),
            (matrices.transpose(1, 2).contiguous().transpose(1, 2), "w2 must be a contiguous"),
        ]:
            with pytest.raises((ValueError, RuntimeError), match=match):
                cpu._BLOCK_OP(*(good[:3] + [value] + good[4:]))


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_f4_recomputes_directly_on_nonfinite_values(layout, value, monkeypatch):
    """F(4x4, 3x3)'s transforms would carry a NaN or inf of r to outputs whose 3x3 window does
    not hold it (a row of B^T reads 4 of its 6 input rows); the operator then recomputes the
    branch directly (as it does where the transforms overflow). NaN and inf land
    exactly where torchvision's block puts them, the finite outputs match float64, and with
    finite input the same call is F(4x4, 3x3) (different bits from F(2x2, 3x3))."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", False)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_MIN_TILES", 0)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_TILES", 0)
    directs = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(cpu, "_BLOCK_OP", lambda *a: (directs.append(a[15]), real(*a))[1])
    cfg = GOOGLENET_BLOCKS["3a"]
    tv = randomize_block(TvInception(*cfg.args())).eval()
    fused = FusedInception.from_module(tv, backend="cpu").eval()
    x = torch.randn(1, cfg.in_channels, 11, 13).contiguous(memory_format=layout)
    with torch.no_grad(), poison_outputs():
        finite_out = fused(x)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
        f2_out = fused(x)
        monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", True)
        assert_close_rel(finite_out, ref64(tv, x), torch.float32)
        assert not torch.equal(finite_out, f2_out), "F(4x4, 3x3) did not run"
        # one in the middle of a 4x4 tile's window, one at the image's corner
        x[0, 2, 5, 6] = float(value)
        x[0, 7, 0, 0] = float(value)
        out = fused(x)
        expected = tv.double()(x.double())
    assert directs[0] is not None and directs[-1] is not None
    assert torch.equal(out.isnan(), expected.isnan()), (
        f"NaN masks differ: {int(out.isnan().sum())} NaN, torchvision {int(expected.isnan().sum())}"
    )
    assert torch.equal(out.isinf(), expected.isinf()), "inf positions differ"
    assert torch.equal(out[out.isinf()], expected[expected.isinf()].float()), "inf signs differ"
    finite = expected.isfinite()
    assert finite.any() and (~finite).any()
    assert_close_rel(out[finite], expected[finite], torch.float32)


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
        # The range's slice of m_all, not a bmm of its own: torch's bmm may sum in another order
        # for fewer rows (MKL's AVX-512 kernels do), and this test is about our two operators.
        m = m_all[:, begin:end].contiguous()
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


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
def test_operator_workspace_across_modes_and_sizes(monkeypatch):
    """The per-thread scratch (Winograd's V and M included) is plain memory: a call under
    inference_mode, then no_grad, then inference_mode again all work and agree (a cached
    inference tensor could not be written outside inference mode), and a call whose
    temporaries pass the scratch's 64 MiB (one 4096-tile chunk: V and M alone 56 MiB) takes
    per-call buffers for the rest with the same result."""
    cfg = GOOGLENET_BLOCKS["3a"]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=3, norm=True)).eval()
    fused = FusedInception.from_module(src, backend="cpu").eval()
    x = torch.randn(1, cfg.in_channels, 20, 20).contiguous(memory_format=torch.channels_last)
    ref = ref64(src, x)
    outs = []
    for mode in (torch.inference_mode, torch.no_grad, torch.inference_mode):
        with mode():
            outs.append(fused(x))
    big = torch.randn(1, cfg.in_channels, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        small_chunks = fused(big)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_TILES_PER_CHUNK", 4096)
    monkeypatch.setattr(cpu_winograd, "MKL_TILES_PER_CHUNK", 4096)
    big_fused = FusedInception.from_module(src, backend="cpu").eval()
    with torch.no_grad():
        one_chunk = big_fused(big)
    for out in outs:
        assert torch.equal(out, outs[0])
    assert_close_rel(outs[0], ref, torch.float32)
    assert_close_rel(one_chunk, ref64(src, big), torch.float32)
    assert_close_rel(small_chunks, ref64(src, big), torch.float32)


@pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
def test_operator_scratch_is_reused_safely(layout):
    """The operator's temporaries come from a per-thread buffer that grows to the largest call:
    calls of growing and shrinking sizes each match float64, and an output already returned is
    never written by a later call (it is not carved from the buffer)."""
    cfg = GOOGLENET_BLOCKS["4a"]
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=5, norm=False)).eval()
    fused = FusedInception.from_module(src, backend="cpu").eval()
    kept = []
    for batch, hw in [(1, 6), (3, 14), (2, 9), (3, 14), (1, 6), (4, 17)]:
        x = torch.randn(batch, cfg.in_channels, hw, hw).contiguous(memory_format=layout)
        with torch.no_grad(), poison_outputs():
            out = fused(x)
        assert_close_rel(out, ref64(src, x), torch.float32)
        kept.append((out, out.clone()))
    for out, copy in kept:
        assert torch.equal(out, copy)
