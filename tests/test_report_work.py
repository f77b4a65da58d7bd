"""The work report (python -m fused_inception.report --work): its counters on a toy Triton kernel
whose work is known, its MODEL's rules, and one real run whose numbers must agree."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import triton
import triton.language as tl
from helpers import skip_module_unless_triton_runs

from fused_inception.backends import cuda_kernel_builds
from fused_inception.bench.roofline import block_macs
from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.report import work_model as wm
from fused_inception.report.work_analysis import match_build, scaled_work
from fused_inception.triton import INTERPRETER, common

skip_module_unless_triton_runs()

# Counting in this process runs the kernels under Triton's interpreter; where a GPU runs them
# instead (TRITON_INTERPRET unset), count_work refuses, and so these tests skip (the report's
# own run below sets the interpreter in its child processes and runs anywhere).
needs_interpreter = pytest.mark.skipif(
    not INTERPRETER, reason="count_work needs TRITON_INTERPRET=1 before fused_inception's import"
)

# ---------------------------------------------------------------------------------------------
# The counters, on a kernel whose work is known.

M, N, K = 16, 32, 16  # tl.dot tile [M, K] x [K, N]
ROWS = 11  # rows of A (and of the output) whose mask is true
PROGRAMS = 3


@triton.jit
def _toy_kernel(a_ptr, b_ptr, idx_ptr, out_ptr, rows, M: tl.constexpr, N: tl.constexpr,
                K: tl.constexpr, F32: tl.constexpr):  # fmt: skip
    pid = tl.program_id(0)
    m = tl.arange(0, M)
    n = tl.arange(0, N)
    k = tl.arange(0, K)
    row_in = m < rows
    a = tl.load(a_ptr + m[:, None] * K + k[None, :], mask=row_in[:, None], other=0.0)
    b = tl.load(b_ptr + k[:, None] * N + n[None, :])
    b = b + tl.load(b_ptr + k[:, None] * N + n[None, :])  # the same bytes loaded twice
    if F32:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        acc = tl.dot(a, b)
    idx = tl.load(idx_ptr + m)
    g = tl.gather(acc, tl.broadcast_to(idx[:, None], (M, N)), 0)
    tl.store(out_ptr + pid * M * N + m[:, None] * N + n[None, :], g, mask=row_in[:, None])


def _toy_tensors():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(M, K, generator=gen).half()
    b = torch.randn(K, N, generator=gen).half()
    idx = torch.randint(0, M, (M,), generator=gen, dtype=torch.int32)
    out = torch.full((PROGRAMS, M, N), float("nan"))
    return a, b, idx, out


@needs_interpreter
@pytest.mark.parametrize("f32", [False, True], ids=["fp16-dot", "fp32-dot"])
def test_counters_on_toy_kernel(f32):
    from triton.runtime import interpreter

    from fused_inception.report.counting import count_work

    a, b, idx, out = _toy_tensors()
    originals = {
        name: getattr(interpreter.InterpreterBuilder, name)
        for name in ("create_dot", "create_masked_load", "create_masked_store", "create_gather")
    }
    with count_work() as log:
        common.note_launch("toy", (PROGRAMS,), 1234)
        _toy_kernel[(PROGRAMS,)](a, b, idx, out, ROWS, M=M, N=N, K=K, F32=f32, num_warps=2)
        _toy_kernel[(1,)](a, b, idx, out, ROWS, M=M, N=N, K=K, F32=f32)  # not announced
    # Restored afterwards: nothing counted, listener gone.
    assert common.launch_listener is None
    for name, fn in originals.items():
        assert getattr(interpreter.InterpreterBuilder, name) is fn

    # The kernel computed what it computes (counting changes nothing).
    a_in = a.float().clone()
    a_in[ROWS:] = 0  # masked rows load as 0
    ref = ((a_in @ (2 * b.float()))[idx.long()])[:ROWS]
    torch.testing.assert_close(out[:, :ROWS], ref.expand(PROGRAMS, ROWS, N), rtol=1e-2, atol=1e-2)

    assert log.listener_calls == 1 and len(log.launches) == 2
    first, second = log.launches
    assert (first.kernel, first.useful_macs, first.listener_grid) == ("toy", 1234, (PROGRAMS,))
    assert (second.kernel, second.useful_macs) == ("_toy_kernel", None)
    assert first.function == second.function == "_toy_kernel"
    assert first.grid == (PROGRAMS,) and first.programs == PROGRAMS and second.programs == 1
    assert first.num_warps == 2
    assert first.constexprs == {"M": M, "N": N, "K": K, "F32": f32}

    macs = PROGRAMS * M * N * K
    assert (first.mma_macs, first.other_dot_macs) == ((0, macs) if f32 else (macs, 0))
    assert first.gathered == PROGRAMS * M * N
    t = first.tensors
    assert set(t) == {"a", "b", "idx", "out"}
    assert t["a"].loaded_bytes == PROGRAMS * ROWS * K * 2
    assert t["a"].read_bytes == ROWS * K * 2  # masked rows never touched
    assert t["b"].loaded_bytes == PROGRAMS * 2 * K * N * 2 and t["b"].read_bytes == K * N * 2
    assert t["idx"].loaded_bytes == PROGRAMS * M * 4 and t["idx"].read_bytes == M * 4
    assert t["out"].stored_bytes == t["out"].written_bytes == PROGRAMS * ROWS * N * 4
    assert t["out"].loaded_bytes == 0 and t["a"].stored_bytes == 0
    assert first.loaded_bytes == sum(u.loaded_bytes for u in t.values())
    assert first.stored_bytes == PROGRAMS * ROWS * N * 4
    assert first.unattributed_bytes == 0
    assert t["a"].key == (a.data_ptr(), a.numel() * 2)
    assert second.mma_macs + second.other_dot_macs == M * N * K


@needs_interpreter
def test_count_work_restores_after_an_error():
    from triton.runtime import interpreter

    from fused_inception.report.counting import count_work

    dot = interpreter.InterpreterBuilder.create_dot
    with pytest.raises(ZeroDivisionError), count_work():
        1 / 0  # noqa: B018
    assert interpreter.InterpreterBuilder.create_dot is dot
    assert common.launch_listener is None


# ---------------------------------------------------------------------------------------------
# The MODEL's rules.


def test_dram_rule_l2_reuse_and_writes():
    x = wm.Access("x", read=100.0, written=0.0, size=100.0)
    big = wm.Access("big", read=1000.0, written=0.0, size=1000.0)
    out = wm.Access("out", read=0.0, written=50.0, size=50.0)
    # Second read of x: an L2 hit while everything since fits (150 <= 200 bytes of L2).
    assert wm.dram_bytes([[x, out], [x, out]], l2_bytes=200) == [150.0, 50.0]
    # A large tensor in between evicts it.
    assert wm.dram_bytes([[x], [big], [x]], l2_bytes=200) == [100.0, 1000.0, 100.0]


def test_ctas_per_sm_limits():
    a100 = wm.GPUS["A100"]
    assert wm.ctas_per_sm(a100, 4, 128, 0) == 4  # registers: 65536 / (128 * 128)
    assert wm.ctas_per_sm(a100, 4, 32, 100 * 1024) == 1  # shared memory
    assert wm.ctas_per_sm(a100, 8, 32, 0) == 8  # threads: 2048 / 256


@pytest.mark.parametrize("k", [3, 5])
def test_unfused_sequence_does_the_block_macs(k):
    cfg = GOOGLENET_BLOCKS["4e"]
    seq = wm.unfused_sequence(cfg, k, batch=2, itemsize=2)
    assert sum(macs for _, macs, _ in seq) == 2 * block_macs(cfg, k)
    assert len(seq) == 8 and seq[-1][0].startswith("concat")
    h100 = wm.unfused_ms(wm.GPUS["H100"], cfg, k, 128)
    assert h100["launches"] == 8 and h100["ms"] > 8 * wm.LAUNCH_OVERHEAD_US * 1e-3


def test_scaled_work_tile_by_tile():
    """Full tiles by the ratio of full tiles, tail tiles by that of tail tiles, per-image parts
    by the batch; a kind the count lacks estimated from the other; no row tiles: by the batch."""
    rows = {"m": 49 * 8, "block_m": 128, "block_m_tail": 32, "images": 8}  # 3 full + 1 tail
    kinds = {
        "image": {"programs": 8, "mma_macs": 0, "loaded_bytes": 800},
        "full": {"programs": 6, "mma_macs": 3000, "loaded_bytes": 600},
        "tail": {"programs": 2, "mma_macs": 250, "loaded_bytes": 90},
    }
    for b in kinds.values():
        b.update(other_dot_macs=0, gathered=0, stored_bytes=b["loaded_bytes"] // 2)
    launch = {"rows": rows, "by_kind": kinds}
    launch |= {k: sum(b[k] for b in kinds.values()) for k in kinds["full"]}
    # Batch 128: 6272 rows = 49 full tiles, no tail.
    at128 = scaled_work(launch, 8, 128)
    assert at128["programs"] == 8 * 16 + 6 * 49 / 3
    assert at128["mma_macs"] == 3000 * 49 / 3
    assert at128["loaded_bytes"] == 800 * 16 + 600 * 49 / 3
    # Batch 9: 441 rows = 3 full + 2 tail tiles (57 rows).
    at9 = scaled_work(launch, 8, 9)
    assert at9["mma_macs"] == 3000 + 250 * 2 and at9["programs"] == 9 + 6 + 4
    # Counted at batch 2 (98 rows: 4 tail tiles, no full one), modelled at 8 (3 full + 1
    # tail): a full tile as 4 tail tiles.
    small = {"m": 98, "block_m": 128, "block_m_tail": 32, "images": 2}
    launch2 = {**launch, "rows": small, "by_kind": {"tail": kinds["tail"]}}
    assert scaled_work(launch2, 2, 8)["mma_macs"] == 250 / 4 * 4 * 3 + 250 / 4 * 1
    # Counted where the rows divide evenly (no tail), modelled where they do not: a tail tile
    # as a full one.
    even = {"m": 256, "block_m": 128, "block_m_tail": 32, "images": 1}
    launch3 = {**launch, "rows": even, "by_kind": {"full": kinds["full"]}}
    assert scaled_work(launch3, 1, 2)["mma_macs"] == 3000 * 2
    assert scaled_work({**launch3, "rows": {**even, "m": 200}}, 1, 1)["mma_macs"] == 3000
    plain = {k: v for k, v in launch.items() if k not in ("rows", "by_kind")}
    assert scaled_work(plain, 8, 128)["mma_macs"] == launch["mma_macs"] * 16


@needs_interpreter
def test_scaled_count_matches_a_count_at_that_batch():
    """The real launchers counted at batch 3 (7x7: 1 full + 1 tail tile of rows) and scaled to
    batch 8 (3 full + 1 tail) agree with a count at batch 8: programs and executed MACs
    exactly, bytes within the masks' variation at image borders."""
    from fused_inception.report.counting import count_work
    from fused_inception.triton import block_1x1 as b1x1
    from fused_inception.triton import block_kxk as bkxk

    c_in, c1, c2r, c3r, c2, c3, c4 = 40, 16, 24, 8, 40, 16, 16

    def run(n):
        gen = torch.Generator().manual_seed(n)
        x = torch.randn(n, c_in, 7, 7, generator=gen).half()
        x = x.contiguous(memory_format=torch.channels_last)
        w_x = (torch.randn(c_in, c1 + c2r + c3r, generator=gen) / 8).half()
        b_x = torch.randn(c1 + c2r + c3r, generator=gen)
        out = torch.empty(n, c1 + c2 + c3 + c4, 7, 7, dtype=torch.half)
        out = out.contiguous(memory_format=torch.channels_last)
        r = torch.empty(n * 49, c2r + c3r + c_in, dtype=torch.half)
        w2, w3 = (torch.randn(9, c2r, c2) / 8).half(), (torch.randn(9, c3r, c3) / 8).half()
        w4 = (torch.randn(c_in, c4) / 8).half()
        with count_work() as log:
            b1x1.block_1x1(x, w_x, b_x, out, r, c1)
            bkxk.block_kxk(r, w2, torch.randn(c2), w3, torch.randn(c3), w4, torch.randn(c4),
                           out, c1, c1 + c2, c1 + c2 + c3)  # fmt: skip
        return [launch.as_dict() for launch in log.launches]

    small, large = run(3), run(8)
    assert [launch["rows"]["m"] for launch in small + large] == [147, 147, 392, 392]
    for a, b in zip(small, large, strict=True):
        assert set(a["by_kind"]) >= {"full", "tail"}
        scaled = scaled_work(a, 3, 8)
        assert scaled["programs"] == b["programs"] and scaled["mma_macs"] == b["mma_macs"]
        for key in ("loaded_bytes", "stored_bytes"):
            assert scaled[key] == pytest.approx(b[key], rel=0.03), (a["kernel"], key)
        # Scaling the whole count by the batch would not be exact: it carries batch 3's tail
        # tile share.
        assert a["mma_macs"] * 8 / 3 != b["mma_macs"]


