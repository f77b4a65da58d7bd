"""Parity of the GPU backends against float64 references: outputs, one gradient per backend,
and a tensor on a second GPU.

Every function takes the device its tensors live on: a CUDA device on a GPU; the CPU in the
tests, where backend "triton" runs under TRITON_INTERPRET=1 and backend "cuda" through the
SIMT shim (FUSED_INCEPTION_EMULATE_CUDA=1), on tiny block configurations.

A check is a dict (the JSON's "checks"): stage, name, ok (True, False, or None when skipped),
detail, and the numbers it was decided on. An exception inside a check fails that check (its
message is the detail); it never stops the run.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from fused_inception.backends.output import poison_outputs
from fused_inception.bench.cases import LAYOUTS, dtype_name, eager_block
from fused_inception.configs import BlockConfig
from fused_inception.folding import fold_block
from fused_inception.module import FusedInception
from fused_inception.reference import Inception, inception_ref

# The two forms of the block: torchvision's (BN folded, 3x3 in branch 3) and the paper's
# (conv with bias, 5x5 in branch 3); form -> (norm, branch3_kernel).
FORMS = {"torchvision": (True, 3), "paper": (False, 5)}
# Normwise relative tolerance: max|out - ref| <= tol * max|ref| (the tests' TOLERANCES).
TOLERANCES = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


class ParityCase(NamedTuple):
    """One forward compared with its float64 reference."""

    block: str
    cfg: BlockConfig
    backend: str
    dtype: torch.dtype
    layout: str
    form: str
    batch: int

    @property
    def name(self) -> str:
        return (
            f"{self.block} {self.backend} {dtype_name(self.dtype)} {self.layout} {self.form} "
            f"batch {self.batch}"
        )


def parity_cases(
    blocks: Mapping[str, BlockConfig],
    backends: Sequence[str],
    dtypes: Sequence[torch.dtype],
    layouts: Sequence[str],
    forms: Sequence[str] = tuple(FORMS),
    batch: int = 2,
) -> list[ParityCase]:
    """Every combination, grouped by backend and dtype (so each compiles its kernels once)."""
    return [
        ParityCase(block, blocks[block], backend, dtype, layout, form, batch)
        for backend, dtype, block, form, layout in itertools.product(
            backends, dtypes, blocks, forms, layouts
        )
    ]


@contextlib.contextmanager
def strict_fp32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions (the references and the eager baselines),
    and NaN-poisoned backend outputs: an element a kernel leaves unwritten fails."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        with poison_outputs(True):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def source_block(cfg: BlockConfig, form: str, seed: int = 0) -> nn.Module:
    """The eval-mode block a FusedInception is made from: torchvision's (random BN statistics;
    fused_inception.bench.cases.eager_block) or the paper's form, seeded."""
    gen = torch.Generator().manual_seed(seed)
    if form == "torchvision":
        return eager_block(cfg, gen)
    norm, k = FORMS[form]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Inception(*cfg.args(), branch3_kernel=k, norm=norm).eval()


