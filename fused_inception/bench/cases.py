"""The cases the benchmark times: one Inception block or the whole GoogLeNet, at one batch size,
dtype and input layout, with every implementation compared on the same weights and inputs.

Implementations (the names the rows carry):
- "torchvision_eager": torchvision's module as it is (the baseline of every speedup);
- "fused_<backend>": FusedInception on that backend (a block), or a copy of the network with
  every block swapped by fuse_inception;
- "prepared_<backend>": a copy of the network prepared by prepare_for_inference on that
  backend (fused blocks, BatchNorm folded into the stem's convolutions, channels_last, eval),
  the same in both input layouts (it takes NCHW input); for a block on the CPU, a copy of the
  block prepared the same way (a FusedInception whose conv weights are in the plain layout the
  cpu backend's kernel reads in place: fused_inception/plain_layout.py; on a GPU a prepared
  block would be the fused row again, so it has none);
  "prepared_folded" (the network only) the same with blocks="folded" (eager blocks of
  BN-folded conv+ReLU units);
- "torchvision_compile" (mode "default") and "torchvision_compile_max_autotune": torch.compile
  of torchvision's module, dynamic=False (one static graph per shape and layout, what a
  deployment at a fixed batch size gets). Compiling happens on the first call, which the
  benchmark times apart (Case.compiled names these), never inside a median;
- "onnxruntime": torchvision's module exported once per case to ONNX (the legacy
  torch.onnx.export, opset 17, static shapes) and run by an ONNX Runtime InferenceSession
  (CPUExecutionProvider, or CUDAExecutionProvider on a GPU when ONNX Runtime has it). Its input
  is an NCHW numpy array holding the case's input values (channels_last inputs are made
  contiguous once, before timing); its output comes back as a tensor. Exporting and creating
  the session happen in build_case (Case.setup_s), never inside a median; the output is
  checked against the eager module's first (ORT_TOLERANCES; else OrtParityError). Its idle
  threads do not spin (session.intra_op.allow_spinning 0): ONNX Runtime's spinning threads
  keep spinning long after a call (tens of ms and more, measured) and take the cores from the
  torch calls interleaved with it;
- "onnxruntime_spinning" (CPU): the same model in a second session with ONNX Runtime's default
  thread settings (idle threads spin), the configuration a deployment gets unless it changes
  them. Timed alone (Case.alone), before, between and after segments of the interleaved rounds
  of the others (cli.ALONE_SEGMENTS): each time created, timed in the same runs of calls and
  released before anything else runs, so that its threads spin into no other candidate's calls.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from fused_inception.backends import available_backends
from fused_inception.bench.roofline import Traffic, block_traffic, network_traffic
from fused_inception.bench.timing import cycling
from fused_inception.configs import GOOGLENET_BLOCKS, BlockConfig
from fused_inception.inference import prepare_for_inference
from fused_inception.module import FusedInception
from fused_inception.reference import Inception
from fused_inception.swap import fuse_inception

NETWORK = "network"
IMAGE_HW = 224
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = ("default", "max-autotune")
EAGER = "torchvision_eager"
ORT = "onnxruntime"
ORT_SPINNING = "onnxruntime_spinning"
PREPARED_FOLDED = "prepared_folded"
ONNX_OPSET = 17
# The package's tolerances, normwise: max|out - ref| <= tolerance * max|ref|.
ORT_TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2}
# Distinct inputs cycled per candidate add up to at least this (beyond a server CPU's L3 and
# twice a GPU's L2), so no call finds its input in cache from the previous one.
MIN_ROTATION_BYTES = 64 * 2**20


class Case(NamedTuple):
    """One timed comparison.

    calls:    implementation name -> no-argument callable, each cycling through the shared
              inputs from its own starting point; the first is torchvision's eager module
    compiled: names in `calls` whose first call compiles
    traffic:  work and fewest elements moved (fused_inception.bench.roofline)
    inputs:   the rotated input tensors, [batch, C, H, W] each, in the case's layout
    setup_s:  seconds of one-off setup outside the timing per implementation (the onnxruntime
              row: exporting to ONNX and creating the session)
    alone:    (name, make) pairs timed alone, before, between and after segments of the
              interleaved rounds of `calls`, one at a time: make() returns a no-argument
              callable (making it is not timed), released after each timing
              (onnxruntime_spinning); their rows follow calls' rows
    """

    calls: dict[str, Callable[[], torch.Tensor]]
    compiled: tuple[str, ...]
    traffic: Traffic
    inputs: list[torch.Tensor]
    setup_s: dict[str, float] = {}
    alone: tuple[tuple[str, Callable[[], Callable[[], object]]], ...] = ()


class OrtParityError(AssertionError):
    """ONNX Runtime's output of a case differs from the eager module's beyond ORT_TOLERANCES."""


def dtype_name(dtype: torch.dtype) -> str:
    """The key of `dtype` in DTYPES ("float16" for torch.float16), as rows carry it."""
    return str(dtype).removeprefix("torch.")


def default_dtypes(device: torch.device) -> list[str]:
    """The dtypes timed by default on `device`: 16-bit on a GPU (tensor cores), fp32 on a CPU."""
    return ["float16", "bfloat16"] if device.type == "cuda" else ["float32"]


def timed_backends(device: torch.device) -> list[str]:
    """The FusedInception backends worth timing on `device`, best first.

    On a GPU the GPU backends; the ATen-built "cpu" backend only on the CPU (the GPU backends
    run on CPU tensors only in emulators, far too slow to time).
    """
    on_gpu = device.type == "cuda"
    return [b for b in available_backends() if (b == "cpu") != on_gpu]


def fused_impl_name(backend: str) -> str:
    """Row name of FusedInception on `backend`."""
    return f"fused_{backend}"


def prepared_impl_name(backend: str) -> str:
    """Row name of the network (or block) prepared by prepare_for_inference on `backend`."""
    return f"prepared_{backend}"


def compile_impl_name(mode: str) -> str:
    """Row name of torchvision's module under torch.compile(mode=mode)."""
    return (
        "torchvision_compile"
        if mode == "default"
        else f"torchvision_compile_{mode}".replace("-", "_")
    )


