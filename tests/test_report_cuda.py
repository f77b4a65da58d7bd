"""fused_inception.report.cuda: the CUDA C++ kernels' records, read from nvcc/ptxas, no GPU.

tests/cuda/report_probe.cu holds stand-in kernels with known properties (fp32 with static shared
memory, 16-bit WMMA, one with a local-memory stack frame); the last test compiles the package's
own kernels (csrc/cuda/*.cu) through the report's command line.
"""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest
from helpers import aot_report

from fused_inception.report import cuda as report_cuda
from fused_inception.report.cuda import (
    NVCC_FLAGS,
    SOURCE_ROOT,
    compile_source,
    cuda_home,
    kernel_dtype,
    nvcc_path,
    short_kernel_name,
)
from fused_inception.report.records import PIPELINED_KERNELS, record_problems

REPO = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).resolve().parent / "cuda" / "report_probe.cu"
pytestmark = pytest.mark.skipif(
    not (cuda_home() / "bin" / "nvcc").exists(), reason=f"no nvcc under {cuda_home()}"
)


def test_nvcc_flags_match_setup_py():
    tree = ast.parse((REPO / "setup.py").read_text())
    assigned = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", "") == "NVCC_FLAGS" for t in node.targets)
    ]
    assert len(assigned) == 1
    assert tuple(ast.literal_eval(assigned[0])) == NVCC_FLAGS


def test_names_and_dtypes():
    readable = "void fused_inception::cuda::chain_kernel<__nv_bfloat16, 3>(fused_inception::A)"
    assert short_kernel_name(readable) == "chain_kernel<__nv_bfloat16, 3>"
    assert kernel_dtype(readable) == "bfloat16"
    assert kernel_dtype("void k<float, true>(float const*)") == "float32"
    assert kernel_dtype("void k<__half>(int)") == "float16"
    assert kernel_dtype("void k(int)") is None


@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_probe_records(arch):
    records = {r["kernel"]: r for r in compile_source(PROBE, arch, include=SOURCE_ROOT)}
    assert set(records) == {
        "scale_kernel<float>",
        "wmma_kernel<__half>",
        "wmma_kernel<__nv_bfloat16>",
        "local_memory_kernel",
    }, records
    for record in records.values():
        assert record["backend"] == "cuda" and record["arch"] == arch and record["error"] is None
        assert 0 < record["registers"] <= 255
    scale = records["scale_kernel<float>"]
    assert (scale["dtype"], scale["shared_bytes"], scale["local_bytes"]) == ("float32", 512, 0)
    assert scale["tensor_cores"] is False and record_problems(scale) == []
    for name, dtype in [
        ("wmma_kernel<__half>", "float16"),
        ("wmma_kernel<__nv_bfloat16>", "bfloat16"),
    ]:
        assert records[name]["dtype"] == dtype and records[name]["tensor_cores"] is True
        assert record_problems(records[name]) == []
    local = records["local_memory_kernel"]
    assert local["local_bytes"] >= 1024
    assert any("local memory" in p for p in record_problems(local))


def test_compile_error_is_a_record(tmp_path):
    bad = tmp_path / "bad.cu"
    bad.write_text("__global__ void k() { undefined_name(); }\n")
    (record,) = compile_source(bad, "sm_80")
    assert record["error"] and "undefined_name" in record["error"]
    assert record_problems(record)


_CACHED_KERNEL = """#include "probe_value.cuh"
__global__ void cached_kernel(float* out) { out[threadIdx.x] = kValue * threadIdx.x; }
"""


def test_nvcc_outputs_are_cached_until_an_input_changes(tmp_path, monkeypatch):
    """A second compile of the same file reuses nvcc's outputs (the same records, no nvcc run);
    a changed header under the include root, a changed file beside the source, or the cache
    turned off runs nvcc again; a failed compile is never cached."""
    monkeypatch.setenv("FUSED_INCEPTION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FUSED_INCEPTION_NVCC_CACHE", raising=False)
    include, sources = tmp_path / "include", tmp_path / "sources"
    include.mkdir()
    sources.mkdir()
    (include / "probe_value.cuh").write_text("constexpr float kValue = 2.0f;\n")
    source = sources / "cached.cu"
    source.write_text(_CACHED_KERNEL)
    runs = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):
        if cmd[0] == nvcc_path() and "-cubin" in cmd:
            runs.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(report_cuda.subprocess, "run", counting_run)

    def compile_now() -> list[dict]:
        return list(compile_source(source, "sm_80", include=include))

    first = compile_now()
    assert len(runs) == 1 and [r["kernel"] for r in first] == ["cached_kernel"]
    assert not first[0]["error"] and first[0]["registers"] > 0
    assert compile_now() == first and len(runs) == 1  # from the cache
    (include / "probe_value.cuh").write_text("constexpr float kValue = 3.0f;\n")
    assert compile_now()[0]["kernel"] == "cached_kernel" and len(runs) == 2
    (sources / "notes.h").write_text("// beside the source\n")
    compile_now()
    assert len(runs) == 3
    compile_now()
    assert len(runs) == 3
    monkeypatch.setenv("FUSED_INCEPTION_NVCC_CACHE", "0")
    compile_now()
    assert len(runs) == 4
    monkeypatch.delenv("FUSED_INCEPTION_NVCC_CACHE")
    source.write_text("__global__ void k() { undefined_name(); }\n")
    for expected_runs in (5, 6):
        (record,) = compile_now()
        assert "undefined_name" in record["error"] and len(runs) == expected_runs


