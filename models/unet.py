"""2D U-Net with padded convolutions, batch norm and InstantDL-style encoder dropout.

The architecture follows Ronneberger et al. (2015) with "same" padding so the output has the input's
size. As in InstantDL, dropout sits after the second convolution of every encoder level (and the
bottleneck). Inputs of any size work: :meth:`UNet2D.forward` pads to a multiple of ``2**depth`` and
crops back. The padding-free :meth:`UNet2D.forward_aligned` is what gets exported to ONNX; the inference
side pads there, so the exported graph stays free of shape arithmetic.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch
from torch import nn

from idl.infer.tiling import pad_mode
from idl.models.dropout import MCDropout


@dataclass(frozen=True)
class UNetSpec:
    """Everything needed to rebuild a U-Net (stored in checkpoints and model metadata)."""

    in_channels: int = 1
    out_channels: int = 1
    depth: int = 4
    base_filters: int = 16
    dropout: float = 0.2

    @property
    def size_multiple(self) -> int:
        """Spatial sizes the network accepts without padding are multiples of this."""
        return 2**self.depth

    @property
    def halo(self) -> int:
        """Tile halo (px) that makes tiled prediction equal whole-image prediction.

        The 3x3 convolutions reach ``6 * 2**depth - 4`` px to each side (92 px at depth 4) and the
        2x2 pooling/up-sampling grid adds up to 2 px more at tile borders, so ``6 * 2**depth`` (a
        multiple of the size multiple; 96 px at depth 4) reproduces whole-image probabilities exactly,
        while 64 px still left errors up to 8e-3 on trained models (docs/benchmarks.md).
        """
        return 6 * 2**self.depth


def _conv_block(cin: int, cout: int) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class _Level(nn.Module):
    """Two 3x3 conv-BN-ReLU layers, optionally followed by dropout."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        layers = _conv_block(cin, cout) + _conv_block(cout, cout)
        if dropout > 0:
            layers.append(MCDropout(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet2D(nn.Module):
    """U-Net for 2D images, ``(N, C, H, W)`` in, ``(N, K, H, W)`` logits out."""

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        if spec.depth < 1:
            raise ValueError(f"U-Net depth must be >= 1, got {spec.depth}")
        self.spec = spec
        widths = [spec.base_filters * 2**i for i in range(spec.depth + 1)]
        self.encoder = nn.ModuleList()
        cin = spec.in_channels
        for width in widths[:-1]:
            self.encoder.append(_Level(cin, width, spec.dropout))
            cin = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _Level(widths[-2], widths[-1], spec.dropout)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(width * 2, width, kernel_size=2, stride=2))
            self.decoder.append(_Level(width * 2, width, dropout=0.0))
        self.head = nn.Conv2d(widths[0], spec.out_channels, kernel_size=1)

    def freeze_encoder(self, keep_trainable: Collection[str] = ()) -> int:
        """Stop training the encoder and bottleneck, weights and batch-norm statistics alike, so
        fine-tuning adapts only the decoder and head. Tensors named in ``keep_trainable`` (e.g. a
        first layer that was not in the pretrained weights) keep training. Returns the number of
        frozen parameters."""
        frozen = 0
        for part in ("encoder", "bottleneck"):
            for name, parameter in getattr(self, part).named_parameters(prefix=part):
                if name not in keep_trainable:
                    parameter.requires_grad_(False)
                    frozen += parameter.numel()
        self.train(self.training)
        return frozen

    def train(self, mode: bool = True) -> UNet2D:
        """Switch train/eval mode; frozen batch-norm layers keep their statistics fixed."""
        super().train(mode)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
                module.eval()
        return self

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose height and width are multiples of ``2**depth``."""
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, level, skip in zip(self.up, self.decoder, reversed(skips), strict=False):
            x = level(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input of any size: reflect-pad to a multiple of ``2**depth``, crop back."""
        h, w = x.shape[-2:]
        m = self.spec.size_multiple
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            edge = "edge" in (pad_mode(pad_h, h), pad_mode(pad_w, w))
            mode = "replicate" if edge else "reflect"
            x = nn.functional.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        return self.forward_aligned(x)[..., :h, :w]


def build_unet2d(**spec: object) -> UNet2D:
    """A :class:`UNet2D` from keyword arguments (the fields of :class:`UNetSpec`).

    This is the architecture entry point named in bioimage.io packages, whose ``kwargs`` are plain
    JSON values.
    """
    return UNet2D(UNetSpec(**spec))  # type: ignore[arg-type]
