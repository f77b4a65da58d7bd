"""What several test files share: the block cases, random weights, the float64 reference, the
normwise tolerance check, the dtype and layout tables, backend parameters and the AOT report.

Test files import it as `from helpers import ...` (pytest puts tests/ on sys.path, also for
`pytest tests/test_x.py` alone). It imports fused_inception, so it must only be imported after
tests/conftest.py has set TRITON_INTERPRET and FUSED_INCEPTION_EMULATE_CUDA: pytest imports
conftest, which sets them before its own import of the package, ahead of every test file.
"""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch
from torch import nn

from fused_inception import BlockConfig, FusedInception, Inception, _ext, inception_ref
from fused_inception.backends import (
    available_backends,
    backend_unavailable_reason,
    cuda_kernel_builds,
)
from fused_inception.bench.cases import randomize_bn
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.folding import fold_block

# ---------------------------------------------------------------------------------------------
# Tables. One name per dtype and per layout, in test ids too; they are the names
# fused_inception.bench.cases uses ("float32", "channels_last"). A file picks the subset it needs.

DTYPES = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float64": torch.float64,
}
# What the triton and cuda kernels compute in.
GPU_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}

# Relative tolerance, normwise: max|out - ref| <= tol * max|ref|.
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float64: 1e-10}


def dtype_name(dtype: torch.dtype) -> str:
    """How tests name a dtype: its key in DTYPES ("float16"); "int8" or "bool" outside it."""
    return str(dtype).removeprefix("torch.")


def dtype_params(*dtypes: torch.dtype) -> list:
    """pytest params of `dtypes` (all of DTYPES by default), each with its name as id."""
    return [pytest.param(d, id=dtype_name(d)) for d in dtypes or DTYPES.values()]


def layout_params(*names: str) -> list:
    """pytest params of the memory formats named (all of LAYOUTS by default), ids their names."""
    return [pytest.param(LAYOUTS[name], id=name) for name in names or LAYOUTS]


# ---------------------------------------------------------------------------------------------
# Block configurations.

# GoogLeNet's nine blocks keep their channel counts; the spatial size shrinks where a backend is
# slow here (the interpreter), never below 7.
GOOGLENET_CASES = [
    pytest.param(name, cfg, id=f"googlenet-{name}") for name, cfg in GOOGLENET_BLOCKS.items()
]

# Odd shapes: channels not multiples of 8 (or below 8), H != W, 1x1 images, batch 1.
ODD_CASES = [
    pytest.param("odd-a", BlockConfig(5, 3, 7, 9, 2, 6, 1, 5), id="odd-c5-5x5"),
    pytest.param("odd-b", BlockConfig(13, 17, 11, 19, 3, 5, 7, 1), id="odd-c13-1x1"),
    pytest.param("odd-c", BlockConfig(33, 1, 1, 1, 1, 1, 1, 4), id="odd-c33-ones"),
]

# The smallest odd case, for tests about one block rather than about shapes.
SMALL = ODD_CASES[0].values[1]  # 5 -> 3 | 7 -> 9 | 2 -> 6 | 1


def odd_spatial(name: str, hw: int) -> tuple[int, int]:
    """H != W for the odd cases (keeps 1x1 as 1x1)."""
    return (hw, hw) if hw == 1 else (hw, hw + 3)


def source_block(cfg: BlockConfig, norm: bool, k: int) -> nn.Module:
    """torchvision's block where it exists (BN form, 3x3 branch3), else the reference module."""
    if norm and k == 3:
        from torchvision.models.googlenet import Inception as TvInception

        return TvInception(*cfg.args())
    return Inception(*cfg.args(), branch3_kernel=k, norm=norm)


# ---------------------------------------------------------------------------------------------
# Backends and devices.

GPU = torch.cuda.is_available()
# Where the GPU backends run: CUDA tensors on a GPU, else CPU tensors (interpreter, SIMT shim).
GPU_DEVICE = torch.device("cuda" if GPU else "cpu")


