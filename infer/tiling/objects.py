"""Tiled prediction with networks that output label images (Mask R-CNN): each object once.

A label image cannot be stitched pixel by pixel like probabilities: the same nucleus gets a different
number in each tile, and an object cut by a tile's border is a fragment there. So objects are resolved
by ownership: tiles overlap by a halo at least as large as the largest object, each tile owns the
region it covers in the tiling of :mod:`idl.infer.core.grid`, and an object is kept only by the tile that
owns its centre (computed from what the tile sees). An object whose centre a tile owns lies within
the halo of that region, so the tile sees it whole; a fragment at a tile's border has its centre near
that border, i.e. outside the region the tile owns, and is dropped there. Kept objects are written
into one label image, each pixel taken by the first object to claim it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from idl.infer.core.grid import Tile, tile_grid
from idl.infer.core.processing import fit_ops, network_tile
from idl.infer.post.instance_labels import label_dtype
from idl.infer.runtime.iospec import IOSpec

TileRunner = Callable[[np.ndarray], np.ndarray]


def owned_objects(labels: np.ndarray, tile: Tile) -> list[int]:
    """The labels (in tile numbering) of the objects whose centre lies in the region ``tile`` owns."""
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


def predict_instance_tiles(
    run: TileRunner,
    image: Any,
    io: IOSpec,
    tile_size: int,
    halo: int,
    progress: bool = False,
    min_share: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Label image and per-pixel score of a raw channels-last 2D image, tile by tile.

    ``run`` maps a ``(1, C, Y, X)`` normalized tile to ``(1, 2, Y, X)``: labels (0 background) and
    the score of the object owning each pixel. Tiles are normalized with statistics of the whole
    image. Two tiles may each keep their own detection of an object whose centre lies right at the
    border of their regions (the detections differ slightly); an object is therefore dropped when less
    than ``min_share`` of its pixels are still free. Returns ``(labels (Y, X) uint16/uint32, scores
    (Y, X) float32)``.
    """
    spatial, image_axes = io.spatial, io.image_axes
    shape = image.shape[:-1]
    tiles = tile_grid(
        shape, (tile_size,) * len(spatial), (halo,) * len(spatial), [io.sizes[a] for a in spatial]
    )
    pre = fit_ops(io.preprocessing, image, image_axes)
    labels = np.zeros(shape, np.uint32)
    scores = np.zeros(shape, np.float32)
    count = 0
    for tile in tqdm(tiles, unit="tile", disable=not progress, leave=False):
        out = run(network_tile(image, tile.window, pre, image_axes)[np.newaxis])[0]
        inside = tuple(slice(0, min(w.stop, n) - w.start) for w, n in zip(tile.window, shape, strict=True))
        tile_labels = np.rint(out[0]).astype(np.int64)[inside]
        tile_scores = out[1][inside]
        target = tuple(slice(w.start, min(w.stop, n)) for w, n in zip(tile.window, shape, strict=True))
        keep = owned_objects(tile_labels, tile)
        count = paste_objects(
            labels[target], scores[target], tile_labels, tile_scores, keep, count, min_share
        )
    return labels.astype(label_dtype(count), copy=False), scores


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
