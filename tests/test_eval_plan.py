"""The eval fast path (FusedInception._planned, backends/cpu.py forward_plan): once two eval
forwards on one input layout made the same operator call, later ones make it again after cheap
checks only. Every change the full forward acts on sends the next forward through it again: a
write to any weight or buffer (through .data, numpy or in place under inference_mode), a new
tensor for a weight, an attribute, a hook, training mode, autograd, autocast, tracing, each
backend setting the call depends on, and another input layout's refold of a KxK weight. Against
float64 and, where a setting changes what runs, bit for bit against a freshly prepared block."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import FunctionRecorder, assert_close_rel, randomize_block, reference_f64

from fused_inception import FusedInception, Inception, prepare_for_inference
from fused_inception import module as fused_module
from fused_inception.backends import cpu, cpu_onednn, cpu_winograd
from fused_inception.backends.output import poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.units import block_units

pytestmark = pytest.mark.skipif(
    cpu._BLOCK_OP is None or not cpu_onednn.available(torch.float32),
    reason="no inception_block_onednn operator or no oneDNN in this build",
)

CFG = GOOGLENET_BLOCKS["4d"]


@pytest.fixture
def setup(monkeypatch):
    """4d prepared for inference, its source, a batch-2 channels_last input, and the count of
    full forwards (calls of cpu.forward_plan). F(2x2, 3x3) on the own kernel: b2's 3x3 then runs
    from a Winograd form the call checks itself, the 1x1s read their weights in place."""
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", False)
    monkeypatch.setattr(cpu_onednn, "NCHW_SCATTER", False)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
    torch.manual_seed(3)
    src = randomize_block(Inception(*CFG.args()), seed=3).eval()
    block = prepare_for_inference(copy.deepcopy(src))
    assert isinstance(block, FusedInception)
    x = _input(2)
    full = []
    real = cpu.forward_plan
    monkeypatch.setattr(cpu, "forward_plan", lambda *a: (full.append(1), real(*a))[1])
    return src, block, x, full


def _input(batch: int) -> torch.Tensor:
    x = torch.randn(batch, CFG.in_channels, CFG.hw, CFG.hw)
    return x.contiguous(memory_format=torch.channels_last)


def _run(block, x):
    with torch.no_grad(), poison_outputs():
        return block(x)


def _against_float64(src, out, x):
    assert_close_rel(out, reference_f64(src, x), torch.float32)


def _warm(block, x, full, fulls: int = 2) -> torch.Tensor:
    """`fulls` full forwards and one replay: the plan is made, made ready (by a second forward
    making the same call), then replayed. A weight oneDNN reads reordered is reordered on its
    second use (cpu_onednn.Weights.get), so where one is in the call the plan is made
    again on the second forward and made ready by the third: fulls=3."""
    outs = [_run(block, x) for _ in range(fulls + 1)]
    assert len(full) == fulls
    assert all(torch.equal(o, outs[0]) for o in outs)
    full.clear()
    return outs[0]


def test_replays_the_same_call(setup):
    src, block, x, full = setup
    first = _warm(block, x, full)
    _against_float64(src, first, x)
    for _ in range(3):
        assert torch.equal(_run(block, x), first)
    assert full == []
    (plan,) = block.__dict__["_state"].plans.values()
    assert plan.ready and len(plan.checks) == 1  # b2's 3x3, whose Winograd form the call uses


def _units(src, block):
    return block_units(block), block_units(src)


def _follow(src, block):
    """Copy every parameter and buffer of `block` into `src` (the reference follows a write)."""
    with torch.no_grad():
        for (_, a), (_, b) in zip(
            list(src.named_parameters()) + list(src.named_buffers()),
            list(block.named_parameters()) + list(block.named_buffers()),
            strict=True,
        ):
            a.copy_(b)


def _bn_buffer(src, block):
    block_units(block)[3].bn.running_var.data.mul_(1.7)


def _bn_weight_inference_mode(src, block):
    with torch.inference_mode():
        block_units(block)[1].bn.weight.add_(0.3)


def _winograd_weight_numpy(src, block):
    block_units(block)[2].conv.weight.detach().numpy()[0, 0, 0, 0] = 2.5


def _new_tensor_for_live_weight(src, block):
    w = block_units(block)[0].conv.weight
    w.data = w.data.contiguous() * 2


WRITES = {
    "bn-buffer-data": _bn_buffer,
    "bn-weight-inference-mode": _bn_weight_inference_mode,
    "winograd-3x3-numpy": _winograd_weight_numpy,
    "new-tensor-for-a-1x1": _new_tensor_for_live_weight,
}


@pytest.mark.parametrize("write", list(WRITES), ids=str)
def test_a_write_takes_the_full_forward(setup, write):
    src, block, x, full = setup
    _warm(block, x, full)
    WRITES[write](src, block)
    _follow(src, block)
    out = _run(block, x)
    assert full == [1]
    _against_float64(src, out, x)
    again = _run(block, x)  # the new plan is made ready, then replayed
    assert torch.equal(again, out)
    assert torch.equal(_run(block, x), out) and full == [1, 1]


def test_in_place_writes_to_weights_read_in_place_need_no_full_forward(setup):
    """The 1x1s and b3's direct 3x3 read their plain weights on every call: the replay sees
    their new values."""
    src, block, x, full = setup
    _warm(block, x, full)
    units = block_units(block)
    units[0].conv.weight.data.mul_(-1.5)
    units[4].conv.weight.data[1].zero_()
    units[5].conv.weight.detach().numpy()[2, 0, 0, 0] = 4.0
    _follow(src, block)
    out = _run(block, x)
    assert full == []
    _against_float64(src, out, x)


@pytest.mark.parametrize("change", ["bn-eps", "submodule-hook"], ids=str)
def test_a_module_change_is_computed(setup, change):
    """An attribute (BatchNorm's eps, in both blocks) takes the full forward; a hook on a unit
    makes the block run its modules (the composed path), and the hook fires."""
    src, block, x, full = setup
    _warm(block, x, full)
    fired = []
    if change == "bn-eps":
        block_units(block)[1].bn.eps = block_units(src)[1].bn.eps = 0.25
    else:
        block_units(block)[4].register_forward_hook(lambda *a: fired.append(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the composed path's warning (once per process)
        out = _run(block, x)
    assert (full, fired) == (([1], []) if change == "bn-eps" else ([], [1]))
    _against_float64(src, out, x)


def test_one_unit_in_training_mode_is_computed_as_torchvision_does(setup):
    src, block, x, full = setup
    _warm(block, x, full)
    block_units(block)[2].bn.train()
    block_units(src)[2].bn.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = _run(block, x)
    with torch.no_grad():
        assert_close_rel(out, src.double()(x.double()), torch.float32)


# Each setting backends/cpu.py plan_policy lists, and a value other than the fixture's.
SETTINGS = [
    (cpu_onednn, "OWN_GEMM", False),
    (cpu_onednn, "MKL_WINOGRAD", True),
    (cpu_onednn, "NCHW_SCATTER", True),
    (cpu_winograd, "ONEDNN_ENABLED", False),
    (cpu_winograd, "ONEDNN_TILES_PER_CHUNK", 40),
    (cpu_winograd, "MKL_TILES_PER_CHUNK", 40),
    (cpu_winograd, "ONEDNN_MIN_IN_CHANNELS", 1024),
    (cpu_winograd, "ONEDNN_MIN_OUT_CHANNELS", 1024),
    (cpu_winograd, "ONEDNN_MIN_TILES", 1024),
    (cpu_winograd, "ONEDNN_F4_ENABLED", True),
    (cpu_winograd, "ONEDNN_F4_MIN_TILES", 1),
    (cpu_winograd, "OWN_F4_MIN_TILES", 1),
    (cpu_winograd, "OWN_F4_MAX_TILES", 0),
    (cpu_winograd, "OWN_F4_MAX_UNIT_TILES", 0),
    (cpu_winograd, "OWN_F4_UNIT_CHUNK_TILES", 0),
]


@pytest.mark.parametrize("module,name,value", SETTINGS, ids=[name for _, name, _ in SETTINGS])
def test_a_backend_setting_takes_the_full_forward(setup, monkeypatch, module, name, value):
    """After the change the block computes exactly what a block prepared under it does."""
    src, block, x, full = setup
    _warm(block, x, full)
    monkeypatch.setattr(module, name, value)
    out = _run(block, x)
    assert full == [1]
    fresh = prepare_for_inference(copy.deepcopy(src))
    assert torch.equal(out, _run(fresh, x))
    _against_float64(src, out, x)


def test_the_cpu_capability_takes_the_full_forward(setup, monkeypatch):
    """With OWN_GEMM None the own kernel's policy follows torch's CPU capability: another
    capability (as tests switch it) is another setting (on an Intel CPU: on others AVX2 and
    AVX-512 both run every GEMM on the own kernel)."""
    src, block, x, full = setup
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", None)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", None)
    monkeypatch.setattr(cpu_onednn, "_intel_cpu", lambda: True)
    # On AVX2 CPUs every weight is the own kernel's (panels), on Intel AVX-512 ones b2's F(2x2,
    # 3x3) weight is MKL's matrices; elsewhere it runs on oneDNN, reordered on its second use.
    _warm(block, x, full, 2 if cpu_onednn.own_gemm() or cpu_onednn.mkl_winograd() else 3)
    here = torch.backends.cpu.get_cpu_capability()
    other = "AVX512" if here != "AVX512" else "AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: other)
    out = _run(block, x)
    assert full == [1]
    assert torch.equal(out, _run(prepare_for_inference(copy.deepcopy(src)), x))
    _against_float64(src, out, x)


def test_the_operator_and_poisoning_take_the_full_forward(setup, monkeypatch):
    src, block, x, full = setup
    _warm(block, x, full)
    seen = []
    real = cpu._BLOCK_OP
    monkeypatch.setattr(cpu, "_BLOCK_OP", lambda *a: (seen.append(1), real(*a))[1])
    out = _run(block, x)
    assert full == [1] and seen == [1]
    _against_float64(src, out, x)
    with torch.no_grad():  # outputs not poisoned: another setting
        out = block(x)
    assert full == [1, 1]
    _against_float64(src, out, x)


def test_autograd_autocast_training_and_tracing_leave_the_plan(setup):
    src, block, x, full = setup
    _warm(block, x, full)
    out = block(x)  # grad mode, parameters that require grad: the differentiable operator
    assert out.grad_fn is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert block(x).dtype == torch.bfloat16
    with torch.no_grad():
        traced = torch.jit.trace(block, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "fused_inception::" not in graph and "aten::_convolution" in graph  # standard ops
    _against_float64(src, traced(x), x)
    block.train()
    src.train()
    with torch.no_grad():
        assert_close_rel(block(x), src(x).double(), torch.float32)  # batch statistics
    block.eval()
    src.eval()
    out = _run(block, x)
    _against_float64(src, out, x)


def test_replays_call_the_operator_directly_and_a_torch_function_mode_sees_it(setup, monkeypatch):
    src, block, x, full = setup
    first = _warm(block, x, full)
    direct = []
    real = cpu._BLOCK_DIRECT
    assert real is not None  # this build has _C.call_op
    monkeypatch.setattr(cpu, "_BLOCK_DIRECT", lambda *a: (direct.append(1), real(*a))[1])
    # the same call from C (module._fast_context), counted where it replays
    real_c = fused_module._REPLAY_CHECKED
    assert real_c is not None

    def replay_checked(x, ctx):
        out = real_c(x, ctx)
        if out is not None:
            direct.append(1)
        return out

    monkeypatch.setattr(fused_module, "_REPLAY_CHECKED", replay_checked)
    assert torch.equal(_run(block, x), first)
    assert full == [] and direct == [1]  # the replay: the operator without torch.ops' layer
    with FunctionRecorder() as mode:  # which would bypass the mode: the full forward runs
        out = _run(block, x)
    assert torch.equal(out, first) and full == [1] and direct == [1]
    assert cpu._BLOCK_OP in mode.seen
    full.clear()
    assert torch.equal(_run(block, x), first)  # out of the mode: replays again
    assert full == [] and direct == [1, 1]


def test_a_refold_for_one_layout_is_seen_by_the_others(setup):
    """Batch 1 and batch 2 each have a ready plan on b2's Winograd form; a write to that 3x3
    weight is refolded by the next (batch 2) forward, and batch 1's plan, made from the old
    form, must not be replayed."""
    src, block, x, full = setup
    one = _input(1)
    _warm(block, x, full)
    _warm(block, one, full)
    _winograd_weight_numpy(src, block)
    _follow(src, block)
    _against_float64(src, _run(block, x), x)
    assert full == [1]
    _against_float64(src, _run(block, one), one)
    assert full == [1, 1]


def test_load_state_dict_is_seen(setup):
    src, block, x, full = setup
    _warm(block, x, full)
    other = randomize_block(Inception(*CFG.args()), seed=11).eval()
    block.load_state_dict(other.state_dict())
    _against_float64(other, _run(block, x), x)
    assert full == [1]


def test_plans_per_block_are_bounded(setup):
    src, block, x, full = setup
    for batch in range(1, 11):
        xb = _input(batch)
        _run(block, xb)
        _run(block, xb)
    assert 1 <= len(block.__dict__["_state"].plans) <= 8
    _against_float64(src, _run(block, x), x)


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_export_after_replays_uses_standard_operators(setup, dynamo, tmp_path):
    """A user who ran inference first, then exports: the export sees torchvision's operators
    (not a replayed fused call), and ONNX Runtime computes the block."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    src, block, x, full = setup
    _warm(block, x, full)
    path = str(tmp_path / "block.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(block, (x,), path, dynamo=dynamo)
    domains = {node.domain for node in onnx.load(path).graph.node}
    assert domains <= {""}
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.contiguous().numpy()})
    _against_float64(src, torch.from_numpy(out), x)
    assert torch.equal(_run(block, x), _run(block, x))  # and the replays go on after it