def impl_names(
    backends: Sequence[str],
    compile_modes: Sequence[str] = (),
    onnxruntime: bool = False,
    *,
    network: bool = False,
    cpu: bool = True,
) -> list[str]:
    """The implementations of a case, in the order build_case makes them (eager first);
    network=True: the network case's, with its prepared_folded row too; cpu=False: a block's on
    a GPU, without prepared rows."""
    names = [EAGER, *(fused_impl_name(b) for b in backends)]
    names += [prepared_impl_name(b) for b in backends] if network or cpu else []
    names += [PREPARED_FOLDED] * network
    names += [compile_impl_name(m) for m in compile_modes] + [ORT] * onnxruntime
    return names + [ORT_SPINNING] * (onnxruntime and cpu)


def ort_unavailable_reason(device: torch.device, dtype: torch.dtype) -> str | None:
    """Why the onnxruntime row cannot be timed on `device` in `dtype` (None: it can)."""
    if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None:
        return "onnxruntime or onnx is not installed (pip install fused_inception[bench])"
    if dtype not in (torch.float32, torch.float16):
        return f"{dtype_name(dtype)} has no numpy dtype to feed ONNX Runtime"
    if device.type == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            return "this onnxruntime has no CUDAExecutionProvider"
    return None


def ort_model(module: nn.Module, example: torch.Tensor) -> bytes:
    """`module` (in eval mode) exported to ONNX for `example`'s static shape (opset ONNX_OPSET,
    the legacy exporter), as the model's bytes."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter's notice
        path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(module, (example,), path, opset_version=ONNX_OPSET, dynamo=False)
        with open(path, "rb") as f:
            return f.read()


def ort_model_session(model: bytes, device: torch.device, *, spinning: bool = False):
    """An ONNX Runtime InferenceSession of an exported `model`: all graph optimizations,
    torch's thread count; idle threads that do not spin unless `spinning` (ONNX Runtime's
    default: they spin)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        # Spinning threads take the cores from the torch calls interleaved with ONNX Runtime's.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    return ort.InferenceSession(model, options, providers=[provider])


