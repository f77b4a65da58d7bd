"""The plain weight layout (fused_inception/plain_layout.py): weights whose output channels are
contiguous, read in place by the own kernel (csrc/cpu/gemm_panels.cpp, GemmJob::ldb) with
BatchNorm's scale in its epilogue, as prepare_for_inference lays out a CPU model's fused blocks;
against float64 references, at every vector width this CPU allows, and the weight check that
leaves those weights out (every write to them is still seen: they are read on every call)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    CAPABILITY_PRELUDE,
    assert_close_rel,
    outputs_at_every_capability,
    randomize_block,
    reference_f64,
)

from fused_inception import (
    FusedInception,
    Inception,
    _ext,
    prepare_for_inference,
    unprepare_for_inference,
)
from fused_inception import fingerprint as fingerprint_module
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.plain_layout import is_plain, plain_views, x_weights_view
from fused_inception.units import block_units

pytestmark = pytest.mark.skipif(
    not _ext.has_op("conv_bias_relu_nhwc"), reason="this build has no conv_bias_relu_nhwc operator"
)
ops = torch.ops.fused_inception


def test_plain_views_hold_the_values_side_by_side():
    gen = torch.Generator().manual_seed(1)
    ws = [torch.randn(c, 6, 3, 3, generator=gen) for c in (5, 16, 19)]
    views = plain_views(ws)
    for w, v in zip(ws, views, strict=True):
        assert torch.equal(v, w) and v.shape == w.shape
        assert v.stride() == (1, 48, 3 * 6 * 48, 6 * 48)  # 40 channels padded to 48 per row
    # each view's channels rounded up to 16 must be readable in its rows: not so for the last
    # (columns 21-52 of 48)
    assert is_plain(views[0]) and is_plain(views[1]) and not is_plain(views[2])
    assert views[1].storage_offset() == 5 and views[2].storage_offset() == 21
    base = views[0].untyped_storage().data_ptr()
    assert all(v.untyped_storage().data_ptr() == base for v in views)
    whole = views[0].as_strided((3, 3, 6, 48), (3 * 6 * 48, 6 * 48, 48, 1), 0)
    assert not whole[..., 40:].any()  # the padding is zeros


@pytest.mark.parametrize("c_out", [1, 16, 23, 32, 100, 128, 320, 384, 448])
def test_plain_rows_are_an_odd_number_of_lines_apart(c_out):
    """Rows ldb floats apart, ldb the channels rounded up to 16 and then to an odd multiple of
    16 (64-byte lines): rows an even number of lines apart would share a fraction of the
    cache's sets (plain_views)."""
    w = torch.randn(c_out, 3, 3, 3)
    (v,) = plain_views([w])
    ldb = v.stride(1)
    assert ldb % 16 == 0 and ldb // 16 % 2 == 1 and c_out <= ldb < c_out + 32
    assert torch.equal(v, w) and is_plain(v)


def test_is_plain_rules():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(19, 4, 3, 3, generator=gen)
    (v,) = plain_views([w])
    assert is_plain(v)
    assert not is_plain(w) and not is_plain(w.contiguous(memory_format=torch.channels_last))
    assert not is_plain(v.double()) and not is_plain(torch.randn(4, 3, 2, 2))
    buf = torch.zeros(4 * 16)  # the last row's padded lanes past the storage: refused
    tight = buf[-4 * 16 + 10 :].as_strided((6, 4, 1, 1), (1, 16, 16, 16))
    assert not is_plain(tight)
    assert is_plain(buf.as_strided((6, 4, 1, 1), (1, 16, 16, 16)))


def test_x_weights_view_needs_adjacent_views():
    gen = torch.Generator().manual_seed(3)
    ws = [torch.randn(c, 8, 1, 1, generator=gen) for c in (4, 6, 3)]
    w1, w2r, w3r = plain_views(ws)
    both = x_weights_view(w1, w2r, w3r)
    assert both is not None and torch.equal(both, torch.cat(ws))
    assert x_weights_view(w2r, w1, w3r) is None  # not in order
    (alone,) = plain_views([ws[1]])
    assert x_weights_view(w1, alone, w3r) is None  # another buffer


# (c_in, c_out, kernel, stride, padding, hw): output channels mid-panel and over several panels;
# few input channels (a first layer's merged taps), strides and reduced padding.
PLAIN_CASES = [
    (8, 5, 1, 1, 0, (3, 4)),
    (8, 40, 1, 1, 0, (7, 7)),
    (5, 19, 3, 1, 1, (6, 9)),
    (24, 33, 5, 1, 2, (7, 7)),
    (17, 16, 7, 1, 3, (5, 6)),
    (3, 24, 7, 2, 3, (17, 19)),
    (20, 21, 3, 2, 0, (9, 8)),
]