# --- FoldedConvUnit (prepare_for_inference's stem units): the same fast path ---------------------

# GoogLeNet's three stem kinds, small: a first layer (7x7/2 on 3 channels, NCHW image read as it
# is), a 1x1 (the own kernel) and a 3x3 wide enough for Winograd (F(4x4, 3x3) at 16x16, batch 2).
UNITS = {
    "first-layer": ((3, 24), {"kernel_size": 7, "stride": 2, "padding": 3}, (2, 3, 29, 27), False),
    "1x1": ((32, 40), {"kernel_size": 1}, (2, 32, 9, 11), True),
    "3x3-winograd": ((64, 64), {"kernel_size": 3, "padding": 1}, (2, 64, 16, 16), True),
}


@pytest.fixture(params=list(UNITS))
def unit_setup(request, monkeypatch):
    """(source unit, its FoldedConvUnit with channels_last weights, x, count of full forwards
    (FoldedConvUnit._call))."""
    from torchvision.models.googlenet import BasicConv2d

    from fused_inception.folded_unit import FoldedConvUnit

    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", True)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", False)
    channels, kwargs, shape, channels_last = UNITS[request.param]
    torch.manual_seed(8)
    src = randomize_block(BasicConv2d(*channels, **kwargs), seed=8).eval()
    unit = FoldedConvUnit.from_module(copy.deepcopy(src)).to(memory_format=torch.channels_last)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    full = []
    real = FoldedConvUnit._call
    monkeypatch.setattr(FoldedConvUnit, "_call", lambda *a: (full.append(1), real(*a))[1])
    return src, unit, x, full


