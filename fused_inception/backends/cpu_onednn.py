"""oneDNN convolutions for the CPU backend's float32 path.

Why oneDNN and not torch.mm / addmm: torch's CPU GEMMs go to MKL, and MKL runs its AVX2 code on
AMD processors, while oneDNN (which torch also ships) JIT-compiles AVX-512 kernels for the CPU it
finds. Measured on this project's CI machine (2 AMD EPYC cores with AVX-512, 1 thread, fp32):
the 1x1 GEMM of block 4e at batch 8 ([1568, 528] x [528, 448]) 6.4 ms with addmm, 2.8 ms as a
oneDNN 1x1 convolution; torch.bmm of the Winograd GEMMs 25-50 GMAC/s against oneDNN's direct
3x3 convolution at about 130 GMAC/s, so direct convolutions beat Winograd F(2x2, 3x3) there.
And F.conv2d does not take oneDNN for a 1x1 convolution with one thread and batch < 16 (torch's
heuristic sends it to its im2col + MKL path), so the operator is called directly.

The operator is `torch.ops.mkldnn._convolution_pointwise` (the one torch.compile's CPU backend
emits for convolutions): NHWC in, NHWC out, bias in its epilogue. Weights can be
reordered once into oneDNN's blocked layout for a given input shape (`reorder`), which saves
the per-call reorder that dominates at batch 1; a weight in the plain layout is reordered on
every call, which is what training does (its weights change every step).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Off: the CPU backend takes its other float32 path (addmm GEMMs, Winograd where it pays);
# tests switch it to cover both paths.
ENABLED = True
# Reordered weights are kept for this many input shapes per packed block (oldest dropped).
MAX_SHAPES = 4


def available(dtype: torch.dtype) -> bool:
    """True if the oneDNN path can run `dtype` here (float32, oneDNN built in and enabled)."""
    return (
        ENABLED
        and dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
    )


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


def reorder(weight: Tensor, input_shape: tuple[int, int, int, int]) -> Tensor:
    """weight [Cout, Cin, K, K] float32 reordered for inputs of `input_shape` (an opaque oneDNN
    tensor; zero padding K // 2, stride 1)."""
    pad = weight.shape[-1] // 2
    return torch._C._nn.mkldnn_reorder_conv2d_weight(
        weight.contiguous().to_mkldnn(), [pad, pad], [1, 1], [1, 1], 1, list(input_shape)
    )


def conv(x_nhwc: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """conv2d(x, weight, bias, stride 1, zero padding K // 2) by oneDNN, bias in its epilogue.

    The ReLU is left to the caller's copy into the output slice (torch.clamp_min): oneDNN's
    fused ReLU maps NaN to 0, where torch's ReLU (and so torchvision's block) keeps NaN.

    x_nhwc: [N, Cin, H, W] float32, channels_last-contiguous
    weight: [Cout, Cin, K, K] (conv_weight or reorder)
    bias:   [Cout]
    Returns [N, Cout, H, W] channels_last.
    """
    pad = weight.shape[-1] // 2
    return torch.ops.mkldnn._convolution_pointwise(
        x_nhwc, weight, bias, [pad, pad], [1, 1], [1, 1], 1, "none", [], ""
    )


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

    def get(self, name: str, input_shape: tuple[int, ...]) -> Tensor:
        key = (name, tuple(input_shape))
        if key not in self._reordered:
            if len(self._reordered) >= MAX_SHAPES * len(self.plain):
                self._reordered.pop(next(iter(self._reordered)))
            self._reordered[key] = None
            return self.plain[name]
        weight = self._reordered[key]
        if weight is None:
            weight = self._reordered[key] = reorder(self.plain[name], input_shape)
        return weight


def relu_channels_last(t: Tensor) -> Tensor:
    """relu(t) as a new channels_last-contiguous tensor (t: a channel slice of one)."""
    out = torch.empty_like(t, memory_format=torch.channels_last)
    return torch.clamp_min(t, 0, out=out)
