"""The tools people use after training, on fused models: torch.jit.trace and script, torch.fx
(and torchvision's feature extraction), ONNX export (both exporters) run by ONNX Runtime."""

from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
import torchvision
from helpers import GOOGLENET_CASES, assert_close_rel, randomize_block
from torchvision.models.feature_extraction import create_feature_extractor
from torchvision.models.googlenet import Inception as TvInception

from fused_inception import FusedInception, fuse_inception

ARGS = (16, 4, 5, 6, 3, 4, 2)
STANDARD_ONNX_OPS = {"Conv", "Relu", "MaxPool", "Concat", "BatchNormalization"}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # jit is deprecated
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Scripted GoogleNet")
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the legacy exporter
        yield


def _googlenet(seed=0):
    """torchvision's GoogLeNet with random weights and BN statistics (no vanishing activations)."""
    torch.manual_seed(seed)
    model = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)
    return randomize_block(model, seed).eval()


def _fused_googlenet(seed=0):
    model = _googlenet(seed)
    return model, fuse_inception(copy.deepcopy(model), backend="cpu")


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def _block_and_input(name, cfg, norm=True, k=3):
    src = randomize_block(
        TvInception(*cfg.args()) if norm else _paper_block(cfg, k), seed=len(name)
    ).eval()
    x = torch.randn(2, cfg.in_channels, 5, 6)
    return src, FusedInception.from_module(copy.deepcopy(src), backend="cpu"), x


def _paper_block(cfg, k):
    from fused_inception import Inception

    return Inception(*cfg.args(), norm=False, branch3_kernel=k)


# --- 9. torch.jit.trace -------------------------------------------------------------------------


def test_trace_a_freshly_fused_googlenet():
    eager, fused = _fused_googlenet()
    with torch.no_grad():
        expected = eager(X)
    traced = torch.jit.trace(fused, X)  # default settings, trace check included
    with torch.no_grad():
        assert_close_rel(traced(X), expected, torch.float32)
        assert_close_rel(fused(X), expected, torch.float32)  # the eager module is intact
    assert sum(isinstance(m, FusedInception) for m in fused.modules()) == 9


@pytest.mark.parametrize("name, cfg", GOOGLENET_CASES)
def test_trace_after_a_forward_follows_load_state_dict(name, cfg):
    src, fused, x = _block_and_input(name, cfg)
    with torch.no_grad():
        fused(x)  # packs the weights first
    traced = torch.jit.trace(fused, x)
    other = randomize_block(TvInception(*cfg.args()), seed=99).eval()
    traced.load_state_dict(other.state_dict())
    with torch.no_grad():
        assert_close_rel(traced(x), other(x), torch.float32)
        fused.load_state_dict(other.state_dict())
        assert_close_rel(fused(x), other(x), torch.float32)


# --- 10. torch.jit.script -----------------------------------------------------------------------


def test_script_a_fused_googlenet_twice_and_save_it():
    eager, fused = _fused_googlenet()
    with torch.no_grad():
        expected = eager(X)
    for _ in range(2):
        scripted = torch.jit.script(fused)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        assert_close_rel(_logits(scripted(X)), expected, torch.float32)
        assert_close_rel(_logits(loaded(X)), expected, torch.float32)
        assert_close_rel(fused(X), expected, torch.float32)
    assert sum(isinstance(m, FusedInception) for m in fused.modules()) == 9


@pytest.mark.parametrize("norm, k", [(True, 3), (False, 5)], ids=["torchvision", "paper"])
def test_script_a_block_in_both_forms(norm, k):
    name, cfg = GOOGLENET_CASES[0].values
    src, fused, x = _block_and_input(name, cfg, norm, k)
    scripted = torch.jit.script(fused)
    with torch.no_grad():
        assert_close_rel(scripted(x), src(x), torch.float32)
    native = torch.jit.script(FusedInception(*cfg.args(), norm=norm, branch3_kernel=k).eval())
    assert native(x).shape == src(x).shape


# --- 11. torch.fx -------------------------------------------------------------------------------


def test_fx_symbolic_trace_keeps_each_block_as_one_node():
    eager, fused = _fused_googlenet()
    graph_module = torch.fx.symbolic_trace(fused)
    calls = [n.target for n in graph_module.graph.nodes if n.op == "call_module"]
    blocks = [t for t in calls if t.startswith("inception")]
    names = ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")
    assert blocks == [f"inception{b}" for b in names]
    assert isinstance(graph_module.get_submodule("inception4c"), FusedInception)
    with torch.no_grad():
        assert_close_rel(graph_module(X), eager(X), torch.float32)


def test_fx_symbolic_trace_of_a_block_itself():
    name, cfg = GOOGLENET_CASES[0].values
    src, fused, x = _block_and_input(name, cfg)
    graph_module = torch.fx.symbolic_trace(fused)
    with torch.no_grad():
        assert_close_rel(graph_module(x), src(x), torch.float32)


def test_create_feature_extractor_on_a_fused_googlenet():
    eager, fused = _fused_googlenet()
    nodes = {"inception4a": "aux_input", "inception5b": "last"}
    want = create_feature_extractor(eager, return_nodes={"inception4a.cat": "aux_input"})
    got = create_feature_extractor(fused, return_nodes=nodes)
    with torch.no_grad():
        features = got(X)
        assert_close_rel(features["aux_input"], want(X)["aux_input"], torch.float32)
        assert features["last"].shape == (2, 1024, 2, 2)


# --- 12. ONNX -----------------------------------------------------------------------------------


def _onnx_roundtrip(model, x, tmp_path, dynamo: bool):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    if dynamo:
        pytest.importorskip("onnxscript")
    path = str(tmp_path / f"model_{dynamo}.onnx")
    torch.onnx.export(model, (x,), path, dynamo=dynamo)
    graph = onnx.load(path).graph
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    return {node.op_type for node in graph.node}, {node.domain for node in graph.node}, out


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("norm, k", [(True, 3), (False, 5)], ids=["torchvision", "paper"])
def test_onnx_export_of_a_block_uses_standard_operators(dynamo, norm, k, tmp_path):
    name, cfg = GOOGLENET_CASES[3].values
    src, fused, x = _block_and_input(name, cfg, norm, k)
    ops, domains, out = _onnx_roundtrip(fused, x, tmp_path, dynamo)
    assert ops <= STANDARD_ONNX_OPS and domains <= {""}, (ops, domains)
    with torch.no_grad():
        expected = fused(x)
    assert_close_rel(torch.from_numpy(out), expected, torch.float32)
    err = (torch.from_numpy(out) - expected).abs().max() / expected.abs().max()
    assert err <= 1e-5


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_onnx_export_of_a_fused_googlenet_runs_in_onnxruntime(dynamo, tmp_path):
    _, fused = _fused_googlenet()
    ops, domains, out = _onnx_roundtrip(fused, X, tmp_path, dynamo)
    assert domains <= {""} and "Conv" in ops and "Concat" in ops
    with torch.no_grad():
        expected = fused(X)
    err = (torch.from_numpy(out) - expected).abs().max() / expected.abs().max()
    assert err <= 1e-5


# --- torch.export: the operator, one node per block ---------------------------------------------


def test_torch_export_keeps_the_operator():
    name, cfg = GOOGLENET_CASES[0].values
    src, fused, x = _block_and_input(name, cfg)
    program = torch.export.export(fused, (x,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert targets.count("fused_inception.inception_block.default") == 1
    with torch.no_grad():
        assert_close_rel(program.module()(x), src(x), torch.float32)
