"""oneDNN convolutions for the CPU backend's float32 path.

Why oneDNN and not torch.mm / addmm: torch's CPU GEMMs go to MKL, and MKL runs its AVX2 code on
AMD processors, while oneDNN (which torch also ships) JIT-compiles AVX-512 kernels for the CPU it
finds. Measured on this project's CI machine (2 AMD EPYC cores with AVX-512, 1 thread, fp32):
the 1x1 GEMM of block 4e at batch 8 ([1568, 528] x [528, 448]) 6.4 ms with addmm, 2.8 ms as a
oneDNN 1x1 convolution; torch.bmm of the Winograd GEMMs 25-50 GMAC/s against oneDNN's direct
3x3 convolution at about 130 GMAC/s, so direct convolutions beat Winograd F(2x2, 3x3) on bmm.
(The eval operator's Winograd runs its GEMMs as a grouped oneDNN convolution instead:
cpu_winograd.onednn_winograd_pays; on Intel AVX-512 CPUs, where MKL runs its AVX-512 code, as
one torch.bmm: mkl_winograd.)
And F.conv2d does not take oneDNN for a 1x1 convolution with one thread and batch < 16 (torch's
heuristic sends it to its im2col + MKL path), so the operator is called directly.

The operator is `torch.ops.mkldnn._convolution_pointwise` (the one torch.compile's CPU backend
emits for convolutions): NHWC in, NHWC out, bias in its epilogue. Weights can be
reordered once into oneDNN's blocked layout for a given input shape (`reorder`), which saves
the per-call reorder that dominates at batch 1; a weight in the plain layout is reordered on
every call, which is what training does (its weights change every step).
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import Tensor

from .. import _ext
from .output import output_memory_format

# Off: the CPU backend takes its other float32 path (addmm GEMMs, Winograd where it pays);
# tests switch it to cover both paths.
ENABLED = True
# Reordered weights are kept for this many input shapes per packed block (oldest dropped).
MAX_SHAPES = 4
# Whether the eval operator runs the block's 1x1 convolutions (over x and over the pooled x)
# and its direct KxK ones on the package's own kernel (csrc/cpu/gemm_panels.cpp) instead of
# oneDNN: None decides by the CPU (own_gemm); tests set True or False to cover both paths.
OWN_GEMM: bool | None = None
_HAS_OWN_KERNEL = _ext.has_op("conv_bias_relu_nhwc")  # (asked once: own_gemm runs per forward)


def available(dtype: torch.dtype) -> bool:
    """True if the oneDNN path can run `dtype` here (float32, oneDNN built in and enabled)."""
    return (
        ENABLED
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
    )


# Whether the training backward's 1x1 GEMMs (input and weight gradients of the 1x1
# convolutions, fused_inception/ops.py and bn_training.py) run on torch.mm (MKL's sgemm) rather
# than oneDNN: None decides by the CPU's vendor (mkl_backward); tests set True or False.
MKL_BACKWARD: bool | None = None


@functools.cache
def _intel_cpu() -> bool:
    """Whether the CPU is Intel's (vendor GenuineIntel), from /proc/cpuinfo where it exists."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "GenuineIntel" in line
    except OSError:
        pass
    return "intel" in platform.processor().lower()


def mkl_backward() -> bool:
    """True if the training backward's 1x1 GEMMs run on torch.mm (MKL) rather than oneDNN:
    MKL_BACKWARD, or by default on Intel CPUs. MKL runs its AVX-512 code there, and its sgemm
    took 0.5-0.9x oneDNN's time for every GoogLeNet block's 1x1 input and weight gradients at
    batch 8 (2-core Sapphire Rapids, 2026-12-04: 5b's over x 1.23 against 1.98 ms and 1.23
    against 1.75; oneDNN's input gradient also transposes the weight on every call); on AMD
    CPUs MKL runs its AVX2 code and oneDNN was 1.0-2x faster (this module's docstring)."""
    if MKL_BACKWARD is not None:
        return MKL_BACKWARD
    return _intel_cpu()