def _unit_against_float64(src, out, x):
    with torch.no_grad():
        assert_close_rel(out, src.double()(x.double()), torch.float32)


def _unit_warm(unit, x, full) -> torch.Tensor:
    with torch.no_grad():
        outs = [unit(x) for _ in range(3)]
    assert len(full) == 2 and all(torch.equal(o, outs[0]) for o in outs)
    full.clear()
    return outs[0]


def test_a_unit_replays_and_sees_every_change(unit_setup):
    src, unit, x, full = unit_setup
    _unit_against_float64(src, _unit_warm(unit, x, full), x)
    with torch.no_grad():
        unit(x)
    assert full == []
    changes = [
        lambda u: u.bn.running_var.data.mul_(1.6),  # a buffer, through .data
        lambda u: u.conv.weight.detach().numpy().__setitem__((1, 0, 0, 0), 3.0),  # numpy
        lambda u: setattr(u.bn, "eps", 0.3),  # an attribute
    ]
    for change in changes:
        change(unit)
        change(src)
        with torch.no_grad():
            src.conv.weight.copy_(unit.conv.weight)
            out = unit(x)
        assert full == [1]
        _unit_against_float64(src, out, x)
        with torch.no_grad():
            again = [unit(x), unit(x)]  # a second full forward, then a replay
        assert full == [1, 1] and all(torch.equal(a, out) for a in again)
        full.clear()
    fired = []
    unit.conv.register_forward_hook(lambda *a: fired.append(1))
    with torch.no_grad():
        out = unit(x)
    assert fired == [1]  # the composed path: the hook fires
    _unit_against_float64(src, out, x)


