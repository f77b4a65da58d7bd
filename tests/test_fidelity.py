"""Drop-in fidelity: only what computes the Inception block is fused, and a fused block never
computes something else afterwards (stale weights, changed attributes, hooks, fp16 folding,
inference tensors, empty images)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import assert_close_rel, randomize_block
from helpers import reference_f64 as ref64
from torch import nn
from torchvision.models.googlenet import BasicConv2d
from torchvision.models.googlenet import Inception as TvInception

from fused_inception import FusedInception, fuse_inception, module
from fused_inception.backends import available_backends
from fused_inception.folding import fold_block

BACKENDS = available_backends()
ARGS = (16, 4, 5, 6, 3, 4, 2)  # in_channels, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj
SQUARE = (16, 4, 4, 4, 4, 4, 4)  # output channels == input channels (for a residual)


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch):
    """Each test sees the once-per-process composed-path warnings afresh."""
    monkeypatch.setattr(module, "_warned", set(), raising=False)


def _x(args=ARGS, n=2, h=5, w=6, seed=0):
    return torch.randn(n, args[0], h, w, generator=torch.Generator().manual_seed(seed))


# --- 1. Lookalikes: torchvision-like children, another function ------------------------------


class PostBnBlock(TvInception):
    """A post-concat BN + ReLU applied in forward (a child with state)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.bn_out = nn.BatchNorm2d(args[1] + args[3] + args[5] + args[6])

    def forward(self, x):
        return F.relu(self.bn_out(super().forward(x)))


class PostActBlock(TvInception):
    """A stateless extra child applied after the concat."""

    def __init__(self, *args):
        super().__init__(*args)
        self.act = nn.Hardtanh(-0.5, 0.5)

    def forward(self, x):
        return self.act(super().forward(x))


class ResidualBlock(TvInception):
    def forward(self, x):
        return x + super().forward(x)


class SwappedOrderBlock(TvInception):
    def forward(self, x):
        b = self._forward(x)
        return torch.cat([b[1], b[0], b[2], b[3]], 1)


class ConvBnUnit(BasicConv2d):
    """conv -> BN without the activation."""

    def forward(self, x):
        return self.bn(self.conv(x))


class LeakyUnit(BasicConv2d):
    def forward(self, x):
        return F.leaky_relu(self.bn(self.conv(x)), 0.1)


def _with_units(unit_cls):
    return lambda *args: TvInception(*args, conv_block=unit_cls)


LOOKALIKES = {
    "post-concat-bn-relu": (PostBnBlock, ARGS, "besides the branches"),
    "post-concat-activation": (PostActBlock, ARGS, "another function"),
    "residual": (ResidualBlock, SQUARE, "another function"),
    "concat-order": (SwappedOrderBlock, ARGS, "another function"),
    "conv-bn-no-relu": (_with_units(ConvBnUnit), ARGS, "another function"),
    "leaky-relu": (_with_units(LeakyUnit), ARGS, "another function"),
}


@pytest.mark.parametrize("case", list(LOOKALIKES))
def test_lookalikes_are_left_alone_with_a_warning(case):
    make, args, reason = LOOKALIKES[case]
    block = randomize_block(make(*args)).eval()
    model = nn.Sequential(nn.Identity(), block)
    x = _x(args)
    with torch.no_grad():
        expected = model(x)
    with pytest.warns(UserWarning, match=rf"left 1 \({type(block).__name__}\) as is: .*{reason}"):
        fuse_inception(model)
    assert model[1] is block
    with torch.no_grad():
        assert torch.equal(model(x), expected)
    with pytest.raises(ValueError, match=reason):
        FusedInception.from_module(block)


def test_a_forward_replaced_on_the_instance_is_checked():
    block = randomize_block(TvInception(*ARGS)).eval()
    block.forward = lambda x: TvInception.forward(block, x) * 2.0
    with pytest.raises(ValueError, match="cannot fuse"):
        FusedInception.from_module(block)


