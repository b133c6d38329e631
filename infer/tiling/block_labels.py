"""The instance labels of a volume predicted block by block (:mod:`idl.infer.tiling.blocks`): the last
step labels it block by block, with bounded memory, ids unique across the volume, and, for every object
narrower than the margin's cap, the labels the whole map would give (:mod:`idl.infer.post.block_labels`
says why).

Two passes over the blocks, each block by block (in this process, or on Dask's workers like the
predictions). The first (:func:`label_step`) labels each block's window (its region and a margin,
grown until the components meeting the region lie inside it, at most ``cap`` voxels per axis), writes
the region's object keys and keeps the objects the block owns (their voxel counts, centroids and mean
scores). Then :func:`assign_step` numbers every object 1..N and writes the objects table, and the
second pass (:func:`ids_step`) turns each region's keys into ids. The first pass is kept per block in
the store, so a last step taken again (after a kill) continues where it stopped.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.io.blocks import PARTS, ArraySpec, BlockStore
from idl.infer.io.disk import atomic_path
from idl.infer.io.formats.ome_zarr import ZarrSink
from idl.infer.post.block_labels import assign_ids, block_objects, keys_to_ids
from idl.infer.post.instance_labels import label_dtype

log = logging.getLogger("idl")

# the margin's cap: at least this many voxels, and as many more as keep a block's window within
# WINDOW_VOXELS (estimated, not measured: some 2.5 GB at the peak of a U-Net's labels, from three
# channels of float32 values, the components, seeds and labels, and the watershed's own arrays).
# Foreground clusters narrower than the cap come out as on the whole map; the 3D nuclei's reach 82
# voxels (docs/benchmarks.md).
MIN_CAP = 32
WINDOW_VOXELS = 2**26


@dataclass(frozen=True)
class LabelPlan:
    """What the labelling of a volume's blocks needs: the space, the blocks' regions, the caps."""

    shape: tuple[int, ...]
    regions: tuple[tuple[slice, ...], ...]
    caps: tuple[int, ...]
    chunks: tuple[int, ...]
    axes: str


def caps_for(shape: Sequence[int], block: Sequence[int], budget: int = WINDOW_VOXELS) -> tuple[int, ...]:
    """The margin's cap per axis: the largest margin (in steps of 8 voxels, at least :data:`MIN_CAP`)
    whose windows hold at most ``budget`` voxels, at most each axis's length."""
    cap = MIN_CAP
    for margin in range(MIN_CAP, max(shape) + 8, 8):
        if math.prod(min(n, b + 2 * margin) for n, b in zip(shape, block, strict=True)) > budget:
            break
        cap = margin
    return tuple(min(n, cap) for n in shape)