def test_match_build_reads_the_build_name():
    launch = {
        "function": "chain_1x1_kxk_kernel",
        "constexprs": {"K": 3, "TH": 8, "BLOCK_N": 128, "BLOCK_R": 32},
        "num_warps": 8,
        "num_stages": 2,
    }
    name = "chain_1x1_kxk[float16,K=3,TH=8,TW=8,BN={},BR=32,BK=32,warps=8,stages=2]"
    records = [
        {"kernel": name.format(64), "arch": "sm_90", "registers": 200, "shared_bytes": 1},
        {"kernel": name.format(128), "arch": "sm_80", "registers": 100, "shared_bytes": 2},
        {"kernel": name.format(128), "arch": "sm_90", "registers": 150, "shared_bytes": 3},
    ]
    assert match_build(records, launch, "sm_90", "float16")["registers"] == 150
    assert match_build(records, launch, "sm_90", "bfloat16") is None


# ---------------------------------------------------------------------------------------------
# One real run: 5b at batch 1 (both branch-3 kernels), its numbers against each other.


def test_work_report_5b_batch1(tmp_path):
    """Both backends where this build can run them (cuda: on the SIMT shim)."""
    backends = ["triton"] + (["cuda"] if "emulated" in cuda_kernel_builds() else [])
    path = tmp_path / "work.json"
    cmd = [sys.executable, "-m", "fused_inception.report", "--work", "--blocks", "5b"]
    cmd += ["--batch", "1", "--json", str(path), "--backends", *backends]
    env = {k: v for k, v in os.environ.items() if k != "FUSED_INCEPTION_GPU_CONFIGS"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "MODEL" in proc.stdout
    for backend in backends:
        assert f"verdict {backend} 5b k=3" in proc.stdout
        assert f"verdict {backend} 5b k=5" in proc.stdout
    report = json.loads(path.read_text())
    cfg = GOOGLENET_BLOCKS["5b"]
    cases = [(r["backend"], r["k"]) for r in report["results"]]
    assert cases == [(b, k) for b in backends for k in (3, 5)]
    for r in report["results"]:
        total, launches = r["total"], r["launches"]
        assert r["output_finite"]
        # Useful work: the block's multiply-adds, announced by the launchers.
        assert total["useful_macs"] == r["block_useful_macs"] == block_macs(cfg, r["k"])
        # Every launch was announced, and every announced launch ran.
        assert r["listener_calls"] == total["launches"] == len(launches) >= 1
        assert all(launch["useful_macs"] is not None for launch in launches)
        # The kernels' rows add up to the block's.
        for key in ("launches", "programs", "useful_macs", "mma_macs", "gathered", "loaded_bytes"):
            assert sum(row[key] for row in r["kernels"].values()) == total[key], key
        assert total["programs"] == sum(launch["programs"] for launch in launches)
        assert total["mma_macs"] >= total["useful_macs"]
        assert total["exec_per_useful"] == pytest.approx(total["mma_macs"] / total["useful_macs"])
        assert total["loaded_bytes_per_flop"] == pytest.approx(
            total["loaded_bytes"] / (2 * total["useful_macs"])
        )
        # Each output element stored exactly once (the output found by its address, whatever
        # the kernels call it), and every byte attributed to a tensor argument.
        out_key = r["activation_keys"][1][0]
        out_uses = [t for launch in launches for t in launch["tensors"].values()]
        out_uses = [t for t in out_uses if t["key"][0] == out_key]
        out_bytes = cfg.out_channels * cfg.hw * cfg.hw * 2
        assert sum(t["written_bytes"] for t in out_uses) == out_bytes
        assert sum(t["stored_bytes"] for t in out_uses) == out_bytes
        assert total["stored_bytes"] >= out_bytes
        assert all(launch["unattributed_bytes"] == 0 for launch in launches)
        # The Triton launchers say which programs run full row tiles, tail tiles and per-image
        # parts: the kinds add up to the launch.
        for launch in launches if r["backend"] == "triton" else ():
            assert launch["rows"]["m"] == cfg.hw * cfg.hw and launch["rows"]["images"] == 1
            for key in ("programs", "mma_macs", "loaded_bytes", "stored_bytes"):
                assert sum(b[key] for b in launch["by_kind"].values()) == launch[key], key
        # The MODEL: positive times, the verdict from the same numbers.
        for key in ("A100@1", "H100@1", "A100@128", "H100@128"):
            assert total["model"][key]["ms"] > 0 and r["unfused"][key]["ms"] > 0
        v = r["verdict"]
        assert v["launches"]["value"] == total["launches"]
        assert v["h100_ms_vs_unfused"]["value"] == pytest.approx(total["model"]["H100@128"]["ms"])
        # The shim's bank-conflict degree is a target of the cuda rows only.
        assert ("bank_conflict_degree" in v) == (r["backend"] == "cuda")
        if r["backend"] == "cuda":
            assert v["bank_conflict_degree"]["value"] == 1
            assert all(launch["unattributed_bytes"] == 0 for launch in launches)
