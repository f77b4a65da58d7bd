"""GoogLeNet (Szegedy et al., CVPR 2015) in two forms, built from the reference Inception block.

- variant="paper": the network of the paper's Table 1 and section 5, as Caffe's
  bvlc_googlenet implements it: conv + bias -> ReLU units (no BatchNorm), two LRN layers in
  the stem, 5x5 convolutions in branch3, a 7x7 average pool and auxiliary heads that pool
  5x5/3. Defined for 224x224 input (the 7x7 average pool must see a 7x7 map).
- variant="torchvision": torchvision's GoogLeNet re-written here (BasicConv2d units with
  BatchNorm, 3x3 convolutions in branch3 -- torchvision's kept bug, its issue #906 --, a 2x2
  maxpool4, adaptive pools). Module names, registration order and state_dict keys are those of
  `torchvision.models.googlenet(aux_logits=True)`, so its weights load with strict=True and
  the forward gives identical outputs; with init_weights=True and the same torch.manual_seed
  the initial weights are identical too.

Both use `reference.Inception` for the nine blocks (configs in `configs.GOOGLENET_BLOCKS`), so
`fuse_inception` finds and swaps them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .configs import GOOGLENET_BLOCKS
from .reference import ConvUnit, Inception

VARIANTS = ("paper", "torchvision")

# Caffe bvlc_googlenet's pool1/norm1 and conv2/norm2: lrn_param {local_size: 5, alpha: 0.0001,
# beta: 0.75} with Caffe's default k = 1 (AlexNet's values). Caffe and nn.LocalResponseNorm both
# compute x / (k + alpha / size * sum of squares over `size` channels) ** beta.
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75
LRN_K = 1.0

_DEFAULT_DROPOUT = {"paper": 0.4, "torchvision": 0.2}
_AUX_CONV_CHANNELS = 128  # both forms: 1x1 conv to 128 channels, pooled to 4x4, FC 1024
_AUX_POOLED_HW = 4
_AUX_HIDDEN = 1024
_STEM_CHANNELS = 64  # conv1 and the 1x1 reduction before conv 3x3 (Table 1)


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs when auxiliary heads exist; torchvision's field order.

    logits:      [N, num_classes]  main classifier
    aux_logits2: [N, num_classes]  head on inception4d's output
    aux_logits1: [N, num_classes]  head on inception4a's output
    """

    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class InceptionAux(nn.Module):
    """Auxiliary classifier (training only): pool to 4x4 -> 1x1 conv 128 -> FC 1024 -> linear.

    x:   [N, Cin, H, W] (14x14 at 224 input)
    out: [N, num_classes]

    `pool` is the paper's nn.AvgPool2d(5, stride=3) or torchvision's adaptive 4x4 pool; `norm`
    picks the unit form (BN or conv+bias). Registration order conv, fc1, fc2, dropout matches
    torchvision's InceptionAux, which keeps initialisation under a seed identical.
    """

    def __init__(
        self, in_channels: int, num_classes: int, *, norm: bool, dropout: float, pool: nn.Module
    ) -> None:
        super().__init__()
        self.pool = pool
        self.conv = ConvUnit(in_channels, _AUX_CONV_CHANNELS, 1, norm)
        self.fc1 = nn.Linear(_AUX_CONV_CHANNELS * _AUX_POOLED_HW**2, _AUX_HIDDEN)
        self.fc2 = nn.Linear(_AUX_HIDDEN, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)
        if x.shape[-2:] != (_AUX_POOLED_HW, _AUX_POOLED_HW):
            raise ValueError(
                f"auxiliary head expects a {_AUX_POOLED_HW}x{_AUX_POOLED_HW} map after pooling "
                f"(14x14 input at 224x224 images), got {tuple(x.shape[-2:])}"
            )
        x = torch.flatten(self.conv(x), 1)
        x = self.dropout(F.relu(self.fc1(x)))
        return self.fc2(x)


class Options(NamedTuple):
    """googlenet()'s arguments, resolved (dropout None replaced by the variant's default)."""

    num_classes: int
    aux_logits: bool
    dropout: float
    dropout_aux: float
    transform_input: bool
    init_weights: bool


