"""The benchmark CLI runs, writes rows with the documented fields and consistent rooflines, and
plots them; its cases compare the same function; torch.compile is timed apart."""

from __future__ import annotations

import json
import math
import statistics
import xml.dom.minidom

import pytest
import torch

from fused_inception.bench import cli as bench
from fused_inception.bench.cases import (
    OrtParityError,
    build_case,
    impl_names,
    ort_model,
    ort_model_session,
    ort_unavailable_reason,
)
from fused_inception.bench.plot import write_speedup_svg
from fused_inception.bench.timing import first_call_seconds, samples_ms_interleaved
from fused_inception.configs import GOOGLENET_BLOCKS, BlockConfig

FIELDS = {
    "block", "batch", "dtype", "device", "layout", "impl", "median_ms", "images_per_s",
    "speedup", "tflops", "compile_s", "mode", "form", "saved_bytes", "macs_per_image", "flops",
    "bytes_fused", "bytes_unfused",
    "peak_tflops", "peak_gbps", "bound_ms_fused", "bound_ms_unfused", "attainable_tflops_fused",
    "attainable_tflops_unfused", "roofline_fraction",
}  # fmt: skip
TINY = BlockConfig(8, 4, 4, 8, 2, 4, 4, 6)


def _close(a: float, b: float, rel: float = 2e-3) -> bool:
    return math.isclose(a, b, rel_tol=rel)


def test_quick_run(tmp_path, capsys):
    # One run only (its checks below share it; pytest-xdist would repeat a module fixture per
    # worker): 5b and the network at batch 1, eager, fused_cpu and prepared_cpu (the network
    # also prepared_folded), no torch.compile (--quick).
    # --no-onnxruntime: its rows are tested apart (test_onnxruntime_rows); --no-train: the
    # training rows too (tests/test_bench_train.py).
    argv = ["--device", "cpu", "--blocks", "5b", "network", "--quick", "--repeats", "1"]
    argv += ["--no-onnxruntime", "--no-train"]
    argv += ["--json", str(tmp_path / "rows.json"), "--plot", str(tmp_path / "speedups.svg")]
    assert bench.main(argv) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    _check_rows(rows)
    _check_roofline(rows)
    _check_printed(capsys.readouterr())
    _check_plot(rows, (tmp_path / "speedups.svg").read_text(), tmp_path)


def _check_rows(rows):
    # Both have the row of prepare_for_inference's module; the network also the folded one.
    assert {(r["block"], r["layout"], r["impl"]) for r in rows} == {
        (block, layout, impl)
        for block in ("5b", "network")
        for layout in ("nchw", "channels_last")
        for impl in ("torchvision_eager", "fused_cpu", "prepared_cpu", "prepared_folded")
        if impl != "prepared_folded" or block == "network"
    }
    eager = {(r["block"], r["layout"]): r for r in rows if r["impl"] == "torchvision_eager"}
    for r in rows:
        assert set(r) == FIELDS
        assert r["batch"] == 1 and r["dtype"] == "float32" and r["device"] == "cpu"
        assert r["median_ms"] > 0 and r["images_per_s"] > 0 and r["tflops"] > 0
        assert _close(r["images_per_s"], 1e3 / r["median_ms"])
        assert _close(r["tflops"], r["flops"] / r["median_ms"] / 1e9)
        assert r["compile_s"] is None
        base = eager[(r["block"], r["layout"])]
        assert _close(r["speedup"], base["median_ms"] / r["median_ms"])
    assert all(r["speedup"] == 1.0 for r in eager.values())


def _check_roofline(rows):
    for r in rows:
        assert r["flops"] == 2 * r["macs_per_image"] * r["batch"]
        assert 0 < r["bytes_fused"] < r["bytes_unfused"]
        assert r["peak_tflops"] > 0 and r["peak_gbps"] > 0
        compute_ms = r["flops"] / r["peak_tflops"] / 1e9
        for kind in ("fused", "unfused"):
            memory_ms = r[f"bytes_{kind}"] / r["peak_gbps"] / 1e6
            assert _close(r[f"bound_ms_{kind}"], max(compute_ms, memory_ms))
            assert r[f"attainable_tflops_{kind}"] <= r["peak_tflops"] * (1 + 1e-3)
        assert r["bound_ms_fused"] <= r["bound_ms_unfused"]
        assert r["attainable_tflops_fused"] >= r["attainable_tflops_unfused"]
        assert _close(r["roofline_fraction"], r["bound_ms_fused"] / r["median_ms"])
    network = next(r for r in rows if r["block"] == "network")
    block = next(r for r in rows if r["block"] == "5b")
    assert network["macs_per_image"] > 10 * block["macs_per_image"]


