"""fused_inception.report: ahead-of-time compile records for sm_80/sm_90, their checks, the CLI.

The kernels here are small stand-ins for the package's (a masked tl.dot tile, an elementwise
kernel, one that spills, one that cannot compile). This file's `aot_builds()` lists them, so the
report's CLI compiles them with `--modules test_report`. Compiling needs @triton.jit functions
defined without TRITON_INTERPRET (other test files set it for the whole session), so every
compile runs in a subprocess with a clean environment; this file never sets TRITON_INTERPRET.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import triton
import triton.language as tl

from fused_inception.report.cli import main, summary_line
from fused_inception.report.records import (
    RECORD_FIELDS,
    SHARED_LIMIT,
    make_record,
    record_problems,
)
from fused_inception.report.triton import collect_builds, compile_build
from fused_inception.triton import KernelBuild

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ARCHS = ("sm_80", "sm_90")
SPILL_BLOCK = 16384  # fp32 sums live in one warp: 512 per thread, registers hold 255


@triton.jit
def _dot_tile(a_ptr, b_ptr, c_ptr, M, N, K, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr):
    """c[M, N] = a[M, K] @ b[K, N] (row-major) for one BM x BN tile, K <= BK, masked."""
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    rk = tl.arange(0, BK)
    a_mask = (rm[:, None] < M) & (rk[None, :] < K)
    b_mask = (rk[:, None] < K) & (rn[None, :] < N)
    a = tl.load(a_ptr + rm[:, None] * K + rk[None, :], mask=a_mask, other=0.0)
    b = tl.load(b_ptr + rk[:, None] * N + rn[None, :], mask=b_mask, other=0.0)
    c = tl.dot(a, b)
    c_mask = (rm[:, None] < M) & (rn[None, :] < N)
    tl.store(c_ptr + rm[:, None] * N + rn[None, :], c.to(c_ptr.dtype.element_ty), mask=c_mask)


@triton.jit
def _scale_add(x_ptr, y_ptr, out_ptr, n, alpha, BLOCK: tl.constexpr):
    """out[i] = alpha * x[i] + y[i]; also the broken build (BLOCK not a power of 2)."""
    i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + i, mask=i < n)
    y = tl.load(y_ptr + i, mask=i < n)
    tl.store(out_ptr + i, alpha * x + y, mask=i < n)


@triton.jit
def _sum_rows(x_ptr, out_ptr, n_rows, BLOCK: tl.constexpr):
    """out[BLOCK] = sum of the n_rows rows of x[n_rows, BLOCK]: a loop-carried BLOCK-wide sum."""
    i = tl.arange(0, BLOCK)
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(n_rows):
        acc += tl.load(x_ptr + row * BLOCK + i)
    tl.store(out_ptr + i, acc)


def _dot_build(dtype: str, ptr: str) -> KernelBuild:
    sig = {"a_ptr": ptr, "b_ptr": ptr, "c_ptr": ptr, "M": "i32", "N": "i32", "K": "i32"}
    sig.update(BM="constexpr", BN="constexpr", BK="constexpr")
    consts = {"BM": 64, "BN": 64, "BK": 32}
    return KernelBuild(f"test_dot[{dtype},BM=64,BN=64,BK=32]", _dot_tile, sig, consts, dtype)


def _scale_add_build(dtype: str, ptr: str, block: int, name: str) -> KernelBuild:
    sig = {"x_ptr": ptr, "y_ptr": ptr, "out_ptr": ptr, "n": "i32", "alpha": "fp32"}
    sig["BLOCK"] = "constexpr"
    return KernelBuild(f"{name}[{dtype},BLOCK={block}]", _scale_add, sig, {"BLOCK": block}, dtype)


def aot_builds() -> list[KernelBuild]:
    """The builds the report compiles here (`--modules test_report`)."""
    spill_sig = {"x_ptr": "*fp32", "out_ptr": "*fp32", "n_rows": "i32", "BLOCK": "constexpr"}
    return [
        _dot_build("float16", "*fp16"),
        _scale_add_build("float32", "*fp32", 1024, "test_elementwise"),
        _scale_add_build("float16", "*fp16", 1024, "test_elementwise"),  # 16-bit, no tensor cores
        _scale_add_build("float32", "*fp32", 48, "test_broken"),  # arange needs a power of 2
        KernelBuild(
            f"test_spill[float32,BLOCK={SPILL_BLOCK}]",
            _sum_rows,
            spill_sig,
            {"BLOCK": SPILL_BLOCK},
            "float32",
            num_warps=1,
        ),
    ]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [TESTS_DIR, env.get("PYTHONPATH")]))
    return env


def _run_report(
    tmp_path, *args: str, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, list]:
    out_json = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "fused_inception.report", "--modules", "test_report"]
    cmd += ["--backends", "triton", "--json", str(out_json), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    records = json.loads(out_json.read_text()) if out_json.exists() else None
    return proc, records


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """The CLI on every build here, started WITH TRITON_INTERPRET=1 (it must re-run without)."""
    env = _clean_env()
    env["TRITON_INTERPRET"] = "1"
    proc, records = _run_report(tmp_path_factory.mktemp("report"), env=env)
    assert records is not None, f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert isinstance(records, list)
    return proc, {(r["kernel"].split("[")[0], r["dtype"], r["arch"]): r for r in records}


def test_records_have_every_field_and_sane_values(full_report):
    _, records = full_report
    documented = "kernel backend arch dtype registers shared_bytes local_bytes tensor_cores"
    counts = ("mma_instructions", "shuffle_instructions", "ldmatrix_instructions")
    counts += ("async_copy_instructions",)
    assert RECORD_FIELDS == (*documented.split(), *counts, "compile_s", "error")
    assert len(records) == len(aot_builds()) * len(ARCHS)
    for (name, dtype, arch), r in records.items():
        assert tuple(r) == RECORD_FIELDS
        assert r["backend"] == "triton" and arch in ARCHS
        assert r["dtype"] == dtype and dtype in ("float32", "float16")
        assert isinstance(r["compile_s"], float) and 0 <= r["compile_s"] < 300
        if name == "test_broken":
            continue
        assert r["error"] is None, r["error"]
        assert 0 < r["registers"] <= 255
        assert 0 <= r["shared_bytes"] <= SHARED_LIMIT[arch]
        assert isinstance(r["tensor_cores"], bool)
        assert r["local_bytes"] == 0 or name == "test_spill"
        # SASS counts: tensor-core instructions exactly where the PTX has mma.
        assert (r["mma_instructions"] > 0) == r["tensor_cores"], r
        assert r["shuffle_instructions"] >= 0
        assert r["ldmatrix_instructions"] >= 0 and r["async_copy_instructions"] >= 0


def test_dot_uses_tensor_cores_and_elementwise_does_not(full_report):
    _, records = full_report
    for arch in ARCHS:
        dot = records["test_dot", "float16", arch]
        assert dot["tensor_cores"] is True and dot["shared_bytes"] > 0
        assert record_problems(dot) == []
        fp32 = records["test_elementwise", "float32", arch]
        assert fp32["tensor_cores"] is False and record_problems(fp32) == []
        fp16 = records["test_elementwise", "float16", arch]
        assert any("tensor cores" in p for p in record_problems(fp16))


def test_compile_error_is_a_record(full_report):
    _, records = full_report
    for arch in ARCHS:
        r = records["test_broken", "float32", arch]
        assert "power of 2" in r["error"]
        assert r["registers"] is None and r["local_bytes"] is None
        assert record_problems(r)[0].startswith("error:")


def test_spilling_build_fails_the_check(full_report):
    _, records = full_report
    for arch in ARCHS:
        r = records["test_spill", "float32", arch]
        assert r["error"] is None and r["local_bytes"] > 0
        assert any("spills" in p for p in record_problems(r))


def test_cli_exit_status_summary_and_reexec(full_report):
    proc, _ = full_report
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "re-running the report without it" in proc.stderr
    n = len(aot_builds()) * len(ARCHS)
    # Failing: broken and spill on both archs, fp16 elementwise without tensor cores on both.
    assert f"{n} builds, 6 failed: 2 errors, 2 spill, 2 16-bit without tensor cores" in proc.stdout
    assert "FAILED test_broken[float32,BLOCK=48] [sm_80]" in proc.stdout


def test_cli_passes_with_kernel_and_arch_filters(tmp_path):
    proc, records = _run_report(
        tmp_path, "--kernels", "test_dot", "--arch", "sm_90", env=_clean_env()
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [(r["kernel"], r["arch"]) for r in records] == [
        ("test_dot[float16,BM=64,BN=64,BK=32]", "sm_90")
    ]
    assert "1 builds, 0 failed" in proc.stdout


def test_compile_build_refuses_interpreted_or_plain_functions(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    build = KernelBuild("plain", lambda x: x, {"x": "*fp32"}, {}, "float32")
    r = compile_build(build, "sm_80")
    assert tuple(r) == RECORD_FIELDS and "JITFunction" in r["error"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "TRITON_INTERPRET" in compile_build(aot_builds()[0], "sm_90")["error"]


def test_collect_builds_discovers_package_and_records_import_errors():
    errors: list[dict] = []
    builds = collect_builds(errors=errors)  # the package's modules, whatever state they are in
    assert all(isinstance(b, KernelBuild) for b in builds)
    assert all(e["error"] and e["kernel"].startswith("fused_inception.triton.") for e in errors)
    errors = []
    assert collect_builds(["fused_inception.triton._no_such_module"], errors) == []
    assert len(errors) == 1 and "ModuleNotFoundError" in errors[0]["error"]
    assert tuple(errors[0]) == RECORD_FIELDS
    with pytest.raises(ModuleNotFoundError):
        collect_builds(["fused_inception.triton._no_such_module"])


def test_second_record_provider_and_checks_on_synthetic_records(monkeypatch, tmp_path, capsys):
    """A provider like the future CUDA one plugs into main; its records are checked the same."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    good = dict(registers=96, shared_bytes=4096, local_bytes=0, tensor_cores=True, compile_s=1.0)
    spill = {**good, "local_bytes": 64}
    too_big = {**good, "shared_bytes": SHARED_LIMIT["sm_80"] + 1}
    shuffles = {**good, "mma_instructions": 100, "shuffle_instructions": 3}

    def cuda_provider(request):
        yield make_record("cuda_ok", "cuda", "sm_80", "float16", error=None, **good)
        yield make_record("cuda_spill", "cuda", "sm_90", "bfloat16", error=None, **spill)
        yield make_record("cuda_smem", "cuda", "sm_80", "float32", error=None, **too_big)
        yield make_record("cuda_shfl", "cuda", "sm_90", "float16", error=None, **shuffles)
        # Shuffles are checked in 16-bit builds only (fp32 runs no tensor-core instruction).
        yield make_record("cuda_shfl32", "cuda", "sm_90", "float32", error=None, **shuffles)

    out_json = tmp_path / "r.json"
    assert main(["--json", str(out_json)], providers=[cuda_provider]) == 1
    records = json.loads(out_json.read_text())
    assert [r["backend"] for r in records] == ["cuda"] * 5
    assert record_problems(records[0]) == []
    assert record_problems(records[3]) == [
        "3 SHFL for 100 tensor-core instructions in the SASS (at most 2%)"
    ]
    assert record_problems(records[4]) == []
    assert record_problems({**records[3], "shuffle_instructions": 2}) == []
    # The CUDA kernels with hand-written pipelines need LDSM and LDGSTS in 16-bit builds.
    piped = {**records[0], "kernel": "block_kxk_kernel<__half, 3>"}
    piped |= {"ldmatrix_instructions": 12, "async_copy_instructions": 0}
    assert record_problems(piped) == [
        "12 LDSM and 0 LDGSTS/UTMALDG in the SASS (its mainloop needs both)"
    ]
    assert record_problems({**piped, "async_copy_instructions": 4}) == []
    assert record_problems({**piped, "backend": "triton"}) == []  # Triton's pipelines are its own
    assert record_problems({**piped, "dtype": "float32"}) == []
    assert "5 builds, 3 failed" in capsys.readouterr().out
    assert summary_line(records).endswith(
        "1 over the shared-memory limit, 0 no ldmatrix or cp.async"
    )
    assert main([], providers=[lambda request: iter(records[:1])]) == 0
    with pytest.raises(ValueError, match="unknown record fields"):
        make_record("k", "cuda", "sm_80", "float16", regs=1)