def backend_device(backend: str) -> torch.device:
    """The device whose tensors `backend` runs on here."""
    return torch.device("cpu") if backend == "cpu" else GPU_DEVICE


def skip_module_unless_triton_runs() -> None:
    """Skip the calling test module, at its import, where the Triton kernels cannot run: no CUDA
    device, and fused_inception was imported without TRITON_INTERPRET=1 (Triton and the package
    read it only then; tests/conftest.py sets it before the import)."""
    import fused_inception.triton

    if not GPU and not fused_inception.triton.INTERPRETER:
        pytest.skip(
            "no CUDA device and TRITON_INTERPRET was not 1 when fused_inception was imported "
            "(tests/conftest.py sets it before): the Triton kernels cannot run",
            allow_module_level=True,
        )


# The fused_inception:: operators (None without the extension), and a mark for the tests that
# call the CUDA kernels' operators on CPU tensors (the emulated build, without a GPU).
OPS = torch.ops.fused_inception if _ext.has_extension() else None
needs_emulated_ops = pytest.mark.skipif(
    "emulated" not in cuda_kernel_builds() or GPU, reason="no emulated CUDA kernel build"
)
# Where tests of the CUDA kernels' operators run them: the nvcc build on a GPU, else the
# emulated build on CPU tensors; and a mark that skips them where this build has neither.
CUDA_OPS_DEVICE = torch.device("cuda" if GPU and "cuda" in cuda_kernel_builds() else "cpu")
needs_cuda_ops = pytest.mark.skipif(
    ("cuda" if CUDA_OPS_DEVICE.type == "cuda" else "emulated") not in cuda_kernel_builds(),
    reason=f"this build has no CUDA kernels for {CUDA_OPS_DEVICE} (builds: "
    f"{cuda_kernel_builds()}; extension error: {_ext.extension_error()})",
)


def backend_params(*names: str) -> list:
    """pytest params of the backends named, each skipped (with the reason) where it cannot run."""
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                name not in available_backends(),
                reason=f"backend {name!r}: {backend_unavailable_reason(name)}",
            ),
        )
        for name in names
    ]


# Every backend, each skipped where it cannot run: cpu natively; without a GPU, triton under
# TRITON_INTERPRET=1 and cuda through the SIMT shim (FUSED_INCEPTION_EMULATE_CUDA=1) on CPU
# tensors, else on CUDA tensors. Shapes stay tiny: the interpreter costs ~10 ms per
# program-iteration.
EVERY_BACKEND = backend_params("cpu", "triton", "cuda")


# ---------------------------------------------------------------------------------------------
# Weights, inputs and references.


def randomize_block(block: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh random weights, biases and BN statistics (init values would make BN an identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.0 / max(1, p[0].numel()) ** 0.5))
    randomize_bn(block, gen, spread=0.2)
    return block


def tv_block(seed: int = 0, cfg: BlockConfig = SMALL) -> nn.Module:
    """torchvision's block of `cfg` with random weights, in eval mode."""
    from torchvision.models.googlenet import Inception as TvInception

    return randomize_block(TvInception(*cfg.args()), seed).eval()


def fused_on(src: nn.Module, backend: str) -> FusedInception:
    """FusedInception from a copy of `src` on `backend`, in eval mode on the backend's device."""
    fused = FusedInception.from_module(copy.deepcopy(src), backend=backend).eval()
    return fused.to(backend_device(backend))


def randn_channels_last(*shape: int, dtype=torch.float32, generator=None, device="cpu"):
    """torch.randn(shape) in `dtype` on `device`, channels_last-contiguous."""
    t = torch.randn(*shape, generator=generator).to(device, dtype)
    return t.contiguous(memory_format=torch.channels_last)