def margins(caps: Sequence[int]) -> list[tuple[int, ...]]:
    """The margins tried, smallest first: a quarter of the cap, doubled up to the cap."""
    tried, margin = [], tuple(max(4, c // 4) for c in caps)
    while True:
        margin = tuple(min(m, c) for m, c in zip(margin, caps, strict=True))
        tried.append(margin)
        if margin == tuple(caps):
            return tried
        margin = tuple(2 * m for m in margin)


def grown(region: Sequence[slice], margin: Sequence[int], shape: Sequence[int]) -> tuple[slice, ...]:
    """``region`` grown by ``margin`` on every side, within the volume."""
    return tuple(
        slice(max(0, r.start - m), min(n, r.stop + m)) for r, m, n in zip(region, margin, shape, strict=True)
    )


def label_block(labeller: Any, values: ZarrSink, uncertainty: ZarrSink | None, plan: LabelPlan, index: int):
    """The labelling of block ``index`` (:class:`~idl.infer.post.block_labels.BlockObjects`): its window
    grown until the components meeting its region are whole or the cap is reached."""
    region = plan.regions[index]
    tried = margins(plan.caps)
    for margin in tried:
        window = grown(region, margin, plan.shape)
        labels, foreground, score = labeller(values[(slice(None), *window)])
        scores = [score] if uncertainty is None else [score, uncertainty[window]]
        final = margin == tried[-1] or all(
            w.stop - w.start == n for w, n in zip(window, plan.shape, strict=True)
        )
        found = block_objects(labels, foreground, window, region, plan.shape, plan.caps, final, scores)
        if found is not None:
            return found
    raise AssertionError("the last margin is final")  # pragma: no cover


def objects_rows(stats: np.ndarray, ids: np.ndarray, axes: str, sampled: bool):
    """The objects table (the columns of :func:`~idl.infer.post.instance_labels.objects_table`) from
    the owned objects' sums."""
    import pandas as pd

    area = stats[:, 0]
    table = {"label": ids, "area": area}
    for i, axis in enumerate(axes):
        table[f"centroid_{axis}"] = stats[:, 1 + i] / np.maximum(area, 1)
    table["score"] = stats[:, 1 + len(axes)] / np.maximum(area, 1)
    if sampled:
        table["uncertainty_mean"] = stats[:, 2 + len(axes)] / np.maximum(area, 1)
    return pd.DataFrame(table)


def label_step(labeller: Any, store: BlockStore, plan: LabelPlan, index: int) -> None:
    """The first pass of block ``index`` (``labeller``: a window's values -> labels, foreground, score
    map): its region's object keys written, what it owns kept; nothing when it was kept before."""
    if store.arrays_of(f"labels-{index}") is not None:
        return
    values = store.sink("values", store.folder / "values.zarr")
    uncertainty = (
        store.sink("uncertainty", store.folder / "uncertainty.zarr")
        if "uncertainty" in store.arrays
        else None
    )
    found = label_block(labeller, values, uncertainty, plan, index)
    store.scratch("keys", keys_spec(plan))[plan.regions[index]] = found.keys
    store.save_arrays(f"labels-{index}", owned=found.owned, stats=found.stats, cut=np.array(found.cut))


def keys_spec(plan: LabelPlan) -> ArraySpec:
    """The array of object keys (the first pass's)."""
    return ArraySpec(plan.shape, "int64", plan.axes, plan.chunks)


def labels_left(store: BlockStore, plan: LabelPlan) -> list[int]:
    """The blocks whose first pass is not kept yet."""
    return [i for i in range(len(plan.regions)) if store.arrays_of(f"labels-{i}") is None]


def assign_step(store: BlockStore, plan: LabelPlan, target: Path, objects: Path, scale: Any) -> ZarrSink:
    """Once every block's first pass is kept: the ids of every owned object (kept in the store for
    :func:`ids_step`), the objects table written to ``objects``, and the label image's array created
    in the store (returned, to be closed into ``target`` last)."""
    store.scratch("keys", keys_spec(plan))  # a volume without objects made none
    parts = [store.arrays_of(f"labels-{i}") for i in range(len(plan.regions))]
    if any(part is None for part in parts):
        raise RuntimeError("the labels' first pass is not done for every block")
    sorted_keys, ids = assign_ids([part["owned"] for part in parts])
    total = int(sorted_keys.size)
    store.save_arrays("ids", keys=sorted_keys, ids=ids)
    stats = np.concatenate([np.zeros((0, parts[0]["stats"].shape[1])), *(part["stats"] for part in parts)])
    table = objects_rows(stats, np.arange(1, total + 1), plan.axes, "uncertainty" in store.arrays)
    objects.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(objects) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    cut = sum(int(part["cut"]) > 0 for part in parts)
    if cut:
        log.warning(
            "%s: %d block(s) meet clusters of touching objects wider than %s voxels, labelled block by "
            "block: their objects are cut at block borders (the margin around a block is bounded so its "
            "window stays within %d M voxels; a smaller --block-size leaves room for a wider one)",
            target.name,
            cut,
            " x ".join(map(str, plan.caps)),
            WINDOW_VOXELS // 2**20,
        )
    log.info("%s: %d object(s) labelled block by block", target.name, total)
    dtype = label_dtype(total)
    return ZarrSink(target, plan.shape, dtype, plan.axes, scale, plan.chunks, store.folder / "labels.zarr")


_IDS: dict[tuple[str, int, int, int], dict[str, np.ndarray]] = {}  # per process: the ids table, read once


def _ids(store: BlockStore) -> dict[str, np.ndarray]:
    """The ids table :func:`assign_step` kept, read once per process (it holds every object)."""
    path = store.folder / PARTS / "ids.npz"
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size, stat.st_ino)
    if key not in _IDS:
        _IDS.clear()
        _IDS[key] = store.arrays_of("ids")
    return _IDS[key]


def ids_step(store: BlockStore, plan: LabelPlan, index: int) -> None:
    """The second pass of block ``index``: its region's object keys as ids, into the label image."""
    table = _ids(store)
    labels = store.attach("labels")
    region = plan.regions[index]
    keys = store.scratch("keys", keys_spec(plan))[region]
    labels[region] = keys_to_ids(keys, table["keys"], table["ids"], labels.dtype.type)
