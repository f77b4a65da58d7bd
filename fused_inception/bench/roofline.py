"""Work and memory traffic of an Inception block (and of GoogLeNet), and their roofline bound.

The roofline model (Williams, Waterman and Patterson, CACM 2009): a kernel that performs F
floating-point operations and must move B bytes between memory and the chip cannot finish
sooner than max(F / peak_flops, B / peak_bandwidth). Its attainable rate is F divided by that
time, min(peak_flops, (F / B) * peak_bandwidth).

Work counts multiply-adds of the convolutions (2 FLOPs each; max-pool comparisons, bias and
ReLU are not counted, as in the paper's Table 1). Traffic is the fewest bytes each execution
must move, per call of `batch` images:
- fused: read x once, read the weights and biases once (BatchNorm folded into them), write the
  output once; nothing else reaches memory.
- unfused (one kernel per layer, conv + bias + ReLU fused, as cuDNN or a BN-folding compiler
  would do it): the fused traffic plus r2 and r3 (the reduced tensors) written and read back,
  the pooled tensor written and read back, and the four branch outputs written and read back
  by the concatenation. It is still a lower bound: torchvision's eager block also reads x four
  times and runs BatchNorm and ReLU as separate passes.
Element counts are kept per image (activations) and per call (weights) so one Traffic serves
every batch size and dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from fused_inception.bench.peaks import Peak
from fused_inception.configs import BlockConfig
from fused_inception.units import block_units, has_branches


class Traffic(NamedTuple):
    """Multiply-adds and elements moved by one block or network.

    macs_per_image:           multiply-adds per image
    act_elems_fused:          activation elements read + written per image, fused
    act_elems_unfused:        the same, unfused
    weight_elems:             weight and bias elements, read once per call
    """

    macs_per_image: int
    act_elems_fused: int
    act_elems_unfused: int
    weight_elems: int

    def flops(self, batch: int) -> int:
        """Floating-point operations of one call (2 per multiply-add)."""
        return 2 * self.macs_per_image * batch

    def bytes(self, batch: int, itemsize: int, *, fused: bool) -> int:
        """Fewest bytes one call of `batch` images moves, with elements of `itemsize` bytes."""
        act = self.act_elems_fused if fused else self.act_elems_unfused
        return (act * batch + self.weight_elems) * itemsize

    def __add__(self, other: Traffic) -> Traffic:  # type: ignore[override]
        return Traffic(*(a + b for a, b in zip(self, other, strict=True)))


def block_weight_elems(cfg: BlockConfig, branch3_kernel: int = 3) -> int:
    """Weight elements of a block's six convolutions, biases not included.

    Every convolution of the block runs at stride 1 on the block's resolution, so this is also
    its multiply-adds per output pixel (block_macs).
    """
    return (
        cfg.in_channels * (cfg.ch1x1 + cfg.ch3x3red + cfg.ch5x5red + cfg.pool_proj)
        + 3 * 3 * cfg.ch3x3red * cfg.ch3x3
        + branch3_kernel**2 * cfg.ch5x5red * cfg.ch5x5
    )


def block_macs(cfg: BlockConfig, branch3_kernel: int = 3) -> int:
    """Multiply-adds of one block per image at its GoogLeNet spatial size."""
    return cfg.hw * cfg.hw * block_weight_elems(cfg, branch3_kernel)


def block_traffic(cfg: BlockConfig, branch3_kernel: int = 3) -> Traffic:
    """Work and fewest elements moved by one Inception block (see the module docstring)."""
    pixels = cfg.hw * cfg.hw
    x = cfg.in_channels * pixels
    out = cfg.out_channels * pixels
    reduced = (cfg.ch3x3red + cfg.ch5x5red) * pixels
    pooled = cfg.in_channels * pixels
    # One bias per convolution output channel (BatchNorm folds into it): the concatenated
    # output's channels plus the two reductions'.
    biases = cfg.out_channels + cfg.ch3x3red + cfg.ch5x5red
    fused = x + out
    # Written once and read once each: r2/r3, the pooled x, the branch outputs before concat.
    unfused = fused + 2 * reduced + 2 * pooled + 2 * out
    weights = block_weight_elems(cfg, branch3_kernel) + biases
    return Traffic(block_macs(cfg, branch3_kernel), fused, unfused, weights)


def layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one call of a Conv2d or Linear that returned `out` (0 for others).

    Each output element takes one multiply-add per weight of its output channel (or feature):
    Cin/groups * kh * kw for a convolution, in_features for a linear layer.
    """
    if not isinstance(module, (nn.Conv2d, nn.Linear)):
        return 0
    weight = module.weight
    return out.numel() // weight.shape[0] * weight.numel()


