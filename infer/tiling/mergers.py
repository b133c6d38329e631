"""Mergers: what the tile loop (:mod:`idl.infer.tiling.engine`) does with each tile's output.

The loop hands every merger the network's output for one tile (the draws of that tile: one for a
deterministic pass, several Monte Carlo samples), asks whether the tile needs more draws, closes the
tile and, at the end, asks for the result. A merger knows nothing of tasks: a task picks mergers
(class masks from probabilities written in memory or to a TIFF sink, Monte Carlo statistics, objects
kept by the tile that owns their centre), so a new way of assembling outputs is one class here.

- :class:`Placed`: the region a tile owns, into an array in memory or any array-like sink (a TIFF or
  OME-Zarr file written tile by tile), in output coordinates (:class:`OutputGrid`: scaled outputs,
  the input's padding cropped off);
- :class:`NonFinite`: NaN where an input pixel was not finite, around another placer;
- :class:`MonteCarlo`: the mean and an uncertainty map of a tile's samples (split into halves, so a
  tile may stop early once its map is settled), placed by two placers;
- :class:`Objects`: label images from a network that outputs labels (Mask R-CNN), each object kept by
  the tile that owns its centre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from idl.infer.core.errors import ModelError
from idl.infer.core.grid import Tile
from idl.infer.post.uncertainty import SplitHalves


class Merger(Protocol):
    """What the tile loop needs of a merger."""

    def add(self, tile: Tile, values: np.ndarray) -> None:
        """Take the output of ``tile``: ``(S, K, *tile)``, S draws (1 without Monte Carlo)."""

    def settled(self, tile: Tile) -> bool:
        """Whether ``tile`` needs no more draws (asked only while drawing Monte Carlo samples)."""

    def close(self, tile: Tile) -> None:
        """``tile`` is done: no more draws come for it."""

    def finalize(self) -> Any:
        """The merged result (an array, a sink, or what the merger makes)."""


def whole_pixels(value: float, label: str) -> int:
    """An input coordinate times an output's scale, which must be a whole output pixel."""
    if abs(value - round(value)) > 1e-6:
        raise ModelError(
            f"output '{label}': an input pixel falls inside an output pixel (at {value:g}); choose a "
            "--tile-size that is a multiple of the scale, or one larger than the image to run it whole."
        )
    return round(value)


@dataclass(frozen=True)
class OutputGrid:
    """Where a tile's owned region lands in one output: ``scale`` output pixels per input pixel per
    axis, the input's ``shape`` (padded) and ``padding`` (input pixels on each side, cropped off), the
    output's ``length`` per axis once cropped. Owned bounds between tiles map to output pixels by
    rounding down, the same for both neighbours, so the output is covered once."""

    shape: tuple[int, ...]
    length: tuple[int, ...]
    scale: tuple[float, ...] = ()
    padding: tuple[int, ...] = ()
    label: str = "output"

    def regions(self, tile: Tile) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """``(into, take)``: the owned part of the tile's output (``take``, tile coordinates) and where
        it goes (``into``, output coordinates), per space axis."""
        into, take = [], []
        scales = self.scale or (1.0,) * len(self.shape)
        pads = self.padding or (0,) * len(self.shape)
        for window, owned, n, length, s, pad in zip(
            tile.window, tile.owned, self.shape, self.length, scales, pads, strict=True
        ):
            if s == 1.0:
                origin, begin, end = window.start, owned.start, owned.stop
            else:
                origin = whole_pixels(window.start * s, self.label)
                begin = math.floor(owned.start * s + 1e-9)
                end = math.floor(n * s + 1e-9) if owned.stop >= n else math.floor(owned.stop * s + 1e-9)
            shift = whole_pixels(pad * s, self.label) if pad else 0
            low, high = max(begin, shift), min(end, shift + length)  # the padding cropped off
            high = max(low, high)
            into.append(slice(low - shift, high - shift))
            take.append(slice(low - origin, high - origin))
        return tuple(into), tuple(take)

    def owned(self, tile: Tile, values: np.ndarray) -> np.ndarray:
        """The owned part of ``values`` ``(..., *tile)`` (leading axes kept)."""
        _, take = self.regions(tile)
        lead = (slice(None),) * (values.ndim - len(take))
        return values[(*lead, *take)]


