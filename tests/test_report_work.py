"""The work report's counters (fused_inception.report.counting) on a toy Triton kernel whose
work is known."""

from __future__ import annotations

import pytest
import torch
import triton
import triton.language as tl
from helpers import skip_module_unless_triton_runs

from fused_inception.triton import common

skip_module_unless_triton_runs()

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


def test_count_work_restores_after_an_error():
    from triton.runtime import interpreter

    from fused_inception.report.counting import count_work

    dot = interpreter.InterpreterBuilder.create_dot
    with pytest.raises(ZeroDivisionError), count_work():
        1 / 0  # noqa: B018
    assert interpreter.InterpreterBuilder.create_dot is dot
    assert common.launch_listener is None
