"""SegNet (Badrinarayanan, Kendall & Cipolla 2017) for 2D semantic segmentation.

An encoder of convolution levels, each followed by 2 x 2 max pooling, and a decoder that mirrors it.
Where the U-Net copies the encoder's features across (skip connections), SegNet's decoder up-samples
with the pooling *switches*: each value goes back to the position its 2 x 2 window's maximum came
from, the other three positions get 0; convolutions then fill in. This is DeepMIB's 2D SegNet, with
idl's levels (two 3 x 3 convolution, batch norm and ReLU layers each), widths and Monte Carlo dropout
places (``spec.dropout_at``; Kendall et al.'s Bayesian SegNet is its dropout sampled at inference).

Unpooling by switches without indices: PyTorch's ``MaxUnpool2d`` has no ONNX conversion in the
TorchScript-based exporter idl uses ("Exporting the operator 'aten::max_unpool2d' to ONNX opset
version 18 is not supported"). :func:`unpool` computes the same from the encoder's features before
pooling: per window, the first position (row by row) that holds the window's maximum, which is the one
``max_pool2d(..., return_indices=True)`` records. It exports as Slice, Equal, Mul and DepthToSpace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from idl.models.dropout import MCDropout
from idl.models.unet import LAYERS, PaddedNetwork, UNetSpec, _Fan, _Level


@dataclass(frozen=True)
class SegNetSpec(UNetSpec):
    """A SegNet: a U-Net's fields (2D only; no anisotropy)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dims != 2:
            raise ValueError("SegNet is 2D; use the U-Net for volumes")

    @property
    def halo(self) -> int:
        """In-plane tile halo (px) that makes tiled prediction equal whole-image prediction.

        Each level's two 3 x 3 convolutions reach 2 px of its own resolution, in the encoder and the
        decoder alike: ``4 (2**depth - 1)`` px of the input (60 px at depth 4). The next multiple of
        the size multiple, ``4 * 2**depth`` (64 px), reproduces whole-image outputs exactly at depths
        2 and 3, and one multiple less does not (tests/models/test_segnet.py); there is no bottleneck,
        so it is less than the U-Net's ``6 * 2**depth``.
        """
        return 4 * 2**self.depth


def _windows(x: torch.Tensor) -> list[torch.Tensor]:
    """The four positions of every 2 x 2 window, row by row: ``(N, C, H/2, W/2)`` each."""
    return [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]


def unpool(values: torch.Tensor, before: torch.Tensor) -> torch.Tensor:
    """``MaxUnpool2d(2)(values, indices)`` where ``indices`` are those of ``max_pool2d(before, 2,
    return_indices=True)``: ``values`` ``(N, C, h, w)`` placed at the position of each 2 x 2 window
    of ``before`` ``(N, C, 2h, 2w)`` that holds its maximum (the first such, row by row), 0 elsewhere."""
    parts = _windows(before)
    top = torch.maximum(torch.maximum(parts[0], parts[1]), torch.maximum(parts[2], parts[3]))
    taken = torch.zeros_like(top)
    placed = []
    for part in parts:
        hit = (part == top).to(values.dtype) * (1 - taken)
        taken = taken + hit
        placed.append(values * hit)
    stacked = torch.stack(placed, dim=2).flatten(1, 2)  # channel c * 4 + window position
    return nn.functional.pixel_shuffle(stacked, 2)


class SegNet(PaddedNetwork):
    """SegNet, ``(N, C, Y, X)`` in, ``(N, K, Y, X)`` logits out; a
    :class:`~idl.models.network.Network` like the U-Net (the same padding, export and Monte Carlo
    graphs)."""

    builder: ClassVar[str] = "build_segnet"

    def __init__(self, spec: SegNetSpec) -> None:
        super().__init__()
        if spec.depth < 1:
            raise ValueError(f"SegNet depth must be >= 1, got {spec.depth}")
        self.spec = spec
        widths = [spec.base_filters * 2**i for i in range(spec.depth)]
        encoder_dropout = spec.dropout if spec.dropout_at == "encoder" else 0.0
        decoder_dropout = spec.dropout if spec.dropout_at == "decoder" else 0.0
        self.encoder = nn.ModuleList()
        cin = spec.in_channels
        for width in widths:
            self.encoder.append(_Level(cin, width, encoder_dropout, 2))
            cin = width
        self.decoder = nn.ModuleList(
            _Level(widths[level], widths[max(level - 1, 0)], decoder_dropout, 2)
            for level in reversed(range(spec.depth))
        )
        self.last_drop = MCDropout(spec.dropout) if spec.dropout_at == "last" and spec.dropout > 0 else None
        self.head = LAYERS[2][0](widths[0], spec.out_channels, kernel_size=1)

    def _run(self, x: torch.Tensor, samples: torch.Tensor | None) -> torch.Tensor:
        switches: list[tuple[torch.Tensor, bool]] = []  # pooled features, with whether they hold samples
        fan = _Fan(samples) if samples is not None else None
        for level in self.encoder:
            x = level(x, fan)
            switches.append((x, fan is not None and fan.done))
            x = nn.functional.max_pool2d(x, 2)
        for level, (before, fanned) in zip(self.decoder, reversed(switches), strict=True):
            if fan is not None and fan.done and not fanned:
                before = fan.repeat(before)
            x = level(unpool(x, before), fan)
        if self.last_drop is not None:
            x = self.last_drop(fan(x) if fan is not None else x)
        elif fan is not None:
            x = fan(x)  # no dropout: every sample is the same
        return self.head(x)


def build_segnet(**spec: object) -> SegNet:
    """A :class:`SegNet` from keyword arguments (the fields of :class:`SegNetSpec`): the architecture
    entry point of its bioimage.io packages."""
    return SegNet(SegNetSpec(**spec))  # type: ignore[arg-type]