def test_a_genuine_block_subclass_is_fused():
    class Renamed(TvInception):
        def forward(self, x):  # the same function, written differently
            return torch.cat(self._forward(x), dim=1)

    block = randomize_block(Renamed(*ARGS)).eval()
    fused = FusedInception.from_module(block, backend="cpu")
    x = _x()
    with torch.no_grad():
        assert_close_rel(fused(x), block(x), torch.float32)


def test_same_padding_is_accepted():
    block = randomize_block(TvInception(*ARGS)).eval()
    for seq in (block.branch2, block.branch3):
        seq[1].conv.padding = "same"
        seq[1].conv._reversed_padding_repeated_twice = [1, 1, 1, 1]
    fused = FusedInception.from_module(copy.deepcopy(block), backend="cpu")
    x = _x()
    with torch.no_grad():
        assert_close_rel(fused(x), block(x), torch.float32)
    same = nn.Conv2d(4, 4, 3, padding="same")
    assert same.padding == "same"
    block.branch2[1].conv = same
    block.branch2[1].bn = nn.BatchNorm2d(4, eps=1e-3).eval()
    block.branch2[0].conv = nn.Conv2d(ARGS[0], 4, 1, bias=False)
    block.branch2[0].bn = nn.BatchNorm2d(4, eps=1e-3).eval()
    FusedInception.from_module(block)


def test_quantization_fused_units_are_refused_by_name():
    model = torchvision.models.quantization.googlenet(
        weights=None, quantize=False, aux_logits=False, init_weights=True
    ).eval()
    model.fuse_model()
    with pytest.warns(UserWarning, match="ConvReLU2d"):
        fuse_inception(model)
    assert not any(isinstance(m, FusedInception) for m in model.modules())
    with pytest.raises(ValueError, match="ConvReLU2d"):
        FusedInception.from_module(model.inception3a)