@pytest.mark.parametrize("c_in,c_out,kernel,stride,padding,hw", PLAIN_CASES, ids=str)
@pytest.mark.parametrize("scaled", [False, True], ids=["bias", "scale+bias"])
def test_plain_weight_against_float64(c_in, c_out, kernel, stride, padding, hw, scaled):
    """relu(scale * conv + bias) with the weight read in place (a view in the middle of a
    shared buffer, its neighbours' columns not read) against float64, NaN kept."""
    gen = torch.Generator().manual_seed(c_in * 100 + c_out + kernel)
    x = torch.randn(2, c_in, *hw, generator=gen)
    x[1, 0, 1, 2] = float("nan")
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(c_out, c_in, kernel, kernel, generator=gen)
    far = (3, 13)  # neighbours' widths: the view's 16-channel panels stay inside each row
    neighbours = [torch.full((c, c_in, kernel, kernel), 1e30) for c in far]
    view = plain_views([neighbours[0], w, neighbours[1]])[1]
    assert is_plain(view) and view.storage_offset() == 3
    bias = torch.randn(c_out, generator=gen)
    scale = torch.rand(c_out, generator=gen) + 0.5 if scaled else None
    out = ops.conv_bias_relu_nhwc(x, view, bias, stride, padding, scale)
    conv = F.conv2d(x.double(), w.double(), None, stride, padding)
    if scaled:
        conv = conv * scale.double().view(1, -1, 1, 1)
    want = (conv + bias.double().view(1, -1, 1, 1)).relu()
    assert out.shape == want.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.isnan(), want.isnan()) and bool(want.isnan().any())
    finite = want.isfinite()
    assert_close_rel(out[finite], want[finite], torch.float32)


def test_plain_weight_refusals():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1, 8, 4, 4, generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn(5, 8, 3, 3, generator=gen)
    (view,) = plain_views([w])
    bias = torch.randn(5, generator=gen)
    for weight, b, scale, match in (
        (w, bias, None, "output channels contiguous"),  # a dense NCHW weight
        (plain_views([torch.randn(5, 7, 3, 3)])[0], bias, None, r"must be \[5, 8, K, K\]"),
        (view, bias, torch.ones(4), r"scale must be float32 \[5\]"),
        (view, bias, torch.ones(5, dtype=torch.float64), r"scale must be float32 \[5\]"),
    ):
        with pytest.raises(ValueError, match=match):
            ops.conv_bias_relu_nhwc(x, weight, b, 1, -1, scale)


_CAPABILITY_CHECK = (
    CAPABILITY_PRELUDE
    + """
from fused_inception.plain_layout import plain_views
for name, shape, kernel, c_out, stride in (
    ("a", (1, 40, 1, 7), 1, 33, 1),
    ("b", (2, 30, 6, 5), 3, 50, 1),
    ("c", (2, 3, 13, 23), 7, 72, 2),  # a first layer (AVX-512: csrc/cpu/first_layer.cpp)
):
    x = rand(*shape).contiguous(memory_format=torch.channels_last)
    (w,) = plain_views([rand(c_out, shape[1], kernel, kernel)])
    bias, scale = rand(c_out), rand(c_out)
    x[0, 2, 0, 1] = float("nan")
    out = torch.ops.fused_inception.conv_bias_relu_nhwc(x, w, bias, stride, -1, scale)
    print(out.view(torch.int32).flatten().tolist(), file=open(OUT_DIR + f"/{name}.txt", "w"))
print("ok")
"""
)


def test_plain_weight_same_bits_at_every_capability(tmp_path):
    """The AVX-512, AVX2 and plain loops read a plain weight and apply the scale with one FMA
    each: the same bits, NaN included."""
    first, *others = outputs_at_every_capability(tmp_path, _CAPABILITY_CHECK).values()
    assert len(first) == 3 and all(other == first for other in others)


def _prepared_block(name: str, norm: bool, k: int, seed: int = 0):
    cfg = GOOGLENET_BLOCKS[name]
    torch.manual_seed(seed)
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=k, norm=norm)).eval()
    block = prepare_for_inference(copy.deepcopy(src))
    assert isinstance(block, FusedInception)
    return cfg, src, block


def _against_float64(src, block, x):
    with torch.no_grad(), poison_outputs():
        got = block(x)
    want = reference_f64(src, x)
    assert torch.equal(got.isnan(), want.isnan())
    finite = want.isfinite()
    assert_close_rel(got[finite], want[finite], torch.float32)
    return got


