"""Instance labels of a volume labelled block by block: ids unique across the volume, and the labels the
whole map would give.

A U-Net's labels come from a seeded watershed restricted to the foreground: a voxel's label depends only
on the connected foreground component it lies in (its seeds lie inside it, and the flood never leaves
it). So a block labels a window around its region, the region and a margin, and every component that
meets the region and lies wholly inside the window gets there exactly the labels of the whole map. A
component that reaches an open face of the window (one that is not the volume's border) may go on
beyond it: the caller grows the margin (up to a cap, so memory stays bounded) and labels again.

Each object gets a key, the volume's flat index of its first voxel in raster order; the block whose
region holds that voxel owns the object (the voxel is the object's own, so the owner always sees it,
where a non-convex object's centre may lie outside it). Any block that sees the object whole computes
the same key, so the region's voxels are written as keys, and ids come once every block's owned keys
are known: block by block, in key order, counted from 1.

Components wider than the cap on some axis are labelled from what each window holds, as pieces: the
piece of an object inside a block's region gets a key of its own (its first voxel in the region), so
such an object is cut at block borders into objects of unique ids, and the caller says how many. The
rule is the component's extent, which every block measures alike, so blocks never disagree on which
objects are whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# one row per owned object: voxels, then the sums of each coordinate (centroid) and of the scores
STAT_AREA = 0


@dataclass(frozen=True)
class BlockObjects:
    """What one block's labelling gives: ``keys`` over its region (object key + 1, 0 background),
    the keys of the objects it owns (sorted), per owned object the voxel count, coordinate sums and
    score sums (``stats``, rows as ``owned``), and how many components were cut (wider than the cap)."""

    keys: np.ndarray
    owned: np.ndarray
    stats: np.ndarray
    cut: int


def open_faces(window: Sequence[slice], shape: Sequence[int]) -> list[tuple[bool, bool]]:
    """Per axis, whether the window's low and high faces lie inside the volume (the foreground may go
    on beyond them)."""
    return [(w.start > 0, w.stop < n) for w, n in zip(window, shape, strict=True)]


def _touching(components: np.ndarray, faces: Sequence[tuple[bool, bool]]) -> np.ndarray:
    """The component ids on the open faces."""
    found = [np.zeros(0, components.dtype)]
    for axis, (low, high) in enumerate(faces):
        for side, is_open in ((0, low), (-1, high)):
            if is_open:
                found.append(np.unique(np.take(components, side, axis=axis)))
    return np.setdiff1d(np.concatenate(found), [0])


def _first_voxels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels present (sorted) and the flat index (of ``labels``) of each one's first voxel."""
    flat = np.flatnonzero(labels)
    present, first = np.unique(labels.ravel()[flat], return_index=True)
    return present, flat[first]


def _global_keys(flat: np.ndarray, local_shape: Sequence[int], start: Sequence[int], shape: Sequence[int]):
    """Flat indices of ``local_shape`` (placed at ``start`` in a volume of ``shape``) as the volume's."""
    coords = np.unravel_index(flat, tuple(local_shape))
    moved = tuple(c + s for c, s in zip(coords, start, strict=True))
    return np.ravel_multi_index(moved, tuple(shape)).astype(np.int64), moved


def _sums(labels: np.ndarray, which: np.ndarray, start: Sequence[int], scores: Sequence[np.ndarray]):
    """Per label of ``which``: voxels, coordinate sums (volume coordinates: local + ``start``) and the
    sums of each score map, as rows."""
    size = int(max(labels.max(), which.max() if which.size else 0)) + 1
    flat = labels.ravel()
    columns = [np.bincount(flat, minlength=size)]
    grids = np.indices(labels.shape, sparse=True)
    for axis, offset in enumerate(start):
        weight = np.broadcast_to(grids[axis] + offset, labels.shape).ravel()
        columns.append(np.bincount(flat, weights=weight, minlength=size))
    for score in scores:
        columns.append(np.bincount(flat, weights=np.asarray(score, np.float64).ravel(), minlength=size))
    return np.stack(columns, axis=1)[which].astype(np.float64)


