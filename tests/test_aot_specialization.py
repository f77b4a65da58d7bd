"""The AOT report compiles the specialization Triton's JIT runs, not a hand-written one.

At run time Triton's JIT specializes each launch on its argument values (ints equal to 1 become
constants, ints and pointers divisible by 16 get tt.divisibility; see
fused_inception/report/specialization.py), so a report that compiles kernels with a
hand-written signature can check a binary that never runs (found on version 1 of the kernels:
the sm_80 fp16 3x3 chain build with BLOCK_N=64 compiled as listed passed the no-spill check,
while the specialization the JIT compiled for GoogLeNet's 3a and 4a-4d spilled).

test_report_compiles_what_the_jit_runs ties the two: it runs real forwards of three GoogLeNet
blocks (3a at 28x28, 4b at 14x14 with its 24-channel reduction, 5b at 7x7; both block forms;
float16 and float32; NCHW and channels_last input; batch 2, a batch the report does not run
itself) with every launch intercepted, computes for each launch and arch what the JIT would
hand to triton.compile, through the JIT's binder and JITFunction._pack_args (the report takes
another way: JITFunction.run with a jit_cache_hook), and requires a build of the report whose
compile inputs are the same: signature, constexprs (declared and specialized), divisibility
attrs and options (num_warps and num_stages among them).

Compiling needs @triton.jit functions defined without TRITON_INTERPRET, so that part runs in a
subprocess with a clean environment (like tests/test_report.py).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from fused_inception.configs import GOOGLENET_BLOCKS
from fused_inception.module import FusedInception
from fused_inception.triton import common, cpu_tensors_allowed, intercept_launches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ARCHS = ("sm_80", "sm_90")
BLOCKS = ("3a", "4b", "5b")
FORMS = {"torchvision": {"branch3_kernel": 3}, "paper": {"branch3_kernel": 5, "norm": False}}
LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
# One launch checked first, by name: 3a's kxk launch in float16 on sm_80.
EXAMPLE = "3a torchvision float16 N=2 channels_last: block_kxk_kernel[BLOCK_M=128] sm_80"


def _forwards(blocks, dtypes, batch=2):
    """(label, block, x) for eval forwards of GoogLeNet's blocks at their real sizes."""
    for name in blocks:
        cfg = GOOGLENET_BLOCKS[name]
        for form, kwargs in FORMS.items():
            for dtype in dtypes:
                block = FusedInception(*cfg.args(), backend="triton", **kwargs).eval().to(dtype)
                for layout, memory_format in LAYOUTS.items():
                    x = torch.randn(batch, cfg.in_channels, cfg.hw, cfg.hw, dtype=dtype)
                    x = x.contiguous(memory_format=memory_format)
                    dtype_name = str(dtype).removeprefix("torch.")
                    yield f"{name} {form} {dtype_name} N={batch} {layout}", block, x


def _launch_name(kernel, options):
    declared = [p.name for p in kernel.params if p.is_constexpr]
    shown = ",".join(f"{k}={options[k]}" for k in declared if k == "BLOCK_M")
    return f"{kernel.__name__}[{shown}]"


