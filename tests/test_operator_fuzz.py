"""Every operator of torch.ops.fused_inception, and the Triton launchers, called with extreme
integer arguments: each call must either succeed or raise a Python exception, never crash, and
the exception is the one fused_inception.checks prescribes (an integer out of range is a
ValueError, a c_off that is not an integer a TypeError).

The calls run in a subprocess, so that a crash (winograd_f2x3_input(r, 1, 3509319856563006202,
399394659659159466) used to wrap n*h*w to r's row count and read 2^62 elements away: SIGSEGV)
shows up as a signal in the test's report instead of killing pytest. The subprocess prints, per
operator, the arguments that succeeded, and the test checks them against the arguments that are
valid in exact (Python) integer arithmetic: a call that succeeds only because a product wrapped
around fails the test too.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fused_inception import _ext
from fused_inception.backends import cuda_kernel_builds

pytestmark = pytest.mark.skipif(
    not _ext.has_extension(), reason=f"no extension: {_ext.extension_error()}"
)

EXTREMES = [0, 1, 2, 3, -1, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, -(2**63), -(2**31)]
EXTREMES += [3509319856563006202, 399394659659159466]  # 1 * these wrap to 4 (the crash)
RANDOM = [random.Random(seed).randrange(-(2**63), 2**63) for seed in range(4)]
INTS = EXTREMES + RANDOM
# The Triton launchers' c_off also gets things that are not ints (a 0-d int tensor used to be
# passed to the kernel as a pointer: SIGSEGV under the interpreter).
C_OFFS = INTS + [0.0, 1.5, True, False, None, "1"]

SCRIPT = r"""
import json, sys, torch
import fused_inception
from fused_inception.packing import prepare_chain, prepare_conv1x1
INTS, C_OFFS, TRITON, CUDA_OPS = json.loads(sys.argv[1])
C_OFFS += [torch.tensor(1), torch.tensor(2**40), torch.tensor(1.0)]
ops = torch.ops.fused_inception
succeeded, refused = {}, {}

def attempt(name, key, fn, *args):
    try:
        fn(*args)
    except Exception as exc:
        refused.setdefault(name, {}).setdefault(type(exc).__name__, []).append(key)
        return
    succeeded.setdefault(name, []).append(key)

# Winograd: r has 4 rows (valid geometries: n*h*w == 4), m holds 1 tile (n*ceil(h/2)*ceil(w/2)).
r, m, bias, out = torch.randn(4, 3), torch.randn(16, 1, 3), torch.randn(3), torch.empty(4, 3)
for n in INTS:
    for h in INTS:
        for w in INTS:
            attempt("winograd_f2x3_input", [n, h, w], ops.winograd_f2x3_input, r, n, h, w)
            output_args = (m, bias, out, n, h, w)
            attempt("winograd_f2x3_output_", [n, h, w], ops.winograd_f2x3_output_, *output_args)
for begin in INTS:
    for count in INTS + [None]:
        key = [begin, count]
        attempt("winograd_f2x3_input/range", key, ops.winograd_f2x3_input, r, 1, 2, 2, begin, count)
        m_count = m if count == 1 else torch.randn(16, 0, 3)
        attempt("winograd_f2x3_output_/range", key, ops.winograd_f2x3_output_, m_count, bias, out,
                1, 2, 2, begin, count)

# max_pool3x3_nhwc has no integer argument: extreme sizes instead, on empty tensors.
for size in INTS:
    def pool_empty(size=size):
        x = torch.empty(0, size, 1, 1).contiguous(memory_format=torch.channels_last)
        ops.max_pool3x3_nhwc(x)
    attempt("max_pool3x3_nhwc", [size], pool_empty)
attempt("max_pool3x3_nhwc", ["valid"], ops.max_pool3x3_nhwc,
        torch.randn(1, 3, 4, 5).contiguous(memory_format=torch.channels_last))

# The CUDA-kernel operators (emulated on CPU tensors): Cout = 5 into 12 channels.
x = torch.randn(2, 7, 3, 4).contiguous(memory_format=torch.channels_last)
def new_out():
    return torch.zeros(2, 12, 3, 4).contiguous(memory_format=torch.channels_last)