class GoogLeNet(nn.Module):
    """Trunk, auxiliary taps and head shared by both variants; subclasses build the stem.

    x:   [N, 3, H, W] (224x224 for the paper variant)
    out: eval, or aux_logits=False: logits [N, num_classes];
         training with aux_logits=True: GoogLeNetOutputs(logits, aux_logits2, aux_logits1).
    """

    aux1: InceptionAux | None
    aux2: InceptionAux | None

    def __init__(self, opts: Options) -> None:
        super().__init__()
        self.aux_logits = opts.aux_logits
        self.transform_input = opts.transform_input
        # Spatial size the head's fixed average pool needs (the paper's 7x7); None: adaptive.
        self._head_hw: int | None = None

    def _add_inception_blocks(self, *, norm: bool, branch3_kernel: int, maxpool4: int) -> None:
        """Register inception3a..5b with maxpool3 before 4a and maxpool4 before 5a."""
        for key, config in GOOGLENET_BLOCKS.items():
            if key == "4a":
                self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            elif key == "5a":
                # The paper (and Caffe) pool 3x3/2 here; torchvision pools 2x2/2. Both give 7x7.
                self.maxpool4 = nn.MaxPool2d(maxpool4, stride=2, ceil_mode=True)
            block = Inception(*config.args(), branch3_kernel=branch3_kernel, norm=norm)
            setattr(self, f"inception{key}", block)

    def _add_aux_heads(self, opts: Options, *, norm: bool, pool: Callable[[], nn.Module]) -> None:
        """Register aux1 (on 4a) and aux2 (on 4d), each with a pool from `pool()`, or None."""
        if not self.aux_logits:
            self.aux1 = None
            self.aux2 = None
            return
        for name, tap in (("aux1", "4a"), ("aux2", "4d")):
            in_channels = GOOGLENET_BLOCKS[tap].out_channels
            head = InceptionAux(
                in_channels, opts.num_classes, norm=norm, dropout=opts.dropout_aux, pool=pool()
            )
            setattr(self, name, head)

    def _stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _transform_input(self, x: Tensor) -> Tensor:
        # torchvision's re-normalisation: input normalised with ImageNet mean/std becomes
        # (x - 0.5) / 0.5 per channel, the scaling its ported GoogLeNet weights expect.
        if not self.transform_input:
            return x
        x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
        x_ch1 = torch.unsqueeze(x[:, 1], 1) * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
        x_ch2 = torch.unsqueeze(x[:, 2], 1) * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
        return torch.cat((x_ch0, x_ch1, x_ch2), 1)

    def forward(self, x: Tensor) -> Tensor | GoogLeNetOutputs:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected input [N, 3, H, W], got {tuple(x.shape)}")
        run_aux = self.training and self.aux_logits
        x = self._stem(self._transform_input(x))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        # Heads run where torchvision runs them, so dropout draws from the RNG in its order.
        aux1 = self.aux1(x) if run_aux and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if run_aux and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        if self._head_hw is not None and x.shape[-2:] != (self._head_hw, self._head_hw):
            raise ValueError(
                f"the average pool expects a {self._head_hw}x{self._head_hw} map after "
                f"inception5b (224x224 input), got {tuple(x.shape[-2:])}"
            )
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if run_aux:
            return GoogLeNetOutputs(x, aux2, aux1)
        return x


class PaperGoogLeNet(GoogLeNet):
    """The paper's GoogLeNet (Table 1; Caffe bvlc_googlenet): conv+bias -> ReLU, LRN, 5x5.

    x: [N, 3, 224, 224] -> see GoogLeNet for outputs. Stage sizes at 224: conv1 112, maxpool1
    56, maxpool2 28, maxpool3 14, maxpool4 7 (Caffe rounds pooled sizes up: ceil_mode=True).
    """

    def __init__(self, opts: Options) -> None:
        super().__init__(opts)
        stem_out = GOOGLENET_BLOCKS["3a"].in_channels
        self.conv1 = _strided(ConvUnit(3, _STEM_CHANNELS, 7, norm=False), stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.lrn1 = _lrn()
        self.conv2_reduce = ConvUnit(_STEM_CHANNELS, _STEM_CHANNELS, 1, norm=False)
        self.conv2 = ConvUnit(_STEM_CHANNELS, stem_out, 3, norm=False)
        self.lrn2 = _lrn()
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_inception_blocks(norm=False, branch3_kernel=5, maxpool4=3)
        self._add_aux_heads(opts, norm=False, pool=lambda: nn.AvgPool2d(5, stride=3))
        self._head_hw = 7
        self.avgpool = nn.AvgPool2d(self._head_hw, stride=1)
        self.dropout = nn.Dropout(p=opts.dropout)
        self.fc = nn.Linear(GOOGLENET_BLOCKS["5b"].out_channels, opts.num_classes)
        if opts.init_weights:
            self._init_caffe()

    def _stem(self, x: Tensor) -> Tensor:
        x = self.lrn1(self.maxpool1(self.conv1(x)))
        x = self.conv2(self.conv2_reduce(x))
        return self.maxpool2(self.lrn2(x))

    def _init_caffe(self) -> None:
        # bvlc_googlenet's fillers: "xavier" weights (Caffe's default FAN_IN variant, i.e.
        # U(+-sqrt(3 / fan_in)) = kaiming_uniform with gain 1), bias 0.2 on every conv and hidden
        # FC so ReLUs start active, bias 0 on the classifiers.
        classifiers = {self.fc} | {h.fc2 for h in (self.aux1, self.aux2) if h is not None}
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, nonlinearity="linear")
                nn.init.constant_(m.bias, 0.0 if m in classifiers else 0.2)