def _check_printed(captured):
    for text in ("torch ", "torchvision ", "triton ", "device: cpu", "torch threads", "peak"):
        assert text in captured.out
    assert "speedup vs eager: geomean" in captured.out and "network" in captured.out
    assert "[4/4" in captured.err  # progress, one line per case
    assert "training steps: left out (--no-train)" in captured.out
    assert "interleaved rounds of one call each" in captured.out


def test_run_length_times_runs_of_calls_in_a_row():
    calls = []
    fns = [lambda: calls.append("a"), lambda: calls.append("b")]
    device = torch.device("cpu")
    samples = samples_ms_interleaved(fns, device, warmup=1, repeats=2, run_length=3)
    assert len(samples) == 2 and all(t >= 0 for s in samples for t in s)
    assert "".join(calls) == "ab" + "aaabbb" * 2  # warm-up: one call each
    calls.clear()
    samples_ms_interleaved(fns, device, warmup=0, repeats=2)
    assert "".join(calls) == "abab"
    with pytest.raises(ValueError, match="run_length must be at least 1"):
        samples_ms_interleaved(fns, device, run_length=0)
    # Runs of 10 calls on the CPU by default (3 rounds), one call per round with --quick.
    default = bench.parse_args(["--device", "cpu"])
    assert (default.run_length, default.repeats) == (bench.CPU_RUN_LENGTH, 3) == (10, 3)
    quick = bench.parse_args(["--device", "cpu", "--quick"])
    assert (quick.run_length, quick.repeats) == (1, 3)
    one = bench.parse_args(["--device", "cpu", "--run-length", "1"])
    assert (one.run_length, one.repeats) == (1, 15)
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--run-length", "0"])
    args = bench.parse_args(["--device", "cpu", "--run-length", "10", "--no-train"])
    assert "interleaved rounds of 10 calls in a row each" in bench.header(args, ["eager"], "peak")


def _check_plot(rows, svg, tmp_path):
    xml.dom.minidom.parseString(svg)  # well-formed
    for text in (">5b</text>", ">network</text>", ">fused_cpu</text>", "nchw input"):
        assert text in svg
    more = [dict(r, block=b) for b in ("3a", "4e", "5b") for r in rows if r["block"] == "5b"]
    path = tmp_path / "more.svg"
    write_speedup_svg(more, path)
    assert all(f">{b}</text>" in path.read_text() for b in ("3a", "4e", "5b"))


def test_defaults_follow_the_device():
    args = bench.parse_args(["--device", "cpu"])
    assert args.batch == [1, 8] and args.dtype == ["float32"]
    assert args.blocks == [*GOOGLENET_BLOCKS, "network"]
    assert args.compile == ["default"] and args.backend == ["cpu"]
    assert args.train and args.train_compile == ["default"]
    args = bench.parse_args(["--device", "cpu", "--no-network", "--no-compile"])
    assert "network" not in args.blocks and args.compile == []
    assert bench.parse_args(["--device", "cpu", "--quick"]).compile == []
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--compile", "max-autotune"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--plot", "out.png"])


def test_case_compares_the_same_function_and_compiles_apart():
    case = build_case(
        "tiny", 2, torch.float32, torch.device("cpu"), "channels_last", ["cpu"], ["default"],
        cfg=TINY,
    )  # fmt: skip
    names = ["torchvision_eager", "fused_cpu", "prepared_cpu", "torchvision_compile"]
    assert list(case.calls) == names
    assert case.compiled == ("torchvision_compile",)
    assert len(case.inputs) >= 2 and len({x.data_ptr() for x in case.inputs}) == len(case.inputs)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in case.inputs)
    with torch.inference_mode():
        assert first_call_seconds(case.calls["torchvision_compile"], torch.device("cpu")) > 0
        # The inputs are copies of one tensor, so every candidate's output is comparable.
        outs = {name: call() for name, call in case.calls.items()}
    ref = outs["torchvision_eager"]
    assert ref.shape == (2, TINY.out_channels, TINY.hw, TINY.hw)
    for name, out in outs.items():
        assert (out - ref).abs().max() <= 1e-4 * ref.abs().max(), name


