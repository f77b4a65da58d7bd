"""The Triton 1x1 -> KxK chain kernel (b2/b3) against a float64 F.conv2d reference.

Runs under TRITON_INTERPRET=1 on the CPU when no GPU is present; the AOT test compiles every
build for sm_80 and sm_90 in a subprocess without the interpreter.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    GPU_DTYPES,
    TOLERANCES,
    aot_report,
    dtype_params,
    layout_params,
    skip_module_unless_triton_runs,
)

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report.records import record_problems

skip_module_unless_triton_runs()

import fused_inception.triton.chain_1x1_kxk as chain  # noqa: E402
from fused_inception.triton.chain_1x1_kxk import (  # noqa: E402
    chain_1x1_kxk,
    prepare_chain,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _make(n, c_in, c_red, c_out, k, h, w, seed=0, b_red_shift=0.0, x_shift=0.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c_in, h, w, generator=gen) + x_shift
    w_red = torch.randn(c_red, c_in, 1, 1, generator=gen) / c_in**0.5
    b_red = torch.randn(c_red, generator=gen) * 0.5 + b_red_shift
    w_kxk = torch.randn(c_out, c_red, k, k, generator=gen) / (c_red * k * k) ** 0.5
    b_kxk = torch.randn(c_out, generator=gen) * 0.5
    return x, w_red, b_red, w_kxk, b_kxk


def _reference(x, w_red, b_red, w_kxk, b_kxk, dtype, pad_with_relu_bias=False):
    """float64 chain from the dtype-rounded inputs; optionally the trap (pad r with relu(Br))."""
    x, w_red, w_kxk = (t.to(dtype).double() for t in (x, w_red, w_kxk))
    r = F.relu(F.conv2d(x, w_red, b_red.double()))
    k = w_kxk.shape[-1]
    if pad_with_relu_bias:
        p = k // 2
        r = F.pad(r, (p, p, p, p), value=0.0)
        border = torch.ones_like(r, dtype=torch.bool)
        border[:, :, p:-p, p:-p] = False
        r = torch.where(border, F.relu(b_red.double()).view(1, -1, 1, 1).expand_as(r), r)
        return F.relu(F.conv2d(r, w_kxk, b_kxk.double()))
    return F.relu(F.conv2d(r, w_kxk, b_kxk.double(), padding=k // 2))


def _run(x, w_red, b_red, w_kxk, b_kxk, dtype, layout, c_off=3, extra=2):
    """Launch into a NaN-poisoned output slice [c_off, c_off + Cout) of Ctot channels."""
    n, _, h, w = x.shape
    c_out = w_kxk.shape[0]
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk, dtype=dtype)
    packed = [t.to(DEVICE) for t in packed]
    x_dev = x.to(DEVICE, dtype).contiguous(memory_format=layout)
    out = torch.full((n, c_off + c_out + extra, h, w), float("nan"), dtype=dtype, device=DEVICE)
    out = out.contiguous(memory_format=layout)
    chain_1x1_kxk(x_dev, *packed, out, c_off)
    outside = torch.cat([out[:, :c_off], out[:, c_off + c_out :]], dim=1)
    assert torch.isnan(outside).all(), "a column outside the branch slice was written"
    return out[:, c_off : c_off + c_out].cpu()


def _assert_close(out, ref, dtype):
    assert not torch.isnan(out).any(), "output has NaN (an element left unwritten?)"
    err = (out.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0, "degenerate test: reference is all zeros"
    tol = TOLERANCES[dtype]
    assert err <= tol * scale, f"max abs err {err:.3e} > {tol:g} * {scale:.3e}"


# (n, Cin, Cr, Cout, K, H, W): Cr below 16 / not a multiple of 16 / more than one Cr chunk,
# Cin more than one BLOCK_K chunk, Cout not a multiple of BLOCK_N (and > 1 Cout block),
# H and W not multiples of the 8x8 tile (several tiles), 1x1 and 1xW images, batch 1 and 2.
ODD_CASES = [
    pytest.param((2, 5, 7, 9, 3, 9, 11), id="k3-c5-r7-o9-9x11"),
    pytest.param((1, 13, 20, 70, 5, 3, 10), id="k5-c13-r20-o70-3x10"),
    pytest.param((2, 6, 3, 5, 5, 1, 1), id="k5-c6-r3-o5-1x1"),
    pytest.param((1, 130, 70, 129, 3, 2, 3), id="k3-c130-r70-o129-2x3"),
    pytest.param((2, 17, 33, 40, 3, 1, 9), id="k3-c17-r33-o40-1x9"),
]


@pytest.mark.parametrize("layout", layout_params("channels_last", "nchw"))
@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
@pytest.mark.parametrize("shape", ODD_CASES)
def test_chain_odd_shapes(shape, dtype, layout):
    args = _make(*shape)
    out = _run(*args, dtype=dtype, layout=layout)
    _assert_close(out, _reference(*args, dtype=dtype), dtype)


# GoogLeNet 3a and 5b channel configs at 4x5: b2 (3x3), b3 as 5x5 (paper) and 3x3 (torchvision).
GOOGLENET_CHAINS = [
    pytest.param(name, branch, k, id=f"{name}-{branch}-k{k}")
    for name in ("3a", "5b")
    for branch, k in (("b2", 3), ("b3", 5), ("b3", 3))
]


@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
@pytest.mark.parametrize("name,branch,k", GOOGLENET_CHAINS)
def test_chain_googlenet(name, branch, k, dtype):
    cfg = GOOGLENET_BLOCKS[name]
    c_red, c_out = (cfg.ch3x3red, cfg.ch3x3) if branch == "b2" else (cfg.ch5x5red, cfg.ch5x5)
    args = _make(1, cfg.in_channels, c_red, c_out, k, 4, 5, seed=1)
    out = _run(*args, dtype=dtype, layout=torch.channels_last, c_off=cfg.ch1x1, extra=cfg.pool_proj)
    _assert_close(out, _reference(*args, dtype=dtype), dtype)


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16))
@pytest.mark.parametrize("k", [3, 5])
def test_gpu_block_sizes(k, dtype, monkeypatch):
    """The GPU configs themselves (the interpreter otherwise uses larger C_in/C_red chunks)."""
    monkeypatch.setattr(chain, "INTERPRETER_OVERRIDES", {})
    args = _make(1, 40, 40, 70, k, 3, 9, seed=3)
    out = _run(*args, dtype=dtype, layout=torch.channels_last)
    _assert_close(out, _reference(*args, dtype=dtype), dtype)


@pytest.mark.parametrize("k", [3, 5])
def test_zero_padding_applies_to_reduced_tensor(k):
    """Outside the image r is 0, not relu(Br): large positive Br makes the two differ a lot."""
    args = _make(1, 8, 12, 16, k, 5, 6, seed=2, b_red_shift=4.0, x_shift=-1.0)
    out = _run(*args, dtype=torch.float32, layout=torch.channels_last)
    ref = _reference(*args, dtype=torch.float32)
    trap = _reference(*args, dtype=torch.float32, pad_with_relu_bias=True)
    assert (trap - ref).abs().max() > 0.5 * ref.abs().max(), "test has no teeth"
    _assert_close(out, ref, torch.float32)


def test_batch_zero_returns_without_launch():
    x, w_red, b_red, w_kxk, b_kxk = _make(1, 4, 5, 6, 3, 2, 2)
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk)
    out = torch.empty(0, 8, 2, 2)
    assert chain_1x1_kxk(x[:0], *packed, out, 1) is out


def test_argument_errors():
    """Each mistake gets its type (fused_inception.checks): dtype TypeError, shape or value
    ValueError, devices RuntimeError."""
    x, w_red, b_red, w_kxk, b_kxk = _make(1, 4, 5, 6, 3, 2, 2)
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk)
    out = torch.empty(1, 8, 2, 2)
    with pytest.raises(ValueError, match="do not fit"):
        chain_1x1_kxk(x, *packed, out, 3)
    with pytest.raises(TypeError, match="out must have x's dtype"):
        chain_1x1_kxk(x, *packed, out.half(), 0)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        chain_1x1_kxk(x.double(), *packed, out, 0)
    with pytest.raises(TypeError, match="b_kxk must be torch.float32"):
        chain_1x1_kxk(x, *packed[:3], packed[3].half(), out, 0)
    with pytest.raises(ValueError, match="w_red_packed"):
        chain_1x1_kxk(x[:, :3], *packed, out, 0)
    w_k1 = packed[2][:1, :1].contiguous()
    with pytest.raises(ValueError, match="kernel size K = 3 or 5, got 1"):
        chain_1x1_kxk(x, packed[0], packed[1], w_k1, packed[3], out, 0)
    with pytest.raises(ValueError, match="w_kxk_packed must be contiguous"):
        chain_1x1_kxk(x, packed[0], packed[1], packed[2].transpose(0, 1), packed[3], out, 0)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="one device, got .*b_red on meta"):
            chain_1x1_kxk(x, packed[0], packed[1].to("meta"), *packed[2:], out, 0)
    with pytest.raises(ValueError, match="kernel size"):
        prepare_chain(w_red, b_red, torch.randn(6, 5, 7, 7), b_kxk)


def test_aot_builds_compile_without_spills():
    """Every build compiles for sm_80 and sm_90: no stack/local memory, mma for 16-bit."""
    records = aot_report("chain_1x1_kxk")
    # Each config of aot_builds() is compiled for both archs: as the JIT specializes it for
    # GoogLeNet's launches ("<config>{...}"), or as listed if none launches it.
    configs = {b.kernel for b in chain.aot_builds()}
    compiled = {(r["kernel"].split("{")[0], r["arch"]) for r in records}
    assert compiled == {(c, arch) for c in configs for arch in ("sm_80", "sm_90")}
    for r in records:
        name = f"{r['kernel']} {r['arch']}"
        assert not record_problems(r), f"{name}: {record_problems(r)}"
        assert r["local_bytes"] == 0, f"{name} spills ({r['local_bytes']} bytes of stack): {r}"
        assert r["dtype"] == "float32" or r["tensor_cores"], f"{name} has no mma/wgmma"


@pytest.mark.parametrize("c_off", [1.0, 1.5, True, None], ids=["float", "fraction", "bool", "none"])
def test_channel_offset_must_be_an_int(c_off):
    """c_off is refused before any launch unless it is an integer (a float used to run)."""
    x, w_red, b_red, w_kxk, b_kxk = _make(1, 4, 5, 6, 3, 2, 2)
    packed = prepare_chain(w_red, b_red, w_kxk, b_kxk)
    out = torch.full((1, 8, 2, 2), float("nan"))
    with pytest.raises(TypeError, match="c_off must be an int"):
        chain_1x1_kxk(x, *packed, out, c_off)
    assert torch.isnan(out).all()