@dataclass
class Placed:
    """Each tile's owned region into ``target``: an array (or array-like sink) of the output's shape,
    ``(K, *spatial)`` when ``channels``, else ``(*spatial)``. Without a target, an in-memory float32
    array is made on the first tile (then K is known)."""

    grid: OutputGrid
    target: Any = None
    channels: bool = True

    def place(self, tile: Tile, region: np.ndarray) -> None:
        """Write the already owned ``region`` (``(K, *owned)``, or ``(*owned)`` for a target without
        channels, which takes channel 0 of a ``(1, *owned)`` region) of ``tile``."""
        into, _ = self.grid.regions(tile)
        if not self.channels and region.ndim > len(into):
            region = region[0]
        if self.target is None:
            lead = (region.shape[0],) if self.channels else ()
            self.target = np.empty((*lead, *self.grid.length), np.float32)
        lead = (slice(None),) if self.channels else ()
        self.target[(*lead, *into)] = region

    def add(self, tile: Tile, values: np.ndarray) -> None:
        self.place(tile, self.grid.owned(tile, values[0]))

    def settled(self, tile: Tile) -> bool:
        return True

    def close(self, tile: Tile) -> None:
        pass

    def finalize(self) -> Any:
        return self.target


@dataclass
class NonFinite:
    """A placer whose regions are NaN where the input pixel was not finite: ``bad(region)`` gives
    the non-finite input pixels of an output region (output coordinates, those of the unpadded input
    for an output of the input's size), or None (the rule of :mod:`idl.infer.core.nonfinite`)."""

    inner: Placed
    bad: Callable[[tuple[slice, ...]], np.ndarray | None]

    def place(self, tile: Tile, region: np.ndarray) -> None:
        mask = self.bad(self.inner.grid.regions(tile)[0])
        if mask is not None and mask.any():
            region = np.where(mask, np.float32(np.nan), region)
        self.inner.place(tile, region)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        self.place(tile, self.inner.grid.owned(tile, values[0]))

    def settled(self, tile: Tile) -> bool:
        return True

    def close(self, tile: Tile) -> None:
        pass

    def finalize(self) -> Any:
        return self.inner.finalize()


@dataclass
class MonteCarlo:
    """Monte Carlo samples of each tile: their mean placed by ``mean`` and the uncertainty ``map``
    (:data:`idl.infer.post.uncertainty.MAPS`) by ``spread``. The samples are dealt into two halves, so
    with a ``tolerance`` a tile is settled once its map's estimated relative error is within it
    (:class:`idl.infer.post.uncertainty.SplitHalves`); ``drawn`` collects each tile's count. The
    ``std`` map is multiplied by ``sigma_scale`` (a regression model's calibration)."""

    mean: Placed | NonFinite
    spread: Placed | NonFinite
    map: str = "instantdl"
    tolerance: float = 0.0
    sigma_scale: float = 1.0
    drawn: list[int] = field(default_factory=list)
    _halves: dict[int, SplitHalves] = field(default_factory=dict)

    def _grid(self) -> OutputGrid:
        return self.mean.inner.grid if isinstance(self.mean, NonFinite) else self.mean.grid

    def add(self, tile: Tile, values: np.ndarray) -> None:
        owned = self._grid().owned(tile, values)
        halves = self._halves.get(id(tile))
        if halves is None:
            halves = self._halves[id(tile)] = SplitHalves.zeros(
                owned.shape[1:], entropy=self.map == "mutual-information"
            )
        halves.add(owned)

    def settled(self, tile: Tile) -> bool:
        halves = self._halves[id(tile)]
        return self.tolerance > 0 and halves.settled(self.map, self.tolerance)

    def close(self, tile: Tile) -> None:
        halves = self._halves.pop(id(tile))
        self.drawn.append(halves.count)
        moments = halves.combined()
        self.mean.place(tile, moments.mean())
        spread = moments.map(self.map)
        if self.map == "std" and self.sigma_scale != 1.0:
            spread *= np.float32(self.sigma_scale)
        self.spread.place(tile, spread)

    def finalize(self) -> tuple[Any, Any]:
        return self.mean.finalize(), self.spread.finalize()


