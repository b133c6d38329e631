"""Sliding-window tiling with halos: any image size, bounded memory, no seams.

Every output pixel is owned by exactly one tile, and each tile's owned region lies at least ``halo``
pixels away from that tile's borders (except at the image border). With a halo at least as large as the
network's effective receptive field, tiled prediction equals whole-image prediction; no blending is
needed. Tile origins are multiples of the network's size multiple (``2**depth`` for a U-Net), so
pooling windows line up exactly as they would on the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """A 2D tile: the input window and the output region it owns, in image and in tile coordinates."""

    window: tuple[slice, slice]
    owned: tuple[slice, slice]
    owned_in_tile: tuple[slice, slice]


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def pad_mode(pad: int, size: int) -> str:
    """Padding used to reach a size multiple: reflect when possible, edge values for tiny inputs.

    Shared by the torch model and the inference side so both pad identically.
    """
    return "reflect" if pad < size else "edge"


def axis_tiles(size: int, tile: int, halo: int, multiple: int) -> list[AxisTile]:
    """Split one axis of length ``size`` into overlapping tiles.

    The axis is (virtually) padded to a multiple of ``multiple``; tiles are ``tile`` long (rounded to the
    multiple, at most the padded length) and start every ``tile - 2 * halo`` pixels (rounded down to the
    multiple). Neighbouring tiles split their overlap in the middle, so each owned region keeps at least
    ``halo`` pixels of context on both sides.
    """
    if size < 1:
        raise ValueError(f"axis length must be positive, got {size}")
    if tile < 1 or halo < 0 or multiple < 1:
        raise ValueError(f"invalid tiling: tile={tile}, halo={halo}, multiple={multiple}")
    padded = round_up(size, multiple)
    length = min(max(multiple, tile // multiple * multiple), padded)
    stride = (length - 2 * halo) // multiple * multiple
    if length < padded and stride < multiple:
        raise ValueError(
            f"tile size {length} leaves no room for a halo of {halo} pixels on both sides; "
            "use a larger tile or a smaller overlap"
        )
    origins = [0]
    while origins[-1] + length < padded:
        origins.append(min(origins[-1] + stride, padded - length))
    bounds = [0]
    for left, right in zip(origins[:-1], origins[1:], strict=False):
        bounds.append((right + left + length) // 2)
    bounds.append(size)
    return [AxisTile(o, length, bounds[i], bounds[i + 1]) for i, o in enumerate(origins)]


def tile_grid(
    shape: tuple[int, int], tile: tuple[int, int], halo: tuple[int, int], multiple: int
) -> list[Tile]:
    """All 2D tiles covering an image of ``shape`` (row-major order)."""
    rows = axis_tiles(shape[0], tile[0], halo[0], multiple)
    cols = axis_tiles(shape[1], tile[1], halo[1], multiple)
    tiles = []
    for r in rows:
        for c in cols:
            tiles.append(
                Tile(
                    window=(slice(r.origin, r.origin + r.size), slice(c.origin, c.origin + c.size)),
                    owned=(slice(r.start, r.stop), slice(c.start, c.stop)),
                    owned_in_tile=(
                        slice(r.start - r.origin, r.stop - r.origin),
                        slice(c.start - c.origin, c.stop - c.origin),
                    ),
                )
            )
    return tiles


def read_window(image: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """Crop ``window`` from a ``(Y, X, ...)`` image, padding past the bottom/right border.

    Only the last tiles along an axis reach past the border (by less than the size multiple). Their
    padding is taken from the image itself, reflected at its border (or repeating the edge when the
    image is smaller than the padding), exactly as padding the whole image would, so tiled and
    whole-image prediction see the same values.
    """
    overhang = [max(0, w.stop - n) for w, n in zip(window, image.shape[:2], strict=True)]
    if not any(overhang):
        return image[window]
    edge = any(pad_mode(pad, n) == "edge" for pad, n in zip(overhang, image.shape[:2], strict=True) if pad)
    index = []
    for w, n in zip(window, image.shape[:2], strict=True):
        i = np.arange(w.start, w.stop)
        past = i >= n
        i[past] = n - 1 if edge else 2 * (n - 1) - i[past]
        index.append(i)
    return image[np.ix_(*index)]


def smallest_tile(halo: int, multiple: int) -> int:
    """The smallest tile that keeps ``halo`` pixels of context on both sides of its owned region."""
    return round_up(2 * halo + multiple, multiple)