def ort_call(session, device: torch.device) -> Callable[[object], torch.Tensor]:
    """session.run on one NCHW numpy array, its output as a tensor on `device`."""
    name = session.get_inputs()[0].name

    def run(x) -> torch.Tensor:
        (out,) = session.run(None, {name: x})
        return torch.from_numpy(out).to(device)

    return run


def check_ort_parity(label: str, out: torch.Tensor, ref: torch.Tensor) -> None:
    """Raise OrtParityError naming the case `label` unless `out` matches `ref` within
    ORT_TOLERANCES[ref.dtype] (normwise; a shape mismatch or NaN fails too)."""
    tol = ORT_TOLERANCES[ref.dtype]
    ref = ref.detach().float().cpu()
    out = out.detach().float().cpu()
    if out.shape != ref.shape:
        raise OrtParityError(
            f"{label}: onnxruntime output shape {tuple(out.shape)} != eager {tuple(ref.shape)}"
        )
    err = (out - ref).abs().max().item()
    scale = max(ref.abs().max().item(), 1e-6)
    if not err <= tol * scale:  # (NaN fails too)
        raise OrtParityError(
            f"{label}: onnxruntime output differs from torchvision's eager module: max abs err "
            f"{err:.3e} > {tol:g} * {scale:.3e}"
        )


def randomize_bn(module: nn.Module, gen: torch.Generator, spread: float = 0.1) -> None:
    """Fresh BatchNorm statistics and affine parameters, so folding is not an identity.

    Means and biases are normal with standard deviation `spread`; variances and scales
    uniform in [0.5, 1.5). (The tests' randomize_block uses it too.)
    """
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * spread)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * spread)


def eager_block(cfg: BlockConfig, gen: torch.Generator) -> nn.Module:
    """torchvision's Inception block for `cfg` (the package's reference without torchvision)."""
    try:
        from torchvision.models.googlenet import Inception as TvInception
    except ImportError:
        TvInception = Inception
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen.initial_seed())
        block = TvInception(*cfg.args()).eval()
    randomize_bn(block, gen)
    return block


def eager_network(gen: torch.Generator) -> nn.Module:
    """torchvision's GoogLeNet for 1000 classes, no auxiliary heads, in eval mode."""
    from torchvision.models import googlenet

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen.initial_seed())
        model = googlenet(weights=None, aux_logits=False, init_weights=True).eval()
    randomize_bn(model, gen)
    return model


@functools.cache
def _network_traffic() -> Traffic:
    return network_traffic(eager_network(torch.Generator().manual_seed(0)), IMAGE_HW)