def block_objects(
    labels: np.ndarray,
    foreground: np.ndarray,
    window: Sequence[slice],
    region: Sequence[slice],
    shape: Sequence[int],
    caps: Sequence[int],
    final: bool,
    scores: Sequence[np.ndarray] = (),
) -> BlockObjects | None:
    """Keys and owned objects of the block owning ``region`` from the ``labels`` of its ``window`` (both
    in volume coordinates; ``foreground``: the mask the labels were made within; ``scores``: maps over
    the window whose mean per object is wanted). None when a component meeting the region reaches an
    open face and the window may grow (not ``final``); components wider than ``caps`` voxels on some
    axis are cut at the region's border (see the module docstring)."""
    dims = labels.ndim
    local = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window, strict=True))
    start = tuple(w.start for w in window)
    from scipy import ndimage  # imported here: 0.2 s of every idl-predict start, for labels alone

    components = ndimage.label(foreground, structure=np.ones((3,) * dims, bool))[0]
    mine = np.setdiff1d(np.unique(components[local]), [0])
    touching = np.intersect1d(_touching(components, open_faces(window, shape)), mine)
    if touching.size and not final:
        return None
    wide = np.zeros(int(components.max()) + 1, bool)
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is not None and any(b.stop - b.start > c for b, c in zip(box, caps, strict=True)):
            wide[index] = True
    wide[touching] = True
    cut_voxels = wide[components]

    # objects seen whole: keyed by their first voxel in the volume, owned by the block holding it
    whole = np.where(cut_voxels, 0, labels)
    present, first = _first_voxels(whole)
    keys, coords = _global_keys(first, labels.shape, start, shape)
    inside = np.ones(present.size, bool)
    for c, r in zip(coords, region, strict=True):
        inside &= (c >= r.start) & (c < r.stop)
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[present] = keys + 1
    region_keys = lookup[whole[local]]
    owned_keys = [keys[inside]]
    stats = [_sums(whole, present[inside], start, scores)]

    # pieces of cut components: each object's part in the region, keyed by its first voxel there
    pieces = np.where(cut_voxels[local], labels[local], 0)
    present, first = _first_voxels(pieces)
    region_start = tuple(r.start for r in region)
    keys, _ = _global_keys(first, pieces.shape, region_start, shape)
    lookup = np.zeros(int(labels.max()) + 1, np.int64)
    lookup[present] = keys + 1
    region_keys = np.where(pieces > 0, lookup[pieces], region_keys)
    owned_keys.append(keys)
    stats.append(_sums(pieces, present, region_start, [s[local] for s in scores]))

    owned = np.concatenate(owned_keys)
    order = np.argsort(owned, kind="stable")
    cut = int(np.count_nonzero(wide[mine]))
    return BlockObjects(region_keys, owned[order], np.concatenate(stats)[order], cut)


def assign_ids(owned: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1..N for every block's owned keys, block by block in key order: ``(sorted keys, their
    ids)`` for :func:`keys_to_ids`."""
    keys = np.concatenate([np.zeros(0, np.int64), *owned])
    ids = np.arange(1, keys.size + 1, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    if keys.size and np.any(np.diff(keys[order]) == 0):
        raise RuntimeError("two blocks own the same object: the block labels are inconsistent")
    return keys[order], ids[order]


def keys_to_ids(region_keys: np.ndarray, keys: np.ndarray, ids: np.ndarray, dtype: type) -> np.ndarray:
    """A region's keys (key + 1, 0 background) as ids of ``dtype``."""
    out = np.zeros(region_keys.shape, dtype)
    where = region_keys > 0
    wanted = region_keys[where] - 1
    position = np.searchsorted(keys, wanted)
    position = np.minimum(position, max(keys.size - 1, 0))
    if wanted.size and not np.array_equal(keys[position], wanted):
        raise RuntimeError("a block holds an object no block owns: the block labels are inconsistent")
    out[where] = ids[position].astype(dtype)
    return out