UNIT_SETTINGS = [
    (cpu_onednn, "OWN_GEMM", False),
    (cpu_onednn, "MKL_WINOGRAD", True),
    (cpu_onednn, "ENABLED", False),
    (cpu_winograd, "ONEDNN_ENABLED", False),
    (cpu_winograd, "ONEDNN_TILES_PER_CHUNK", 8),
    (cpu_winograd, "MKL_TILES_PER_CHUNK", 8),
    (cpu_winograd, "ONEDNN_MIN_IN_CHANNELS", 1024),
    (cpu_winograd, "ONEDNN_MIN_OUT_CHANNELS", 1024),
    (cpu_winograd, "ONEDNN_MIN_TILES", 1024),
    (cpu_winograd, "ONEDNN_F4_ENABLED", False),
    (cpu_winograd, "ONEDNN_F4_MIN_TILES", 1024),
    (cpu_winograd, "OWN_F4_MIN_TILES", 1024),
    (cpu_winograd, "OWN_F4_MAX_UNIT_TILES", 0),
    (cpu_winograd, "OWN_F4_UNIT_CHUNK_TILES", 16),
]


def test_a_unit_follows_each_setting(unit_setup, monkeypatch):
    """After each change of a setting the unit computes exactly what a new unit does under it."""
    from fused_inception.folded_unit import FoldedConvUnit

    src, unit, x, full = unit_setup
    _unit_warm(unit, x, full)
    for module, name, value in UNIT_SETTINGS:
        with monkeypatch.context() as m:
            m.setattr(module, name, value)
            fresh = FoldedConvUnit.from_module(copy.deepcopy(src))
            fresh = fresh.to(memory_format=torch.channels_last)
            with torch.no_grad():
                out, want = unit(x), fresh(x)
            assert torch.equal(out, want), name
        with torch.no_grad():
            assert torch.equal(unit(x), unit(x))  # back: the old setting's result
    _unit_against_float64(src, unit(x).detach(), x)