def _binder_inputs(kernel, args, options, arch):
    """What the JIT hands to triton.compile for kernel[grid](*args, **options) on arch, by the
    steps of JITFunction.run: the kwargs it adds, its binder, _pack_args, ASTSource's keys."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    backend = make_backend(GPUTarget("cuda", int(arch[3:]), 32))
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    kwargs = dict(options)
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    bound, specialization, opts = binder(*args, **kwargs)
    parsed, signature, constexprs, attrs = kernel._pack_args(
        backend, kwargs, bound, specialization, opts
    )
    return _normalized(kernel, signature, constexprs, attrs, parsed.__dict__)


def _normalized(fn, signature, constants, attrs, options):
    """Compile inputs in one comparable form: constants keyed by path as ASTSource keys them,
    attrs without the empty lists (an argument without attributes either way)."""
    constants = {
        (fn.arg_names.index(k),) if isinstance(k, str) else k: v for k, v in constants.items()
    }
    return {
        "fn": f"{fn.__module__}.{fn.__name__}",
        "signature": dict(signature),
        "constexprs": sorted((list(k), repr(v)) for k, v in constants.items()),
        "attrs": sorted((list(k), v) for k, v in (attrs or {}).items() if v),
        "options": sorted((k, repr(v)) for k, v in options.items()),
    }


def _report_inputs(build, arch):
    """What the report hands to triton.compile for build on arch, as triton.compile parses it."""
    from triton.compiler import make_backend

    from fused_inception.report.triton import compile_inputs

    source, target, options = compile_inputs(build, arch)
    parsed = make_backend(target).parse_options(dict(options))
    return _normalized(source.fn, source.signature, source.constants, source.attrs, parsed.__dict__)


def _difference(want, have):
    """The fields in which a build's compile inputs differ from the JIT's, shortly."""
    out = []
    for field in ("signature", "constexprs", "attrs", "options"):
        if want[field] != have[field]:
            if field == "signature":
                diff = {k: (have[field].get(k), v) for k, v in want[field].items()}
                diff = {k: f"{a}->{b}" for k, (a, b) in diff.items() if a != b}
                out.append(f"signature {diff}")
            else:
                missing = [x for x in want[field] if x not in have[field]]
                extra = [x for x in have[field] if x not in want[field]]
                out.append(f"{field} (JIT has {missing}, build has {extra})")
    return "; ".join(out)


def child_main(out_path: str) -> None:
    """In a process without TRITON_INTERPRET: capture the launches of the forwards, compare each
    with the report's builds, write the result as JSON to out_path."""
    from fused_inception.report.triton import collect_builds

    builds = collect_builds()
    report = [
        (build, arch, _report_inputs(build, arch))
        for build in builds
        for arch in ARCHS
        if getattr(build, "archs", None) is None or arch in build.archs
    ]
    launches = []
    current = {"label": ""}

    def interceptor(kernel, grid, args, options):
        for arch in ARCHS:
            want = _binder_inputs(kernel, args, options, arch)
            name = f"{current['label']}: {_launch_name(kernel, options)} {arch}"
            same = [b.kernel for b, a, have in report if a == arch and have == want]
            # The closest builds: same kernel, declared constexprs, pointer types, warps, stages.
            declared = {p.num for p in kernel.params if p.is_constexpr}
            key = [c for c in want["constexprs"] if c[0][0] in declared]
            pointers = {k: v for k, v in want["signature"].items() if v.startswith("*")}
            config = [
                (b.kernel, _difference(want, have))
                for b, a, have in report
                if a == arch
                and have["fn"] == want["fn"]
                and [c for c in have["constexprs"] if c[0][0] in declared] == key
                and all(have["signature"].get(k) == v for k, v in pointers.items())
                and dict(have["options"])["num_warps"] == dict(want["options"])["num_warps"]
                and dict(have["options"])["num_stages"] == dict(want["options"])["num_stages"]
            ]
            launches.append({"launch": name, "builds": same, "closest": config})

    with torch.no_grad(), intercept_launches(interceptor):
        for label, block, x in _forwards(BLOCKS, (torch.float16, torch.float32)):
            current["label"] = label
            block(x)
    with open(out_path, "w") as f:
        json.dump(launches, f, indent=1)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """The child's comparison: one entry per (launch, arch)."""
    out = tmp_path_factory.mktemp("spec") / "launches.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO, TESTS_DIR, env.get("PYTHONPATH")]))
    code = f"import test_aot_specialization as t; t.child_main({str(out)!r})"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_report_compiles_what_the_jit_runs(compared):
    """Every launch of the forwards, on each arch, is compiled by exactly one build of the
    report, the finding's example first."""

    def explain(entry):
        closest = "; ".join(f"{name}: {diff}" for name, diff in entry["closest"])
        return f"{entry['launch']}: no build compiles it; {closest or 'no build of its config'}"

    runs = len(BLOCKS) * len(FORMS) * 2 * len(LAYOUTS) * 2  # 2 launches per forward
    assert len(compared) == runs * len(ARCHS)
    (example,) = [c for c in compared if c["launch"] == EXAMPLE]
    assert example["builds"], explain(example)
    missing = [c for c in compared if not c["builds"]]
    lines = [explain(c) for c in missing]
    assert not missing, f"{len(missing)} of {len(compared)} launches:\n" + "\n".join(lines)
    ambiguous = [c for c in compared if len(c["builds"]) > 1]
    assert not ambiguous, ambiguous
    # 3a at 28x28: 128 output channels of b2 in one 128-wide block, 32 of b3 and of b4 in one
    # 32-wide block each, make full2 = tiles2 = full3 = full4 = 1 constants; of the other ints
    # only m (not specialized), H and W (28), k3 (3) and tiles23 (2) stay plain.
    (name,) = example["builds"]
    assert name.startswith("block_kxk[float16,BM=128,BMT=32,BN2=128,BN2T=0,"), name
    assert name.endswith("{full2=1,tiles2=1,full3=1,full4=1;not16=m,height,width,k3,tiles23}")


def test_launch_goes_to_the_interceptor_and_runs_nothing():
    """common.launch: the listener hears of the launch, the interceptor receives exactly what
    kernel[grid] would be given, and nothing runs (the NaN-filled output stays NaN)."""
    from fused_inception.triton.block_kxk import block_kxk

    r = torch.randn(50, 9)
    w2, b2, w3, b3 = torch.randn(9, 4, 8), torch.randn(8), torch.randn(25, 2, 3), torch.randn(3)
    w4, b4 = torch.randn(3, 2), torch.randn(2)
    out = torch.full((2, 14, 5, 5), float("nan")).contiguous(memory_format=torch.channels_last)
    seen, heard = [], []
    previous = common.launch_listener
    common.launch_listener = lambda *a: heard.append(a)
    try:
        with intercept_launches(lambda *a: seen.append(a)):
            assert cpu_tensors_allowed()
            with pytest.raises(RuntimeError, match="already intercepted"):
                with intercept_launches(print):
                    pass
            block_kxk(r, w2, b2, w3, b3, w4, b4, out, 1, 9, 12)
    finally:
        common.launch_listener = previous
    assert torch.isnan(out).all()
    ((kernel, grid, args, options),) = seen
    assert getattr(kernel, "fn", kernel).__name__ == "block_kxk_kernel"
    assert args[:8] == (r, w2, b2, w3, b3, w4, b4, out)
    # m, H, W, c2r, c3r, c4r, c2, c3, c4, k3, stride_om, off2, off3, off4, then the column
    # blocks (fp32: uniform 64-wide blocks): full2, tiles2, full3, tiles2 + tiles3, full4.
    assert args[8:] == (50, 5, 5, 4, 2, 3, 8, 3, 2, 5, 14, 1, 9, 12, 1, 1, 1, 2, 1)
    assert {"num_warps", "num_stages", "BLOCK_M", "BLOCK_N2", "BLOCK_R3", "BLOCK_N4"} <= set(
        options
    )
    ((name, heard_grid, macs, rows),) = heard
    assert (name, heard_grid, macs) == ("block_kxk", grid, 50 * (9 * 4 * 8 + 25 * 2 * 3 + 3 * 2))
    # fp32: uniform 64-row tiles, 50 rows of 2 images in one (masked) tail tile.
    assert rows[:4] == (50, 64, 64, 2) and rows.kind((0, 2, 0)) == "tail"
    assert math.prod(grid) >= 1