def own_gemm() -> bool:
    """True if the eval operator runs every GEMM it can on the package's own kernel, Winograd's
    included (OWN_GEMM, or by default where torch's CPU capability is AVX2, and AVX-512 on CPUs
    that are not Intel's). AVX2: measured on Zen 2 and Zen 3 EPYCs, faster than oneDNN there
    (README "Backends"). AVX-512 on AMD: on a 2-core Zen 5 EPYC (2026-12-08, the benchmark's
    prepared blocks switched per round of calls in one process) the 14x14 blocks took
    0.82-0.98x the time with Winograd's GEMMs on the own kernel against oneDNN's grouped GEMM,
    5a and 5b at batch 8 0.92-0.95x, 3a and 3b 0.98-1.01x, the prepared network 0.87-0.89x at
    batch 1 and 0.90-0.97x at batch 8. Intel AVX-512 CPUs run Winograd's GEMMs on MKL
    (mkl_winograd), measured 1.2-2.1x faster than oneDNN's there; the own kernel is not
    measured against MKL there."""
    if not _HAS_OWN_KERNEL:
        return False
    if OWN_GEMM is not None:
        return OWN_GEMM
    capability = torch.backends.cpu.get_cpu_capability()
    return capability == "AVX2" or (capability == "AVX512" and not _intel_cpu())


def own_gemm_direct() -> bool:
    """True if the eval operator's 1x1 convolutions (over x and over the pooled x) and its
    direct (not Winograd) KxK ones, and a prepared network's 1x1 units and first layers (few
    input channels, e.g. GoogLeNet's conv1), run on the package's own kernel: wherever
    own_gemm() is, and by default (OWN_GEMM None) on AVX-512 CPUs too, where its AVX-512 tiles
    were measured faster than oneDNN (the block's at batch 1 and 8 on a 2-core Sapphire Rapids,
    conv1's on a 2-core Emerald Rapids; README "Backends"). Winograd's GEMMs stay on MKL (or
    oneDNN) on Intel ones (own_gemm() False)."""
    if own_gemm():
        return True
    return (
        OWN_GEMM is None and _HAS_OWN_KERNEL and torch.backends.cpu.get_cpu_capability() == "AVX512"
    )


# Whether the eval operator's own-kernel tiles scatter an NCHW output's slices into their planes
# themselves rather than stage them in NHWC for a transposing copy: None decides by the CPU
# (nchw_scatter); tests set True or False to cover both paths.
NCHW_SCATTER: bool | None = None


def nchw_scatter() -> bool:
    """True if the eval operator's AVX-512 tiles write an NCHW output's slices (b1, b4, direct
    KxKs) by scattering each row's 16 channels into their planes (the operator's nchw_scatter),
    rather than into NHWC staging that a transposing copy moves after (the same bits):
    NCHW_SCATTER, or by default on Intel CPUs. Measured there (a 2-core Emerald Rapids Xeon,
    2026-12-06) 0.95-0.98x the time of staging for 3b, 5a and 5b, the others level; on a 2-core
    Zen 5 EPYC (2026-12-08, the benchmark's prepared blocks on NCHW input, switched per round
    of calls in one process) staging took 0.89-0.98x the time of the scatter at batch 8 (3a,
    3b, 4a, 4d, 4e, 5a, 5b; 4a 0.89x) and 0.94-1.01x at batch 1 (3b 0.94x): AMD's cores run a
    16-lane scatter as microcode. No effect where the tiles are AVX2's (they stage)."""
    if NCHW_SCATTER is not None:
        return NCHW_SCATTER
    return _intel_cpu()


# Whether the eval operator's Winograd GEMMs (its F(2x2, 3x3) and F(4x4, 3x3) branches and a
# prepared network's Winograd unit), where the own kernel does not take them, run as one
# batched matrix product (torch.bmm: MKL's batched SGEMM) rather than oneDNN's grouped 1x1
# convolution: None decides by the CPU (mkl_winograd); tests set True or False.
MKL_WINOGRAD: bool | None = None


def mkl_winograd() -> bool:
    """True if Winograd's GEMMs that the own kernel does not run (own_gemm) run on torch.bmm
    (MKL's batched SGEMM) rather than oneDNN's grouped convolution: MKL_WINOGRAD, or by default
    on Intel CPUs whose torch CPU capability is AVX-512 (where torch has MKL). Measured on a
    2-core Emerald Rapids Xeon (2026-12-06, every GoogLeNet Winograd GEMM shape at batch 1 and
    8, 64 MB written between calls): 1.2-2.1x faster, and no zero fill of M (README "Backends");
    on AMD CPUs MKL runs its AVX2 code (this module's docstring), so those keep oneDNN's.

    Never while torch's float32 matmul precision is reduced (torch.backends.mkldnn.matmul
    .fp32_precision "bf16" or "tf32", which torch.set_float32_matmul_precision("medium") and
    torch.backends.fp32_precision also set): torch.bmm may then round its inputs (with "bf16",
    to bfloat16: 2.6e-3 relative error on 4e's GEMMs here; "tf32" is treated alike), and a
    setting meant for matrix products must not lower a convolution's precision."""
    if MKL_WINOGRAD is not None:
        wanted = MKL_WINOGRAD
    else:
        wanted = (
            torch.backends.mkl.is_available()
            and torch.backends.cpu.get_cpu_capability() == "AVX512"
            and _intel_cpu()
        )
    return wanted and not _matmul_precision_reduced()