def test_a_model_without_inception_blocks_gets_a_warning():
    with pytest.warns(UserWarning, match="found no Inception block"):
        fuse_inception(nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU()))
    fused = fuse_inception(nn.Sequential(TvInception(*ARGS)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fuse_inception(fused)  # only fused blocks: nothing to say


# --- 2. The packed-weight cache sees every write --------------------------------------------


def _ema_with_data(block, other):
    for p, q in zip(block.parameters(), other.parameters(), strict=True):
        p.data.mul_(0.5).add_(q.data)


WRITES = {
    "data-mul": lambda b, o: b.branch2[1].conv.weight.data.mul_(2.0),
    "ema-with-data": _ema_with_data,
    "running-var-data": lambda b, o: b.branch1.bn.running_var.data.fill_(3.0),
    "numpy-view": lambda b, o: b.branch3[0].conv.weight.detach().numpy().__imul__(-1.0),
    "bn-eps": lambda b, o: setattr(b.branch4[1].bn, "eps", 0.5),
    "reduction-bn-eps": lambda b, o: setattr(b.branch2[0].bn, "eps", 1e-1),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("write", list(WRITES))
def test_writes_that_bypass_the_version_counter_are_seen(write, backend):
    block = FusedInception.from_module(randomize_block(TvInception(*ARGS)).eval(), backend)
    other = randomize_block(TvInception(*ARGS), seed=7)
    x = _x(h=4, w=5)
    with torch.no_grad():
        before = block(x)
        WRITES[write](block, other)
        after = block(x)
    assert not torch.allclose(before, after)
    assert_close_rel(after, ref64(block, x), torch.float32)


def test_averaged_model_and_an_ema_loop_give_the_right_outputs():
    model = nn.Sequential(randomize_block(FusedInception(*ARGS, backend="cpu")))
    swa = torch.optim.swa_utils.AveragedModel(model)
    ema = copy.deepcopy(model).eval()
    x = _x()
    for seed in range(3):
        randomize_block(model, seed=seed + 10)
        swa.update_parameters(model)
        for p, q in zip(ema.parameters(), model.parameters(), strict=True):
            p.data.mul_(0.9).add_(0.1 * q.data)
        for b, c in zip(ema.buffers(), model.buffers(), strict=True):
            b.data.copy_(c.data)
        swa.eval()
        with torch.no_grad():
            assert_close_rel(swa(x), ref64(swa.module[0], x), torch.float32)
            assert_close_rel(ema(x), ref64(ema[0], x), torch.float32)


def test_refresh_drops_the_packed_weights():
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    x = _x()
    with torch.no_grad():
        expected = block(x)
        assert block._state is not None and block._state.packed
        block.refresh()
        assert block._state is None
        assert torch.equal(block(x), expected)


def test_structure_changed_after_fusion_runs_what_the_modules_compute():
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    x = _x()
    with torch.no_grad():
        block(x)
        block.branch2[1].conv.dilation = (2, 2)
        block.branch2[1].conv.padding = (2, 2)
        with pytest.warns(UserWarning, match="changed after fusion"):
            out = block(x)
        assert torch.equal(out, block._composed(x))
        assert not torch.allclose(out, ref64(block, x).float(), atol=1e-3)


def _set_param(m, name):
    setattr(m, name, nn.Parameter(getattr(m, name).detach().clone()))


# Each change a forward must notice; the snapshot that spares recomputing structure_key on
# every forward must see all of them (and a hook's addition).
STRUCTURE_CHANGES = {
    "bn eps": lambda b: setattr(b.branch1.bn, "eps", 0.5),
    "conv padding": lambda b: setattr(b.branch2[1].conv, "padding", (0, 0)),
    "unit replaced": lambda b: b.branch2.__setitem__(1, BasicConv2d(5, 6, kernel_size=1)),
    "child train()": lambda b: b.branch3[1].bn.train(),
    "weight replaced": lambda b: _set_param(b.branch4[1].conv, "weight"),
    "parameter dict entry replaced": lambda b: b.branch1.conv._parameters.__setitem__(
        "weight", nn.Parameter(b.branch1.conv.weight.detach().clone())
    ),
    "buffer registered": lambda b: b.branch3[0].bn.register_buffer("extra", torch.ones(3)),
    "plain attribute added": lambda b: setattr(b.branch1.conv, "foo", 3),
    "block attribute": lambda b: setattr(b, "weight_check", "version"),
    "forward hook": lambda b: b.branch2[0].conv.register_forward_hook(lambda *a: None),
    "forward pre-hook": lambda b: b.branch4[0].register_forward_pre_hook(lambda *a: None),
    "child deleted": lambda b: delattr(b.branch3[1], "bn"),
    "array attribute replaced": lambda b: setattr(b.branch1.conv, "table", np.arange(3.0)),
    "tensor attribute replaced": lambda b: setattr(b.branch1.bn, "scale", torch.ones(3)),
}


STRUCTURE_CHANGES["backward hook"] = lambda b: b.branch3[1].bn.register_full_backward_hook(
    lambda *a: None
)
STRUCTURE_CHANGES["pre-existing hook removed"] = lambda b: b._test_handle.remove()


def _no_tags_reason():
    """Why the C check's dict tags are missing here, or None where they exist."""
    import sys

    from fused_inception import _ext

    if _ext.c_function("snapshot_tags") is None:
        return f"no C structure check: {_ext.extension_error()}"
    if sys.version_info >= (3, 12):
        return "CPython 3.12 on has no dict version tags (snapshot_tags returns None)"
    return None


@pytest.mark.parametrize("impl", ["c", "c-tags", "python"])
@pytest.mark.parametrize("change", list(STRUCTURE_CHANGES))
def test_the_structure_snapshot_sees_every_change(change, impl):
    """Every implementation of the check (the C one, csrc/structure_check.cpp, where the
    extension is built, with and without its dict tags, and the Python loop it stands for)
    sees every change, and they agree."""
    from fused_inception import _ext
    from fused_inception.structure import StructureSnapshot, hooked_modules, structure_key

    if impl == "c" and _ext.c_function("snapshot_matches") is None:
        pytest.skip(f"no C structure check: {_ext.extension_error()}")
    reason = _no_tags_reason() if impl == "c-tags" else None
    if reason is not None:
        pytest.skip(reason)
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    block.branch1.conv.table = np.arange(3.0)  # attributes whose == is elementwise
    block.branch1.bn.scale = torch.ones(3)
    block._test_handle = block.branch4[1].bn.register_forward_hook(lambda *a: None)
    snapshot = StructureSnapshot(block)
    c_check = _ext.c_function("snapshot_matches")
    matches = {
        "c": lambda: c_check(block, snapshot._entries),
        "c-tags": lambda: c_check(block, snapshot._entries, snapshot._tags),
        "python": snapshot._matches_python,
    }[impl]
    if impl == "c-tags":
        assert isinstance(snapshot._tags, bytes)
    key, hooked = structure_key(block), hooked_modules(block)
    assert matches() is True and snapshot.matches() is True
    assert hooked == ["branch4.1.bn"]
    STRUCTURE_CHANGES[change](block)
    if "attribute replaced" not in change:  # those are not in the key: a spurious change
        assert structure_key(block) != key or hooked_modules(block) != hooked
    assert matches() is False and snapshot.matches() is False
    again = StructureSnapshot(block)
    assert again.matches() and again._matches_python()
    assert again.hooked == hooked_modules(block)


@pytest.mark.parametrize("check", ["version", "content"])
def test_cached_forwards_take_the_c_checks(check, monkeypatch):
    """With the extension built, a block's and a folded unit's cached eval forwards check the
    structure and (weight_check="version") the versions in C: the Python loops, their
    fallbacks, are not run. A C function that always deferred would leave every other test
    passing, only slower; this one fails. The outputs still follow a weight write."""
    from fused_inception import _ext, fingerprint
    from fused_inception.folded_unit import FoldedConvUnit
    from fused_inception.structure import StructureSnapshot

    if _ext.c_function("snapshot_matches") is None or _ext.c_function("version_key") is None:
        pytest.skip(f"no C checks in this build: {_ext.extension_error()}")
    block = randomize_block(FusedInception(*ARGS, backend="cpu", weight_check=check)).eval()
    source = BasicConv2d(16, 8, kernel_size=3, padding=1).eval()
    with torch.no_grad():
        source.bn.running_mean.uniform_(-0.5, 0.5)
        source.bn.running_var.uniform_(0.5, 2.0)
    unit = FoldedConvUnit.from_module(source, weight_check=check).eval()

    def unit_ref(x):
        return copy.deepcopy(unit).double()._composed(x.double()).float()

    x = _x()
    with torch.no_grad():
        block(x), unit(x)  # the first forwards build the snapshots and fold the weights

        def python_ran(*args, **kwargs):
            raise AssertionError("the Python fallback ran")

        monkeypatch.setattr(StructureSnapshot, "_matches_python", python_ran)
        monkeypatch.setattr(fingerprint, "_version_key_python", python_ran)
        for _ in range(2):
            assert_close_rel(block(x), ref64(block, x).float(), torch.float32)
            assert_close_rel(unit(x), unit_ref(x), torch.float32)
        block.branch2[1].conv.weight.mul_(-1.5)  # seen by both checks (a versioned write)
        unit.conv.weight.mul_(-1.5)
        assert_close_rel(block(x), ref64(block, x).float(), torch.float32)
        assert_close_rel(unit(x), unit_ref(x), torch.float32)


def test_cached_forwards_leave_the_dict_tags_as_they_were():
    """The C check's fast answer: after a block's and a folded unit's cached eval forwards,
    the dicts' tags are still those of their snapshots, so the tags alone answer True (shown
    by entries whose copies no longer match, which the comparisons would call a change), and
    a change the comparisons see moves a tag (the answer is then theirs: False)."""
    from fused_inception import _ext
    from fused_inception.folded_unit import FoldedConvUnit

    reason = _no_tags_reason()
    if reason is not None:
        pytest.skip(reason)
    c_check = _ext.c_function("snapshot_matches")
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    unit = FoldedConvUnit.from_module(BasicConv2d(16, 8, kernel_size=3, padding=1)).eval()
    x = _x()
    with torch.no_grad():
        for _ in range(3):
            block(x), unit(x)
    for mod in (block, unit):
        snapshot = mod.__dict__["_state"].snapshot
        stale = [(m, {}, *rest) for m, _, *rest in snapshot._entries]
        assert c_check(mod, stale) is False
        assert c_check(mod, stale, snapshot._tags) is True
        assert c_check(mod, snapshot._entries, b"short") is True  # the comparisons decide
    block.branch3[1].bn.eps = 0.25
    snapshot = block.__dict__["_state"].snapshot
    assert c_check(block, snapshot._entries, snapshot._tags) is False


def test_the_c_structure_check_defers_where_python_order_may_differ():
    """A parameter dict that is not an exact dict (an OrderedDict, whose .values() order
    Python reads differently from the C iteration) makes the C check answer None, and
    matches() then takes the Python loop: same answers before and after a replacement."""
    from collections import OrderedDict

    from fused_inception import _ext
    from fused_inception.structure import StructureSnapshot

    c_check = _ext.c_function("snapshot_matches")
    if c_check is None:
        pytest.skip(f"no C structure check: {_ext.extension_error()}")
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    conv = block.branch2[1].conv
    conv.__dict__["_parameters"] = OrderedDict(conv._parameters)
    snapshot = StructureSnapshot(block)
    assert c_check(block, snapshot._entries) is None
    assert snapshot.matches()
    _set_param(conv, "weight")
    assert c_check(block, snapshot._entries) is None
    assert not snapshot.matches()
    with pytest.raises(TypeError, match="snapshot_matches"):
        c_check(block, [(block,)])
    with pytest.raises(TypeError, match="snapshot_matches"):
        c_check(block)


def test_a_child_bn_in_training_mode_is_honoured():
    block = randomize_block(FusedInception(*ARGS, backend="cpu")).eval()
    tv = randomize_block(TvInception(*ARGS)).eval()
    block.branch3[0].bn.train()
    tv.branch3[0].bn.train()
    x = _x()
    with pytest.warns(UserWarning, match="BatchNorm in training mode"):
        out = block(x)
    assert torch.equal(out, tv(x))


# --- 3. BatchNorm folding beyond float16's range ---------------------------------------------


def _extreme_bn_block(dtype):
    tv = randomize_block(TvInception(*ARGS)).eval()
    with torch.no_grad():
        unit = tv.branch2[0]
        unit.conv.weight.fill_(3.0)
        unit.bn.weight.fill_(1e3)  # scale 1e3 / sqrt(0 + 1e-3) = 3.2e4: folded weight 9.5e4
        unit.bn.running_var.zero_()
        unit.bn.running_mean.zero_()
        unit.bn.bias.zero_()
    return tv.to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float16_folding_that_would_overflow_runs_composed(backend):
    tv = _extreme_bn_block(torch.float16)
    fused = FusedInception.from_module(copy.deepcopy(tv), backend).eval()
    x = _x(h=4, w=5).half() * 0.003
    with torch.no_grad():
        expected = tv(x)
        assert torch.isfinite(expected).all()
        with pytest.warns(UserWarning, match=r"branch2\.0: its BatchNorm-folded weight .*float16"):
            out = fused(x)
        assert torch.equal(out, expected)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fused(x)  # once
    fused.float()
    with torch.no_grad():  # float32 holds the folded weights: the fused kernels run again
        assert_close_rel(fused(x.float()), ref64(fused, x.float()), torch.float32)


# --- 8. Parameters created under inference_mode -----------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameters_created_under_inference_mode(backend):
    with torch.inference_mode():
        tv = randomize_block(TvInception(*ARGS)).eval()
        fused = FusedInception.from_module(copy.deepcopy(tv), backend)
        fused_new = FusedInception(*ARGS, backend=backend).eval()
        fused_new.load_state_dict(tv.state_dict())
    x = _x()
    for block in (fused, fused_new):
        with torch.inference_mode():
            assert_close_rel(block(x), ref64(tv, x), torch.float32)
        with torch.no_grad():
            assert_close_rel(block(x), ref64(tv, x), torch.float32)
    with torch.inference_mode():
        converted = copy.deepcopy(fused).half()
        assert_close_rel(converted(x.half()), ref64(tv, x.half()), torch.float16)


# --- 14. Empty images ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 16, 0, 5), (1, 16, 5, 0), (0, 16, 0, 5)])
def test_an_empty_image_is_refused_like_torchvision(backend, shape):
    tv = TvInception(*ARGS).eval()
    fused = FusedInception.from_module(copy.deepcopy(tv), backend)
    x = torch.randn(shape)
    with pytest.raises(RuntimeError), torch.no_grad():
        tv(x)
    with pytest.raises(RuntimeError, match="H >= 1 and W >= 1"), torch.no_grad():
        fused(x)
    with pytest.raises(RuntimeError, match="H >= 1 and W >= 1"):
        fused.train()(x)
    params = fold_block(fused)
    with pytest.raises(RuntimeError, match="H >= 1 and W >= 1"):
        torch.ops.fused_inception.inception_block(x, *params, backend)
    empty_batch = torch.randn(0, 16, 4, 5)
    with torch.no_grad():
        assert fused.eval()(empty_batch).shape == tv(empty_batch).shape


# --- 15. Hooks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_hooks_on_submodules_fire_and_change_the_output(backend):
    tv = randomize_block(TvInception(*ARGS)).eval()
    fused = FusedInception.from_module(copy.deepcopy(tv), backend)
    seen = []

    def hook(mod, inputs, output):
        seen.append(output.shape)
        return output * 2.0

    x = _x()
    with torch.no_grad():
        handle = fused.branch2[1].conv.register_forward_hook(hook)
        tv.branch2[1].conv.register_forward_hook(hook)
        with pytest.warns(UserWarning, match=r"\['branch2.1.conv'\] have hooks"):
            out = fused(x)
        assert torch.equal(out, tv(x)) and len(seen) == 2
        handle.remove()
        assert_close_rel(fused(x), ref64(fused, x), torch.float32)  # fused again
    assert len(seen) == 2


def test_hooks_on_the_block_fire_on_the_fused_path_and_survive_fusion():
    model = nn.Sequential(randomize_block(TvInception(*ARGS)).eval())
    calls = []
    handle = model[0].register_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    pre = model[0].register_forward_pre_hook(lambda m, i: (i[0] * 0.5,))
    x = _x()
    with torch.no_grad():
        expected = model(x)
        fuse_inception(model, backend="cpu")
        assert isinstance(model[0], FusedInception)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no composed-path warning: the fused path runs
            out = model(x)
    assert_close_rel(out, expected, torch.float32)
    assert calls == ["Inception", "FusedInception"]
    handle.remove()
    pre.remove()
    with torch.no_grad():
        assert_close_rel(model(x), ref64(model[0], x), torch.float32)
    assert len(calls) == 2


def test_weight_check_version_is_cheaper_and_blind_to_data_writes():
    """The documented trade-off of weight_check="version": version counters only."""
    model = nn.Sequential(randomize_block(TvInception(*ARGS)).eval())
    fuse_inception(model, backend="cpu", weight_check="version")
    block = model[0]
    assert block.weight_check == "version" and "weight_check='version'" in repr(block)
    x = _x()
    with torch.no_grad():
        before = block(x)
        block.branch1.conv.weight.data.mul_(2.0)  # not seen in this mode
        assert torch.equal(block(x), before)
        block.refresh()  # what the README says to call after such a write
        assert_close_rel(block(x), ref64(block, x), torch.float32)
        block.branch1.conv.weight.mul_(0.5)  # an in-place write autograd counts: seen
        assert_close_rel(block(x), ref64(block, x), torch.float32)
    assert repr(FusedInception(*ARGS)).count("weight_check") == 0  # the default, "auto"
    with pytest.raises(ValueError, match="unknown weight_check 'sometimes'"):
        FusedInception(*ARGS, weight_check="sometimes")
    with pytest.raises(ValueError, match="unknown weight_check"):
        fuse_inception(model, weight_check="never")