def inception_config(module: nn.Module, hw: int) -> tuple[BlockConfig, int]:
    """BlockConfig and branch3 kernel size of a torchvision-style Inception module at `hw`."""
    # block_units' order is BlockConfig's: branch1, branch2 reduce and kxk, branch3 reduce and
    # kxk, branch4's projection.
    convs = [unit.conv for unit in block_units(module)]
    cfg = BlockConfig(convs[0].in_channels, *(conv.out_channels for conv in convs), hw)
    return cfg, convs[4].kernel_size[0]


def network_traffic(model: nn.Module, image_hw: int = 224) -> Traffic:
    """Work and fewest elements moved by a GoogLeNet-like model in eval mode.

    model: torchvision's GoogLeNet (eager Inception blocks; fuse a copy, not this one)

    Inception blocks count as in block_traffic (fused or unfused). Every other layer is one
    kernel: convolutions (BatchNorm folded, ReLU fused), pools and the classifier read their
    input and weights once and write their output once, in both counts. Found with forward
    hooks on one eval forward of a 1-image CPU float32 input.
    """
    total = Traffic(0, 0, 0, 0)
    handles = []
    inner: set[int] = set()

    def block_hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        cfg, k = inception_config(mod, args[0].shape[-1])
        total = total + block_traffic(cfg, k)

    def layer_hook(mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        act = args[0].numel() + out.numel()
        # BatchNorm folds into the conv's weights as one bias per output channel.
        weights = sum(p.numel() for p in mod.parameters(recurse=False))
        if isinstance(mod, nn.Conv2d) and mod.bias is None:
            weights += mod.out_channels
        total = total + Traffic(layer_macs(mod, out), act, act, weights)

    for mod in model.modules():
        if has_branches(mod):
            handles.append(mod.register_forward_hook(block_hook))
            inner.update(id(m) for m in mod.modules())
    for mod in model.modules():
        if id(mod) not in inner and isinstance(
            mod, (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
        ):
            handles.append(mod.register_forward_hook(layer_hook))
    was_training = model.training
    param = next(model.parameters())
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, image_hw, image_hw, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


# The fields roofline_fields fills from the device's peak rates (None without them).
PEAK_FIELDS = (
    "peak_tflops",
    "peak_gbps",
    "bound_ms_fused",
    "bound_ms_unfused",
    "attainable_tflops_fused",
    "attainable_tflops_unfused",
)


class Bound(NamedTuple):
    """Roofline bound of one call: the shortest time and the highest rate it allows."""

    ms: float
    tflops: float


def roofline(flops: int, nbytes: int, peak_tflops: float, peak_gbps: float) -> Bound:
    """max(compute time, memory time) in ms, and the attainable TFLOP/s, for one call."""
    compute_ms = flops / (peak_tflops * 1e12) * 1e3
    memory_ms = nbytes / (peak_gbps * 1e9) * 1e3
    ms = max(compute_ms, memory_ms)
    return Bound(ms, flops / (ms * 1e-3) / 1e12)


def significant(value: float, digits: int = 4) -> float:
    """`value` rounded to `digits` significant digits (the rows' precision)."""
    return float(f"{value:.{digits}g}")


def roofline_fields(traffic: Traffic, batch: int, dtype: torch.dtype, peak: Peak | None) -> dict:
    """The roofline fields of a benchmark row: one call of `batch` images in `dtype`.

    macs_per_image, flops, bytes_fused and bytes_unfused; then the peak rates and the fused and
    unfused bounds and attainable rates (None where the device has no peak).
    """
    flops = traffic.flops(batch)
    bytes_fused = traffic.bytes(batch, dtype.itemsize, fused=True)
    bytes_unfused = traffic.bytes(batch, dtype.itemsize, fused=False)
    fields: dict = {
        "macs_per_image": traffic.macs_per_image,
        "flops": flops,
        "bytes_fused": bytes_fused,
        "bytes_unfused": bytes_unfused,
        **dict.fromkeys(PEAK_FIELDS),
    }
    if peak is not None:
        fused = roofline(flops, bytes_fused, peak.tflops(dtype), peak.gbps)
        unfused = roofline(flops, bytes_unfused, peak.tflops(dtype), peak.gbps)
        fields.update(
            peak_tflops=significant(peak.tflops(dtype)),
            peak_gbps=significant(peak.gbps),
            bound_ms_fused=significant(fused.ms),
            bound_ms_unfused=significant(unfused.ms),
            attainable_tflops_fused=significant(fused.tflops),
            attainable_tflops_unfused=significant(unfused.tflops),
        )
    return fields