# torch's getter behind torch.backends.mkldnn.matmul.fp32_precision (0.3 us against 2 us through
# the attribute: this is read on every eval forward, in the plan policies); None where absent.
_FP32_PRECISION = getattr(torch._C, "_get_fp32_precision_getter", None)


def _matmul_precision_reduced() -> bool:
    """Whether torch may compute a float32 torch.bmm on the CPU in reduced precision."""
    if _FP32_PRECISION is not None:
        precision = _FP32_PRECISION("mkldnn", "matmul")
    else:
        matmul = getattr(torch.backends.mkldnn, "matmul", None)
        precision = getattr(matmul, "fp32_precision", "none")
    return precision not in ("none", "ieee")


def pack_panels(weight: Tensor) -> Tensor:
    """A convolution weight [Cout, Cin, K, K] (or a 1x1's [Cout, Cin]) as the own kernel's
    panels [ceil(Cout / 16), K * K * Cin, 16]: panel p, row (ky * K + kx) * Cin + ci, lane j
    holds weight[16p + j, ci, ky, kx], zero past Cout."""
    w = weight.detach()
    w = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1) if w.dim() == 4 else w
    c_out, k = w.shape
    panels = w.new_zeros((-(-c_out // 16) * 16, k))
    panels[:c_out] = w
    return panels.view(panels.shape[0] // 16, 16, k).transpose(1, 2).contiguous()


def conv_weight(weight: Tensor) -> Tensor:
    """weight [Cout, Cin, K, K] as the plain channels_last tensor the operator reads.

    A contiguous 1x1 weight is already in that order in memory (Cout-major, then Cin): it is
    returned as a view with channels_last strides rather than copied (a training step packs
    its weights on every call; the copy was a fresh weight-sized buffer each time).
    """
    c_out, c_in, kh, kw = weight.shape
    if kh == 1 and kw == 1 and weight.is_contiguous():
        return weight.view(c_out, 1, 1, c_in).permute(0, 3, 1, 2)
    return weight.contiguous(memory_format=torch.channels_last)


def reorder(
    weight: Tensor,
    input_shape: tuple[int, int, int, int],
    padding: tuple[int, int] | None = None,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Tensor:
    """weight [Cout, Cin / groups, kh, kw] float32 reordered into the blocked layout oneDNN picks
    for inputs of `input_shape` and this convolution's geometry (an opaque oneDNN tensor;
    padding None: zero padding K // 2)."""
    padding = _same_padding(weight) if padding is None else padding
    return torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(padding), list(stride), list(dilation), groups, list(input_shape)
    )


def conv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int] | None = None,
    stride: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    groups: int = 1,
) -> Tensor:
    """conv2d(x, weight, bias, stride, zero padding, dilation, groups) by oneDNN, bias in its
    epilogue (padding None: K // 2, "same" for odd K at stride 1).

    The ReLU is left to the caller (torch's clamp_min or relu_): oneDNN's fused ReLU maps NaN
    to 0, where torch's ReLU (and so torchvision's block) keeps NaN.

    x:      [N, Cin, H, W] float32 (channels_last: the output is too)
    weight: [Cout, Cin / groups, kh, kw] (conv_weight, a dense weight, or reorder's)
    bias:   [Cout] or None
    Returns [N, Cout, H', W'].
    """
    padding = _same_padding(weight) if padding is None else padding
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, list(padding), list(stride), list(dilation), groups, "none", [], ""
    )


def _same_padding(weight: Tensor) -> tuple[int, int]:
    return weight.shape[-2] // 2, weight.shape[-1] // 2


class Weights:
    """A block's convolution weights for oneDNN: plain, plus reordered copies per input shape.

    plain: name -> [Cout, Cin, K, K] channels_last; `get(name, input_shape)` returns the
    reordered weight for a shape seen before (the first forward of a shape reorders on the fly,
    as oneDNN does for a plain weight; the second keeps a reordered copy), so a packed block that
    lives for one call (training) never pays for a reorder it would not reuse.
    """

    def __init__(self, plain: dict[str, Tensor]) -> None:
        self.plain = plain
        # (name, input shape) -> its reordered weight, or None after the shape's first use.
        self._reordered: dict[tuple, Tensor | None] = {}
        self._groups: dict[str, int] = {}  # of the derived weights with groups > 1
        self._panels: dict[str, Tensor] = {}  # name -> the own kernel's panels (pack_panels)

    def replace(self, name: str, weight: Tensor) -> None:
        """plain[name] = weight, forgetting what was made from the old one: its panels, its
        reorders and the weights derived from it (the names that start with `name`)."""
        stale = [k for k in self.plain if k != name and k.startswith(name)]
        for k in stale:
            del self.plain[k]
            self._groups.pop(k, None)
        self.plain[name] = weight
        self._panels = {k: v for k, v in self._panels.items() if not k.startswith(name)}
        self._reordered = {k: v for k, v in self._reordered.items() if not k[0].startswith(name)}

    def panels(self, name: str, make=None) -> Tensor:
        """The weight `name` as the own kernel's panels (pack_panels), made on first use; with
        `make`, the tensor `make()` returns (a Winograd-transformed weight's panels or MKL
        matrices), kept the same way."""
        if name not in self._panels:
            self._panels[name] = make() if make is not None else pack_panels(self.plain[name])
        return self._panels[name]

    def derived(self, name: str, make, input_shape: tuple[int, ...], groups: int = 1) -> Tensor:
        """get(name, input_shape) for a weight made from the others on its first use
        (`make()`: e.g. a Winograd-transformed weight) and kept with the plain ones; `groups`
        is its convolution's group count (for the reorder)."""
        if name not in self.plain:
            self.plain[name] = make()
            self._groups[name] = groups
        return self.get(name, input_shape)

    def get(self, name: str, input_shape: tuple[int, ...]) -> Tensor:
        key = (name, tuple(input_shape))
        if key not in self._reordered:
            if len(self._reordered) >= MAX_SHAPES * len(self.plain):
                self._reordered.pop(next(iter(self._reordered)))
            self._reordered[key] = None
            return self.plain[name]
        weight = self._reordered[key]
        if weight is None:
            weight = self._reordered[key] = reorder(
                self.plain[name], input_shape, groups=self._groups.get(name, 1)
            )
        return weight


def relu_channels_last(t: Tensor) -> Tensor:
    """relu(t) as a new channels_last-contiguous tensor (t: a channel slice of one)."""
    out = torch.empty_like(t, memory_format=torch.channels_last)
    return torch.clamp_min(t, 0, out=out)


# The fake kernel of fused_inception::inception_block_onednn (csrc/cpu/block_onednn.cpp, the
# eval block that backends/cpu.py calls), here because this module is imported with the package.
@_ext.register_fake("inception_block_onednn")
def _inception_block_onednn_fake(
    x, w_x, b_x, w2, b2, w3, b3, w_pool, b_pool, c1, c2r, poison, winograd2=False,
    winograd3=False, winograd_tiles=0, direct2=None, direct3=None, scale_x=None, scale2=None,
    scale3=None, scale_pool=None, nchw_scatter=True,
):  # fmt: skip
    n, _, h, w = x.shape
    shape = (n, c1 + b2.shape[0] + b3.shape[0] + b_pool.shape[0], h, w)
    return x.new_empty(shape).contiguous(memory_format=output_memory_format(x))


@_ext.register_fake("conv3x3_relu_winograd")
def _conv3x3_relu_winograd_fake(x, weight, bias, tiles, direct=None, relu=True):
    n, _, h, w = x.shape
    out = x.new_empty((n, bias.shape[0], h, w))
    return out.contiguous(memory_format=output_memory_format(x))


@_ext.register_fake("conv_bias_relu_nhwc")
def _conv_bias_relu_nhwc_fake(x, panels, bias, stride=1, padding=-1, scale=None, stream_bytes=-1):
    n, c, h, w = x.shape
    if panels.dim() == 4:  # a plain weight [Cout, C, K, K]
        k = panels.shape[-1]
    else:
        k = round((panels.shape[1] // c) ** 0.5) if c > 0 else 1
    pad = k // 2 if padding < 0 else padding
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    out = x.new_empty((n, bias.shape[0], oh, ow))
    return out.contiguous(memory_format=torch.channels_last)
