"""The C forms of the eval fast paths' per-call checks (fused_inception.module): the global
modes (`_C.replay_modes`, behind replay_allowed) and the live weights' addresses and strides
(`_C.layout_key`, behind _layout_key) give the same answers as the Python they replace, in every
mode and for every kind of tensor, and hand back to Python what they cannot read; and a block's
whole replay in one call (`_C.replay_checked`) makes the call the Python checks verified, and
answers None after every change they act on."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from helpers import assert_close_rel, randomize_block, reference_f64

from fused_inception import Inception, _ext, prepare_for_inference
from fused_inception import module as fused_module
from fused_inception.backends import cpu_onednn, cpu_winograd
from fused_inception.backends.output import output_poisoned, poison_outputs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.units import block_units


def _c(name: str):
    f = _ext.c_function(name)
    if f is None:
        pytest.skip(f"no C {name}: {_ext.extension_error()}")
    return f


def _python_modes(x: torch.Tensor) -> bool:
    """replay_allowed's Python form (without the extension)."""
    return (
        x.is_cpu
        and not torch.is_grad_enabled()
        and _ext.direct_calls_allowed()
        and not torch.is_autocast_enabled("cpu")
    )


class _Mode(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_replay_modes_answers_as_python_in_every_mode():
    replay_modes = _c("replay_modes")
    x = torch.randn(2, 3)
    answers = []

    def ask(t: torch.Tensor) -> None:
        answers.append((replay_modes(t), _python_modes(t), fused_module.replay_allowed(t)))

    ask(x)  # grad mode on (the default): no replay
    with torch.no_grad():
        ask(x)  # the one case that allows it
        ask(x.to("meta"))  # not a CPU tensor
        with torch.autocast("cpu"):
            ask(x)
        with torch.autocast("cpu", enabled=False):
            ask(x)
        with _Mode():
            ask(x)
    with torch.inference_mode():
        ask(x)
    with torch.no_grad():
        torch.jit.trace(lambda t: (ask(t), t + 1)[1], (x,), check_trace=False)
    assert answers == [
        (False, False, False),
        (True, True, True),
        (False, False, False),
        (False, False, False),
        (True, True, True),
        (False, False, False),
        (True, True, True),
        (False, False, False),
    ]
    assert replay_modes(3) is False and replay_modes(None) is False


def test_replay_allowed_refuses_while_compiling(monkeypatch):
    """torch.compile's flag stays a Python question next to the C call."""
    _c("replay_modes")
    with torch.no_grad():
        x = torch.randn(2)
        assert fused_module.replay_allowed(x)
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not fused_module.replay_allowed(x)


def test_layout_key_equals_python_for_every_layout():
    layout_key = _c("layout_key")
    base = torch.randn(4, 6, 3, 3)
    tensors = [
        base,
        base.contiguous(memory_format=torch.channels_last),
        base[1:3],  # a view at an offset: the address includes it
        base.transpose(0, 1),
        base[:, :, 1, 1],
        torch.tensor(2.0),  # 0-dim: no strides
        torch.empty(0, 5),
        torch.nn.Parameter(torch.randn(3, 2)),
        torch.randn(8, dtype=torch.float64)[::2],
        torch.empty(2, 3, device="meta"),
    ]
    python = tuple((t.data_ptr(), t.stride()) for t in tensors)
    assert layout_key(tensors) == python == fused_module._layout_key(tensors)
    assert layout_key(tuple(tensors)) == python and layout_key([]) == ()
    # moved storage or strides change the key
    p = tensors[7]
    key = layout_key([p])
    p.data = torch.randn(3, 2)
    assert layout_key([p]) != key
    key = layout_key([p])
    p.data = torch.randn(2, 3).t()  # same shape, other strides
    assert layout_key([p]) != key


def test_layout_key_defers_what_c_cannot_read():
    layout_key = _c("layout_key")
    w = torch.randn(3)
    assert layout_key([w, 3]) is None
    with pytest.raises(AttributeError):
        fused_module._layout_key([w, 3])  # Python's error for a non-tensor
    with pytest.raises(TypeError, match="list or tuple"):
        layout_key(3)
    sparse = torch.eye(3).to_sparse()  # no storage of its own
    assert layout_key([w, sparse]) is None
    nested = torch.nested.nested_tensor([torch.randn(2), torch.randn(3)])
    assert layout_key([nested]) is None  # its strides() would throw in C++
    with pytest.raises(RuntimeError):
        fused_module._layout_key([sparse])  # Python refuses its strides too


# _C.replay_checked: a block's whole eval fast path in one C call, from the context of a replay
# that the Python checks verified (module._fast_context).

CFG = GOOGLENET_BLOCKS["4d"]


def _fast_block(monkeypatch, own_gemm: bool):
    """4d prepared for inference after four eval forwards on a batch-2 channels_last input (a
    plan made, made ready, replayed by the Python path, replayed from C), its source, the input,
    the last output and the C replay's context. own_gemm: the own kernel on F(2x2, 3x3) (the
    1x1s read in place, a Winograd form the call checks itself), else oneDNN (neither)."""
    _c("replay_checked")
    monkeypatch.setattr(cpu_onednn, "OWN_GEMM", own_gemm)
    monkeypatch.setattr(cpu_onednn, "MKL_WINOGRAD", False)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_F4_ENABLED", False)
    src = randomize_block(Inception(*CFG.args()), seed=5).eval()
    block = prepare_for_inference(copy.deepcopy(src))
    x = torch.randn(2, CFG.in_channels, CFG.hw, CFG.hw).contiguous(
        memory_format=torch.channels_last
    )
    with torch.no_grad():
        outs = [block(x) for _ in range(5)]
    assert all(torch.equal(o, outs[0]) for o in outs)
    ctx = block.__dict__["_state"].fast
    assert ctx is not None
    assert bool(block.__dict__["_state"].live[2]) == own_gemm  # weights read in place
    assert (len(ctx[13]) == 1) == own_gemm  # the Winograd form's own check
    return src, block, x, outs[0], ctx


@pytest.mark.parametrize("own_gemm", [True, False], ids=["own-kernel", "onednn"])
def test_replay_checked_makes_the_verified_call(monkeypatch, own_gemm):
    src, block, x, out, ctx = _fast_block(monkeypatch, own_gemm)
    with torch.no_grad():
        assert torch.equal(fused_module._REPLAY_CHECKED(x, ctx), out)
        # the module's forward replays from C: the Python checks are not asked
        monkeypatch.setattr(fused_module, "_ready_plan", _unreachable)
        assert torch.equal(block(x), out)
    assert_close_rel(out, reference_f64(src, x), torch.float32)


def _unreachable(*args):
    raise AssertionError("the Python replay path ran")


def _set_bn_eps(block, x):
    block_units(block)[1].bn.eps = 0.5


def _hook(block, x):
    block_units(block)[4].register_forward_hook(lambda *a: None)


def _bn_buffer_data(block, x):
    block_units(block)[3].bn.running_var.data.mul_(1.5)


def _new_live_weight(block, x):
    w = block_units(block)[0].conv.weight
    w.data = w.data.contiguous() * 2


def _winograd_source_numpy(block, x):
    block_units(block)[2].conv.weight.detach().numpy()[0, 0, 0, 0] = 3.0


def _policy(block, x):
    cpu_winograd.ONEDNN_TILES_PER_CHUNK += 1  # (monkeypatch restores the module)


CHANGES = {
    "bn-eps": _set_bn_eps,
    "hook": _hook,
    "bn-buffer-data": _bn_buffer_data,
    "new-tensor-for-a-1x1": _new_live_weight,
    "winograd-3x3-numpy": _winograd_source_numpy,
    "backend-setting": _policy,
}


@pytest.mark.parametrize("change", list(CHANGES), ids=str)
@pytest.mark.parametrize("own_gemm", [True, False], ids=["own-kernel", "onednn"])
def test_replay_checked_defers_on_each_change(monkeypatch, own_gemm, change):
    """After any change the full forward would act on, the C replay answers None (the Python
    path then decides and falls back), and the block computes the changed function."""
    src, block, x, out, ctx = _fast_block(monkeypatch, own_gemm)
    monkeypatch.setattr(cpu_winograd, "ONEDNN_TILES_PER_CHUNK", cpu_winograd.ONEDNN_TILES_PER_CHUNK)
    CHANGES[change](block, x)
    with torch.no_grad():
        assert fused_module._REPLAY_CHECKED(x, ctx) is None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the hooked block's composed-path warning
            changed = block(x)
    assert_close_rel(changed, reference_f64(block, x), torch.float32)


@pytest.mark.parametrize("own_gemm", [True, False], ids=["own-kernel", "onednn"])
def test_replay_checked_defers_on_modes_and_layouts(monkeypatch, own_gemm):
    src, block, x, out, ctx = _fast_block(monkeypatch, own_gemm)
    replay = fused_module._REPLAY_CHECKED
    assert replay(x, ctx) is None  # grad mode on
    with torch.no_grad():
        with torch.autocast("cpu"):
            assert replay(x, ctx) is None
        with _Mode():
            assert replay(x, ctx) is None
        with poison_outputs(not output_poisoned()):  # a setting of the plan's policy
            assert replay(x, ctx) is None
        assert replay(x.contiguous(), ctx) is None  # another layout
        assert replay(x[:1], ctx) is None  # another batch
        assert replay(x.double(), ctx) is None
        assert replay(x.to("meta"), ctx) is None
        assert replay(3, ctx) is None
        with pytest.raises(TypeError, match="ctx"):
            replay(x, ctx[:5])
        assert torch.equal(replay(x, ctx), out)  # nothing held on to
