"""What Triton's JIT compiles for the launches of real forwards: captured, not written by hand.

At run time `JITFunction.run` (triton/runtime/jit.py, Triton 3.8) does not compile the kernel
as written: its binder (`create_function_from_signature`, which calls the C++
`native_specialize_impl` for every argument that is not a tl.constexpr) specializes on the
argument values of each launch:
- an int equal to 1 becomes the constant 1 (signature "constexpr"), as if it were a
  tl.constexpr; other ints are "i32" (or "i64" when they do not fit);
- an int that is a multiple of 16, and a tensor whose data_ptr() is, get the attribute
  tt.divisibility=16 (`BaseBackend.get_int_specialization` / `get_tensor_specialization`:
  "D", turned into [["tt.divisibility", 16]] by `BaseBackend.parse_attr`);
- a tensor becomes a pointer to its dtype ("*fp16").
`JITFunction._pack_args` turns that into the signature, constexprs and attrs that
`_do_compile` hands to `ASTSource(fn, signature, constexprs, attrs)`, and the launch's keyword
options (num_warps, num_stages, debug, ...) into the backend's options
(`CUDABackend.parse_options`) given to `triton.compile`. One kernel therefore compiles into one
binary per specialization, and which binary runs depends on the shapes, strides and alignment
of the launch: unit channel strides of channels_last tensors become constants, 1x1 tile grids
of 7x7 images too, channel counts and strides that are multiples of 16 enable vector loads.

This module runs that same code on the exact arguments of the triton backend's launches: it
runs FusedInception(backend="triton") eval forwards of GoogLeNet's nine blocks on CPU tensors
of their real shapes, while fused_inception.triton.intercept_launches hands every launch here
instead of to Triton (nothing runs). For each launch and arch it calls the kernel's own
`JITFunction.run(..., warmup=True)` with a stand-in for Triton's driver (the only thing run()
needs a GPU for is its device, stream and target) and Triton's `knobs.runtime.jit_cache_hook`,
which receives the specialization just before compilation and, by returning True, skips it.
So the specialization is Triton's, computed by Triton, for the arguments the package passes.

Which argument values matter, and why CPU tensors at real shapes represent GPU launches:
- channel counts, H, W and the strides of the NHWC tensors the kernels read are those of the
  real blocks; the batch N enters the launches through m = N*H*W only, which the kernels
  exclude from specialization (do_not_specialize) and from which they derive their row tiles
  (full and tail tiles, fused_inception/triton/tiles.py) and pool programs themselves, so
  every batch size runs a captured specialization (CAPTURE_BATCHES covers several anyway);
- the pointers: every tensor the kernels get is a whole allocation (x, the packed weights, the
  output; channel slices are passed as an offset), 64-byte aligned by torch's CPU allocator
  and 512-byte aligned by its CUDA caching allocator: both multiples of 16. An input that is a
  view with an unaligned storage offset would run another specialization (not captured).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

CAPTURE_BATCHES = (1, 2, 8, 32, 128)
# The block forms whose launches differ: torchvision's (BN, 3x3 in branch 3) and the paper's
# (bias, 5x5 in branch 3: the chain kernel with K=5).
CAPTURE_FORMS = {
    "torchvision": {"branch3_kernel": 3, "norm": True},
    "paper": {"branch3_kernel": 5, "norm": False},
}


@dataclass(frozen=True)
class JitSpecialization:
    """What Triton's JIT passes to ASTSource and triton.compile for one launch on one arch.

    fn:         the @triton.jit function (JITFunction)
    arch:       "sm_80" or "sm_90"
    signature:  argument name -> "*fp16", "i32", "constexpr", ... (every argument, in order)
    constexprs: argument path, e.g. (14,) -> value: the tl.constexpr arguments and the ints the
                JIT specialized as constants
    attrs:      argument path -> [["tt.divisibility", 16]] or [] (every non-constexpr argument)
    options:    the backend's options for the arch, as `triton.compile(options=...)` receives them
                (num_warps and num_stages among them)
    """

    fn: Any
    arch: str
    signature: dict[str, str]
    constexprs: dict[tuple, Any]
    attrs: dict[tuple, list]
    options: dict[str, Any]

    def key(self) -> str:
        """Equal for two specializations exactly when Triton compiles the same binary."""
        attrs = sorted((k, v) for k, v in self.attrs.items() if v)
        fields = (
            self.fn.__module__,
            self.fn.__name__,
            self.arch,
            list(self.signature.items()),
            sorted(self.constexprs.items()),
            attrs,
            sorted(self.options.items()),
        )
        return repr(fields)


class _CaptureDriver:
    """The three things JITFunction.run asks Triton's active driver before it compiles: the
    current device (a key of the function's per-device caches: one no real device has), its
    stream, and the target (the arch to specialize for). Nothing else is used and no GPU is
    touched."""

    def __init__(self, target) -> None:
        self.target = target
        self.device = f"fused_inception-aot-sm_{target.arch}"

    def get_current_device(self) -> str:
        return self.device

    def get_current_stream(self, device: object = None) -> int:
        return 0

    def get_current_target(self):
        return self.target


@contextlib.contextmanager
def _jit_without_gpu(target, hook: Callable) -> Iterator[_CaptureDriver]:
    """Triton's active driver replaced by a _CaptureDriver for `target`, and hook installed as
    knobs.runtime.jit_cache_hook; both restored after."""
    from triton import knobs
    from triton.runtime.driver import driver

    capture_driver = _CaptureDriver(target)
    # DriverConfig.reset_active would create the real driver, which fails without a GPU: keep
    # whatever was active (None until a first use) and put it back as it was.
    previous_driver = driver._active
    previous_hook = knobs.runtime.jit_cache_hook
    driver.set_active(capture_driver)
    knobs.runtime.jit_cache_hook = hook
    try:
        yield capture_driver
    finally:
        knobs.runtime.jit_cache_hook = previous_hook
        driver.set_active(previous_driver)


def jit_specialization(
    kernel: Any, grid: tuple[int, ...], args: Sequence[Any], options: dict[str, Any], arch: str
) -> JitSpecialization:
    """The specialization `kernel[grid](*args, **options)` compiles on a GPU of `arch`.

    Runs kernel.run(*args, grid=grid, warmup=True, **options), Triton's own launch path, up to
    the point where it would compile; the jit_cache_hook takes what it would compile and stops
    it there (no compile, no launch).
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import JITFunction

    from fused_inception.report.records import arch_number

    if not isinstance(kernel, JITFunction):
        raise TypeError(
            f"{type(kernel).__name__} is not a @triton.jit JITFunction (was the kernel module "
            "imported under TRITON_INTERPRET=1?)"
        )
    target = GPUTarget("cuda", arch_number(arch), 32)
    seen: list[dict] = []

    def hook(*, key, repr, fn, compile, is_manual_warmup, already_compiled) -> bool:
        seen.append(compile)
        return True  # True: do not compile (JITFunction.run then returns None)

    with _jit_without_gpu(target, hook) as capture_driver:
        try:
            kernel.run(*args, grid=grid, warmup=True, **options)
        finally:
            # The binder cached under the stand-in device is of no use to a real launch.
            kernel.device_caches.pop(capture_driver.device, None)
    if len(seen) != 1:
        raise RuntimeError(f"expected one compile request from {kernel.__name__}, got {len(seen)}")
    request = seen[0]
    # The hook receives the options only inside specialization_data, Triton's JSON form of a
    # specialization; they are read back as JITFunction.preload reads them (JSON made the
    # tuples lists) and parsed by the backend into the options object the JIT compiles with.
    data = json.loads(request["specialization_data"])
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in data["options"].items()}
    parsed = make_backend(target).parse_options(options)
    return JitSpecialization(
        fn=kernel,
        arch=arch,
        signature=dict(request["signature"]),
        constexprs=dict(request["constants"]),
        attrs=dict(request["configs"][0]),
        options=dict(parsed.__dict__),
    )


