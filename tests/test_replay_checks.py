"""The C forms of two per-call checks of the eval fast paths (fused_inception.module): the global
modes (`_C.replay_modes`, behind replay_allowed) and the live weights' addresses and strides
(`_C.layout_key`, behind _layout_key) give the same answers as the Python they replace, in every
mode and for every kind of tensor, and hand back to Python what they cannot read."""

from __future__ import annotations

import pytest
import torch

from fused_inception import _ext
from fused_inception import module as fused_module


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
