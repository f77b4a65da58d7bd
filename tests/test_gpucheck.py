"""python -m fused_inception.gpucheck, part by part on the CPU: its arguments, the no-GPU exit,
the summary writer on recorded checks and rows, the parity driver on a tiny block through
Triton's interpreter and the SIMT shim (and a broken backend caught), the sanitizer stage
without compute-sanitizer and with a stand-in, the benchmark stage's MODEL columns. The stages
that need a GPU (CUDA graph, the whole command) have tests here that run only on one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import torch
from helpers import GPU, backend_params

from fused_inception import FusedInception
from fused_inception.configs import BlockConfig
from fused_inception.gpucheck import (
    EXIT_FAILED,
    EXIT_NO_DEVICE,
    EXIT_OK,
    cli,
    graph,
    parity,
    sanitizer,
    summary,
)
from fused_inception.gpucheck import bench as gbench
from fused_inception.gpucheck.budget import Budget

TINY = BlockConfig(5, 3, 7, 9, 2, 6, 1, 4)
CPU = torch.device("cpu")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------------------------
# Arguments and the no-device exit


def test_arguments_defaults_and_quick():
    args = cli.parse_args([])
    assert args.budget == cli.FULL_BUDGET_S and not args.quick
    assert args.backends == ["triton", "cuda"] and args.skip == []
    assert args.out.startswith("gpucheck-") and args.work_json is None
    args = cli.parse_args(["--quick", "--out", "o", "--skip", "bench", "graph"])
    assert args.budget == cli.QUICK_BUDGET_S and args.out == "o"
    assert args.skip == ["bench", "graph"]
    assert cli.parse_args(["--budget", "12.5", "--backends", "cuda"]).budget == 12.5


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--budget", "0"], "must be positive"),
        (["--budget", "soon"], "not a number"),
        (["--backends", "cpu"], "invalid choice"),
        (["--skip", "everything"], "invalid choice"),
        (["--work-json", "/nonexistent/work.json"], "no such file"),
        (["--model-gpu", "V100"], "invalid choice"),
    ],
)
def test_bad_arguments_exit_2_saying_why(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(SystemExit):
        cli.parse_args(["--out", str(path)])
    assert "not a folder" in capsys.readouterr().err


def test_no_cuda_device_exits_3_and_does_nothing(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": REPO}
    proc = subprocess.run(
        [sys.executable, "-m", "fused_inception.gpucheck", "--quick"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == EXIT_NO_DEVICE == 3, proc.stderr
    assert "no CUDA device" in proc.stderr and "nothing was checked" in proc.stderr
    assert proc.stdout == ""
    assert os.listdir(tmp_path) == []  # no output folder


def test_main_without_device_returns_3_before_any_stage(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["--out", str(out)], cuda_available=lambda: False) == EXIT_NO_DEVICE
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# Summary writer


def _row(impl: str, ms: float, model: float | None, **extra) -> dict:
    row = {"block": "3a", "batch": 32, "dtype": "float16", "impl": impl, "median_ms": ms}
    row |= {"speedup": 0.1 / ms, "tflops": 1.2 / ms, "roofline_fraction": 0.02 / ms}
    row |= {"compile_s": None, "model_ms": model}
    row |= {"measured_over_model": None if model is None else ms / model}
    return row | extra


ROWS = [
    _row("torchvision_eager", 0.1, 0.05),
    _row("fused_triton", 0.05, None),
    _row("torchvision_compile_max_autotune", 0.08, 0.05, compile_s=42.04),
]
PASSED = [
    {"stage": "parity", "name": "3a triton float16", "ok": True, "detail": "err 1e-4"},
    {"stage": "sanitizer", "name": "compute-sanitizer", "ok": None, "detail": "not installed"},
]
FAILED = {"stage": "parity", "name": "4e cuda bfloat16 nchw", "ok": False, "detail": "3 NaN"}
BUDGET = {"total_s": 180.0, "elapsed_s": 95.25, "stages_s": {"env": 0.5, "parity": 60.0}}


def test_summary_tables_from_recorded_rows(tmp_path):
    md = summary.markdown({**_env()}, PASSED, ROWS, BUDGET, ["a note"])
    assert "**Verdict: PASS** (0 of 2 checks failed; exit status 0)" in md
    assert "| parity | 1 | 0 | 0 |" in md and "| sanitizer | 0 | 0 | 1 |" in md
    assert "| sanitizer | compute-sanitizer | skipped | not installed |" in md
    assert "| parity | 60.0 |" in md and "| total | 95.2 (budget 180.0) |" in md
    assert (
        "| 3a | 32 | float16 | torchvision_eager | 0.1 | 1.00x | 12 | 20% | - | 0.05 | 2.00 |" in md
    )
    assert "| 3a | 32 | float16 | fused_triton | 0.05 | 2.00x | 24 | 40% | - | - | - |" in md
    assert (
        "| torchvision_compile_max_autotune | 0.08 | 1.25x | 15 | 25% | 42.0 | 0.05 | 1.60 |" in md
    )
    assert "- a note" in md
    assert summary.exit_status(PASSED) == EXIT_OK


def test_a_failing_parity_row_makes_the_verdict_fail(tmp_path):
    checks = [*PASSED, FAILED]
    json_path, md_path = summary.write_outputs(str(tmp_path), _env(), checks, ROWS, BUDGET)
    md = open(md_path).read()
    assert "**Verdict: FAIL** (1 of 3 checks failed; exit status 1)" in md
    assert "| parity | 1 | 1 | 0 |" in md
    assert "| parity | 4e cuda bfloat16 nchw | FAIL | 3 NaN |" in md
    data = json.load(open(json_path))
    assert data["verdict"] == "FAIL" and data["exit_status"] == EXIT_FAILED == 1
    assert data["checks"] == checks and data["bench_rows"] == ROWS
    assert data["environment"]["torch"] == torch.__version__
    assert summary.verdict([]) == "NOTHING CHECKED" and summary.exit_status([]) == EXIT_OK


def _env() -> dict:
    from fused_inception.gpucheck.env import environment

    return environment(CPU)


def test_environment_lines_say_what_the_build_holds():
    from fused_inception.gpucheck.env import environment_lines

    text = "\n".join(environment_lines(_env()))
    assert f"torch {torch.__version__}" in text and "triton" in text
    assert "cuda_kernel_builds() = " in text and "available_backends() = " in text


# ---------------------------------------------------------------------------------------------
# Parity driver: interpreter (triton) and SIMT shim (cuda) on CPU tensors


@pytest.fixture(params=backend_params("triton", "cuda"))
def gpu_backend(request) -> str:
    return request.param


def _tiny_cases(backend: str, dtypes=(torch.float32, torch.float16), layouts=None):
    layouts = layouts or ["nchw", "channels_last"]
    return parity.parity_cases({"tiny": TINY}, [backend], dtypes, layouts, batch=2)


def test_parity_driver_passes_a_working_backend(gpu_backend):
    cases = _tiny_cases(gpu_backend)
    assert len(cases) == 2 * 2 * 2  # dtypes x layouts x forms
    checks = parity.run_parity(cases, CPU, log=lambda _: None)
    assert all(c["ok"] for c in checks), [c["detail"] for c in checks]
    assert {(c["form"], c["layout"], c["dtype"]) for c in checks} == {
        (f, lay, d)
        for f in ("torchvision", "paper")
        for lay in ("nchw", "channels_last")
        for d in ("float32", "float16")
    }
    assert all(c["max_abs_err"] <= c["tolerance"] * c["ref_scale"] for c in checks)
    grad = parity.check_gradients(gpu_backend, "tiny", TINY, CPU)
    assert grad["ok"], grad["detail"]
    assert grad["stage"] == "gradient" and "14 tensors" in grad["detail"]


@pytest.mark.parametrize("corruption", ["offset", "nan"])
def test_parity_driver_reports_a_broken_backend(gpu_backend, corruption, monkeypatch):
    forward = FusedInception.forward

    def broken(self, x):
        out = forward(self, x)
        flat = out.view(-1) if out.is_contiguous() else out.permute(0, 2, 3, 1).reshape(-1)
        if corruption == "nan":
            out[1, 2, 3, 0] = float("nan")
        else:
            out[1, 2, 3, 0] += 0.5 * flat.abs().max()
        return out

    monkeypatch.setattr(FusedInception, "forward", broken)
    cases = _tiny_cases(gpu_backend, dtypes=(torch.float32,), layouts=["channels_last"])
    lines = []
    checks = parity.run_parity(cases, CPU, log=lines.append)
    assert [c["ok"] for c in checks] == [False, False]
    want = "NaN outputs" if corruption == "nan" else "> 0.0001 x"
    assert all(want in c["detail"] for c in checks), [c["detail"] for c in checks]
    assert lines[-1] == "  parity: 0/2 passed" and lines[0].startswith("  FAIL parity tiny")
    assert summary.exit_status(checks) == EXIT_FAILED


def test_parity_check_that_raises_is_a_failure(gpu_backend):
    case = parity.ParityCase("tiny", TINY, gpu_backend, torch.float64, "nchw", "paper", 1)
    check = parity.check_parity(case, CPU)
    assert check["ok"] is False and check["detail"].startswith("raised TypeError")


def test_second_gpu_check_is_skipped_with_one_or_none():
    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs: the check runs (test_gpu_end_to_end)")
    check = parity.check_other_device("triton", "tiny", TINY)
    assert check["ok"] is None and check["detail"] == "skipped: one GPU"


def test_graph_stage_needs_a_cuda_device():
    check = graph.check_graph("triton", CPU)
    assert check["ok"] is None and "not a CUDA device" in check["detail"]


# ---------------------------------------------------------------------------------------------
# Sanitizer stage


def test_sanitizer_not_installed_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    lines = []
    checks = sanitizer.run_sanitizer(
        ["triton"], str(tmp_path), which=lambda _: None, log=lines.append
    )
    assert len(checks) == 1 and checks[0]["ok"] is None
    assert "compute-sanitizer is not installed" in checks[0]["detail"]
    assert "compute-sanitizer is not installed" in lines[0]
    assert summary.exit_status(checks) == EXIT_OK and os.listdir(tmp_path) == []


def _stand_in(tmp_path, errors: int, status: int) -> str:
    """A compute-sanitizer stand-in: prints its arguments and an ERROR SUMMARY."""
    path = tmp_path / "compute-sanitizer"
    path.write_text(
        f'#!/bin/sh\necho "args: $*"\necho "========= ERROR SUMMARY: {errors} errors"\n'
        f"exit {status}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize("errors, status, ok", [(0, 0, True), (2, 0, False), (0, 1, False)])
def test_sanitizer_tools_read_the_error_summary(tmp_path, errors, status, ok):
    tool = _stand_in(tmp_path, errors, status)
    out = tmp_path / "out"
    out.mkdir()
    checks = sanitizer.run_sanitizer(
        ["triton", "cuda"], str(out), which=lambda _: tool, log=lambda _: None
    )
    assert [c["name"] for c in checks] == list(sanitizer.TOOLS)
    assert all(c["ok"] is ok and c["errors"] == errors for c in checks)
    log = (out / "sanitizer-racecheck.log").read_text()
    assert "--tool racecheck" in log and "--sanitizer-child --backends triton cuda" in log
    assert sanitizer.errors_reported("no summary here") is None


def test_sanitizer_child_runs_every_kernel_kind():
    cases = sanitizer.sanitizer_cases(["triton", "cuda"])
    kinds = {(c.backend, c.dtype, c.form) for c in cases}
    assert len(kinds) == len(cases) == 2 * 3 * 2
    assert {c.cfg.hw for c in cases} == {8} and {c.batch for c in cases} == {1}


# ---------------------------------------------------------------------------------------------
# Benchmark stage and budget


def test_budget_counts_stages_with_an_injected_clock():
    now = [100.0]
    budget = Budget(10.0, clock=lambda: now[0])
    lines = []
    with budget.stage("parity", lines.append):
        now[0] += 12.0
    assert budget.stages == {"parity": 12.0} and budget.left() == -2.0
    assert lines[-1] == "== parity: 12.0 s (12 s in all, 2 s over the budget)"


def test_bench_stage_rows_carry_the_model(monkeypatch):
    plan = gbench.Plan(("5b",), (1,), ("bfloat16",), (), 1, 0, 0.0)
    rows, skipped = gbench.run_bench(
        CPU, ["cpu"], plan, Budget(1e6), compile_budget_s=1.0, model_gpu="H100", log=print
    )
    impls = ["torchvision_eager", "fused_cpu", "prepared_cpu"]
    assert skipped == [] and [r["impl"] for r in rows] == impls
    eager, fused, _ = rows
    assert eager["model_ms"] == eager["model_unfused_ms"] > 0 and eager["model_gpu"] == "H100"
    assert eager["measured_over_model"] == pytest.approx(
        eager["median_ms"] / eager["model_ms"], 1e-2
    )
    assert fused["model_fused_ms"] is None and fused["model_ms"] is None  # no --work-json
    assert fused["layout"] == "channels_last" and fused["tflops"] > 0
    rows, skipped = gbench.run_bench(
        CPU, ["cpu"], plan, Budget(0.0), compile_budget_s=1.0, model_gpu="H100", log=print
    )
    assert rows == [] and skipped == ["5b batch 1 bfloat16: time budget spent"]


def test_fused_model_from_a_work_report(tmp_path):
    tensor = {"key": [7], "shape": [8, 832, 7, 7], "read_bytes": 8 * 832 * 49 * 2.0}
    tensor |= {"written_bytes": 0.0, "span_bytes": tensor["read_bytes"]}
    launch = {"tensors": {"x": tensor}, "mma_macs": 1e9, "other_dot_macs": 0.0, "gathered": 0}
    launch |= {"loaded_bytes": 1e6, "stored_bytes": 1e5, "programs": 64, "num_warps": 0}
    launch |= {"constexprs": {}, "num_stages": 3, "function": "block_1x1_kernel"}
    result = {"block": "5b", "k": 3, "batch": 8, "dtype": "float16", "launches": [launch]}
    # The cuda backend's counts of the same block: twice the MMA work, so a slower MODEL.
    slower = {**launch, "mma_macs": 2e9 * 8}
    cuda = {**result, "backend": "cuda", "launches": [slower]}
    path = tmp_path / "work.json"
    path.write_text(json.dumps({"batch": 8, "results": [result, cuda]}))
    work = gbench.load_work(str(path))
    assert set(work) == {("triton", "5b", 3), ("cuda", "5b", 3)}  # no backend: triton
    at8 = gbench.model_fields("5b", 8, "float16", "A100", work)
    at32 = gbench.model_fields("5b", 32, "float16", "A100", work)
    assert 0 < at8["model_fused_ms"] < at32["model_fused_ms"]
    cuda8 = gbench.model_fields("5b", 8, "float16", "A100", work, backend="cuda")
    assert cuda8["model_fused_ms"] > at8["model_fused_ms"]
    assert cuda8["model_unfused_ms"] == at8["model_unfused_ms"]
    assert gbench.model_fields("5b", 8, "float16", "A100", work, "cpu")["model_fused_ms"] is None
    assert at32["model_unfused_ms"] > at8["model_unfused_ms"] > 0
    assert gbench.model_fields("network", 8, "float16", "A100", work)["model_fused_ms"] is None
    assert gbench.model_fields("5b", 8, "float16", None, work)["model_unfused_ms"] is None
    assert gbench.model_gpu_for("NVIDIA H100 80GB HBM3") == "H100"
    assert gbench.model_gpu_for("NVIDIA L4") is None
    path.write_text("[]")
    with pytest.raises(ValueError, match="not the JSON"):
        gbench.load_work(str(path))


# ---------------------------------------------------------------------------------------------
# On a GPU only


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a CUDA device: CUDA graph capture")
@pytest.mark.parametrize("backend", backend_params("triton", "cuda"))
def test_graph_capture_replays_equal_eager(backend):
    check = graph.check_graph(backend, torch.device("cuda"), batch=2)
    assert check["ok"], check["detail"]


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs a CUDA device: the whole command")
def test_gpu_end_to_end_quick(tmp_path):
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--skip", "sanitizer", "bench"]
    assert cli.main(argv) == EXIT_OK
    data = json.loads((out / "gpucheck.json").read_text())
    assert data["verdict"] == "PASS" and (out / "summary.md").exists()