def test_a_unit_replays_directly_but_not_under_a_torch_function_mode(unit_setup):
    from fused_inception import folded_unit

    src, unit, x, full = unit_setup
    first = _unit_warm(unit, x, full)
    ops = {folded_unit._GEMM_OP, folded_unit._WINOGRAD_OP}
    with FunctionRecorder() as mode, torch.no_grad():
        out = unit(x)
    assert full == [1] and torch.equal(out, first)
    assert ops & set(mode.seen)  # the full forward's operator call, seen by the mode
    with FunctionRecorder() as mode, torch.no_grad():
        unit(x)  # a second one: still the full forward (the mode is on)
    assert full == [1, 1] and ops & set(mode.seen)
    full.clear()
    with torch.no_grad():
        assert torch.equal(unit(x), first)
    assert full == []


def test_a_unit_under_autograd_autocast_and_tracing(unit_setup):
    src, unit, x, full = unit_setup
    _unit_warm(unit, x, full)
    assert unit(x).grad_fn is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert unit(x).dtype == torch.bfloat16
    with torch.no_grad():
        traced = torch.jit.trace(unit, x, check_trace=False)
    graph = str(traced.inlined_graph)
    assert "fused_inception::" not in graph and "aten::_convolution" in graph
    with torch.no_grad():
        _unit_against_float64(src, traced(x), x)
