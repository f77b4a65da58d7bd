"""fused_inception.triton.conv1x1_slice against float64 torch.nn.functional references.

Branch 1 (plain 1x1 conv) and branch 4 (3x3/1 max-pool with -inf padding, then 1x1 conv), each
+ bias + ReLU, stored into a channel slice of a NaN-poisoned output: every element of the slice
must be written, every element outside it must stay NaN. Without a GPU the kernels run under
TRITON_INTERPRET=1 on CPU tensors; the ahead-of-time test compiles every build of aot_builds()
for sm_80 and sm_90 in a subprocess (no interpreter) and checks spills, shared memory and mma.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    GPU_DTYPES,
    aot_report,
    assert_close_rel,
    dtype_params,
    layout_params,
    skip_module_unless_triton_runs,
)

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report.records import SHARED_LIMIT

skip_module_unless_triton_runs()

from fused_inception.triton import conv1x1_slice as mod  # noqa: E402
from fused_inception.triton.common import kernel_build  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (n, c_in, h, w, c_out, c_tot, c_off). Odd: channels below and not multiples of 16, H != W,
# 1x1 images; "multi" has 2 row blocks, 2 channel blocks and 2 K steps of the 128x128x32
# interpreter tile, each with a ragged edge.
ODD = {
    "odd-c5-3x4": (1, 5, 3, 4, 3, 11, 2),
    "odd-c13-1x1": (2, 13, 1, 1, 17, 20, 3),
    "odd-multi-7x20": (1, 37, 7, 20, 131, 140, 5),
}


def googlenet_case(name: str, pool: bool) -> tuple[int, ...]:
    """b1 (x -> #1x1, columns at 0) or b4 (pool -> pool proj, the last columns) at 4x5."""
    cfg = GOOGLENET_BLOCKS[name]
    c_out = cfg.pool_proj if pool else cfg.ch1x1
    c_off = cfg.out_channels - cfg.pool_proj if pool else 0
    return (2, cfg.in_channels, 4, 5, c_out, cfg.out_channels, c_off)


CASES = [pytest.param(shape, pool, id=f"{k}-{'pool' if pool else 'x'}")
         for k, shape in ODD.items() for pool in (False, True)]  # fmt: skip
CASES += [
    pytest.param(googlenet_case(name, pool), pool, id=f"googlenet-{name}-{'b4' if pool else 'b1'}")
    for name in ("3a", "5b")
    for pool in (False, True)
]


def make_input(n, c, h, w, dtype, layout, gen, negative=False):
    x = torch.randn((n, c, h, w), generator=gen, dtype=torch.float64)
    if negative:
        x = -x.abs() - 0.5
    return x.to(dtype).contiguous(memory_format=layout).to(DEVICE)


def poisoned_output(n, c_tot, h, w, dtype, layout):
    out = torch.full((n, c_tot, h, w), float("nan"), dtype=dtype, device=DEVICE)
    return out.contiguous(memory_format=layout)


def reference(x, weight, bias, pool):
    """relu(conv1x1(maxpool3x3(x) if pool else x) + bias) in float64 (max_pool2d pads -inf)."""
    a = x.double().cpu()
    if pool:
        a = F.max_pool2d(a, kernel_size=3, stride=1, padding=1)
    return F.relu(F.conv2d(a, weight.double().cpu(), bias.double().cpu()))


def check_slice(out, ref, c_off, dtype):
    c_out = ref.shape[1]
    inside = out[:, c_off : c_off + c_out].double().cpu()
    assert not torch.isnan(inside).any(), "an element of the slice was not written"
    assert torch.isnan(out[:, :c_off]).all(), "a column left of the slice was written"
    assert torch.isnan(out[:, c_off + c_out :]).all(), "a column right of the slice was written"
    assert_close_rel(inside, ref, dtype)


@pytest.mark.parametrize("layout", layout_params("channels_last", "nchw"))
@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
@pytest.mark.parametrize("shape, pool", CASES)
def test_parity(shape, pool, dtype, layout):
    n, c_in, h, w, c_out, c_tot, c_off = shape
    gen = torch.Generator().manual_seed(c_in * 131 + c_out)
    x = make_input(n, c_in, h, w, dtype, layout, gen)
    weight = (torch.randn((c_out, c_in, 1, 1), generator=gen) / c_in**0.5).to(dtype)
    bias = torch.randn(c_out, generator=gen) * 0.5
    w_packed, bias_fp32 = mod.prepare_conv1x1(weight.to(DEVICE), bias.to(DEVICE))
    out = poisoned_output(n, c_tot, h, w, dtype, layout)
    mod.conv1x1_slice(x, w_packed, bias_fp32, out, c_off, pool=pool)
    check_slice(out, reference(x, weight, bias, pool), c_off, dtype)


@pytest.mark.parametrize("dtype", dtype_params(*GPU_DTYPES))
def test_pool_padding_is_minus_inf(dtype):
    """All-negative input, identity weights, bias 4: out = 4 + maxpool(x) < 4 everywhere.

    Zero padding would give exactly 4 on the border (and no ReLU could hide it).
    """
    n, c, h, w = 1, 6, 3, 5
    gen = torch.Generator().manual_seed(1)
    x = make_input(n, c, h, w, dtype, torch.channels_last, gen, negative=True)
    weight = torch.eye(c, dtype=dtype).reshape(c, c, 1, 1)
    bias = torch.full((c,), 4.0)
    w_packed, bias_fp32 = mod.prepare_conv1x1(weight.to(DEVICE), bias.to(DEVICE))
    out = poisoned_output(n, c + 2, h, w, dtype, torch.channels_last)
    mod.conv1x1_slice(x, w_packed, bias_fp32, out, 1, pool=True)
    check_slice(out, reference(x, weight, bias, True), 1, dtype)
    assert (out[:, 1 : 1 + c].float() < 4.0).all(), "padding won the max (counted as 0?)"


def test_empty_batch_does_not_launch():
    x = torch.randn(0, 4, 3, 3, device=DEVICE)
    w_packed, bias = mod.prepare_conv1x1(torch.randn(2, 4, 1, 1), torch.randn(2))
    out = torch.empty(0, 5, 3, 3, device=DEVICE)
    mod.conv1x1_slice(x, w_packed.to(DEVICE), bias.to(DEVICE), out, 1, pool=True)


def test_prepare_layout():
    weight = torch.randn(7, 5, 1, 1, dtype=torch.float16)
    w_packed, bias = mod.prepare_conv1x1(weight, None, dtype=torch.bfloat16)
    assert w_packed.shape == (5, 7) and w_packed.is_contiguous()
    assert w_packed.dtype == torch.bfloat16 and bias.dtype == torch.float32
    torch.testing.assert_close(
        w_packed.float(), weight.float().reshape(7, 5).t(), rtol=1e-2, atol=0
    )
    assert not bias.any()
    with pytest.raises(ValueError, match="C_out, C_in, 1, 1"):
        mod.prepare_conv1x1(torch.randn(7, 5, 3, 3), None)


def test_argument_errors():
    """Each mistake gets its type (fused_inception.checks): dtype TypeError, shape or value
    ValueError."""
    x = torch.randn(1, 4, 3, 3, device=DEVICE)
    w_packed, bias = (t.to(DEVICE) for t in mod.prepare_conv1x1(torch.randn(2, 4, 1, 1), None))
    out = torch.empty(1, 5, 3, 3, device=DEVICE)
    call = mod.conv1x1_slice
    with pytest.raises(TypeError, match="x's dtype"):
        call(x, w_packed.half(), bias, out, 0)
    with pytest.raises(TypeError, match="bias must be torch.float32"):
        call(x, w_packed, bias.double(), out, 0)
    with pytest.raises(TypeError, match="float32, float16 or bfloat16"):
        call(x.double(), w_packed.double(), bias, out.double(), 0)
    with pytest.raises(TypeError, match="out must have x's dtype"):
        call(x, w_packed, bias, out.half(), 0)
    with pytest.raises(ValueError, match="do not fit"):
        call(x, w_packed, bias, out, 4)
    with pytest.raises(ValueError, match="do not fit"):
        call(x, w_packed, bias, out, -1)
    with pytest.raises(ValueError, match=r"\[C_in, C_out\] = \[4, C_out\]"):
        call(x, w_packed.t().contiguous(), bias, out, 0)
    with pytest.raises(ValueError, match="w_packed must be contiguous"):
        call(x, w_packed.t().contiguous().t(), bias, out, 0)
    with pytest.raises(ValueError, match=r"out must be \[N, Ctot, H, W\]"):
        call(x, w_packed, bias, out[:, :, :2], 0)
    with pytest.raises(ValueError, match="4-D"):
        call(x[0], w_packed, bias, out, 0)


@pytest.mark.skipif(DEVICE != "cpu", reason="a CPU tensor is refused only without a GPU")
def test_device_mismatch_is_a_runtime_error():
    """Tensors on different devices: RuntimeError, as in the C++ operators."""
    x = torch.randn(1, 4, 3, 3)
    w_packed, bias = mod.prepare_conv1x1(torch.randn(2, 4, 1, 1), None)
    out = torch.empty(1, 5, 3, 3)
    with pytest.raises(RuntimeError, match="one device, got .*bias on meta"):
        mod.conv1x1_slice(x, w_packed, bias.to("meta"), out, 0)


@pytest.mark.skipif(DEVICE != "cpu", reason="meta tensors pass the device check only on the CPU")
def test_int32_tile_offsets_checked():
    """A tile whose in-tile offsets would overflow int32 is refused before any launch."""
    x = torch.empty_strided((2, 4, 3, 3), (2**31, 1, 12, 4), device="meta")
    w_packed, bias = mod.prepare_conv1x1(torch.randn(2, 4, 1, 1, device="meta"), None)
    out = torch.empty(2, 2, 3, 3, device="meta")
    with pytest.raises(ValueError, match="int32 tile offsets"):
        mod.conv1x1_slice(x, w_packed, bias, out, 0)


def test_googlenet_table_matches_pick_config():
    """The module docstring's table is pick_config's choice for each block at batch 32."""
    rows = {}
    for line in mod.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in GOOGLENET_BLOCKS:
            rows[cells[0]] = (cells[1], cells[2])
    assert set(rows) == set(GOOGLENET_BLOCKS)

    def tile(c):
        return f"{c.block_m}x{c.block_n}x{c.block_k}"

    for name, cfg in GOOGLENET_BLOCKS.items():
        m = 32 * cfg.hw * cfg.hw
        for dtype in GPU_DTYPES:
            b1 = tile(mod.pick_config(dtype, cfg.ch1x1, m=m, pool=False))
            b4 = tile(mod.pick_config(dtype, cfg.pool_proj, m=m, pool=True))
            assert rows[name] == (b1, b4), f"block {name}: table {rows[name]} != {(b1, b4)}"


def test_aot_builds_cover_pick_config():
    builds = {b.kernel for b in mod.aot_builds()}
    for dtype in GPU_DTYPES:
        for pool in (False, True):
            for m in (1, 4095, 4096, 10**6):
                for c_out in range(1, 600, 7):
                    cfg = mod.pick_config(dtype, c_out, m=m, pool=pool)
                    build = kernel_build("conv1x1_slice", mod.conv1x1_slice_kernel, dtype, cfg,
                                         {"POOL": pool}, {})  # fmt: skip
                    assert build.kernel in builds


def test_gpu_block_sizes(monkeypatch):
    """The GPU configs themselves (the interpreter otherwise runs one large tile)."""
    monkeypatch.setattr(mod, "INTERPRETER_OVERRIDES", {})
    for pool in (False, True):
        test_parity(ODD["odd-multi-7x20"], pool, torch.float32, torch.channels_last)
        test_parity(ODD["odd-c13-1x1"], pool, torch.float16, torch.channels_last)


def test_aot_compile_sm80_sm90_no_spills():
    records = aot_report("conv1x1")
    # Each config of aot_builds() is compiled for both archs: as the JIT specializes it for
    # GoogLeNet's launches ("<config>{...}"), or as listed if none launches it.
    configs = {b.kernel for b in mod.aot_builds()}
    compiled = {(r["kernel"].split("{")[0], r["arch"]) for r in records}
    assert compiled == {(c, arch) for c in configs for arch in ("sm_80", "sm_90")}
    problems = []
    for r in records:
        where = f"{r['kernel']} {r['arch']}"
        if r["error"] is not None:
            problems.append(f"{where}: {r['error']}")
        elif r["local_bytes"] != 0:
            problems.append(f"{where} spills: {r['local_bytes']} bytes of stack/local memory")
        if (r["shared_bytes"] or 0) > SHARED_LIMIT[r["arch"]]:
            problems.append(f"{where}: shared memory {r['shared_bytes']} > limit")
        if r["dtype"] != "float32" and not r["tensor_cores"]:
            problems.append(f"{where}: 16-bit build without tensor-core mma")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("c_off", [1.0, 1.5, True, None], ids=["float", "fraction", "bool", "none"])
def test_channel_offset_must_be_an_int(c_off):
    """c_off is refused before any launch unless it is an integer (a float used to run, as the
    kernel's fp32 argument)."""
    x = torch.randn(1, 4, 3, 3, device=DEVICE)
    w_packed, bias = (t.to(DEVICE) for t in mod.prepare_conv1x1(torch.randn(2, 4, 1, 1), None))
    out = torch.full((1, 5, 3, 3), float("nan"), device=DEVICE)
    with pytest.raises(TypeError, match="c_off must be an int"):
        mod.conv1x1_slice(x, w_packed, bias, out, c_off)
    assert torch.isnan(out).all()
