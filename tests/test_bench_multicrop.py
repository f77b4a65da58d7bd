"""The benchmark's 144-crop evaluation row: its case computes the mean softmax over the crops,
fused as eager, and --multicrop-only writes one row per layout and implementation counting
images (144 crops each). Crops of 28 here (scales 32-44) keep it quick."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_close_rel

from fused_inception.bench import cli as bench
from fused_inception.bench import multicrop
from fused_inception.recipe import EvalTransform

CROP = 28


def test_inputs_are_the_eval_transforms_crops():
    fmt = torch.contiguous_format
    inputs = multicrop.multicrop_inputs(
        torch.float32, torch.device("cpu"), fmt, torch.Generator().manual_seed(0), CROP
    )
    gen = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=gen)
              for _ in range(2)]  # fmt: skip
    assert len(inputs) >= 2
    for i, x in enumerate(inputs[:3]):
        assert torch.equal(x, EvalTransform(144, CROP)(images[i % 2]))
    assert not torch.equal(inputs[0], inputs[1])


def test_multicrop_only_run(tmp_path, capsys, monkeypatch):
    built = {}

    def small(dtype, device, layout, backends):
        built[layout] = multicrop.build_multicrop_case(
            dtype, device, layout, backends, crop_size=CROP
        )
        return built[layout]

    monkeypatch.setattr(bench, "build_multicrop_case", small)
    argv = ["--device", "cpu", "--multicrop-only", "--quick", "--repeats", "1"]
    argv += ["--multicrop-layouts", "channels_last"]
    assert bench.main([*argv, "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["layout"], r["impl"]) for r in rows] == [
        ("channels_last", "torchvision_eager"),
        ("channels_last", "fused_cpu"),
    ]
    for r in rows:
        assert (r["mode"], r["block"], r["batch"]) == ("multicrop", "network", 144)
        assert r["images_per_s"] == pytest.approx(1e3 / r["median_ms"], rel=2e-3)
    out = capsys.readouterr().out
    assert "144-crop evaluation" in out and "144-crop fused_cpu" in out
    assert "forward (inference)" not in out  # no other case ran
    # What the rows timed: the mean softmax over one image's crops, fused as eager.
    case = built["channels_last"]
    assert list(case.calls) == ["torchvision_eager", "fused_cpu"] and not case.compiled
    assert case.inputs[0].shape == (144, 3, CROP, CROP)
    assert case.inputs[0].is_contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        eager, fused = (call() for call in case.calls.values())
    assert eager.shape == (1, 1000)
    torch.testing.assert_close(eager.sum(), torch.tensor(1.0))
    assert_close_rel(fused, eager, torch.float32, what="fused")


def test_multicrop_options():
    assert not bench.parse_args(["--device", "cpu"]).multicrop
    args = bench.parse_args(["--device", "cpu", "--multicrop-only"])
    assert args.multicrop and not args.inference and not args.train
    assert args.multicrop_layouts == ["nchw", "channels_last"]
    with pytest.raises(SystemExit) as info:
        bench.parse_args(["--device", "cpu", "--multicrop-only", "--train-only"])
    assert info.value.code == 2
