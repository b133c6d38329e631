"""Sliding-window tiling with halos: any image size, bounded memory, no seams.

Every output pixel is owned by exactly one tile, and each tile's owned region lies at least ``halo``
pixels away from that tile's borders (except at the image border). With a halo at least as large as the
network's effective receptive field, tiled prediction equals whole-image prediction; no blending is
needed. Tile origins are multiples of the network's size multiple (``2**depth`` for a U-Net), so
pooling windows line up exactly as they would on the whole image.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis: model input ``[origin, origin + size)``, owned output ``[start, stop)``."""

    origin: int
    size: int
    start: int
    stop: int


@dataclass(frozen=True)
class Tile:
    """An N-D tile: the input window and the output region it owns, in image and in tile coordinates."""

    window: tuple[slice, ...]
    owned: tuple[slice, ...]
    owned_in_tile: tuple[slice, ...]


@dataclass(frozen=True)
class AxisSize:
    """Sizes a network accepts along one axis: ``minimum + k * step`` (``step`` 0: only ``minimum``).

    Tile origins are multiples of ``step`` so pooling windows line up as on the whole image.
    """

    minimum: int
    step: int

    def at_least(self, n: int) -> int:
        """The smallest accepted size >= ``n`` (for a fixed size: ``n`` itself when larger)."""
        if self.step == 0:
            return max(n, self.minimum)
        return self.minimum + round_up(max(0, n - self.minimum), self.step)

    def at_most(self, n: int) -> int:
        """The largest accepted size <= ``n``, but at least ``minimum``."""
        if self.step == 0:
            return self.minimum
        return self.minimum + max(0, (n - self.minimum) // self.step) * self.step

    @property
    def align(self) -> int:
        return self.step or 1


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_mode(pad: int, size: int) -> str:
    """Padding used to reach a size multiple: reflect when possible, edge values for tiny inputs.

    Shared by the torch model and the inference side so both pad identically.
    """
    return "reflect" if pad < size else "edge"


def axis_tiles(size: int, tile: int, halo: int, multiple: int | AxisSize) -> list[AxisTile]:
    """Split one axis of length ``size`` into overlapping tiles.

    ``multiple`` is the network's size rule (an int ``m`` means sizes ``m, 2m, ...``). The axis is
    (virtually) padded to the smallest accepted size; tiles have the largest accepted size up to
    ``tile`` and start every ``tile - 2 * halo`` pixels (rounded down to the step). Neighbouring
    tiles split their overlap in the middle, so each owned region keeps at least ``halo`` pixels of
    context on both sides.
    """
    rule = multiple if isinstance(multiple, AxisSize) else AxisSize(multiple, multiple)
    if size < 1:
        raise ValueError(f"axis length must be positive, got {size}")
    if tile < 1 or halo < 0 or rule.minimum < 1 or rule.step < 0:
        raise ValueError(f"invalid tiling: tile={tile}, halo={halo}, sizes={rule}")
    padded = rule.at_least(size)
    length = min(rule.at_most(tile), padded)
    stride = (length - 2 * halo) // rule.align * rule.align
    if length < padded and stride < rule.align:
        raise ValueError(
            f"tile size {length} leaves no room for a halo of {halo} pixels on both sides; "
            "use a larger tile or a smaller overlap"
        )
    origins = _origins(padded, length, stride)
    # as many tiles, each only as long as needed: a 696 px axis takes two 400 px tiles, not two of
    # 512 (tiles a little larger than the image would nearly double the work)
    if len(origins) > 1 and rule.step:
        shorter = rule.at_least(-(-(padded + 2 * halo * (len(origins) - 1)) // len(origins)))
        short_stride = (shorter - 2 * halo) // rule.align * rule.align
        if shorter < length and short_stride >= rule.align:
            candidate = _origins(padded, shorter, short_stride)
            if len(candidate) == len(origins):
                origins, length = candidate, shorter
    bounds = [0]
    for left, right in zip(origins[:-1], origins[1:], strict=False):
        bounds.append((right + left + length) // 2)
    bounds.append(size)
    return [AxisTile(o, length, bounds[i], bounds[i + 1]) for i, o in enumerate(origins)]


def _origins(padded: int, length: int, stride: int) -> list[int]:
    """Tile starts every ``stride`` px, the last one flush with the (padded) end."""
    origins = [0]
    while origins[-1] + length < padded:
        origins.append(min(origins[-1] + stride, padded - length))
    return origins


def tile_grid(
    shape: tuple[int, ...],
    tile: tuple[int, ...],
    halo: tuple[int, ...],
    multiple: int | Sequence[int | AxisSize],
) -> list[Tile]:
    """All tiles covering an N-D image of ``shape`` (row-major order)."""
    rules = [multiple] * len(shape) if isinstance(multiple, int) else list(multiple)
    per_axis = [axis_tiles(*args) for args in zip(shape, tile, halo, rules, strict=True)]
    tiles = []
    for combo in itertools.product(*per_axis):
        tiles.append(
            Tile(
                window=tuple(slice(t.origin, t.origin + t.size) for t in combo),
                owned=tuple(slice(t.start, t.stop) for t in combo),
                owned_in_tile=tuple(slice(t.start - t.origin, t.stop - t.origin) for t in combo),
            )
        )
    return tiles


def read_window(image: Any, window: tuple[slice, ...]) -> np.ndarray:
    """Crop ``window`` from a ``(Y, X, ...)`` or ``(Z, Y, X, ...)`` image, padding past the far border.

    ``image`` may be a numpy array or a lazy array (basic slicing only): one block is read.
    Only the last tiles along an axis reach past the border (by less than the size multiple). Their
    padding is taken from the image itself, reflected at its border (or repeating the edge when the
    image is smaller than the padding), exactly as padding the whole image would, so tiled and
    whole-image prediction see the same values.
    """
    shape = image.shape[: len(window)]
    overhang = [max(0, w.stop - n) for w, n in zip(window, shape, strict=True)]
    if not any(overhang):
        return np.asarray(image[window])
    edge = any(pad_mode(pad, n) == "edge" for pad, n in zip(overhang, shape, strict=True) if pad)
    index = []
    for w, n in zip(window, shape, strict=True):
        i = np.arange(w.start, w.stop)
        past = i >= n
        i[past] = n - 1 if edge else 2 * (n - 1) - i[past]
        index.append(i)
    block = np.asarray(image[tuple(slice(int(i.min()), int(i.max()) + 1) for i in index)])
    return block[np.ix_(*(i - i.min() for i in index))]


def smallest_tile(halo: int, multiple: int | AxisSize) -> int:
    """The smallest tile that keeps ``halo`` pixels of context on both sides of its owned region."""
    rule = multiple if isinstance(multiple, AxisSize) else AxisSize(multiple, multiple)
    return rule.at_least(2 * halo + rule.align)


class PaddedView:
    """A channels-last image seen padded by ``pad`` pixels on both sides of each space axis, as
    ``numpy.pad(image, ..., mode)`` would pad it, without padding (or reading) the whole image: each
    slice reads the block it needs, with the part of the border its mirrored pixels come from, and
    pads that block. bioimage.io packages ask for their input to be padded by the halo; this lets
    such a package run on an image read window by window. Basic slicing within the padded shape only
    (:func:`read_window` handles tiles reaching past it)."""

    MODES = ("symmetric", "reflect", "edge", "constant")

    def __init__(self, image: Any, pad: Sequence[int], mode: str, value: float = 0.0) -> None:
        if mode not in self.MODES:
            raise ValueError(f"padding mode must be one of {', '.join(self.MODES)}, got {mode}")
        self.image, self.pad, self.mode, self.value = image, tuple(pad), mode, value
        space = len(self.pad)
        self.shape = (
            *(n + 2 * p for n, p in zip(image.shape[:space], self.pad, strict=True)),
            *image.shape[space:],
        )
        self.dtype = np.dtype(image.dtype)
        self.ndim = len(self.shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        space = len(self.pad)
        read, widths, crops = [], [], []
        sides = zip(index[:space], self.image.shape[:space], self.pad, self.shape[:space], strict=True)
        for s, n, p, full in sides:
            start, stop, _ = s.indices(full)
            before, after = max(0, p - start), max(0, stop - p - n)  # padded positions on each side
            low, high = max(0, start - p), min(n, stop - p)
            if before or after:  # the border its mirrored pixels come from
                low, high = (0, n) if max(before, after) >= n else (low, high)
                if before:
                    low, high = 0, max(high, min(n, before + 1))
                if after:
                    low, high = min(low, max(0, n - after - 1)), n
            read.append(slice(low, high))
            widths.append((before, after))
            offset = start - p - (low - before)
            crops.append(slice(offset, offset + stop - start))
        block = np.asarray(self.image[tuple(read)])
        rest = [(0, 0)] * (block.ndim - space)
        extra = {"constant_values": self.value} if self.mode == "constant" else {}
        padded = np.pad(block, [*widths, *rest], mode=self.mode, **extra)
        return padded[(*crops, *index[space:])]