def test_prepared_rows_of_blocks_only_on_the_cpu():
    """A block's prepared row differs from its fused one only on the CPU (weights read in
    place); on a GPU it would time the fused row again, so a GPU run has none (the network's
    keeps its prepared rows everywhere)."""
    assert impl_names(["cpu"]) == ["torchvision_eager", "fused_cpu", "prepared_cpu"]
    with_ort = ["torchvision_eager", "fused_cpu", "prepared_cpu", "onnxruntime"]
    assert impl_names(["cpu"], onnxruntime=True) == [*with_ort, "onnxruntime_spinning"]
    assert impl_names(["cuda"], onnxruntime=True, cpu=False)[-1] == "onnxruntime"
    gpu = impl_names(["triton", "cuda"], ["default"], cpu=False)
    assert gpu == ["torchvision_eager", "fused_triton", "fused_cuda", "torchvision_compile"]
    network = impl_names(["triton"], cpu=False, network=True)
    assert network == ["torchvision_eager", "fused_triton", "prepared_triton", "prepared_folded"]


def test_rows_carry_compile_seconds_and_speedups():
    case = build_case("tiny", 1, torch.float32, torch.device("cpu"), "nchw", ["cpu"], cfg=TINY)
    rows = bench.case_rows(
        "tiny", 1, torch.float32, torch.device("cpu"), "nchw", case, [2.0, 1.0, 4.0], {"x": 1.0},
        None,
    )  # fmt: skip
    assert [r["speedup"] for r in rows] == [1.0, 2.0, 0.5]
    assert all(r["roofline_fraction"] is None and r["bound_ms_fused"] is None for r in rows)


def _needs_onnxruntime():
    reason = ort_unavailable_reason(torch.device("cpu"), torch.float32)
    if reason is not None:
        pytest.skip(reason)


def test_onnxruntime_is_a_default_cpu_baseline_unless_switched_off():
    _needs_onnxruntime()
    assert bench.parse_args(["--device", "cpu"]).onnxruntime
    args = bench.parse_args(["--device", "cpu", "--no-onnxruntime"])
    assert not args.onnxruntime and args.ort_skipped == {"float32": "--no-onnxruntime"}