def _probe_cubin(tmp_path: Path, value: str) -> bytes:
    """A cubin of _CACHED_KERNEL with kValue = value, built by nvcc for sm_80."""
    (tmp_path / "probe_value.cuh").write_text(f"constexpr float kValue = {value}f;\n")
    source, cubin = tmp_path / "cached.cu", tmp_path / f"cached_{value}.cubin"
    source.write_text(_CACHED_KERNEL)
    cmd = [nvcc_path(), f"-I{tmp_path}", *NVCC_FLAGS, "-cubin", "-arch=sm_80", str(source)]
    subprocess.run([*cmd, "-o", str(cubin)], capture_output=True, check=True)
    return cubin.read_bytes()


def test_cuobjdump_outputs_of_triton_cubins_are_cached_by_content(tmp_path, monkeypatch):
    """The Triton report's cuobjdump runs on a cubin (resource usage and SASS) are cached by the
    cubin's bytes: the same cubin again gives the same resources without running cuobjdump; a
    different cubin, an unreadable entry, a changed records.py (the parser) or the cache turned
    off runs it again."""
    from fused_inception.report import records
    from fused_inception.report import triton as report_triton

    monkeypatch.setenv("FUSED_INCEPTION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FUSED_INCEPTION_NVCC_CACHE", raising=False)
    two, three = _probe_cubin(tmp_path, "2.0"), _probe_cubin(tmp_path, "3.0")
    assert two != three
    runs = []
    real_run = subprocess.run

    def counting_run(cmd, *args, **kwargs):
        if cmd[0] == records.cuobjdump_path():
            runs.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(report_triton.subprocess, "run", counting_run)
    name = "_Z13cached_kernelPf"
    first = report_triton.cubin_resources(two, name)
    assert len(runs) == 2 and first["REG"] > 0 and first["MMA"] == 0
    assert report_triton.cubin_resources(two, name) == first and len(runs) == 2
    (entry,) = (tmp_path / "cache" / "cuobjdump").iterdir()
    assert report_triton.cubin_resources(three, name)["REG"] > 0 and len(runs) == 4
    entry.write_text("{not json")
    assert report_triton.cubin_resources(two, name) == first and len(runs) == 6
    assert report_triton.cubin_resources(two, name) == first and len(runs) == 6  # replaced
    # A changed parser (records.py) is a different key.
    edited = tmp_path / "records.py"
    edited.write_text(Path(records.__file__).read_text() + "\n# edited\n")
    monkeypatch.setattr(records, "__file__", str(edited))
    report_triton._cuobjdump_key_prefix.cache_clear()
    try:
        assert report_triton.cubin_resources(two, name) == first and len(runs) == 8
    finally:
        monkeypatch.undo()
        report_triton._cuobjdump_key_prefix.cache_clear()
    monkeypatch.setenv("FUSED_INCEPTION_NVCC_CACHE", "0")
    monkeypatch.setattr(report_triton.subprocess, "run", counting_run)
    for expected_runs in (10, 12):
        assert report_triton.cubin_resources(two, name) == first and len(runs) == expected_runs


def test_package_kernels_compile_without_spills_and_use_tensor_cores():
    """Every kernel in csrc/cuda/*.cu, both archs, through `python -m fused_inception.report`."""
    records = aot_report("", backends=("cuda",))
    assert records, "no CUDA kernels reported"
    problems = {(r["kernel"], r["arch"]): record_problems(r) for r in records}
    assert not any(problems.values()), {k: v for k, v in problems.items() if v}
    seen = {(r["arch"], r["dtype"]) for r in records}
    for arch in ("sm_80", "sm_90"):
        for dtype in ("float32", "float16", "bfloat16"):
            assert (arch, dtype) in seen, f"no {dtype} kernel for {arch}"
    families = {r["kernel"].split("<")[0] for r in records}
    assert len(families) >= 2, families
    # Version 2's mainloops: ldmatrix fragment loads and cp.async copies in every 16-bit build
    # (record_problems requires them too; this says they were counted at all).
    piped = [r for r in records if r["kernel"].split("<")[0] in PIPELINED_KERNELS]
    assert {r["kernel"].split("<")[0] for r in piped} == set(PIPELINED_KERNELS)
    for r in piped:
        if r["dtype"] != "float32":
            assert r["ldmatrix_instructions"] > 0 and r["async_copy_instructions"] > 0, r


def test_dynamic_shared_memory_is_added_and_required():
    table = {"scale_kernel<float>": 1000, "wmma_kernel<__half>": 0}
    records = {r["kernel"]: r for r in compile_source(PROBE, "sm_80", dynamic_shared=table)}
    assert records["scale_kernel<float>"]["shared_bytes"] == 512 + 1000
    assert records["wmma_kernel<__half>"]["error"] is None
    missing = records["wmma_kernel<__nv_bfloat16>"]
    assert "report_probe_shared_memory" in missing["error"] and record_problems(missing)