def owned_objects(labels: np.ndarray, tile: Tile) -> list[int]:
    """The labels (in tile numbering) of the objects whose centre lies in the region ``tile`` owns."""
    from scipy import ndimage  # only networks that output labels need it (a start-up of 20 MB)

    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not ids.size:
        return []
    centres = ndimage.center_of_mass(np.ones(labels.shape), labels, ids)
    owned = tile.owned_in_tile
    return [
        int(k)
        for k, centre in zip(ids, centres, strict=True)
        if all(s.start <= c < s.stop for c, s in zip(centre, owned, strict=True))
    ]


def paste_objects(
    labels: np.ndarray,
    scores: np.ndarray,
    tile_labels: np.ndarray,
    tile_scores: np.ndarray,
    keep: list[int],
    count: int,
    min_share: float = 0.5,
) -> int:
    """Write the objects ``keep`` of a tile into the (view of the) label image and score map on
    pixels no earlier object took, numbering them from ``count + 1``; an object with less than
    ``min_share`` of its pixels free is skipped as a second detection of an object already there.
    Returns the new object count."""
    free = labels == 0
    for k in keep:
        mask = tile_labels == k
        claim = mask & free
        if np.count_nonzero(claim) < min_share * np.count_nonzero(mask):
            continue  # mostly an object already kept from a neighbouring tile: the same one again
        count += 1
        labels[claim] = count
        scores[claim] = tile_scores[claim]
        free &= ~claim
    return count


@dataclass
class Objects:
    """Label images from a network whose output is labels and each pixel's object score (channel 0
    and 1): a label image cannot be stitched pixel by pixel (the same nucleus has another number in
    each tile; an object cut by a tile's border is a fragment there), so each object is kept only by
    the tile that owns its centre. Tiles overlap by a halo at least as large as the largest object, so
    the tile that owns an object's centre sees it whole, and a fragment at a tile's border has its
    centre outside the region that tile owns. Two tiles may each keep their own detection of an object
    whose centre lies right at the border of their regions; an object is dropped when less than
    ``min_share`` of its pixels are still free. Finalizes to ``(labels, scores)``."""

    shape: tuple[int, ...]
    min_share: float = 0.5
    labels: np.ndarray = field(init=False)
    scores: np.ndarray = field(init=False)
    count: int = 0

    def __post_init__(self) -> None:
        self.labels = np.zeros(self.shape, np.uint32)
        self.scores = np.zeros(self.shape, np.float32)

    def add(self, tile: Tile, values: np.ndarray) -> None:
        out = values[0]
        inside = tuple(
            slice(0, min(w.stop, n) - w.start) for w, n in zip(tile.window, self.shape, strict=True)
        )
        tile_labels = np.rint(out[0]).astype(np.int64)[inside]
        target = tuple(slice(w.start, min(w.stop, n)) for w, n in zip(tile.window, self.shape, strict=True))
        self.count = paste_objects(
            self.labels[target],
            self.scores[target],
            tile_labels,
            out[1][inside],
            owned_objects(tile_labels, tile),
            self.count,
            self.min_share,
        )

    def settled(self, tile: Tile) -> bool:
        return True

    def close(self, tile: Tile) -> None:
        pass

    def finalize(self) -> tuple[np.ndarray, np.ndarray]:
        from idl.infer.post.instance_labels import label_dtype  # scipy, for label networks only

        return self.labels.astype(label_dtype(self.count), copy=False), self.scores


@dataclass
class MadeObjects(Objects):
    """Label images from a network whose output is turned into objects by ``make`` (output ``(C,
    ...)`` -> labels and each pixel's object score): the star-convex polygon network's probability
    and distances (:mod:`idl.infer.post.stardist`), or the flow-field network's probability and flows
    (:mod:`idl.infer.post.flows`). Each tile's objects are made from its own output, and, as in
    :class:`Objects`, each object is kept only by the tile that owns its centre, so the image is
    never held as a whole map of all channels. Both make an object from its own pixels' outputs
    alone, so a tile whose halo holds the whole object finds what the whole image does."""

    make: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None

    def add(self, tile: Tile, values: np.ndarray) -> None:
        assert self.make is not None
        labels, scores = self.make(values[0])
        super().add(tile, np.stack([labels.astype(np.float32), scores])[np.newaxis])