def test_onnxruntime_rows(tmp_path, capsys):
    _needs_onnxruntime()
    argv = ["--device", "cpu", "--blocks", "5b", "--no-network", "--quick", "--repeats", "1"]
    argv += ["--no-train"]
    assert bench.main([*argv, "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert {(r["layout"], r["impl"]) for r in rows} == {
        (layout, impl)
        for layout in ("nchw", "channels_last")
        for impl in (
            "torchvision_eager", "fused_cpu", "prepared_cpu", "onnxruntime", "onnxruntime_spinning"
        )
    }  # fmt: skip
    for layout in ("nchw", "channels_last"):
        by_impl = {r["impl"]: r for r in rows if r["layout"] == layout}
        ort, eager = by_impl["onnxruntime"], by_impl["torchvision_eager"]
        assert set(ort) == FIELDS and ort["median_ms"] > 0 and ort["batch"] == 1
        assert _close(ort["speedup"], eager["median_ms"] / ort["median_ms"])
        assert ort["compile_s"] > 0 and eager["compile_s"] is None  # export seconds, apart
        spun = by_impl["onnxruntime_spinning"]
        assert set(spun) == FIELDS and spun["median_ms"] > 0 and spun["compile_s"] is None
        assert _close(spun["speedup"], eager["median_ms"] / spun["median_ms"])
    captured = capsys.readouterr()
    assert "exported in" in captured.out and "onnxruntime: 2 exports" in captured.out
    for when in range(1, bench.ALONE_SEGMENTS + 2):
        assert (
            captured.err.count(f"onnxruntime_spinning alone, {when} of {bench.ALONE_SEGMENTS + 1}")
            == 2
        )
    bench.main([*argv, "--no-onnxruntime", "--json", str(tmp_path / "off.json")])
    off = json.loads((tmp_path / "off.json").read_text())
    assert off and all(not r["impl"].startswith("onnxruntime") for r in off)


def test_spinning_session_is_timed_alone_between_segments_of_the_rounds(monkeypatch):
    """ONNX Runtime's default session (idle threads spin) is timed alone before, between and
    after ALONE_SEGMENTS segments of the others' interleaved rounds: each time made, timed and
    released (its threads gone) before anything else runs, each timing and segment with its
    share of the rounds; its row is the median of all its timings' calls, the others' the
    medians over every segment. The interleaved session's threads do not spin."""
    _needs_onnxruntime()
    import threading
    import weakref

    from fused_inception.bench import cases as bench_cases

    events = []
    made = []
    make_session = bench_cases.ort_model_session

    def recording_session(model, device, *, spinning=False):
        events.append(("session", spinning))
        session = make_session(model, device, spinning=spinning)
        made.append(weakref.ref(session))
        return session

    timed = bench.samples_ms_interleaved
    alone_samples, rows_samples = [], [[] for _ in range(4)]

    def recording_timing(fns, device, **kwargs):
        events.append(("alone" if len(fns) == 1 else "timed", len(fns), kwargs["repeats"]))
        samples = timed(fns, device, **kwargs)
        if len(fns) == 1:
            alone_samples.extend(samples[0])
        else:
            for kept, new in zip(rows_samples, samples, strict=True):
                kept += new
        return samples

    monkeypatch.setattr(bench_cases, "ort_model_session", recording_session)
    monkeypatch.setattr(bench, "samples_ms_interleaved", recording_timing)
    case = build_case(
        "tiny", 1, torch.float32, torch.device("cpu"), "nchw", ["cpu"], onnxruntime=True, cfg=TINY
    )
    assert bench.case_names(case) == [
        "torchvision_eager", "fused_cpu", "prepared_cpu", "onnxruntime", "onnxruntime_spinning"
    ]  # fmt: skip
    assert events == [("session", False)]
    threads = threading.active_count()
    args = bench.parse_args(["--device", "cpu", "--quick", "--repeats", "4"])
    times, _ = bench._time_case(args, case, "tiny", "tiny")
    assert len(times) == 5 and all(t > 0 for t in times)
    assert bench.ALONE_SEGMENTS == 3
    share = 2  # ceil(4 / 3) rounds each
    alone_timing = [("session", True), ("alone", 1, share)]
    assert events == [
        ("session", False), *alone_timing, ("timed", 4, share), *alone_timing,
        ("timed", 4, share), *alone_timing, ("timed", 4, share), *alone_timing,
    ]  # fmt: skip
    assert made[0]() is not None and all(ref() is None for ref in made[1:])  # released
    assert len(alone_samples) == 4 * share and times[-1] == statistics.median(alone_samples)
    assert all(len(s) == 3 * share for s in rows_samples)
    assert times[:4] == [statistics.median(s) for s in rows_samples]
    assert threading.active_count() == threads
    options = made[0]().get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnxruntime_parity_is_checked_before_timing(monkeypatch):
    _needs_onnxruntime()
    import onnxruntime

    run = onnxruntime.InferenceSession.run

    def corrupted(self, *args, **kwargs):
        return [out * (1 + 1e-3) + 1e-3 for out in run(self, *args, **kwargs)]

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", corrupted)
    with pytest.raises(OrtParityError, match="tiny, batch 1, float32, nchw"):
        build_case(
            "tiny", 1, torch.float32, torch.device("cpu"), "nchw", [], onnxruntime=True, cfg=TINY
        )


def test_onnxruntime_threads_do_not_spin_unless_asked():
    # Spinning idle threads took the 2 cores from the interleaved torch calls (2-3x slower).
    _needs_onnxruntime()
    block = torch.nn.Conv2d(4, 4, 1).eval()
    x = torch.randn(1, 4, 2, 2)
    model = ort_model(block, x)
    options = ort_model_session(model, torch.device("cpu")).get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    assert options.inter_op_num_threads == 1
    for pool in ("intra_op", "inter_op"):
        assert options.get_session_config_entry(f"session.{pool}.allow_spinning") == "0"
    # spinning: ONNX Runtime's defaults, no entry set
    spinning = ort_model_session(model, torch.device("cpu"), spinning=True).get_session_options()
    assert spinning.intra_op_num_threads == torch.get_num_threads()
    for pool in ("intra_op", "inter_op"):
        with pytest.raises(Exception, match="allow_spinning"):
            spinning.get_session_config_entry(f"session.{pool}.allow_spinning")
