"""The Triton kernels of version 2 on their own: block_1x1 (b1, r2 | r3 and the max-pool of x
into the scratch rows) and block_kxk (b2, b3 and the pool projection b4 over the scratch rows),
against float64 F.conv2d / F.max_pool2d references.

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
    "wide-3x37": (1, 6, 4, 3, 2, 2, 3, 37),  # two column bands of the pool programs
    "tall-37x6": (2, 5, 3, 2, 2, 1, 37, 6),  # three row bands (13, 13, 11 rows) per image
    # n_x = 160 = 128 + 32: the tail in the last full block's program (16-bit)
    "merged-tail": (1, 24, 96, 48, 16, 4, 3, 5),
}


def _ref_1x1(x, w1, b1, w_red, b_red):
    """float64 (b1, r, pooled x) of the dtype-rounded inputs; r = relu(conv1x1(x) + b)."""
    x64 = x.double()
    b1_out = F.relu(F.conv2d(x64, w1.double(), b1.double()))
    r = F.relu(F.conv2d(x64, w_red.double(), b_red.double()))
    return b1_out, r, F.max_pool2d(x64, 3, 1, 1)


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
    n, c_in, c1, c2r, c3r, _, h, w = shape
    gen = torch.Generator().manual_seed(seed)
    x = (_rand(n, c_in, h, w, gen=gen) + x_shift).to(dtype)
    w_x = _rand(c1 + c2r + c3r, c_in, 1, 1, gen=gen, scale=c_in**-0.5).to(dtype)
    b_x = _rand(c1 + c2r + c3r, gen=gen, scale=0.5)
    out = torch.full((n, c1 + extra, h, w), float("nan"), dtype=dtype).to(DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    r = torch.full((n * h * w, c2r + c3r + c_in), float("nan"), dtype=dtype, device=DEVICE)
    b1x1.block_1x1(
        x.to(DEVICE).contiguous(memory_format=torch.channels_last),
        w_x.flatten(1).t().contiguous().to(DEVICE), b_x.to(DEVICE), out, r, c1,
    )  # fmt: skip
    ref = _ref_1x1(x, w_x[:c1], b_x[:c1], w_x[c1:], b_x[c1:])
    return out.cpu(), r.cpu(), ref, c1


def _nchw(rows, n, h, w):
    return rows.reshape(n, h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("shape", list(SHAPES.values()), ids=list(SHAPES))
def test_block_1x1_parity(shape, dtype):
    out, r, (ref_b1, ref_r, ref_pool), c1 = _run_1x1(shape, dtype)
    _close(out[:, :c1], ref_b1, dtype, "b1")
    n, _, h, w = out.shape
    c_red = ref_r.shape[1]
    _close(_nchw(r[:, :c_red], n, h, w), ref_r, dtype, "r2 | r3")
    # The max of rounded inputs is one of them: exact in every dtype.
    torch.testing.assert_close(_nchw(r[:, c_red:], n, h, w).double(), ref_pool, rtol=0, atol=0)
    assert torch.isnan(out[:, c1:]).all(), "a channel outside b1 was written"


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.bfloat16))
def test_pool_padding_is_minus_inf(dtype):
    """All-negative inputs: a zero-padded max-pool would give 0 at the border, -inf padding
    keeps the border negative, like F.max_pool2d."""
    out, r, (_, ref_r, ref_pool), _ = _run_1x1(SHAPES["odd-5x7"], dtype, x_shift=-8.0)
    n, _, h, w = out.shape
    pooled = _nchw(r[:, ref_r.shape[1] :], n, h, w).double()
    assert (pooled < 0).all()
    torch.testing.assert_close(pooled, ref_pool, rtol=0, atol=0)


def test_pool_keeps_nan_and_inf():
    """NaN anywhere in a window gives NaN, +inf wins, -inf loses: torch's max_pool2d."""
    n, c_in, h, w = 2, 5, 6, 9
    x = torch.randn(n, c_in, h, w)
    x[0, 1, 2, 3] = float("nan")
    x[1, 4, 0, 0] = float("inf")
    x[1, 2, 5, 8] = float("-inf")
    x[0, 3] = float("-inf")  # a whole channel of -inf stays -inf
    x_rows = x.contiguous(memory_format=torch.channels_last).to(DEVICE)
    out = torch.full((n, 1, h, w), float("nan"), device=DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    r = torch.full((n * h * w, 1 + c_in), float("nan"), device=DEVICE)
    b1x1.block_1x1(x_rows, torch.randn(c_in, 1, device=DEVICE), torch.randn(1, device=DEVICE),
                   out, r, 0)  # fmt: skip
    pooled = _nchw(r[:, 1:].cpu(), n, h, w)
    torch.testing.assert_close(pooled, F.max_pool2d(x, 3, 1, 1), rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(pooled[0, 1, 1:4, 2:5]).all() and torch.isinf(pooled[1, 4, :2, :2]).all()


def _run_kxk(n, c2r, c3r, c2, c3, k3, h, w, dtype, seed=0, r_shift=0.0, extra=(2, 1, 3, 2),
             c4r=5, c4=6):  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    r = (_rand(n, c2r + c3r + c4r, h, w, gen=gen).abs() + r_shift).to(dtype)
    w2 = _rand(c2, c2r, 3, 3, gen=gen, scale=(9 * c2r) ** -0.5).to(dtype)
    w3 = _rand(c3, c3r, k3, k3, gen=gen, scale=(k3 * k3 * c3r) ** -0.5).to(dtype)
    w4 = _rand(c4, c4r, 1, 1, gen=gen, scale=c4r**-0.5).to(dtype)
    b2, b3 = _rand(c2, gen=gen, scale=0.5), _rand(c3, gen=gen, scale=0.5)
    b4 = _rand(c4, gen=gen, scale=0.5)
    off2 = extra[0]
    off3 = off2 + c2 + extra[1]
    off4 = off3 + c3 + extra[2]
    out = torch.full((n, off4 + c4 + extra[3], h, w), float("nan"), dtype=dtype).to(DEVICE)
    out = out.contiguous(memory_format=torch.channels_last)
    r_rows = r.permute(0, 2, 3, 1).reshape(n * h * w, -1).contiguous().to(DEVICE)

    def taps(weight):
        k = weight.shape[-1]
        return weight.permute(2, 3, 1, 0).reshape(k * k, weight.shape[1], weight.shape[0])

    bkxk.block_kxk(
        r_rows, taps(w2).contiguous().to(DEVICE), b2.to(DEVICE),
        taps(w3).contiguous().to(DEVICE), b3.to(DEVICE),
        w4.flatten(1).t().contiguous().to(DEVICE), b4.to(DEVICE), out, off2, off3, off4,
    )  # fmt: skip
    r64 = r.double()
    ref2 = F.relu(F.conv2d(r64[:, :c2r], w2.double(), b2.double(), padding=1))
    ref3 = F.relu(F.conv2d(r64[:, c2r : c2r + c3r], w3.double(), b3.double(), padding=k3 // 2))
    ref4 = F.relu(F.conv2d(r64[:, c2r + c3r :], w4.double(), b4.double()))
    return out.cpu(), (ref2, ref3, ref4), ((off2, c2), (off3, c3), (off4, c4))


KXK = {  # n, c2r, c3r, c2, c3, k3, h, w
    "odd-5x7": (2, 7, 2, 9, 6, 5, 5, 7),
    "odd-1x1": (3, 11, 3, 19, 5, 3, 1, 1),
    "multi-tile-k5": (3, 20, 12, 40, 24, 5, 7, 9),
    "googlenet-4e-5x4": (2, 160, 32, 320, 128, 5, 5, 4),
    # 16-bit: 160 = 128 + 32, 80 = 64 + 16, 48 = 32 + 16 (b4), every tail merged
    "merged-tails": (2, 24, 12, 160, 80, 5, 5, 6),
}
# The pool projection's input channels and outputs per case (4e's: 528 -> 128).
KXK_POOL = dict(zip(KXK.values(), [(5, 6), (13, 7), (40, 10), (528, 128), (20, 48)], strict=True))


def test_merged_tails_run_where_the_cases_say():
    """The "merged-tail(s)" cases run the merged programs of every GEMM (16-bit)."""
    n, c_in, c1, c2r, c3r, *_ = SHAPES["merged-tail"]
    cfg = b1x1.pick_config(torch.float16, c_in=c_in, n_x=c1 + c2r + c3r, width=5)
    assert (cfg.block_n, cfg.block_n_tail, cfg.merge_tail) == (128, 32, 1)
    _, c2r, c3r, c2, c3, k3, *_ = KXK["merged-tails"]
    c4r, c4 = KXK_POOL[KXK["merged-tails"]]
    kxk = bkxk.pick_config(torch.float16, c2r=c2r, c2=c2, c3r=c3r, c3=c3, k3=k3, c4r=c4r, c4=c4)
    assert (kxk.block_n2, kxk.block_n2_tail) == (128, 32)
    assert (kxk.block_n3, kxk.block_n3_tail) == (64, 16)
    assert (kxk.block_n4, kxk.block_n4_tail) == (32, 16)


@pytest.mark.parametrize("dtype", dtype_params(torch.float32, torch.float16, torch.bfloat16))
@pytest.mark.parametrize("case", list(KXK.values()), ids=list(KXK))
def test_block_kxk_parity(case, dtype):
    c4r, c4 = KXK_POOL[case]
    out, refs, slices = _run_kxk(*case, dtype, c4r=c4r, c4=c4)
    written = torch.zeros(out.shape[1], dtype=torch.bool)
    for name, ref, (off, c) in zip(("b2", "b3", "b4"), refs, slices, strict=True):
        _close(out[:, off : off + c], ref, dtype, name)
        written[off : off + c] = True
    assert torch.isnan(out[:, ~written]).all(), "a channel outside b2, b3 and b4 was written"


def test_kxk_zero_padding_applies_to_r():
    """Large positive r: a tap outside the image that read anything but 0 (a neighbour row,
    relu of a bias) would change the border outputs."""
    out, refs, slices = _run_kxk(*KXK["odd-5x7"], torch.float32, r_shift=5.0)
    for name, ref, (off, c) in zip(("b2", "b3", "b4"), refs, slices, strict=True):
        _close(out[:, off : off + c], ref, torch.float32, name)


def test_gpu_configs_by_shape():
    """16-bit tiles: accumulators of at most 128 x 128, column blocks (a tail included) that pad
    their channels by at most tiles.MAX_PADDING where a candidate does, a tail only where the
    blocks leave a remainder, run with the last full block where both accumulators fit
    tiles.MAX_MERGED (block_1x1: where n_x is a multiple of 16), channel steps that pad least,
    128-row tiles with 32-row tails; fp32 uniform 64 x 64 tiles (64-row tails)."""
    for c in GOOGLENET_BLOCKS.values():
        n_x = c.ch1x1 + c.ch3x3red + c.ch5x5red
        cfg = b1x1.pick_config(torch.float16, c_in=c.in_channels, n_x=n_x, width=c.hw)
        kxk = bkxk.pick_config(
            torch.float16, c2r=c.ch3x3red, c2=c.ch3x3, c3r=c.ch5x5red, c3=c.ch5x5, k3=5,
            c4r=c.in_channels, c4=c.pool_proj,
        )  # fmt: skip
        assert (cfg.block_m, cfg.block_m_tail) == (kxk.block_m, kxk.block_m_tail) == (128, 32)
        assert cfg.merge_tail == (cfg.block_n_tail > 0 and n_x % 16 == 0)
        for block_n, tail, n, merged in (
            (cfg.block_n, cfg.block_n_tail, n_x, bool(cfg.merge_tail)),
            (kxk.block_n2, kxk.block_n2_tail, c.ch3x3, True),
            (kxk.block_n3, kxk.block_n3_tail, c.ch5x5, True),
            (kxk.block_n4, kxk.block_n4_tail, c.pool_proj, True),
        ):
            assert cfg.block_m * block_n <= tiles.MAX_ACCUMULATOR
            cols = tiles.columns(n, block_n, tail, merged)
            assert cfg.block_m * cols.widest <= tiles.MAX_MERGED
            assert cols.padded >= n and (cols.full - 1) * block_n + max(tail, 1) < n
            assert tail == 0 or (n % block_n and tail < block_n and tail >= n % block_n)
            limit = tiles.MAX_PADDING * n
            if any(tiles.columns(n, b).padded <= limit for b in tiles.BLOCK_N):
                assert cols.padded <= limit, (c, n, block_n, tail)
        reductions = (
            (c.ch3x3red, kxk.block_r2), (c.ch5x5red, kxk.block_r3), (c.in_channels, kxk.block_r4),
        )  # fmt: skip
        for c_red, block in reductions:
            assert -(-c_red // block) * block == -(-c_red // 16) * 16  # least padding
    # 392 rows (7x7 at batch 8): 3 tiles of 128 and one of 32; 1568 (14x14): 12 and 1.
    assert tiles.row_programs(392, 128, 32) == (3, 1)
    assert tiles.row_programs(1568, 128, 32) == (12, 1)
    assert tiles.row_programs(6272, 128, 32) == (49, 0)
    assert tiles.row_programs(196, 128, 32) == (1, 3)
    assert tiles.row_programs(400, 64, 64) == (6, 1)
    # 288 columns: 2 x 128 + 32 in two programs (the tail with the last full block); 176: 128
    # + 64 in one; 256: 2 x 128; 208 in 128s: uniform (the tail would be a whole block); fewer
    # columns than a block: one masked block (a tail needs a full block to run with).
    assert tiles.columns(288, 128) == (128, 32, 2, True)
    assert tiles.columns(288, 128).programs == 2 and tiles.columns(288, 128).widest == 160
    assert tiles.columns(176, 128) == (128, 64, 1, True)
    assert tiles.columns(256, 128) == (128, 0, 2, False)
    assert tiles.columns(208, 128) == (128, 0, 2, False)
    assert tiles.columns(8, 128) == (128, 0, 1, False)
    with pytest.raises(ValueError, match="needs a full block"):
        tiles.columns(40, 64, 16)
    # Unmerged: the tail in a program of its own (even without a full block before it).
    assert tiles.columns(288, 128, merged=False).programs == 3
    assert tiles.columns(8, 128, merged=False) == (128, 16, 0, False)
    fp32 = b1x1.pick_config(torch.float32, c_in=8, n_x=8, width=10)
    assert (fp32.block_m, fp32.block_m_tail, fp32.block_n, fp32.block_n_tail) == (64, 64, 64, 0)
    # Pool programs: the row in one band up to 32 columns; bands of at most 16 rows, evenly
    # split.
    assert [b1x1.pool_width(w) for w in (1, 7, 14, 28, 56)] == [1, 8, 16, 32, 32]
    bands = {h: b1x1.pool_grid(fp32, 2, 8, h, 7)[1:3] for h in (1, 7, 14, 16, 17, 28, 37)}
    assert bands == {1: (1, 1), 7: (1, 7), 14: (1, 14), 16: (1, 16), 17: (2, 9), 28: (2, 14),
                     37: (3, 13)}  # fmt: skip


def test_empty_batch_launches_nothing():
    x = torch.randn(0, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    out = torch.empty(0, 6, 3, 3).contiguous(memory_format=torch.channels_last)
    r = torch.empty(0, 6)
    b1x1.block_1x1(x, torch.randn(4, 3), torch.randn(3), out, r, 1)
    bkxk.block_kxk(
        r, torch.randn(9, 1, 2), torch.randn(2), torch.randn(9, 1, 2), torch.randn(2),
        torch.randn(4, 2), torch.randn(2), out, 0, 2, 4,
    )  # fmt: skip


def _args_1x1(**change):
    args = {
        "x": torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last),
        "w_x": torch.randn(4, 5), "b_x": torch.randn(5),
        "out": torch.full((1, 6, 3, 3), float("nan")).contiguous(memory_format=torch.channels_last),
        "r": torch.empty(9, 7), "c1": 2,
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
        ({"r": torch.empty(9, 3)}, ValueError, "r must be a contiguous"),
        ({"r": torch.empty(9, 7).half()}, TypeError, "r must have x's dtype"),
        ({"c1": 6}, ValueError, "c1 must be in"),
        ({"c1": 1.0}, TypeError, "c_off must be an int"),
        ({"out": torch.full((1, 1, 3, 3), float("nan"))}, ValueError, "c1 must be in"),
        ({"b_x": torch.randn(5, device="meta")}, RuntimeError, "one device"),
    ],
    ids=["x-nchw", "w-dtype", "bias-dtype", "w-shape", "r-shape", "r-dtype", "c1-range",
         "c1-float", "b1-slice", "device"],
)  # fmt: skip
def test_block_1x1_refuses_bad_arguments(change, exc, match):
    args = _args_1x1(**change)
    with pytest.raises(exc, match=match):
        b1x1.block_1x1(**args)
    assert torch.isnan(args["out"]).all(), "out was written before the error"


def test_block_1x1_refuses_overlapping_scratch():
    args = _args_1x1()
    out = torch.full((1, 7, 3, 3), float("nan")).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="out overlaps r"):
        r = out.permute(0, 2, 3, 1).reshape(-1)[:63].view(9, 7)
        b1x1.block_1x1(**{**args, "out": out, "r": r})
    x = torch.randn(1, 7, 3, 3).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="r overlaps x"):
        b1x1.block_1x1(
            **{**args, "x": x[:, :4], "r": x.permute(0, 2, 3, 1).reshape(-1)[:63].view(9, 7)}
        )


def _args_kxk(**change):
    args = {
        "r": torch.randn(9, 7), "w2": torch.randn(9, 2, 4), "b2": torch.randn(4),
        "w3": torch.randn(25, 1, 2), "b3": torch.randn(2), "w4": torch.randn(4, 3),
        "b4": torch.randn(3),
        "out": torch.full((1, 11, 3, 3), float("nan")).contiguous(
            memory_format=torch.channels_last
        ),
        "off2": 0, "off3": 5, "off4": 7,
    }  # fmt: skip
    args.update(change)
    return args


@pytest.mark.parametrize(
    "change, exc, match",
    [
        ({"r": torch.randn(8, 7)}, ValueError, "r must be contiguous rows"),
        ({"r": torch.randn(9, 7).half()}, TypeError, "w2 must be torch.float16"),
        ({"w3": torch.randn(16, 1, 2)}, ValueError, "9 or 25"),
        ({"r": torch.randn(9, 6)}, ValueError, "r's 6 columns"),
        ({"w4": torch.randn(4, 2)}, ValueError, "b4 must be"),
        ({"off3": 3}, ValueError, "overlap"),
        ({"off4": 3}, ValueError, "overlap"),
        ({"off3": 10}, ValueError, "do not fit"),
        ({"out": torch.full((1, 11, 3, 3), float("nan"))}, ValueError, "out must be NHWC rows"),
        ({"b4": torch.randn(3, device="meta")}, RuntimeError, "one device"),
    ],
    ids=[
        "r-rows",
        "dtype",
        "k3",
        "r-columns",
        "w4-b4",
        "slices-overlap",
        "pool-overlap",
        "slice-fit",
        "out-nchw",
        "device",
    ],
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
