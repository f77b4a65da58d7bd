"""The Triton kernels of version 2 on their own: block_1x1 (b1, r2 | r3, b4 through the pool)
and block_kxk (b2, b3 over the scratch rows), against float64 F.conv2d references.

Runs under TRITON_INTERPRET=1 on the CPU when no GPU is present (with the interpreter's larger
channel chunks; tests/test_gpu_configs.py runs the GPU's); the AOT test compiles every build
for sm_80 and sm_90 in a subprocess without the interpreter.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import GPU_DEVICE, TOLERANCES, aot_report, dtype_params, skip_module_unless_triton_runs

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report.records import record_problems

skip_module_unless_triton_runs()

from fused_inception.triton import block_1x1 as b1x1  # noqa: E402
from fused_inception.triton import block_kxk as bkxk  # noqa: E402
from fused_inception.triton import tiles  # noqa: E402

DEVICE = GPU_DEVICE
SHAPES = {  # n, c_in, c1, c2r, c3r, c4, h, w
    "odd-5x7": (2, 5, 3, 7, 2, 1, 5, 7),
    "odd-13-1x1": (3, 13, 17, 11, 3, 7, 1, 1),
    "multi-tile": (3, 40, 24, 20, 12, 10, 7, 9),
    "googlenet-3a-4x5": (2, 192, 64, 96, 16, 32, 4, 5),
}


def _ref_1x1(x, w1, b1, w_red, b_red, w4, b4):
    """float64 (b1, r, b4) of the dtype-rounded inputs; r = relu(conv1x1(x) + b) for r2 | r3."""
    x64 = x.double()
    b1_out = F.relu(F.conv2d(x64, w1.double(), b1.double()))
    r = F.relu(F.conv2d(x64, w_red.double(), b_red.double()))
    pooled = F.max_pool2d(x64, 3, 1, 1)
    return b1_out, r, F.relu(F.conv2d(pooled, w4.double(), b4.double()))


def _rand(*shape, gen, scale=1.0):
    return torch.randn(*shape, generator=gen) * scale


def _close(out, ref, dtype, what):
    assert not torch.isnan(out).any(), f"{what}: NaN (an element left unwritten?)"
    err = (out.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert scale > 0, f"{what}: degenerate reference"
    assert err <= TOLERANCES[dtype] * scale, (
        f"{what}: err {err:.3e} > {TOLERANCES[dtype]} * {scale:.3e}"
    )


def _run_1x1(shape, dtype, seed=0, x_shift=0.0, extra=2):
    n, c_in, c1, c2r, c3r, c4, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    x = (_rand(n, c_in, h, w, gen=gen) + x_shift).to(dtype)
    w_x = _rand(c1 + c2r + c3r, c_in, 1, 1, gen=gen, scale=c_in**-0.5).to(dtype)
    b_x = _rand(c1 + c2r + c3r, gen=gen, scale=0.5)
    w4 = _rand(c4, c_in, 1, 1, gen=gen, scale=c_in**-0.5).to(dtype)
    b4 = _rand(c4, gen=gen, scale=0.5) + 1.0  # a single b4 channel must not be all ReLU'd away
    c_tot = c1 + extra + c4
    pool_off = c1 + extra
    out = torch.full((n, c_tot, h, w), float("nan"), dtype=dtype).to(DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    r = torch.full((n * h * w, c2r + c3r), float("nan"), dtype=dtype, device=DEVICE)
    b1x1.block_1x1(
        x.to(DEVICE).contiguous(memory_format=torch.channels_last),
        w_x.flatten(1).t().contiguous().to(DEVICE), b_x.to(DEVICE),
        w4.flatten(1).t().contiguous().to(DEVICE), b4.to(DEVICE), out, r, c1, pool_off,
    )  # fmt: skip
    ref = _ref_1x1(x, w_x[:c1], b_x[:c1], w_x[c1:], b_x[c1:], w4, b4)
    return out.cpu(), r.cpu(), ref, (c1, pool_off, c4)


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_block_1x1_parity(shape, dtype):
    out, r, (ref_b1, ref_r, ref_b4), (c1, pool_off, c4) = _run_1x1(shape, dtype)
    _close(out[:, :c1], ref_b1, dtype, "b1")
    _close(out[:, pool_off:], ref_b4, dtype, "b4")
    n, _, h, w = out.shape
    _close(r.reshape(n, h, w, -1).permute(0, 3, 1, 2), ref_r, dtype, "r2 | r3")
    assert torch.isnan(out[:, c1:pool_off]).all(), "a channel outside b1 and b4 was written"


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.bfloat16))
def test_pool_padding_is_minus_inf(dtype):
    """All-negative inputs: a zero-padded max-pool would give 0 at the border, -inf padding
    keeps the border negative, like F.max_pool2d."""
    out, _, (_, _, ref_b4), (_, pool_off, _) = _run_1x1(SHAPES["odd-5x7"], dtype, x_shift=-8.0)
    _close(out[:, pool_off:], ref_b4, dtype, "b4")


def _run_kxk(n, c2r, c3r, c2, c3, k3, h, w, dtype, seed=0, r_shift=0.0, extra=(2, 1, 3)):
    gen = torch.Generator().manual_seed(seed)
    r = (_rand(n, c2r + c3r, h, w, gen=gen).abs() + r_shift).to(dtype)
    w2 = _rand(c2, c2r, 3, 3, gen=gen, scale=(9 * c2r) ** -0.5).to(dtype)
    w3 = _rand(c3, c3r, k3, k3, gen=gen, scale=(k3 * k3 * c3r) ** -0.5).to(dtype)
    b2, b3 = _rand(c2, gen=gen, scale=0.5), _rand(c3, gen=gen, scale=0.5)
    off2 = extra[0]
    off3 = off2 + c2 + extra[1]
    out = torch.full((n, off3 + c3 + extra[2], h, w), float("nan"), dtype=dtype).to(DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    r_rows = r.permute(0, 2, 3, 1).reshape(n * h * w, c2r + c3r).contiguous().to(DEVICE)

    def taps(weight):
        k = weight.shape[-1]
        return weight.permute(2, 3, 1, 0).reshape(k * k, weight.shape[1], weight.shape[0])

    bkxk.block_kxk(
        r_rows, taps(w2).contiguous().to(DEVICE), b2.to(DEVICE),
        taps(w3).contiguous().to(DEVICE), b3.to(DEVICE), out, c2r, off2, off3,
    )  # fmt: skip
    r64 = r.double()
    ref2 = F.relu(F.conv2d(r64[:, :c2r], w2.double(), b2.double(), padding=1))
    ref3 = F.relu(F.conv2d(r64[:, c2r:], w3.double(), b3.double(), padding=k3 // 2))
    return out.cpu(), ref2, ref3, (off2, c2, off3, c3)


KXK = {  # n, c2r, c3r, c2, c3, k3, h, w
    "odd-5x7": (2, 7, 2, 9, 6, 5, 5, 7),
    "odd-1x1": (3, 11, 3, 19, 5, 3, 1, 1),
    "multi-tile-k5": (3, 20, 12, 40, 24, 5, 7, 9),
    "googlenet-4e-5x4": (2, 160, 32, 320, 128, 5, 5, 4),
}


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("case", list(KXK.values()), ids=list(KXK))
def test_block_kxk_parity(case, dtype):
    out, ref2, ref3, (off2, c2, off3, c3) = _run_kxk(*case, dtype)
    _close(out[:, off2 : off2 + c2], ref2, dtype, "b2")
    _close(out[:, off3 : off3 + c3], ref3, dtype, "b3")
    untouched = torch.cat([out[:, :off2], out[:, off2 + c2 : off3], out[:, off3 + c3 :]], 1)
    assert torch.isnan(untouched).all(), "a channel outside b2 and b3 was written"


def test_kxk_zero_padding_applies_to_r():
    """Large positive r: a tap outside the image that read anything but 0 (a neighbour row,
    relu of a bias) would change the border outputs."""
    out, ref2, ref3, (off2, c2, off3, c3) = _run_kxk(*KXK["odd-5x7"], torch.float32, r_shift=5.0)
    _close(out[:, off2 : off2 + c2], ref2, torch.float32, "b2")
    _close(out[:, off3 : off3 + c3], ref3, torch.float32, "b3")


def test_gpu_configs_by_shape():
    """16-bit tiles: accumulators of at most 128 x 128, output blocks that pad their channels
    by at most tiles.MAX_PADDING[BLOCK_M] where a candidate does, channel steps that pad least, the
    same blocks at every batch size but for BLOCK_M (128, or 64 where that pads the pixel
    rows less); fp32 one tile."""
    for c in GOOGLENET_BLOCKS.values():
        n_x = c.ch1x1 + c.ch3x3red + c.ch5x5red
        configs = {}
        for batch in (1, 2, 8, 32, 128):
            m = batch * c.hw**2
            cfg = b1x1.pick_config(
                torch.float16, m=m, c_in=c.in_channels, n_x=n_x, c_pool=c.pool_proj
            )
            kxk = bkxk.pick_config(
                torch.float16, m=m, c2r=c.ch3x3red, c2=c.ch3x3, c3r=c.ch5x5red, c3=c.ch5x5, k3=5
            )
            assert cfg.block_m == kxk.block_m == tiles.block_m(m)
            configs.setdefault(cfg.block_m, set()).add((cfg, kxk))
            for block_m, block_n, n in (
                (cfg.block_m, cfg.block_n, n_x),
                (cfg.block_m, cfg.block_n_pool, c.pool_proj),
                (kxk.block_m, kxk.block_n2, c.ch3x3),
                (kxk.block_m, kxk.block_n3, c.ch5x5),
            ):
                assert block_m * block_n <= tiles.MAX_ACCUMULATOR
                limit = tiles.MAX_PADDING[block_m] * n
                if any(-(-n // b) * b <= limit for b in tiles.BLOCK_N):
                    assert -(-n // block_n) * block_n <= limit, (c, n, block_n)
            for c_red, block in ((c.ch3x3red, kxk.block_r2), (c.ch5x5red, kxk.block_r3)):
                assert -(-c_red // block) * block == -(-c_red // 16) * 16  # least padding
        assert all(len(v) == 1 for v in configs.values()), configs  # batch changes BLOCK_M only
    assert tiles.block_m(392) == 64 and tiles.block_m(6272) == 128 and tiles.block_m(1568) == 128
    assert b1x1.pick_config(torch.float32, m=100, c_in=8, n_x=8, c_pool=8).block_m == 64


def test_empty_batch_launches_nothing():
    x = torch.randn(0, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    out = torch.empty(0, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    r = torch.empty(0, 2)
    b1x1.block_1x1(
        x, torch.randn(4, 3), torch.randn(3), torch.randn(4, 2), torch.randn(2), out, r, 1, 4
    )
    bkxk.block_kxk(
        r, torch.randn(9, 1, 2), torch.randn(2), torch.randn(9, 1, 2), torch.randn(2), out, 1, 0, 2
    )


def _args_1x1(**change):
    args = {
        "x": torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last),
        "w_x": torch.randn(4, 5), "b_x": torch.randn(5), "w_pool": torch.randn(4, 2),
        "b_pool": torch.randn(2),
        "out": torch.full((1, 6, 3, 3), float("nan")).contiguous(memory_format=torch.channels_last),
        "r": torch.empty(9, 3), "c1": 2, "pool_off": 4,
    }  # fmt: skip
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, exc, match",
    [
        ({"x": torch.randn(1, 4, 3, 3)}, ValueError, "x must be NHWC rows"),
        ({"w_x": torch.randn(4, 5).half()}, TypeError, "w_x must be torch.float32"),
        ({"b_x": torch.randn(5).half()}, TypeError, "b_x must be torch.float32"),
        ({"w_x": torch.randn(3, 5)}, ValueError, "w_x must be"),
        ({"r": torch.empty(9, 4)}, ValueError, "r must be a contiguous"),
        ({"r": torch.empty(9, 3).half()}, TypeError, "r must have x's dtype"),
        ({"c1": 6}, ValueError, "c1 must be in"),
        ({"c1": 1.0}, TypeError, "c_off must be an int"),
        ({"pool_off": 5}, ValueError, "do not fit"),
        ({"w_pool": torch.randn(4, 2, device="meta")}, RuntimeError, "one device"),
    ],
    ids=["x-nchw", "w-dtype", "bias-dtype", "w-shape", "r-shape", "r-dtype", "c1-range",
         "c1-float", "pool-slice", "device"],
)  # fmt: skip
def test_block_1x1_refuses_bad_arguments(change, exc, match):
    args = _args_1x1(**change)
    with pytest.raises(exc, match=match):
        b1x1.block_1x1(**args)
    assert torch.isnan(args["out"]).all(), "out was written before the error"


def test_block_1x1_refuses_overlapping_scratch():
    args = _args_1x1()
    out = args["out"]
    with pytest.raises(ValueError, match="out overlaps r"):
        b1x1.block_1x1(**{**args, "r": out.permute(0, 2, 3, 1).reshape(-1)[:27].view(9, 3)})
    with pytest.raises(ValueError, match="r overlaps x"):
        b1x1.block_1x1(**{**args, "r": args["x"].permute(0, 2, 3, 1).reshape(-1)[:27].view(9, 3)})


def _args_kxk(**change):
    args = {
        "r": torch.randn(9, 3), "w2": torch.randn(9, 2, 4), "b2": torch.randn(4),
        "w3": torch.randn(25, 1, 2), "b3": torch.randn(2),
        "out": torch.full((1, 8, 3, 3), float("nan")).contiguous(memory_format=torch.channels_last),
        "c2r": 2, "off2": 0, "off3": 5,
    }  # fmt: skip
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, exc, match",
    [
        ({"r": torch.randn(8, 3)}, ValueError, "r must be contiguous rows"),
        ({"r": torch.randn(9, 3).half()}, TypeError, "w2 must be torch.float16"),
        ({"w3": torch.randn(16, 1, 2)}, ValueError, "9 or 25"),
        ({"c2r": 1}, ValueError, "w2 must be"),
        ({"off3": 3}, ValueError, "overlap"),
        ({"off3": 7}, ValueError, "do not fit"),
        ({"out": torch.full((1, 8, 3, 3), float("nan"))}, ValueError, "out must be NHWC rows"),
        ({"b3": torch.randn(2, device="meta")}, RuntimeError, "one device"),
    ],
    ids=["r-rows", "dtype", "k3", "c2r", "slices-overlap", "slice-fit", "out-nchw", "device"],
)
def test_block_kxk_refuses_bad_arguments(change, exc, match):
    args = _args_kxk(**change)
    with pytest.raises(exc, match=match):
        bkxk.block_kxk(**args)
    assert torch.isnan(args["out"]).all(), "out was written before the error"


def test_aot_builds_compile_without_spills():
    """Every build compiles for sm_80 and sm_90, each configuration in the specializations the
    JIT runs for GoogLeNet (fused_inception/report/specialization.py): no spills or stack, mma
    for 16-bit, shared memory within the limit (the report's checks)."""
    records = aot_report("block_")
    compiled = {(r["kernel"].split("{")[0], r["arch"]) for r in records}
    configs = {b.kernel for b in b1x1.aot_builds() + bkxk.aot_builds()}
    assert {(c, arch) for c in configs for arch in ("sm_80", "sm_90")} <= compiled
    problems = [
        f"{r['kernel']} {r['arch']}: {record_problems(r)}" for r in records if record_problems(r)
    ]
    assert not problems, "\n".join(problems)


class _CudaLike:
    """What device_guard reads of a tensor on the second GPU (no GPU needed to build it)."""

    is_cuda = True
    device = torch.device("cuda", 1)


def test_launches_run_on_the_input_device():
    """Triton launches on the current device: the backend makes x's device current first."""
    from fused_inception.backends import triton as backend

    guard = backend.device_guard(_CudaLike())
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(backend.device_guard(torch.zeros(1)), torch.cuda.device)
