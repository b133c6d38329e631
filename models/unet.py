"""U-Net for 2D and 3D images with padded convolutions, batch norm and InstantDL-style encoder dropout.

The architecture follows Ronneberger et al. (2015) and Çiçek et al. (2016, 3D) with "same" padding so
the output has the input's size. As in InstantDL, dropout sits after the second convolution of every
encoder level (and the bottleneck). The anisotropic 3D variant (for voxels much longer in z, like
1 x 1 x 2 or coarser) pools and up-samples only in-plane at the first level, as DeepMIB does, so z is
halved one level later than y and x.

Inputs of any size work: :meth:`UNet.forward` pads to the size multiples and crops back. The
padding-free :meth:`UNet.forward_aligned` is what gets exported to ONNX; the inference side pads
there, so the exported graph stays free of shape arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from idl.infer.core.grid import pad_mode
from idl.models.dropout import MCDropout
from idl.models.freezing import FreezableEncoder

LAYERS = {
    2: (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.ConvTranspose2d),
    3: (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d, nn.ConvTranspose3d),
}


@dataclass(frozen=True)
class UNetSpec:
    """Everything needed to rebuild a U-Net (stored in checkpoints and model metadata)."""

    in_channels: int = 1
    out_channels: int = 1
    depth: int = 4
    base_filters: int = 16
    dropout: float = 0.2
    dims: int = 2
    anisotropic: bool = False  # 3D only: the first level pools in-plane only

    def __post_init__(self) -> None:
        if self.dims not in LAYERS:
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if self.anisotropic and self.dims != 3:
            raise ValueError("the anisotropic U-Net is 3D")

    def pool_factors(self, level: int) -> tuple[int, ...]:
        """Pooling window of ``level`` (0 = first) per spatial axis."""
        if self.anisotropic and level == 0:
            return (1, 2, 2)
        return (2,) * self.dims

    @property
    def size_multiple(self) -> int:
        """In-plane (y, x) sizes the network accepts without padding are multiples of this."""
        return 2**self.depth

    @property
    def z_multiple(self) -> int:
        """The same for z (3D): one halving fewer in the anisotropic variant."""
        return 2 ** (self.depth - 1) if self.anisotropic else 2**self.depth

    @property
    def multiples(self) -> tuple[int, ...]:
        """Size multiple per spatial axis, (z,) y, x."""
        return ((self.z_multiple,) if self.dims == 3 else ()) + (self.size_multiple,) * 2

    @property
    def halo(self) -> int:
        """In-plane tile halo (px) that makes tiled prediction equal whole-image prediction.

        The 3x3 convolutions reach ``6 * 2**depth - 4`` px to each side (92 px at depth 4) and the
        2x2 pooling/up-sampling grid adds up to 2 px more at tile borders, so ``6 * 2**depth`` (a
        multiple of the size multiple; 96 px at depth 4) reproduces whole-image probabilities exactly,
        while 64 px still left errors up to 8e-3 on trained models (docs/benchmarks.md).
        """
        return 6 * 2**self.depth

    @property
    def z_halo(self) -> int:
        """The halo along z: the same reasoning with z's own multiple."""
        return 6 * self.z_multiple


class _Level(nn.Module):
    """Two 3x3(x3) conv-BN-ReLU layers, optionally followed by dropout."""

    def __init__(self, cin: int, cout: int, dropout: float, dims: int) -> None:
        super().__init__()
        conv, norm = LAYERS[dims][:2]
        layers: list[nn.Module] = [
            conv(cin, cout, kernel_size=3, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
            conv(cout, cout, kernel_size=3, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(MCDropout(dropout))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet(FreezableEncoder):
    """U-Net, ``(N, C, [Z,] Y, X)`` in, ``(N, K, [Z,] Y, X)`` logits out."""

    builder: ClassVar[str] = "build_unet2d"  # the idl.models function a package rebuilds it with

    def __init__(self, spec: UNetSpec) -> None:
        super().__init__()
        if spec.depth < 1:
            raise ValueError(f"U-Net depth must be >= 1, got {spec.depth}")
        self.spec = spec
        _, _, pool, up = LAYERS[spec.dims]
        widths = [spec.base_filters * 2**i for i in range(spec.depth + 1)]
        self.encoder = nn.ModuleList()
        cin = spec.in_channels
        for width in widths[:-1]:
            self.encoder.append(_Level(cin, width, spec.dropout, spec.dims))
            cin = width
        self.pools = nn.ModuleList(pool(spec.pool_factors(i)) for i in range(spec.depth))
        self.bottleneck = _Level(widths[-2], widths[-1], spec.dropout, spec.dims)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(spec.depth)):
            width, factors = widths[level], spec.pool_factors(level)
            self.up.append(up(width * 2, width, kernel_size=factors, stride=factors))
            self.decoder.append(_Level(width * 2, width, 0.0, spec.dims))
        self.head = LAYERS[spec.dims][0](widths[0], spec.out_channels, kernel_size=1)

    @staticmethod
    def in_encoder(name: str) -> bool:
        """Whether a parameter belongs to the encoder or bottleneck (what ``freeze_encoder`` freezes)."""
        return name.startswith(("encoder", "bottleneck"))

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose spatial sizes are multiples of ``spec.multiples``."""
        skips = []
        for level, pool in zip(self.encoder, self.pools, strict=True):
            x = level(x)
            skips.append(x)
            x = pool(x)
        x = self.bottleneck(x)
        for up, level, skip in zip(self.up, self.decoder, reversed(skips), strict=True):
            x = level(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input of any size: reflect-pad to the size multiples, crop back."""
        sizes = x.shape[2:]
        pads = [(-n) % m for n, m in zip(sizes, self.spec.multiples, strict=True)]
        if any(pads):
            edge = any(pad_mode(p, n) == "edge" for p, n in zip(pads, sizes, strict=True) if p)
            flat = [v for p in reversed(pads) for v in (0, p)]  # F.pad wants the last axis first
            x = nn.functional.pad(x, flat, mode="replicate" if edge else "reflect")
        crop = tuple(slice(0, n) for n in sizes)
        return self.forward_aligned(x)[(..., *crop)]


UNet2D = UNet  # the name 2D code and stored packages use


def build_unet2d(**spec: object) -> UNet:
    """A :class:`UNet` from keyword arguments (the fields of :class:`UNetSpec`, 2D or 3D).

    This is the architecture entry point named in bioimage.io packages, whose ``kwargs`` are plain
    JSON values.
    """
    return UNet(UNetSpec(**spec))  # type: ignore[arg-type]