class TorchvisionGoogLeNet(GoogLeNet):
    """torchvision's GoogLeNet: same modules, order, state_dict keys and forward.

    x: [N, 3, H, W], H, W >= 15 (adaptive pools) -> see GoogLeNet for outputs.
    """

    def __init__(self, opts: Options) -> None:
        super().__init__(opts)
        stem_out = GOOGLENET_BLOCKS["3a"].in_channels
        self.conv1 = _strided(ConvUnit(3, _STEM_CHANNELS, 7, norm=True), stride=2)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = ConvUnit(_STEM_CHANNELS, _STEM_CHANNELS, 1, norm=True)
        self.conv3 = ConvUnit(_STEM_CHANNELS, stem_out, 3, norm=True)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self._add_inception_blocks(norm=True, branch3_kernel=3, maxpool4=2)
        pooled = (_AUX_POOLED_HW, _AUX_POOLED_HW)
        self._add_aux_heads(opts, norm=True, pool=lambda: nn.AdaptiveAvgPool2d(pooled))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=opts.dropout)
        self.fc = nn.Linear(GOOGLENET_BLOCKS["5b"].out_channels, opts.num_classes)
        if opts.init_weights:
            # torchvision's init, in its module order, so a seed gives torchvision's weights.
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

    def _stem(self, x: Tensor) -> Tensor:
        x = self.maxpool1(self.conv1(x))
        return self.maxpool2(self.conv3(self.conv2(x)))


def googlenet(
    variant: str = "paper",
    num_classes: int = 1000,
    aux_logits: bool = True,
    dropout: float | None = None,
    dropout_aux: float = 0.7,
    transform_input: bool = False,
    init_weights: bool = True,
) -> GoogLeNet:
    """Build GoogLeNet.

    variant:         "paper" (Table 1, conv+bias, LRN, 5x5 branch3, 224x224 input) or
                     "torchvision" (state_dict- and output-compatible with torchvision's)
    num_classes:     size of the classifiers' outputs
    aux_logits:      build the auxiliary heads on inception4a/4d (used in training mode only)
    dropout:         before the main classifier; None picks the variant's own (paper 0.4,
                     torchvision 0.2)
    dropout_aux:     in the auxiliary heads (0.7 in both)
    transform_input: re-normalise ImageNet-normalised input as torchvision's ported weights expect
    init_weights:    paper: Caffe's xavier/0.2-bias fillers; torchvision: its truncated normal
                     (std 0.01). False keeps PyTorch's default init. Deterministic under a seed.

    x:   [N, 3, H, W]
    out: logits [N, num_classes], or GoogLeNetOutputs in training mode with aux_logits=True
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    cls = PaperGoogLeNet if variant == "paper" else TorchvisionGoogLeNet
    return cls(
        Options(
            num_classes=num_classes,
            aux_logits=aux_logits,
            dropout=_DEFAULT_DROPOUT[variant] if dropout is None else dropout,
            dropout_aux=dropout_aux,
            transform_input=transform_input,
            init_weights=init_weights,
        )
    )


def googlenet_loss(
    outputs: Tensor | GoogLeNetOutputs, target: Tensor, aux_weight: float = 0.3
) -> Tensor:
    """GoogLeNet's training loss: L_main + aux_weight * (L_aux1 + L_aux2), cross entropy each.

    outputs: logits [N, C], or GoogLeNetOutputs (also torchvision's) with [N, C] fields;
             absent auxiliary logits (None) contribute nothing
    target:  [N] class indices
    out:     scalar loss
    """
    if isinstance(outputs, Tensor):
        return F.cross_entropy(outputs, target)
    if not all(hasattr(outputs, f) for f in GoogLeNetOutputs._fields):
        raise TypeError(
            f"outputs must be a Tensor or GoogLeNetOutputs, got {type(outputs).__name__}"
        )
    loss = F.cross_entropy(outputs.logits, target)
    aux = [a for a in (outputs.aux_logits1, outputs.aux_logits2) if a is not None]
    if aux:
        loss = loss + aux_weight * sum(F.cross_entropy(a, target) for a in aux)
    return loss


def _strided(unit: ConvUnit, stride: int) -> ConvUnit:
    # ConvUnit has no stride argument; conv1 is the only strided convolution in GoogLeNet. Its
    # padding (kernel_size // 2 = 3) is what Caffe's conv1/7x7_s2 and torchvision use.
    unit.conv.stride = (stride, stride)
    return unit


def _lrn() -> nn.LocalResponseNorm:
    return nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA, beta=LRN_BETA, k=LRN_K)