w, b = prepare_conv1x1(torch.randn(5, 7, 1, 1), torch.randn(5))
chain = prepare_chain(
    torch.randn(4, 7, 1, 1), torch.randn(4), torch.randn(5, 4, 3, 3), torch.randn(5)
)
if CUDA_OPS:
    for c0 in INTS:
        for pool in (False, True):
            attempt("conv1x1_slice_", [c0, pool], ops.conv1x1_slice_, x, w, b, new_out(), c0, pool)
        attempt("chain_1x1_kxk_", [c0], ops.chain_1x1_kxk_, x, *chain, new_out(), c0)

# The Triton launchers (interpreter on CPU tensors), with the same valid offsets [0, 7]:
# block_1x1's c1 (b1's slice: w_x's 7 columns into 12 channels; r sized for a valid c1),
# block_kxk's b2 slice (5 channels of 17, b3's 3 channels at 12, b4's 2 at 15).
if TRITON:
    from fused_inception.triton.block_1x1 import block_1x1
    from fused_inception.triton.block_kxk import block_kxk
    w_x, b_x = torch.randn(7, 7), torch.randn(7)
    r_in, w2, w3 = torch.randn(24, 11), torch.randn(9, 2, 5), torch.randn(9, 2, 3)
    w4 = torch.randn(7, 2)
    def out17():
        return torch.zeros(2, 17, 3, 4).contiguous(memory_format=torch.channels_last)
    def run_1x1(c1):
        integer = type(c1) is int or (isinstance(c1, torch.Tensor) and not c1.is_floating_point())
        k = int(c1) if integer and 0 <= int(c1) <= 7 else 0
        return block_1x1(x, w_x, b_x, new_out(), torch.empty(24, 7 - k + 7), c1)
    for i, c0 in enumerate(C_OFFS):
        attempt("triton block_1x1", i, lambda c0=c0: run_1x1(c0))
        attempt("triton block_kxk", i,
                lambda c0=c0: block_kxk(r_in, w2, b[:5], w3, b[:3], w4, b[:2], out17(), c0, 12, 15))