def nan_channels_last(*shape: int, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A NaN-filled channels_last output: an element a kernel does not write stays NaN."""
    out = torch.full(shape, float("nan"), dtype=dtype, device=device)
    return out.contiguous(memory_format=torch.channels_last)


def reference_f64(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's eval-mode function in float64, from the formulas (reference.inception_ref)."""
    folded = fold_block(copy.deepcopy(block).double())
    return inception_ref(x.detach().double(), folded)


def assert_close_rel(
    out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str | None = None
) -> None:
    """Normwise relative check against a (float64) reference; NaN anywhere fails. `what` (a
    gradient's or a parameter's name) prefixes the failure message."""
    where = f"{what}: " if what else ""
    assert out.shape == ref.shape, (
        f"{where}shape {tuple(out.shape)} != reference {tuple(ref.shape)}"
    )
    assert not torch.isnan(out).any(), f"{where}output has NaN (an element left unwritten?)"
    err = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
    scale = ref.abs().max().item() if ref.numel() else 1.0
    tol = TOLERANCES[dtype]
    assert err <= tol * max(scale, 1e-6), f"{where}max abs err {err:.3e} > {tol:g} * {scale:.3e}"


# Integer views of each float dtype, to compare tensors bit for bit.
BITS = {
    torch.float32: torch.int32,
    torch.float64: torch.int64,
    torch.float16: torch.int16,
    torch.bfloat16: torch.int16,
}


def assert_same_pool_bits(out: torch.Tensor, ref: torch.Tensor, where: str) -> None:
    """out is max_pool2d's result `ref` bit for bit: shape, dtype, NaN payloads and zero signs.
    Exception: bfloat16 NaNs need only be NaN where ref's are (torch's AVX2/AVX512 pools rewrite
    some of their bits; the package's pools keep the input's)."""
    assert out.shape == ref.shape, f"shape {tuple(out.shape)} != {tuple(ref.shape)} ({where})"
    assert out.dtype == ref.dtype, where
    out_bits, ref_bits = out.view(BITS[out.dtype]), ref.view(BITS[out.dtype])
    if out.dtype == torch.bfloat16:
        assert torch.equal(out.isnan(), ref.isnan()), f"NaN positions differ: {where}"
        both_nan = out.isnan() & ref.isnan()
        out_bits, ref_bits = out_bits.masked_fill(both_nan, 0), ref_bits.masked_fill(both_nan, 0)
    mismatch = out_bits != ref_bits
    assert not mismatch.any(), (
        f"{int(mismatch.sum())} of {out.numel()} elements differ ({where}); first at "
        f"{mismatch.nonzero()[0].tolist()}: got {out[mismatch][0].item()}, "
        f"want {ref[mismatch][0].item()}"
    )


def run_at_capability(script: str, capability: str) -> None:
    """Run `script` (Python source that prints "ok") in a subprocess whose torch runs at CPU
    capability `capability` ("DEFAULT", "AVX2", ...; passed as sys.argv[1] too), importing this
    checkout's fused_inception: the operators' AVX2 and scalar loops, which a machine running
    torch's AVX-512 kernels would never take otherwise."""
    if capability != "DEFAULT" and not torch.backends.cpu.get_cpu_capability().startswith("AVX"):
        pytest.skip(f"this CPU runs torch at capability {torch.backends.cpu.get_cpu_capability()}")
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(_ext.__file__)))
    python_path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "ATEN_CPU_CAPABILITY": capability.lower(), "PYTHONPATH": python_path}
    result = subprocess.run(
        [sys.executable, "-c", script, capability],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


# The start of a script for outputs_at_every_capability: checks the capability and defines
# rand(*shape), the same values at every capability (randn's vector loop is not).
CAPABILITY_PRELUDE = """
import sys, torch
import fused_inception
capability = torch.backends.cpu.get_cpu_capability()
assert capability == sys.argv[1], capability
gen = torch.Generator().manual_seed(11)
def rand(*shape):
    return torch.randint(-2**20, 2**20, shape, generator=gen).float() / 2**19
"""


def outputs_at_every_capability(tmp_path, script: str) -> dict[str, list[str]]:
    """Run `script` (CAPABILITY_PRELUDE, then code writing files into the folder named
    `OUT_DIR` and printing "ok") at every capability this CPU allows (DEFAULT, AVX2, AVX512):
    capability -> the files' texts, sorted. Skips on a CPU without vector capability."""
    here = torch.backends.cpu.get_cpu_capability()
    if here == "DEFAULT":
        pytest.skip("this CPU runs torch without vector capability: one loop only")
    capabilities = ("DEFAULT", "AVX2", "AVX512") if here == "AVX512" else ("DEFAULT", here)
    outputs = {}
    for capability in capabilities:
        where = tmp_path / capability
        where.mkdir()
        run_at_capability(script.replace("OUT_DIR", repr(str(where))), capability)
        outputs[capability] = sorted(p.read_text() for p in where.iterdir())
    return outputs


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compilation.


def aot_report(kernels: str, backends: tuple[str, ...] = ("triton",)) -> list[dict]:
    """Records of `python -m fused_inception.report --kernels <kernels> --backends <backends>`
    for sm_80 and sm_90.

    Runs in a subprocess without TRITON_INTERPRET (interpreter kernels cannot be compiled); each
    record carries registers, shared_bytes, local_bytes (cuobjdump STACK + LOCAL: spills),
    tensor_cores and error.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "report.json")
        cmd = [sys.executable, "-m", "fused_inception.report", "--kernels", kernels]
        cmd += ["--backends", *backends]
        proc = subprocess.run(
            cmd + ["--json", path], env=env, capture_output=True, text=True, timeout=900
        )
        assert os.path.exists(path), proc.stdout[-2000:] + proc.stderr[-2000:]
        with open(path) as f:
            return json.load(f)


# ---------------------------------------------------------------------------------------------
# Multi-process tests (DDP with gloo on loopback).


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the rendezvous port of a test)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_and_join(fn, args: tuple, nprocs: int, timeout_s: float) -> None:
    """torch.multiprocessing.spawn(fn, args, nprocs) and wait; kill the workers and fail after
    `timeout_s` seconds (a worker's exception is raised by join). A worker whose fn returned
    leaves with os._exit(0) (_run_then_exit)."""
    import torch.multiprocessing as mp

    ctx = mp.spawn(_run_then_exit, args=(fn, *args), nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            raise AssertionError(f"{nprocs} workers did not finish in {timeout_s} s")


def _run_then_exit(rank: int, fn, *args) -> None:
    """fn(rank, *args), then os._exit(0) if it returned, skipping the interpreter's shutdown (an
    exception propagates as spawn reports it). A DistributedDataParallel keeps its gloo group
    alive past destroy_process_group (measured: torch 2.14.1, even after the wrapper is
    collected), so the group's C++ objects are torn down at exit, where torch aborted once in
    CI ("terminate called without an active exception") after both ranks had printed their
    results."""
    fn(rank, *args)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class FunctionRecorder(torch.overrides.TorchFunctionMode):
    """A torch function mode that records the functions called under it (`seen`): what a user's
    mode sees, which the eval fast paths' direct operator calls would bypass."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


def script_and_onnx(model: torch.nn.Module, x: torch.Tensor, exact: bool = True) -> bytes:
    """Assert that torch.jit.script(model) computes model(x) exactly (exact=False: up to float
    rounding); return the legacy ONNX export of model on x (bytes)."""
    import io
    import warnings

    with torch.no_grad():
        want, scripted = model(x), torch.jit.script(model)(x)
    if exact:
        assert torch.equal(scripted, want)
    else:
        torch.testing.assert_close(scripted, want)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        buffer = io.BytesIO()
        torch.onnx.export(model, (x,), buffer, dynamo=False)
    return buffer.getvalue()