@pytest.fixture
def operator_calls(monkeypatch):
    """The eval operator's weights as it receives them: "plain", "panels", "winograd-panels" or
    "onednn" per w_x, w2, w3, w_pool, and whether each of the four scales was passed."""
    real = cpu._BLOCK_OP
    if real is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")
    calls = []

    def kind(w):
        if w.dim() == 3:
            return "panels"
        if w.layout == torch.strided and is_plain(w):
            return "plain"
        winograd_panels = w.layout == torch.strided and w.shape[0] == 16 and w.shape[3] == 16
        return "winograd-panels" if winograd_panels else "onednn"

    def spy(*a):
        scales = tuple(a[i] is not None for i in range(17, 21)) if len(a) > 17 else (False,) * 4
        calls.append((tuple(kind(a[i]) for i in (1, 3, 5, 7)), scales))
        return real(*a)

    monkeypatch.setattr(cpu, "_BLOCK_OP", spy)
    return calls


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last], ids=str)
@pytest.mark.parametrize(
    "name,norm,k", [("3a", True, 3), ("4b", False, 5), ("4e", True, 3), ("5b", True, 3)]
)
@pytest.mark.parametrize("policy", ["avx512", "own", "onednn"])
def test_prepared_blocks_against_float64(
    name, norm, k, layout, policy, operator_calls, monkeypatch
):
    """A block prepared by prepare_for_inference (its weights in the plain layout) against
    float64 at batch 1 and 2, NaN kept, into a poisoned output: on the own kernel's CPUs the
    1x1s (and the direct KxKs) read their weights in place with BatchNorm's scale unfolded; on
    oneDNN (OWN_GEMM False) the same weights are copied as before."""
    monkeypatch.setattr(
        cpu_onednn, "OWN_GEMM", {"avx512": None, "own": True, "onednn": False}[policy]
    )
    if policy == "avx512":  # Intel's: Winograd's GEMMs on MKL or oneDNN, the rest own
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
        monkeypatch.setattr(cpu_onednn, "_intel_cpu", lambda: True)
    cfg, src, block = _prepared_block(name, norm, k)
    units = block_units(block)
    assert all(is_plain(u.conv.weight) for u in units)
    for batch in (1, 2):
        x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw)
        x[0, 1, 3, 3] = float("nan")
        _against_float64(src, block, x.contiguous(memory_format=layout))
    assert len(operator_calls) == 2
    for (w_x, w2, w3, w_pool), (s_x, s2, s3, s_pool) in operator_calls:
        if policy == "onednn":
            assert "plain" not in (w_x, w2, w3, w_pool) and not any((s_x, s2, s3, s_pool))
            continue
        assert w_x == w_pool == w3 == "plain"  # b3 is narrow: never Winograd
        assert s_x == s_pool == s3 == norm  # BatchNorm's scale, only where there is one
        assert s2 == (w2 == "plain")


def _recording_checks(monkeypatch) -> list[int]:
    """The block's content check, recording how many tensors each call hashes."""
    hashed: list[int] = []
    real = fingerprint_module.fingerprint
    checks = {
        "content": lambda t: (hashed.append(len(t)), real(t))[1],
        "version": fingerprint_module.version_key,
    }
    monkeypatch.setattr("fused_inception.module.WEIGHT_CHECKS", checks)
    return hashed