print("FUZZ-RESULT " + json.dumps([succeeded, refused]))
"""


def _run() -> tuple[dict[str, list], dict[str, dict[str, list]]]:
    triton_ok = os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()
    cuda_ops = "emulated" in cuda_kernel_builds()
    env = dict(os.environ)
    # The subprocess imports this checkout's fused_inception, not an installed one.
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(_ext.__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
    )
    arg = json.dumps([INTS, C_OFFS, triton_ok, cuda_ops])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, arg], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, (
        f"the fuzz process died with exit status {proc.returncode} (negative: killed by that "
        f"signal)\nstdout: {proc.stdout[-2000:]}\nstderr: {proc.stderr[-4000:]}"
    )
    line = next(s for s in proc.stdout.splitlines() if s.startswith("FUZZ-RESULT "))
    succeeded, refused = json.loads(line.removeprefix("FUZZ-RESULT "))
    keys = {
        name: [tuple(k) if isinstance(k, list) else k for k in keys]
        for name, keys in succeeded.items()
    }
    return keys, refused


@pytest.fixture(scope="module")
def fuzz_run() -> tuple[dict[str, list], dict[str, dict[str, list]]]:
    return _run()


@pytest.fixture(scope="module")
def fuzz_result(fuzz_run) -> dict[str, list]:
    """Per operator, the arguments with which the call succeeded."""
    return fuzz_run[0]


def _tiles(n: int, h: int, w: int) -> int:
    return n * ((h + 1) // 2) * ((w + 1) // 2)


def _geometry_ok(n: int, h: int, w: int) -> bool:
    return n >= 0 and h >= 1 and w >= 1


def test_no_call_crashes_the_process(fuzz_result):
    """The subprocess finished (the fixture asserts exit status 0) and some calls succeeded."""
    assert fuzz_result.get("max_pool3x3_nhwc")


def test_winograd_accepts_exactly_the_valid_geometries(fuzz_result):
    triples = list(itertools.product(INTS, repeat=3))
    valid_input = [t for t in triples if _geometry_ok(*t) and t[0] * t[1] * t[2] == 4]
    assert sorted(fuzz_result.get("winograd_f2x3_input", [])) == sorted(valid_input)
    valid_output = [t for t in valid_input if _tiles(*t) == 1]
    assert sorted(fuzz_result.get("winograd_f2x3_output_", [])) == sorted(valid_output)


def test_winograd_accepts_exactly_the_valid_tile_ranges(fuzz_result):
    tiles = _tiles(1, 2, 2)  # 1
    ranges = list(itertools.product(INTS, INTS + [None]))
    valid = [(b, c) for b, c in ranges if 0 <= b <= tiles and (c is None or 0 <= c <= tiles - b)]
    assert sorted(fuzz_result.get("winograd_f2x3_input/range", []), key=str) == sorted(
        valid, key=str
    )
    # m holds 1 tile when count == 1, else 0: the call is valid where that is the range's count.
    with_m = [(b, c) for b, c in valid if (tiles - b if c is None else c) == (1 if c == 1 else 0)]
    assert sorted(fuzz_result.get("winograd_f2x3_output_/range", []), key=str) == sorted(
        with_m, key=str
    )


def test_cuda_operators_accept_exactly_the_valid_channel_offsets(fuzz_result):
    if "emulated" not in cuda_kernel_builds():
        pytest.skip("no emulated build of the CUDA kernels")
    valid = [c0 for c0 in INTS if 0 <= c0 <= 12 - 5]
    assert sorted(fuzz_result.get("conv1x1_slice_", [])) == sorted(
        (c0, pool) for c0 in valid for pool in (False, True)
    )
    assert sorted(fuzz_result.get("chain_1x1_kxk_", [])) == [(c0,) for c0 in sorted(valid)]


def test_triton_launchers_accept_exactly_integer_channel_offsets_that_fit(fuzz_result):
    if not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()):
        pytest.skip("Triton kernels cannot run here")
    offsets = C_OFFS + [torch.tensor(1), torch.tensor(2**40), torch.tensor(1.0)]
    valid = [i for i, c0 in enumerate(offsets) if _is_integer(c0) and 0 <= int(c0) <= 12 - 5]
    assert fuzz_result.get("triton block_1x1", []) == valid
    assert fuzz_result.get("triton block_kxk", []) == valid


def test_integers_out_of_range_are_value_errors(fuzz_run):
    """Every refused integer argument (geometry, tile range, channel offset) is a ValueError."""
    _, refused = fuzz_run
    for name in ("winograd_f2x3_input", "winograd_f2x3_output_", "winograd_f2x3_input/range",
                 "winograd_f2x3_output_/range", "conv1x1_slice_", "chain_1x1_kxk_"):  # fmt: skip
        types = set(refused.get(name, {}))
        assert types <= {"ValueError"}, (name, {t: refused[name][t][:5] for t in types})


def _is_integer(c0: object) -> bool:
    """What the launchers accept as c_off: a Python int or an integer tensor (not a bool)."""
    return type(c0) is int or (isinstance(c0, torch.Tensor) and not c0.is_floating_point())


def test_triton_launchers_refuse_non_integers_with_type_errors(fuzz_run):
    if not (os.environ.get("TRITON_INTERPRET") == "1" or torch.cuda.is_available()):
        pytest.skip("Triton kernels cannot run here")
    _, refused = fuzz_run
    offsets = C_OFFS + [torch.tensor(1), torch.tensor(2**40), torch.tensor(1.0)]
    for name in ("triton block_1x1", "triton block_kxk"):
        by_type = refused.get(name, {})
        assert set(by_type) <= {"TypeError", "ValueError"}, (name, sorted(by_type))
        assert not any(_is_integer(offsets[i]) for i in by_type.get("TypeError", [])), name
        assert all(_is_integer(offsets[i]) for i in by_type.get("ValueError", [])), name
