"""The benchmark's training rows (in the default run; `--no-train` leaves them out): both forms,
every field, speedups from the same run, the memory a step saves for backward (smaller fused in
the paper form), the network's optimizer step, their torch.compile modes, and torch.compile left
out cleanly with --no-compile."""

from __future__ import annotations

import json
import math

import pytest
import torch

from fused_inception import _ext
from fused_inception.bench import cli as bench
from fused_inception.bench.train import build_train_case, saved_bytes
from fused_inception.configs import BlockConfig
from fused_inception.module import FusedInception

pytestmark = pytest.mark.skipif(
    not _ext.has_extension(), reason=f"no extension: {_ext.extension_error()}"
)

TRAIN_FIELDS = {
    "mode", "form", "block", "batch", "dtype", "device", "layout", "impl", "median_ms",
    "images_per_s", "speedup", "tflops", "compile_s", "saved_bytes", "macs_per_image", "flops",
    "bytes_fused", "bytes_unfused", "peak_tflops", "peak_gbps", "bound_ms_fused",
    "bound_ms_unfused", "attainable_tflops_fused", "attainable_tflops_unfused",
    "roofline_fraction",
}  # fmt: skip
TINY = BlockConfig(8, 4, 4, 8, 2, 4, 4, 6)
CPU = torch.device("cpu")


def _tiny_case(form, layout, backends, modes=()):
    return build_train_case("tiny", form, 2, torch.float32, CPU, layout, backends, modes, cfg=TINY)


def test_train_arguments():
    # The default run (the main job) times the training steps; --train is that default.
    for argv in ([], ["--train"]):
        args = bench.parse_args(["--device", "cpu", *argv])
        assert args.train and not args.train_only and args.inference
        # The measurement setting on the CPU: batch 8, float32, channels_last, both forms.
        assert args.train_batch == [8] and args.dtype == ["float32"]
        assert args.train_layouts == ["channels_last"] and args.forms == ["paper", "torchvision"]
        assert args.batch == [1, 8]  # the inference rows keep theirs
        assert args.compile == ["default"] and args.train_compile == ["default"]
    args = bench.parse_args(["--device", "cpu", "--no-train"])
    assert not args.train and args.inference and args.train_compile == ["default"]
    args = bench.parse_args(["--device", "cpu", "--train-only", "--batch", "2", "--no-compile"])
    assert args.train and args.train_only and args.train_batch == [2]
    assert args.compile == [] and args.train_compile == [] and not args.inference
    args = bench.parse_args(["--device", "cpu", "--quick", "--forms", "paper"])
    assert args.train and args.train_batch == [1] and args.forms == ["paper"]
    assert args.compile == [] and args.train_compile == []
    # --compile given: the training rows use its modes too, --quick or not.
    args = bench.parse_args(["--device", "cpu", "--quick", "--compile", "default"])
    assert args.compile == ["default"] and args.train_compile == ["default"]
    # --multicrop-only times only the multi-crop rows, unless --train asks for the steps too.
    assert not bench.parse_args(["--device", "cpu", "--multicrop-only"]).train
    assert bench.parse_args(["--device", "cpu", "--multicrop-only", "--train"]).train
    assert bench.parse_args(["--device", "cpu"]).threads is None
    assert bench.parse_args(["--device", "cpu", "--threads", "1"]).threads == 1
    for bad in (["--forms", "caffe"], ["--train-layouts", "nhwc"], ["--threads", "0"]):
        with pytest.raises(SystemExit):
            bench.parse_args(["--device", "cpu", "--train", *bad])


@pytest.mark.parametrize("other", ["--train-only", "--train"])
def test_no_train_excludes_asking_for_training(other, capsys):
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--device", "cpu", "--no-train", other])
    assert info.value.code == 2
    assert f"--no-train and {other} exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize("on_gpu", [False, True], ids=["cpu", "gpu"])
def test_training_compiles_default_mode_unless_told(on_gpu):
    # Without --compile: the forward's rows get every mode on a GPU (default only on the
    # CPU), the training steps "default" only (max-autotune on forward-and-backward graphs
    # would take far too long to compile).
    inference, train = bench.compile_modes(None, no_compile=False, quick=False, on_gpu=on_gpu)
    assert inference == (["default", "max-autotune"] if on_gpu else ["default"])
    assert train == ["default"]
    # --compile names the modes of both; --no-compile and --quick leave both out.
    given = ["max-autotune"] if on_gpu else ["default"]
    assert bench.compile_modes(given, no_compile=False, quick=True, on_gpu=on_gpu) == (
        given, given
    )  # fmt: skip
    for no_compile, quick in ((True, False), (False, True), (True, True)):
        modes = bench.compile_modes(None, no_compile=no_compile, quick=quick, on_gpu=on_gpu)
        assert modes == ([], [])


