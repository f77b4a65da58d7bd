"""The whole-network replay of a prepared torchvision GoogLeNet (fused_inception/network_replay.py):
every call it answers equals the model's own call (the same operators, bit for bit) and
torchvision's float64 output, and whatever the replay rests on (weights written through .data,
hooks, swapped or edited modules, settings, modes, layouts) makes it record again or step aside."""

from __future__ import annotations

import copy
import pickle
import warnings

import pytest
import torch
import torchvision
from helpers import assert_close_rel, randomize_block
from torch import nn

from fused_inception import network_replay, prepare_for_inference, unprepare_for_inference
from fused_inception.backends import cpu_winograd
from fused_inception.models import googlenet

HW = 64  # every pool of torchvision's GoogLeNet sees a real map


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def _torchvision(seed=0, **kwargs):
    torch.manual_seed(seed)
    kwargs = {"aux_logits": True, "transform_input": False} | kwargs
    model = torchvision.models.googlenet(weights=None, init_weights=True, **kwargs)
    return randomize_block(model, seed).eval()


def _input(seed=1, batch=2, fmt=torch.contiguous_format):
    x = torch.randn(batch, 3, HW, HW, generator=torch.Generator().manual_seed(seed))
    return x.contiguous(memory_format=fmt)


def _f64(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return copy.deepcopy(model).double().eval()(x.double())


def _own_call(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's own call (the replay switched off)."""
    saved = network_replay.ENABLED
    network_replay.ENABLED = False
    try:
        return model(x)
    finally:
        network_replay.ENABLED = saved


def _replayed(model: nn.Module, x: torch.Tensor, calls: int = 3) -> torch.Tensor:
    """The output of the last of `calls` calls, which the replay answered from a complete plan
    (the first two record: each block's and unit's plan is ready from its second call)."""
    replay = network_replay.replay_of(model)
    assert replay is not None
    for _ in range(calls - 1):
        model(x)
    before = replay.replays
    plan = replay._program.plans[(x.shape, x.stride(), x.dtype)]
    assert plan.complete and not plan.fell_back and plan.steps
    out = model(x)
    assert replay.replays == before + 1
    return out


@pytest.fixture(scope="module")
def pair():
    model = _torchvision()
    return model, prepare_for_inference(copy.deepcopy(model), backend="cpu")


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last], ids=["nchw", "cl"])
@pytest.mark.parametrize("batch", [1, 2])
def test_replay_equals_the_models_own_call_and_torchvision(pair, fmt, batch):
    model, prepared = pair
    x = _input(seed=batch, batch=batch, fmt=fmt)
    with torch.no_grad():
        out = _replayed(prepared, x)
        assert torch.equal(out, _own_call(prepared, x))
    assert_close_rel(out, _f64(model, x), torch.float32)


def test_transform_input_and_no_aux_heads():
    model = _torchvision(seed=3, aux_logits=False, transform_input=True)
    prepared = prepare_for_inference(copy.deepcopy(model), backend="cpu")
    x = _input(seed=4)
    with torch.no_grad():
        out = _replayed(prepared, x)
        assert torch.equal(out, _own_call(prepared, x))
    assert_close_rel(out, _f64(model, x), torch.float32)


def test_weights_written_through_data_are_seen():
    # .data writes move no version counter: the content checks see them, each in its module
    model = _torchvision(seed=5)
    prepared = prepare_for_inference(copy.deepcopy(model), backend="cpu")
    x = _input(seed=6)
    targets = [
        ("inception4a.branch2.1.conv.weight", 1.5),  # a Winograd 3x3's source
        ("inception5b.branch1.conv.weight", -0.5),  # a 1x1 read in place (plain layout)
        ("conv3.bn.running_var", 2.0),  # a stem unit's BatchNorm, folded
        ("fc.weight", 0.25),
    ]
    with torch.no_grad():
        _replayed(prepared, x)
        for name, factor in targets:
            for m in (prepared, model):
                (m.get_buffer(name) if "running" in name else m.get_parameter(name)).data *= factor
            out = prepared(x)
            assert torch.equal(out, _own_call(prepared, x)), name
            assert_close_rel(out, _f64(model, x), torch.float32)
            assert torch.equal(_replayed(prepared, x), out), name  # replayed again after


def test_hooks_fire_and_the_replay_resumes_after_removal():
    prepared = prepare_for_inference(_torchvision(seed=7), backend="cpu")
    replay = network_replay.replay_of(prepared)
    x = _input(seed=8)
    fired = []
    with torch.no_grad():
        expected = _replayed(prepared, x)
        handles = [
            prepared.inception4a.register_forward_hook(lambda *a: fired.append("4a")),
            prepared.conv1.register_forward_pre_hook(lambda *a: fired.append("conv1")),
            prepared.register_forward_hook(lambda *a: fired.append("model")),
            nn.modules.module.register_module_forward_hook(lambda *a: fired.append("global")),
        ]
        for handle in handles:
            before = replay.replays
            fired.clear()
            assert torch.equal(prepared(x), expected)
            assert fired and replay.replays == before  # the model's own call ran, hooks fired
            handle.remove()
        assert torch.equal(_replayed(prepared, x), expected)