@dataclass
class CapturedSpecialization:
    """One distinct specialization and the launches that run it ("3a torchvision float16 N=8
    channels_last", one entry per forward; a forward can launch it more than once)."""

    spec: JitSpecialization
    launches: list[str]


def capture_specializations(
    forwards: Iterator[tuple[str, Callable[[], object]]], archs: Sequence[str]
) -> list[CapturedSpecialization]:
    """Run each (label, forward) with launches intercepted; the distinct specializations of
    their launches for each arch, in the order first seen."""
    from fused_inception.triton import intercept_launches

    found: dict[str, CapturedSpecialization] = {}
    current = {"label": ""}  # the forward running now, for the interceptor

    def interceptor(kernel, grid, args, options) -> None:
        for arch in archs:
            spec = jit_specialization(kernel, grid, args, options, arch)
            entry = found.setdefault(spec.key(), CapturedSpecialization(spec, []))
            if current["label"] not in entry.launches:
                entry.launches.append(current["label"])

    with intercept_launches(interceptor):
        for label, forward in forwards:
            current["label"] = label
            forward()
    return list(found.values())


def googlenet_forwards(
    blocks: Sequence[str] | None = None,
    *,
    batches: Sequence[int] = CAPTURE_BATCHES,
    dtypes: Sequence[Any] | None = None,
    layouts: Sequence[str] = ("NCHW", "channels_last"),
    forms: Sequence[str] = tuple(CAPTURE_FORMS),
) -> Iterator[tuple[str, Callable[[], object]]]:
    """(label, forward) for FusedInception(backend="triton") eval forwards of GoogLeNet's blocks
    (default all nine) at their 224x224 sizes, per form, dtype (default the kernels' three),
    batch and input layout. The inputs are uninitialized CPU tensors: nothing reads them.

    Only meaningful with launches intercepted (the triton backend refuses CPU tensors
    otherwise, unless under the interpreter).
    """
    import torch

    from fused_inception.configs import GOOGLENET_BLOCKS
    from fused_inception.module import FusedInception
    from fused_inception.triton.common import TRITON_DTYPES, dtype_name

    formats = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    for name in GOOGLENET_BLOCKS if blocks is None else blocks:
        cfg = GOOGLENET_BLOCKS[name]
        for form in forms:
            for dtype in TRITON_DTYPES if dtypes is None else dtypes:
                block = FusedInception(*cfg.args(), backend="triton", **CAPTURE_FORMS[form])
                block = block.eval().to(dtype)
                for batch in batches:
                    for layout in layouts:
                        shape = (batch, cfg.in_channels, cfg.hw, cfg.hw)
                        x = torch.empty(shape, dtype=dtype, memory_format=formats[layout])

                        def forward(block=block, x=x) -> object:
                            with torch.no_grad():
                                return block(x)

                        yield f"{name} {form} {dtype_name(dtype)} N={batch} {layout}", forward