@pytest.mark.filterwarnings("ignore:FusedInception.*BatchNorm")
def test_train_run(tmp_path, capsys):
    # One run (its checks share it): 5b, inference rows and training rows of both forms at
    # batch 1, eager and fused_cpu, no torch.compile (--quick), JSON and plot.
    argv = ["--device", "cpu", "--blocks", "5b", "--train", "--quick", "--repeats", "1"]
    argv += ["--json", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "speedups.svg")]
    assert bench.main(argv) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {r["mode"] for r in rows} == {"inference", "train"}
    train = [r for r in rows if r["mode"] == "train"]
    assert {(r["form"], r["impl"]) for r in train} == {
        ("paper", "reference_eager"),
        ("paper", "fused_cpu"),
        ("torchvision", "torchvision_eager"),
        ("torchvision", "fused_cpu"),
    }
    eager = {r["form"]: r for r in train if r["impl"].endswith("_eager")}
    for r in train:
        assert set(r) == TRAIN_FIELDS
        assert (r["block"], r["batch"], r["dtype"], r["layout"]) == (
            "5b", 1, "float32", "channels_last"
        )  # fmt: skip
        assert r["median_ms"] > 0 and r["compile_s"] is None
        assert math.isclose(r["images_per_s"], 1e3 / r["median_ms"], rel_tol=2e-3)
        # Against the same run's eager row of the same form.
        base = eager[r["form"]]["median_ms"]
        assert math.isclose(r["speedup"], base / r["median_ms"], rel_tol=2e-3)
        # A step's flops: 3x the forward's; no roofline for a step.
        assert r["flops"] == 2 * r["macs_per_image"] * r["batch"]
        assert r["bytes_fused"] is None and r["roofline_fraction"] is None
        assert r["saved_bytes"] > 0
    paper = {r["impl"]: r for r in train if r["form"] == "paper"}
    inference = next(r for r in rows if r["mode"] == "inference")
    assert paper["reference_eager"]["macs_per_image"] > 3 * inference["macs_per_image"]  # 5x5
    # The fused operator saves x, out and the weights; the eager paper-form block saves every
    # branch's conv output, the pooled input and its indices.
    assert paper["fused_cpu"]["saved_bytes"] < paper["reference_eager"]["saved_bytes"] / 2
    # torchvision's form with BN training runs the fused BN-training path, which saves what
    # torchvision's modules save (the pre-BN outputs, r2/r3, the pool's input and indices, the
    # output instead of the four branch outputs), no more.
    tv = {r["impl"]: r for r in train if r["form"] == "torchvision"}
    assert tv["fused_cpu"]["saved_bytes"] <= tv["torchvision_eager"]["saved_bytes"]
    for r in rows:
        if r["mode"] == "inference":
            assert r["saved_bytes"] is None and r["form"] == "torchvision"
    out = capsys.readouterr().out
    assert "training steps included (--no-train leaves them out)" in out
    assert "training steps:" in out and "saved MiB" in out
    assert "train paper fused_cpu" in out and "train torchvision fused_cpu" in out
    svg = (tmp_path / "speedups.svg").read_text()
    assert "train paper: channels_last input" in svg and "speedup vs reference_eager" in svg
    assert "train torchvision: channels_last input" in svg


def test_compile_rows_only_when_asked():
    # torch.compile is lazy: building the case compiles nothing.
    case = _tiny_case("paper", "nchw", ["cpu"], ["default"])
    assert list(case.calls) == ["reference_eager", "fused_cpu", "reference_compile"]
    assert case.compiled == ("reference_compile",)
    args = bench.parse_args(["--device", "cpu", "--no-compile"])
    case = _tiny_case("torchvision", "nchw", args.backend, args.train_compile)
    assert list(case.calls) == ["torchvision_eager", "fused_cpu"] and case.compiled == ()
    assert isinstance(case.modules["fused_cpu"], FusedInception)
    # Each implementation trains its own copy of the weights.
    ptrs = [next(m.parameters()).data_ptr() for m in case.modules.values()]
    assert len(set(ptrs)) == len(ptrs)


def test_block_step_computes_every_gradient():
    case = _tiny_case("paper", "channels_last", ["cpu"])
    for name, call in case.calls.items():
        call()
        grads = [p.grad for p in case.modules[name].parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_saved_bytes_counts_distinct_storages_without_parameters():
    conv = torch.nn.Conv2d(4, 4, 1)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)

    def step():
        y = conv(x)
        (y * y).sum().backward()  # conv saves x (and its weight: left out); mul saves y once

    assert saved_bytes(step, conv) == x.nbytes + 2 * 4 * 3 * 3 * 4


def test_network_step_updates_parameters():
    """The network row's step runs the optimizer: every implementation's weights move, the
    fused network's Inception blocks (the operator's backward) included."""
    case = build_train_case("network", "paper", 1, torch.float32, CPU, "channels_last", ["cpu"])
    assert list(case.calls) == ["reference_eager", "fused_cpu"]
    fused = case.modules["fused_cpu"]
    assert isinstance(fused.inception4e, FusedInception)
    for name, call in case.calls.items():
        model = case.modules[name]
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        call()
        moved = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
        assert len(moved) == len(before), (name, sorted(set(before) - set(moved))[:5])