def test_writes_to_live_weights_are_seen(operator_calls, monkeypatch):
    """The weights in the plain layout are left out of the block's content check, and every
    write to them shows in the next forward: through .data, through numpy, in place under
    inference_mode; with weight_check="version" too. The 3x3 of b2, which takes Winograd here
    (4d at batch 2), is checked by the call itself and refolded after a write; a weight given a
    dense tensor again is packed and checked by the block as before."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    # F(2x2, 3x3), on the own kernel's panels (F(4x4, 3x3) would run on oneDNN's GEMM)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
    cfg, src, block = _prepared_block("4d", True, 3, seed=5)
    hashed = _recording_checks(monkeypatch)
    x = torch.randn(2, cfg.in_channels, cfg.hw, cfg.hw).contiguous(
        memory_format=torch.channels_last
    )
    n_tensors = len(list(block.parameters()) + list(block.buffers()))
    _against_float64(src, block, x)
    # the block's check without the six conv weights; prepare_block's of w2 and w3; the call's
    # of w2, whose Winograd form it uses
    assert hashed == [n_tensors - 6, 1, 1, 1]
    assert operator_calls[-1][0] == ("plain", "winograd-panels", "plain", "plain")
    units, src_units = block_units(block), block_units(src)
    writes = (
        lambda: units[0].conv.weight.data.mul_(1.5),
        lambda: units[5].conv.weight.detach().numpy().__setitem__((0, 0, 0, 0), 3.0),
        lambda: units[1].conv.weight.data[2].neg_(),
        lambda: units[2].conv.weight.data.mul_(-1),  # b2's 3x3: its Winograd form is refolded
        lambda: units[4].conv.weight.data[0].zero_(),  # b3's 3x3: read in place
    )
    for write in writes:
        write()
        for u, s in zip(units, src_units, strict=True):  # the reference follows
            s.conv.weight.data.copy_(u.conv.weight)
        _against_float64(src, block, x)
    with torch.inference_mode():
        units[3].conv.weight.data.mul_(0.5)
    src_units[3].conv.weight.data.copy_(units[3].conv.weight)
    _against_float64(src, block, x)
    block.weight_check = "version"
    units[0].conv.weight.data.add_(0.25)
    src_units[0].conv.weight.data.copy_(units[0].conv.weight)
    _against_float64(src, block, x)
    block.weight_check = "auto"
    # a dense weight again: packed (and hashed by the block's check) as before, still right
    with torch.no_grad():
        units[0].conv.weight.data = units[0].conv.weight.data.contiguous() * 2
        src_units[0].conv.weight.mul_(2)
    hashed.clear()
    _against_float64(src, block, x)
    assert hashed[0] == n_tensors - 3  # w2, w3 and the pool projection stay out of it
    assert operator_calls[-1][0][0] == "panels"


def test_kxk_weights_checked_only_where_winograd_uses_them(monkeypatch):
    """5b's b2 3x3 runs directly at batch 1 (read in place: nothing of it hashed) and as
    Winograd at batch 8 (its transform checked by the call): both see a write through .data,
    in either order."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", None)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(cpu_onednn, "_intel_cpu", lambda: True)
    if cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32):
        pytest.skip("no inception_block_onednn operator or no oneDNN in this build")
    cfg, src, block = _prepared_block("5b", True, 3, seed=6)
    hashed = _recording_checks(monkeypatch)
    n_tensors = len(list(block.parameters()) + list(block.buffers()))
    w2, src_w2 = block_units(block)[2].conv.weight, block_units(src)[2].conv.weight
    shape = (cfg.in_channels, cfg.hw, cfg.hw)
    one = torch.randn(1, *shape).contiguous(memory_format=torch.channels_last)
    eight = torch.randn(8, *shape).contiguous(memory_format=torch.channels_last)
    _against_float64(src, block, one)
    hashed.clear()
    _against_float64(src, block, one)
    assert hashed == [n_tensors - 6]
    for x in (eight, one, eight):
        w2.data.mul_(-0.5)
        src_w2.data.copy_(w2)
        hashed.clear()
        _against_float64(src, block, x)
        assert hashed == ([n_tensors - 6, 1] if x is eight else [n_tensors - 6])


def test_prepare_and_unprepare_keep_the_state_dict():
    """prepare_for_inference changes the blocks' weights' strides only: the same state_dict
    values; unprepare_for_inference gives dense weights back, in the format asked for."""
    cfg = GOOGLENET_BLOCKS["4a"]
    torch.manual_seed(3)
    src = randomize_block(Inception(*cfg.args(), branch3_kernel=3, norm=True)).eval()
    before = {k: v.clone() for k, v in src.state_dict().items()}
    block = prepare_for_inference(copy.deepcopy(src))
    after = block.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(is_plain(u.conv.weight) for u in block_units(block))
    again = prepare_for_inference(block)  # a second call: laid out again, same values
    assert all(is_plain(u.conv.weight) for u in block_units(again))
    restored = unprepare_for_inference(again, memory_format=torch.channels_last)
    for u in block_units(restored):
        assert u.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in before.items())


def test_span_covers_a_plain_weight_densely():
    """plain_layout.span: the dense 1-D view a Winograd weight's check hashes in place (a
    non-dense tensor would be hashed through a copy): it starts at the weight's first element,
    ends at its last, sees every write to it (fingerprint and version counter alike) and is
    empty for an empty weight."""
    from fused_inception import fingerprint as fp
    from fused_inception.plain_layout import span

    (w,) = plain_views([torch.randn(40, 5, 3, 3)])
    s = span(w)
    assert s.is_contiguous() and s.data_ptr() == w.data_ptr()
    assert s.numel() == (3 * 3 * 5 - 1) * w.stride(1) + 40
    before, version = fp.fingerprint([s]), s._version
    with torch.no_grad():
        w[39, 4, 2, 2] += 1.0  # the last element
    assert fp.fingerprint([s]) != before and s._version != version
    before = fp.fingerprint([s])
    w.data[0, 0, 0, 0] -= 1.0  # through .data: no version bump, a new hash
    assert fp.fingerprint([s]) != before
    assert span(torch.empty(0, 4, 3, 3)).numel() == 0