def test_swapped_and_edited_modules_and_modes_are_followed():
    model = _torchvision(seed=9)
    prepared = prepare_for_inference(copy.deepcopy(model), backend="cpu")
    x = _input(seed=10)
    with torch.no_grad():
        _replayed(prepared, x)
        # a torch module in place of the package's NHWC pool, then an edited pool argument
        prepared.maxpool4 = model.maxpool4 = nn.MaxPool2d(2, 2, ceil_mode=True)
        assert torch.equal(_replayed(prepared, x), _own_call(prepared, x))
        prepared.maxpool2.ceil_mode = model.maxpool2.ceil_mode = False
        out = _replayed(prepared, x)
        assert torch.equal(out, _own_call(prepared, x))
        assert_close_rel(out, _f64(model, x), torch.float32)
        # the traced forward follows the model's attributes
        prepared.transform_input = model.transform_input = True
        out = _replayed(prepared, x)
        assert_close_rel(out, _f64(model, x), torch.float32)
        # a block in training mode (BatchNorm batch statistics) runs its own forward
        prepared.inception4b.train()
        model.inception4b.train()
        expected = copy.deepcopy(model).double()(x.double())
        assert_close_rel(prepared(x), expected, torch.float32)
        prepared.inception4b.eval()
    # training mode and autograd: the model's own call (aux heads' outputs, gradients)
    prepared.train()
    outputs = prepared(x)
    assert isinstance(outputs, tuple) and outputs.logits.requires_grad
    prepared.eval()
    out = prepared(x.requires_grad_())
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_settings_and_autocast_and_tracing(monkeypatch):
    prepared = prepare_for_inference(_torchvision(seed=11), backend="cpu")
    replay = network_replay.replay_of(prepared)
    x = _input(seed=12)
    with torch.no_grad():
        expected = _replayed(prepared, x)
        # a setting a recorded plan rests on: recorded again, the same function
        monkeypatch.setattr(cpu_winograd, "ONEDNN_MIN_TILES", 10**6)
        assert torch.equal(prepared(x), _own_call(prepared, x))
        assert_close_rel(_replayed(prepared, x), expected, torch.float32)
        monkeypatch.undo()
        before = replay.replays
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prepared(x)
        traced = torch.jit.trace(prepared, x, check_trace=False)
        assert replay.replays == before  # neither went through the replay
        assert_close_rel(traced(x), expected, torch.float32)


class _Rewriter(nn.Module):
    """A module of the user's that, while ON[0] is set, writes a tensor through .data in its
    forward (a global flag: the replay's snapshot does not see it change)."""

    ON = [False]

    def __init__(self, pool: nn.Module, weight: torch.Tensor, value: torch.Tensor) -> None:
        super().__init__()
        self.pool = pool
        self.__dict__["weight"], self.__dict__["value"] = weight, value

    def forward(self, x):
        if self.ON[0]:
            self.weight.data.copy_(self.value)
        return self.pool(x)


def test_a_users_module_in_the_graph_checks_each_step_just_before_its_call():
    prepared = prepare_for_inference(_torchvision(seed=13), backend="cpu")
    # inception5a's b1 BatchNorm variance: folded into the cached scale, checked by content
    weight = prepared.inception5a.branch1.bn.running_var
    original = weight.detach().clone()
    prepared.maxpool4 = _Rewriter(prepared.maxpool4, weight, original * 3)
    x = _input(seed=14)
    with torch.no_grad():
        _replayed(prepared, x)
        assert not network_replay.replay_of(prepared)._program.known
        _Rewriter.ON[0] = True
        try:
            out = prepared(x)  # the rewrite happens after the forward began
            weight.data.copy_(original)
            expected = _own_call(prepared, x)
        finally:
            _Rewriter.ON[0] = False
    assert torch.equal(out, expected)


def test_layouts_batches_and_bad_input():
    prepared = prepare_for_inference(_torchvision(seed=15), backend="cpu")
    inputs = [
        _input(seed=16, batch=1),
        _input(seed=17, batch=3, fmt=torch.channels_last),
        _input(seed=18, batch=1, fmt=torch.channels_last),
    ]
    with torch.no_grad():
        for _ in range(3):
            for x in inputs:
                assert torch.equal(prepared(x), _own_call(prepared, x))
        bad = torch.randn(1, 4, HW, HW)
        with pytest.raises(RuntimeError) as replayed:
            prepared(bad)
        with pytest.raises(RuntimeError) as own:
            _own_call(prepared, bad)
        assert str(replayed.value) == str(own.value)
        assert torch.equal(_replayed(prepared, inputs[0]), _own_call(prepared, inputs[0]))


def test_only_torchvisions_googlenet_copies_and_unprepare():
    ours = prepare_for_inference(googlenet("torchvision").eval(), backend="cpu")
    assert network_replay.replay_of(ours) is None  # its forward checks shapes: not traced

    class Sub(torchvision.models.GoogLeNet):
        pass

    sub = Sub(aux_logits=False, init_weights=True).eval()
    assert network_replay.replay_of(prepare_for_inference(sub, backend="cpu")) is None

    prepared = prepare_for_inference(_torchvision(seed=19), backend="cpu")
    x = _input(seed=20)
    with torch.no_grad():
        expected = _replayed(prepared, x)
        for clone in (copy.deepcopy(prepared), pickle.loads(pickle.dumps(prepared))):
            assert network_replay.replay_of(clone) is None  # dropped, as a compiled call is
            assert_close_rel(clone(x), expected, torch.float32)
            assert torch.equal(_replayed(prepare_for_inference(clone), x), expected)
        compiled = lambda *a, **k: "compiled"  # noqa: E731  (what nn.Module.compile() sets)
        fresh = _torchvision(seed=19)
        fresh._compiled_call_impl = compiled
        prepare_for_inference(fresh, backend="cpu")
        assert fresh._compiled_call_impl is compiled  # a compiled call is kept
        unprepare_for_inference(prepared)
        assert network_replay.replay_of(prepared) is None
        assert "_compiled_call_impl" not in prepared.__dict__
