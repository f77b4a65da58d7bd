"""The training cases: one training step of a block or of GoogLeNet, in the paper's form and in
torchvision's, eager, fused and under torch.compile, on shared weights and rotated inputs.

A step of a block: zero the gradients (set to None), forward under autograd, out.backward(g)
with a fixed random g of the output's shape and memory format (so the step computes the input
gradient and every weight and bias gradient, as a block inside a network does). A step of the
network: forward in training mode, GoogLeNet's loss (fused_inception.models.googlenet_loss:
cross entropy of the main head plus 0.3 x each auxiliary head's, on fixed random targets),
backward, and an SGD step (lr 1e-3, momentum 0.9).

Forms (the rows' "form"):
- "paper": conv + bias -> ReLU units, 5x5 convolutions in branch3 (the paper's block).
  torchvision has no such block, so the eager baseline is the package's reference
  `fused_inception.reference.Inception(..., norm=False, branch3_kernel=5)`; the network is
  `fused_inception.models.googlenet("paper", aux_logits=True, init_weights=True)`. The fused
  rows run the operator fused_inception::inception_block (fused forward, recompute-based
  backward, fused_inception/ops.py).
- "torchvision": torchvision's Inception block (BN in training mode) and
  `torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=True)`. The fused
  rows run FusedInception's BN-training path (fused_inception/bn_training.py; by default on
  the CPU in float32 from batch 4, the composed PyTorch path elsewhere: README "What runs
  when").

Implementations (the rows' "impl"): "<eager>" (torchvision_eager or reference_eager, the
baseline of the form's speedups), "fused_<backend>" (FusedInception.from_module of a copy of
the eager block, or fuse_inception of a copy of the network), "<eager>"'s compile names
(torch.compile of a copy of the eager module, dynamic=False; the optimizer step stays eager).
Every implementation has its own copy of the weights (and its own optimizer).

dtype: float32 (and float64) run as such; float16 and bfloat16 run under torch.autocast with
float32 weights (mixed precision, how 16-bit training is done) and inputs in the 16-bit dtype.

Saved memory (the rows' "saved_bytes"): the bytes of the distinct storages autograd saves for
backward during one step (torch.autograd.graph.saved_tensors_hooks), the modules' parameters
left out: the activations a step keeps alive from its forward to its backward. The same
measure on every device (no allocator statistics), measured on one untimed step.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from fused_inception.bench.cases import (
    EAGER,
    IMAGE_HW,
    LAYOUTS,
    NETWORK,
    compile_impl_name,
    eager_block,
    fused_impl_name,
    make_inputs,
)
from fused_inception.bench.roofline import Traffic, block_traffic, network_traffic
from fused_inception.bench.timing import cycling
from fused_inception.configs import GOOGLENET_BLOCKS, BlockConfig
from fused_inception.module import FusedInception
from fused_inception.reference import Inception
from fused_inception.swap import fuse_inception

FORMS = ("paper", "torchvision")
PAPER_EAGER = "reference_eager"
# The baseline implementation of each form (the rows' speedups are against it).
BASELINES = {"paper": PAPER_EAGER, "torchvision": EAGER}
PAPER_BRANCH3_KERNEL = 5
LEARNING_RATE = 1e-3
MOMENTUM = 0.9
# A training step's multiply-adds: the forward's, the input gradient's and the weight
# gradient's, each as many as the forward (the fused backward's recompute not counted).
TRAIN_MACS_FACTOR = 3
# Half precision trains under autocast (float32 weights); the other dtypes as they are.
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


class TrainCase(NamedTuple):
    """One timed comparison of training steps.

    calls:    implementation name -> no-argument step, each cycling through the shared inputs
              from its own starting point; the first is the form's eager module
    compiled: names in `calls` whose first call compiles
    traffic:  the forward's work (fused_inception.bench.roofline)
    modules:  implementation name -> the module it trains (own parameters per name)
    saved:    implementation name -> no-argument function: one step, returning the bytes it
              saved for backward (see the module docstring)
    alone:    none: every step is interleaved (cases.Case.alone)
    """

    calls: dict[str, Callable[[], object]]
    compiled: tuple[str, ...]
    traffic: Traffic
    modules: dict[str, nn.Module]
    saved: dict[str, Callable[[], int]]
    alone: tuple[tuple[str, Callable[[], Callable[[], object]]], ...] = ()


def train_impl_names(
    form: str, backends: Sequence[str], compile_modes: Sequence[str] = ()
) -> list[str]:
    """The implementations of a training case, in the order build_train_case makes them."""
    names = [BASELINES[form], *(fused_impl_name(b) for b in backends)]
    return names + [_train_compile_name(form, m) for m in compile_modes]


def _train_compile_name(form: str, mode: str) -> str:
    name = compile_impl_name(mode)
    return name.replace("torchvision_", "reference_") if form == "paper" else name


def _eager_block(form: str, cfg: BlockConfig, gen: torch.Generator) -> nn.Module:
    if form == "torchvision":
        return eager_block(cfg, gen)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen.initial_seed())
        return Inception(*cfg.args(), branch3_kernel=PAPER_BRANCH3_KERNEL, norm=False)


def _eager_network(form: str, gen: torch.Generator) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(gen.initial_seed())
        if form == "paper":
            from fused_inception.models import googlenet

            return googlenet("paper", aux_logits=True, init_weights=True)
        from torchvision.models import googlenet

        return googlenet(weights=None, aux_logits=True, init_weights=True)


@functools.cache
def _network_traffic(form: str) -> Traffic:
    return network_traffic(_eager_network(form, torch.Generator().manual_seed(0)), IMAGE_HW)


def _autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype in AUTOCAST_DTYPES:
        return torch.autocast(device.type, dtype=dtype)
    return contextlib.nullcontext()


def _step_fn(
    module: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    grad: torch.Tensor | None,
    target: torch.Tensor | None,
) -> Callable[[torch.Tensor], object]:
    """One training step of `module` on an input: blocks backward `grad`, the network its loss
    on `target` and an optimizer step."""
    from fused_inception.models import googlenet_loss

    params = [p for p in module.parameters() if p.requires_grad]
    opt = None
    if target is not None:
        opt = torch.optim.SGD(params, lr=LEARNING_RATE, momentum=MOMENTUM)

    def step(x: torch.Tensor) -> object:
        for p in params:
            p.grad = None
        x.grad = None
        with _autocast(device, dtype):
            out = module(x)
        if opt is None:
            out.backward(grad)
            return out
        loss = googlenet_loss(out, target)
        loss.backward()
        opt.step()
        return loss

    return step


def saved_bytes(step: Callable[[], object], module: nn.Module) -> int:
    """Bytes of the distinct storages autograd saves during one call of `step`, the storages of
    `module`'s parameters left out."""
    skip = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