def reference64(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The block's eval-mode function in float64 from the formulas, on x's device, from the
    block's own (dtype-rounded) parameters."""
    folded = fold_block(copy.deepcopy(block).double())
    return inception_ref(x.detach().double(), folded)


def compare(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> dict:
    """Normwise comparison: ok when shapes agree, no NaN, max|out-ref| <= tol * max|ref|."""
    fields = {"tolerance": TOLERANCES[dtype], "max_abs_err": None, "ref_scale": None}
    if out.shape != ref.shape:
        return {**fields, "ok": False, "detail": f"shape {tuple(out.shape)} != {tuple(ref.shape)}"}
    nans = int(torch.isnan(out).sum())
    if nans:
        return {**fields, "ok": False, "detail": f"{nans} NaN outputs (unwritten elements?)"}
    err = (out.double() - ref.double()).abs().max().item() if out.numel() else 0.0
    scale = max(ref.abs().max().item() if ref.numel() else 0.0, 1e-6)
    ok = err <= fields["tolerance"] * scale
    detail = f"max abs err {err:.3g} {'<=' if ok else '>'} {fields['tolerance']:g} x {scale:.3g}"
    return {**fields, "max_abs_err": err, "ref_scale": scale, "ok": ok, "detail": detail}


def guarded(stage: str, name: str, fn: Callable[[], dict]) -> dict:
    """Run one check; an exception fails it with its message."""
    try:
        result = fn()
    except Exception as exc:  # a check that raises has failed; the run goes on
        last = traceback.format_exc().strip().splitlines()[-1]
        result = {"ok": False, "detail": f"raised {type(exc).__name__}: {exc}"[:500], "error": last}
    return {"stage": stage, "name": name, **result}


def _input(cfg: BlockConfig, batch: int, dtype, device, layout: str, seed: int) -> torch.Tensor:
    """Random normal input (no exact zeros in practice), rounded to dtype, in the layout."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw, generator=gen)
    return x.to(device=device, dtype=dtype).contiguous(memory_format=LAYOUTS[layout])


def _forward_check(case: ParityCase, device: torch.device, seed: int) -> dict:
    src = source_block(case.cfg, case.form, seed)
    fused = FusedInception.from_module(src, backend=case.backend).eval()
    fused = fused.to(device=device, dtype=case.dtype)
    x = _input(case.cfg, case.batch, case.dtype, device, case.layout, seed + 1)
    with strict_fp32(), torch.no_grad():
        out = fused(x)
        ref = reference64(fused, x)
    result = compare(out, ref, case.dtype)
    if result["ok"] and (out.dtype != case.dtype or out.device != x.device):
        result.update(ok=False, detail=f"output {out.dtype} on {out.device}, input {x.device}")
    return result


def check_parity(case: ParityCase, device: torch.device, seed: int = 0) -> dict:
    """One forward of `case` on `device` against its float64 reference."""
    check = guarded("parity", case.name, lambda: _forward_check(case, device, seed))
    return {
        **check,
        "block": case.block,
        "backend": case.backend,
        "dtype": dtype_name(case.dtype),
        "layout": case.layout,
        "form": case.form,
        "batch": case.batch,
    }


def run_parity(
    cases: Sequence[ParityCase],
    device: torch.device,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """check_parity for every case, printing failures as they come and a count at the end."""
    checks = []
    for case in cases:
        check = check_parity(case, device)
        if not check["ok"]:
            log(f"  FAIL parity {case.name}: {check['detail']}")
        checks.append(check)
    failed = sum(not c["ok"] for c in checks)
    log(f"  parity: {len(checks) - failed}/{len(checks)} passed")
    return checks


def _gradient_check(backend: str, cfg: BlockConfig, device: torch.device, seed: int) -> dict:
    # The paper's form in training mode runs the block operator: fused forward, its backward.
    src = source_block(cfg, "paper", seed).train()
    fused = FusedInception.from_module(copy.deepcopy(src), backend=backend).train()
    fused = fused.to(device=device, dtype=torch.float32)
    ref = copy.deepcopy(src).to(device=device, dtype=torch.float64)
    x = _input(cfg, 2, torch.float32, device, "channels_last", seed + 1).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    gen = torch.Generator().manual_seed(seed + 2)
    grad_out = torch.randn(2, cfg.out_channels, cfg.hw, cfg.hw, generator=gen).to(device)
    with strict_fp32():
        out = fused(x)
        grads = torch.autograd.grad(out, [x, *fused.parameters()], grad_out)
        out64 = ref(x64)
        grads64 = torch.autograd.grad(out64, [x64, *ref.parameters()], grad_out.double())
    names = ["output", "x"] + [name for name, _ in ref.named_parameters()]
    worst = None
    for name, g, g64 in zip(names, [out, *grads], [out64, *grads64], strict=True):
        result = compare(g.detach(), g64.detach(), torch.float32)
        if not result["ok"]:
            return {**result, "detail": f"{name}: {result['detail']}"}
        if worst is None or result["max_abs_err"] / result["ref_scale"] > worst[1]:
            worst = (name, result["max_abs_err"] / result["ref_scale"])
    return {
        "ok": True,
        "detail": f"{len(names)} tensors; worst relative error {worst[1]:.3g} ({worst[0]})",
    }


def check_gradients(backend: str, block: str, cfg: BlockConfig, device: torch.device) -> dict:
    """Output, input and every parameter gradient of one float32 training forward/backward
    (paper form: the fused operator) against float64."""
    name = f"{block} {backend} float32 channels_last paper training backward"
    return guarded("gradient", name, lambda: _gradient_check(backend, cfg, device, 0))


def check_other_device(backend: str, block: str, cfg: BlockConfig) -> dict:
    """A block and its input on cuda:1 while cuda:0 is current: the output must be on cuda:1
    and right. Skipped (ok None) with fewer than two GPUs."""
    name = f"{block} {backend} float16 on cuda:1 while cuda:0 is current"
    if torch.cuda.device_count() < 2:
        return {"stage": "multi_gpu", "name": name, "ok": None, "detail": "skipped: one GPU"}
    case = ParityCase(block, cfg, backend, torch.float16, "channels_last", "torchvision", 2)
    with torch.cuda.device(0):
        return {**check_parity(case, torch.device("cuda", 1)), "stage": "multi_gpu", "name": name}
