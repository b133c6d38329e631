"""ResNet image classifiers (torchvision's architecture, no downloaded weights) with Monte Carlo dropout.

InstantDL classifies with a ResNet50. Ours is torchvision's ResNet built with ``weights=None`` and
changed in three places:

- the first convolution takes any number of channels (1 for fluorescence, 3 for RGB, N for stacks);
- every residual block drops out before its last convolution (inside the residual branch, so the
  identity path stays intact), and the classifier drops out before its linear layer. All dropouts
  are :class:`~idl.models.dropout.MCDropout`, so the exported Monte Carlo graph samples them;
- for small inputs (at most 64 px, e.g. 32 x 32 patches) the first convolution is 3 x 3 with stride 1
  instead of 7 x 7 with stride 2, so a 32 px image still has 2 x 2 pixels in the last stage instead
  of 1 x 1. (CIFAR ResNets also drop the max-pool; for ResNet50 that costs 2.6x the time per epoch
  of this stem on CPU, which already costs 2.5x the ImageNet stem.)

The network outputs logits ``(N, classes)``; softmax is applied by idl (and declared as bioimage.io
post-processing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torchvision import models as tv

from idl.models.dropout import MCDropout
from idl.models.freezing import FreezableEncoder
from idl.models.network import Exportable

VARIANTS = {
    "resnet18": tv.resnet18,
    "resnet34": tv.resnet34,
    "resnet50": tv.resnet50,
    "resnet101": tv.resnet101,
}
SMALL_INPUT = 64  # px: inputs up to this side use the resolution-keeping stem


@dataclass(frozen=True)
class ResNetSpec:
    """Everything that defines a classifier's architecture (stored in checkpoints and packages)."""

    in_channels: int
    num_classes: int
    variant: str = "resnet50"
    dropout: float = 0.2
    small_input: bool = False

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown ResNet '{self.variant}'; use one of {', '.join(VARIANTS)}")
        if self.in_channels < 1 or self.num_classes < 2:
            raise ValueError("a classifier needs >= 1 input channel and >= 2 classes")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def _with_dropout(conv: nn.Module, p: float) -> nn.Sequential:
    return nn.Sequential(MCDropout(p), conv)


class ResNetClassifier(FreezableEncoder, Exportable):
    """torchvision ResNet with any input channels, small-input stem and MC dropout (see module doc); a
    :class:`~idl.models.network.Network` exported as its forward (the defaults of
    :class:`~idl.models.network.Exportable`)."""

    builder: ClassVar[str] = "build_resnet"  # the idl.models function a package rebuilds it with

    def __init__(self, spec: ResNetSpec) -> None:
        super().__init__()
        self.spec = spec
        net = VARIANTS[spec.variant](weights=None, num_classes=spec.num_classes)
        if spec.small_input:
            net.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        elif spec.in_channels != 3:
            net.conv1 = nn.Conv2d(spec.in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            for block in stage:
                if isinstance(block, tv.resnet.Bottleneck):
                    block.conv3 = _with_dropout(block.conv3, spec.dropout)
                else:
                    block.conv2 = _with_dropout(block.conv2, spec.dropout)
        net.fc = nn.Sequential(MCDropout(spec.dropout), net.fc)
        self.net = net

    @staticmethod
    def in_encoder(name: str) -> bool:
        """Whether a parameter belongs to the feature extractor (everything but the classifier)."""
        return not name.startswith("net.fc")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, classes)`` for a batch ``(N, C, H, W)`` of normalized images."""
        return self.net(x)

    def scale_output(self, factor: float) -> None:
        """Multiply the logits by ``factor`` (a calibration's 1 / temperature, idl.train.calibrate),
        folded into the last linear layer so every exported graph and weight format has it."""
        linear = self.net.fc[-1]
        with torch.no_grad():
            linear.weight.mul_(factor)
            linear.bias.mul_(factor)


def build_resnet(
    in_channels: int,
    num_classes: int,
    variant: str = "resnet50",
    dropout: float = 0.2,
    small_input: bool = False,
) -> ResNetClassifier:
    """The classifier from keyword arguments: the entry point bioimage.io packages name for their
    ``pytorch_state_dict`` weights."""
    return ResNetClassifier(ResNetSpec(in_channels, num_classes, variant, dropout, small_input))