def build_train_case(
    block: str,
    form: str,
    batch: int,
    dtype: torch.dtype,
    device: torch.device,
    layout: str,
    backends: Sequence[str],
    compile_modes: Sequence[str] = (),
    *,
    cfg: BlockConfig | None = None,
    seed: int = 0,
) -> TrainCase:
    """The implementations compared for one training case, each on its own copy of one set of
    weights, all on the same inputs (arguments as cases.build_case, plus `form`)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    gen = torch.Generator().manual_seed(seed)
    fmt = LAYOUTS[layout]
    if block == NETWORK:
        eager = _eager_network(form, gen)
        traffic = _network_traffic(form)
        shape = (batch, 3, IMAGE_HW, IMAGE_HW)
    else:
        cfg = cfg or GOOGLENET_BLOCKS[block]
        eager = _eager_block(form, cfg, gen)
        kernel = PAPER_BRANCH3_KERNEL if form == "paper" else 3
        traffic = block_traffic(cfg, kernel)
        shape = (batch, cfg.in_channels, cfg.hw, cfg.hw)
    # Weights stay float32 under autocast (mixed precision); other dtypes convert them.
    weight_dtype = torch.float32 if dtype in AUTOCAST_DTYPES else dtype
    eager = eager.to(device=device, dtype=weight_dtype, memory_format=fmt).train()
    modules: dict[str, nn.Module] = {BASELINES[form]: eager}
    for backend in backends:
        if block == NETWORK:
            fused = fuse_inception(copy.deepcopy(eager), backend=backend)
        else:
            fused = FusedInception.from_module(copy.deepcopy(eager), backend=backend)
        modules[fused_impl_name(backend)] = fused.train()
    if compile_modes:
        torch._dynamo.reset()
    compiled = []
    steps_of: dict[str, nn.Module] = {}
    for mode in compile_modes:
        name = _train_compile_name(form, mode)
        modules[name] = copy.deepcopy(eager)
        steps_of[name] = torch.compile(modules[name], mode=mode, dynamic=False)
        compiled.append(name)
    inputs = make_inputs(shape, dtype, device, fmt, gen)
    grad = target = None
    if block == NETWORK:
        target = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    else:
        with torch.no_grad(), _autocast(device, dtype):
            out = eager(inputs[0])
        grad = torch.randn(out.shape, generator=gen).to(device=device, dtype=out.dtype)
        grad = grad.contiguous(memory_format=fmt)
        for x in inputs:
            x.requires_grad_(True)
    calls: dict[str, Callable[[], object]] = {}
    saved: dict[str, Callable[[], int]] = {}
    stride = max(1, len(inputs) // len(modules))
    for i, (name, module) in enumerate(modules.items()):
        step = _step_fn(steps_of.get(name, module), device, dtype, grad, target)
        calls[name] = cycling(step, inputs, start=i * stride)
        saved[name] = functools.partial(saved_bytes, functools.partial(step, inputs[0]), module)
    return TrainCase(calls, tuple(compiled), traffic, modules, saved)
