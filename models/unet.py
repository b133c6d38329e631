"""U-Net for 2D and 3D images with padded convolutions, batch norm and InstantDL-style encoder dropout.

The architecture follows Ronneberger et al. (2015) and Çiçek et al. (2016, 3D) with "same" padding so
the output has the input's size. As in InstantDL, dropout sits after the second convolution of every
encoder level (and the bottleneck) by default; ``dropout_at`` moves it to the decoder or before the
head, which makes Monte Carlo samples cheaper (docs/benchmarks.md). The anisotropic 3D variant (for
voxels much longer in z, like 1 x 1 x 2 or coarser) pools and up-samples only in-plane at the first
level, as DeepMIB does, so z is halved one level later than y and x.

Inputs of any size work: :meth:`UNet.forward` pads to the size multiples and crops back. The
padding-free :meth:`UNet.forward_aligned` is what gets exported to ONNX (:meth:`UNet.exported`); the
inference side pads there, so the exported graph stays free of shape arithmetic. Its Monte Carlo graph
(:meth:`UNet.monte_carlo`) takes the number of samples as a second input and runs the part before the
first dropout once per tile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from idl.infer.core.grid import pad_mode
from idl.infer.core.model_info import DROPOUT_PLACES  # where the dropout sits (torch-free)
from idl.models.dropout import MCDropout
from idl.models.freezing import FreezableEncoder
from idl.models.network import WEIGHT_FORMATS, Exportable, MonteCarlo, eval_copy

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
    # where the dropout sits (DROPOUT_PLACES): "encoder" after every encoder level and the bottleneck
    # (InstantDL), "decoder" after the bottleneck and every decoder level, "last" on the last decoder
    # level's features before the 1x1 head only
    dropout_at: str = "encoder"

    def __post_init__(self) -> None:
        if self.dims not in LAYERS:
            raise ValueError(f"dims must be 2 or 3, got {self.dims}")
        if self.dropout_at not in DROPOUT_PLACES:
            places = ", ".join(DROPOUT_PLACES)
            raise ValueError(f"dropout_at must be one of {places}, got {self.dropout_at!r}")
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
    """Two 3x3(x3) conv-BN-ReLU layers, optionally followed by dropout (``drop``, kept apart from the
    convolutions so Monte Carlo sampling can fan out just before it)."""

    def __init__(self, cin: int, cout: int, dropout: float, dims: int) -> None:
        super().__init__()
        conv, norm = LAYERS[dims][:2]
        self.body = nn.Sequential(
            conv(cin, cout, kernel_size=3, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
            conv(cout, cout, kernel_size=3, padding=1, bias=False),
            norm(cout),
            nn.ReLU(inplace=True),
        )
        self.drop = MCDropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor, fan: _Fan | None = None) -> torch.Tensor:
        return self.finish(self.body(x), fan)

    def finish(self, x: torch.Tensor, fan: _Fan | None) -> torch.Tensor:
        """Dropout (Monte Carlo samples fan out here if they have not yet)."""
        if self.drop is None:
            return x
        return self.drop(fan(x) if fan is not None else x)

    def merge(self, up: torch.Tensor, skip: torch.Tensor, fan: _Fan) -> torch.Tensor:
        """``forward(cat([up, skip]))`` when ``up`` holds S samples per tile and ``skip`` one: the
        first convolution is linear, so its skip half runs once per tile and is added to every
        sample (a broadcast, no copies); this is what makes decoder dropout cheap to sample."""
        conv, norm = self.body[0], self.body[1]
        weight, bias = conv.weight, None
        rest = self.body[1:]
        if not norm.training:  # fold the batch norm into both halves (one op less per sample)
            assert norm.running_var is not None and norm.running_mean is not None
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            weight = weight * scale.view(-1, *(1,) * (weight.dim() - 1))
            bias = norm.bias - norm.running_mean * scale
            rest = self.body[2:]
        split = up.shape[1]
        run = nn.functional.conv2d if up.dim() == 4 else nn.functional.conv3d
        ups = run(up, weight[:, :split], padding=1)
        shared = run(skip, weight[:, split:], bias, padding=1)
        x = (fan.per_tile(ups) + shared.unsqueeze(1)).flatten(0, 1)
        return self.finish(rest(x), fan)


class _Fan:
    """Monte Carlo samples along the batch axis, made where the first dropout is met: until then the
    network runs once per tile; there the activation is repeated ``samples`` times, tile by tile, and
    each copy gets its own dropout mask. Skip connections made before stay one per tile."""

    def __init__(self, samples: torch.Tensor) -> None:
        self.count = samples.shape[0]
        self.done = False

    def per_tile(self, x: torch.Tensor) -> torch.Tensor:
        """``(N * S, ...)`` as ``(N, S, ...)``."""
        return x.reshape(-1, self.count, *x.shape[1:])

    def repeat(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1).expand(x.shape[0], self.count, *x.shape[1:]).reshape(-1, *x.shape[1:])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.done:
            return x
        self.done = True
        return self.repeat(x)


class PaddedNetwork(FreezableEncoder, Exportable):
    """What idl's fully convolutional networks (the U-Net, SegNet) share: ``(N, C, [Z,] Y, X)`` in,
    ``(N, K, [Z,] Y, X)`` logits out for inputs of any size (padded to ``spec.multiples`` and cropped
    back), a padding-free forward for export and a Monte Carlo forward that takes the number of
    samples. Subclasses build their layers from ``spec`` and compute :meth:`_run`."""

    spec: UNetSpec

    @staticmethod
    def in_encoder(name: str) -> bool:
        """Whether a parameter belongs to the encoder or bottleneck (what ``freeze_encoder`` freezes)."""
        return name.startswith(("encoder", "bottleneck"))

    def forward_aligned(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for an input whose spatial sizes are multiples of ``spec.multiples``."""
        return self._run(x, None)

    def forward_samples(self, x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Monte Carlo logits: ``len(samples)`` samples of each input ``(N, C, ...)``, as
        ``(N * S, K, ...)`` (the samples of the first input first). The part before the first dropout
        runs once per input (with ``dropout_at="last"`` that is all but the 1x1 head), and so do skip
        connections made before it (their share of the decoder's first convolutions too); ``samples``
        only gives the count (its values are not used). Dropout must be in Monte Carlo mode."""
        return self._run(x, samples)

    def _run(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def scale_output(self, factor: float) -> None:
        """Multiply the logits by ``factor`` (a calibration's 1 / temperature, idl.train.calibrate),
        folded into the 1x1 head so every exported graph and weight format has it."""
        with torch.no_grad():
            self.head.weight.mul_(factor)
            if self.head.bias is not None:
                self.head.bias.mul_(factor)

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

    def exported(self) -> nn.Module:
        """The padding-free forward (:meth:`forward_aligned`): the inference side pads."""
        return _Aligned(eval_copy(self)[0]).eval()

    def monte_carlo(self) -> MonteCarlo | None:
        """:meth:`forward_samples` with the number of samples as a second input, or None without
        dropout."""
        net, layers = eval_copy(self, monte_carlo=True)
        return MonteCarlo(_Samples(net).eval(), sample_count=True) if layers else None

    def formats_at_every_size(self) -> tuple[str, ...]:
        """Every format in 2D; ONNX alone in 3D, where PyTorch's runs of the three tile sizes took 5
        minutes of a 2-core CPU (docs/benchmarks.md)."""
        return WEIGHT_FORMATS if self.spec.dims == 2 else ("onnx",)


class UNet(PaddedNetwork):
    """U-Net, ``(N, C, [Z,] Y, X)`` in, ``(N, K, [Z,] Y, X)`` logits out; a
    :class:`~idl.models.network.Network` whose graphs compute the padding-free forward."""

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
        encoder_dropout = spec.dropout if spec.dropout_at == "encoder" else 0.0
        decoder_dropout = spec.dropout if spec.dropout_at == "decoder" else 0.0
        for width in widths[:-1]:
            self.encoder.append(_Level(cin, width, encoder_dropout, spec.dims))
            cin = width
        self.pools = nn.ModuleList(pool(spec.pool_factors(i)) for i in range(spec.depth))
        self.bottleneck = _Level(widths[-2], widths[-1], encoder_dropout or decoder_dropout, spec.dims)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in reversed(range(spec.depth)):
            width, factors = widths[level], spec.pool_factors(level)
            self.up.append(up(width * 2, width, kernel_size=factors, stride=factors))
            self.decoder.append(_Level(width * 2, width, decoder_dropout, spec.dims))
        self.last_drop = MCDropout(spec.dropout) if spec.dropout_at == "last" and spec.dropout > 0 else None
        self.head = LAYERS[spec.dims][0](widths[0], spec.out_channels, kernel_size=1)

    def _run(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        skips: list[tuple[torch.Tensor, bool]] = []  # each with whether it holds the samples
        fan = _Fan(samples) if samples is not None else None
        for level, pool in zip(self.encoder, self.pools, strict=True):
            x = level(x, fan)
            skips.append((x, fan is not None and fan.done))
            x = pool(x)
        x = self.bottleneck(x, fan)
        for up, level, (skip, fanned) in zip(self.up, self.decoder, reversed(skips), strict=True):
            if fan is not None and fan.done and not fanned:
                x = level.merge(up(x), skip, fan)
            else:
                x = level(torch.cat([up(x), skip], dim=1), fan)
        if self.last_drop is not None:
            x = self.last_drop(fan(x) if fan is not None else x)
        elif fan is not None:
            x = fan(x)  # no dropout: every sample is the same
        return self.head(x)


class _Aligned(nn.Module):
    """The deterministic graph's computation: the padding-free forward, logits out."""

    def __init__(self, net: PaddedNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_aligned(x)


class _Samples(nn.Module):
    """The Monte Carlo graph's computation: ``(input, samples)`` -> ``len(samples)`` samples of each
    input (:meth:`PaddedNetwork.forward_samples`)."""

    def __init__(self, net: PaddedNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        return self.net.forward_samples(x, samples)


UNet2D = UNet  # the name 2D code and stored packages use


def build_unet2d(**spec: object) -> UNet:
    """A :class:`UNet` from keyword arguments (the fields of :class:`UNetSpec`, 2D or 3D).

    This is the architecture entry point named in bioimage.io packages, whose ``kwargs`` are plain
    JSON values.
    """
    return UNet(UNetSpec(**spec))  # type: ignore[arg-type]


@dataclass(frozen=True)
class StarDistSpec(UNetSpec):
    """A :class:`StarDistUNet`: a U-Net's spec (``out_channels`` = 1 + the number of rays) and the
    pixels one unit of the distance head stands for (the training objects' typical radius)."""

    distance_scale: float = 1.0


class StarDistUNet(UNet):
    """A U-Net that predicts star-convex polygons (StarDist, Schmidt et al. 2018): ``1 + n`` output
    channels, the object probability (a sigmoid, in the graph) and the distances to the object's edge
    along ``n`` rays (:mod:`idl.infer.post.stardist` turns them into labels on the inference side).

    The distance head works in units of ``spec.distance_scale`` (the typical object radius) and
    starts at one unit: Adam moves a weight by about the learning rate per step, so a head that had
    to grow from 0 to distances of 15 px would need thousands of steps before its first polygon
    fits."""

    builder: ClassVar[str] = "build_stardist"

    def __init__(self, spec: StarDistSpec) -> None:
        super().__init__(spec)
        self.spec: StarDistSpec = spec
        with torch.no_grad():
            self.head.bias[1:] = 1.0

    def _run(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        out = super()._run(x, samples)
        return torch.cat([torch.sigmoid(out[:, :1]), out[:, 1:] * self.spec.distance_scale], dim=1)


def build_stardist(**spec: object) -> StarDistUNet:
    """A :class:`StarDistUNet` from keyword arguments (the fields of :class:`StarDistSpec`): the
    architecture entry point of its bioimage.io packages."""
    return StarDistUNet(StarDistSpec(**spec))  # type: ignore[arg-type]


class FlowUNet(UNet):
    """A U-Net that predicts flow fields (cellpose, Stringer et al. 2021): three output channels, the
    foreground probability (a sigmoid, in the graph) and the two components ``(dy, dx)`` of the unit
    vector towards the object's centre (:mod:`idl.infer.post.flows` turns them into labels on the
    inference side)."""

    builder: ClassVar[str] = "build_flows"

    def _run(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        out = super()._run(x, samples)
        return torch.cat([torch.sigmoid(out[:, :1]), out[:, 1:]], dim=1)


def build_flows(**spec: object) -> FlowUNet:
    """A :class:`FlowUNet` from keyword arguments (the fields of :class:`UNetSpec`): the architecture
    entry point of its bioimage.io packages."""
    return FlowUNet(UNetSpec(**spec))  # type: ignore[arg-type]