def rotation_count(input_bytes: int, device: torch.device) -> int:
    """How many distinct inputs to cycle: MIN_ROTATION_BYTES, or 2x the GPU's L2, in all."""
    target = MIN_ROTATION_BYTES
    if device.type == "cuda":
        target = max(target, 2 * torch.cuda.get_device_properties(device).L2_cache_size)
    return max(2, -(-target // max(input_bytes, 1)))


def make_inputs(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    device: torch.device,
    memory_format: torch.memory_format,
    gen: torch.Generator,
) -> list[torch.Tensor]:
    """Distinct input tensors (copies of one random tensor) for `rotation_count` rotation."""
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    x = x.contiguous(memory_format=memory_format)
    count = rotation_count(x.numel() * x.element_size(), device)
    return [x] + [x.clone(memory_format=memory_format) for _ in range(count - 1)]


def build_case(
    block: str,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    layout: str,
    backends: Sequence[str],
    compile_modes: Sequence[str] = (),
    *,
    onnxruntime: bool = False,
    cfg: BlockConfig | None = None,
    seed: int = 0,
) -> Case:
    """The implementations compared for one case, on one set of weights and inputs.

    block:         a GoogLeNet block name ("3a" ... "5b") or "network"
    batch:         images per call
    dtype, device: of the weights and inputs
    layout:        "nchw" or "channels_last": the input's memory format (and the modules')
    backends:      FusedInception backends to include
    compile_modes: torch.compile modes of torchvision's module to include
    onnxruntime:   include the "onnxruntime" row (see ort_unavailable_reason; exported, its
                   session created and its output checked against eager's here)
    cfg:           another block configuration to use under the name `block` (tests)

    torch.compile state is reset first (torch._dynamo.reset()), so that compiled modules of
    earlier cases count toward no recompile limit.
    """
    gen = torch.Generator().manual_seed(seed)
    fmt = LAYOUTS[layout]
    if block == NETWORK:
        eager = eager_network(gen)
        traffic = _network_traffic()
        shape = (batch, 3, IMAGE_HW, IMAGE_HW)
    else:
        cfg = cfg or GOOGLENET_BLOCKS[block]
        eager = eager_block(cfg, gen)
        traffic = block_traffic(cfg)
        shape = (batch, cfg.in_channels, cfg.hw, cfg.hw)
    eager = eager.to(device=device, dtype=dtype, memory_format=fmt)
    impls: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {EAGER: eager}
    for backend in backends:
        if block == NETWORK:
            fused = fuse_inception(copy.deepcopy(eager), backend=backend)
        else:
            fused = FusedInception.from_module(eager, backend=backend).eval()
        impls[fused_impl_name(backend)] = fused
    for backend in backends if block == NETWORK or device.type == "cpu" else ():
        prepared = prepare_for_inference(copy.deepcopy(eager), backend=backend)
        impls[prepared_impl_name(backend)] = prepared
    if block == NETWORK:
        impls[PREPARED_FOLDED] = prepare_for_inference(copy.deepcopy(eager), blocks="folded")
    if compile_modes:
        torch._dynamo.reset()
    compiled = []
    for mode in compile_modes:
        name = compile_impl_name(mode)
        impls[name] = torch.compile(eager, mode=mode, dynamic=False)
        compiled.append(name)
    inputs = make_inputs(shape, dtype, device, fmt, gen)
    stride = max(1, len(inputs) // (len(impls) + onnxruntime))
    calls = {
        name: cycling(fn, inputs, start=i * stride) for i, (name, fn) in enumerate(impls.items())
    }
    setup_s = {}
    alone = ()
    if onnxruntime:
        t0 = time.perf_counter()
        model = ort_model(eager, inputs[0].contiguous())
        session = ort_model_session(model, device)
        setup_s[ORT] = time.perf_counter() - t0
        # The same values in NCHW numpy arrays (a view of an NCHW CPU input), made once here.
        arrays = [x.detach().cpu().contiguous().numpy() for x in inputs]
        label = f"{block}, batch {batch}, {dtype_name(dtype)}, {layout}"
        with torch.inference_mode():
            expected = eager(inputs[0])
        run = ort_call(session, device)
        check_ort_parity(label, run(arrays[0]), expected)
        calls[ORT] = cycling(run, arrays, start=len(impls) * stride)
        if device.type == "cpu":

            def spinning() -> Callable[[], object]:
                spun = ort_call(ort_model_session(model, device, spinning=True), device)
                check_ort_parity(f"{label}, spinning threads", spun(arrays[0]), expected)
                return cycling(spun, arrays, start=len(impls) * stride)

            alone = ((ORT_SPINNING, spinning),)
    return Case(calls, tuple(compiled), traffic, inputs, setup_s, alone)
