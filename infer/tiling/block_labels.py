"""The instance labels of a volume predicted block by block (:mod:`idl.infer.tiling.blocks`): the last
step labels it block by block, with bounded memory, ids unique across the volume, and, for every object
narrower than the margin's cap, the labels the whole map would give (:mod:`idl.infer.post.block_labels`
says why).

Two passes over the blocks. The first labels each block's window (its region and a margin, grown until
the components meeting the region lie inside it, at most ``cap`` voxels per axis), writes the region's
object keys and keeps the objects the block owns (their voxel counts, centroids and mean scores); the
second turns keys into ids 1..N. The first pass is kept per block in the store, so a last step taken
again (after a kill) continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from idl.infer.io.blocks import ArraySpec, BlockStore
from idl.infer.io.disk import atomic_path
from idl.infer.io.formats.ome_zarr import ZarrSink
from idl.infer.post.block_labels import BlockObjects, assign_ids, block_objects, keys_to_ids
from idl.infer.post.instance_labels import label_dtype

log = logging.getLogger("idl")

# the margin's cap per axis: a quarter of the block, at least this many voxels (objects and clusters of
# touching objects narrower than the cap come out as on the whole map)
MIN_CAP = 32


@dataclass(frozen=True)
class LabelPlan:
    """What the labelling of a volume's blocks needs: the space, the blocks' regions, the caps."""

    shape: tuple[int, ...]
    regions: tuple[tuple[slice, ...], ...]
    caps: tuple[int, ...]
    chunks: tuple[int, ...]
    axes: str


def caps_for(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    """The margin's cap per axis: a quarter of the block side, at least :data:`MIN_CAP`, at most the
    axis."""
    return tuple(min(n, max(MIN_CAP, b // 4)) for n, b in zip(shape, block, strict=True))


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


def label_volume(
    labeller: Any,
    store: BlockStore,
    plan: LabelPlan,
    target: Path,
    objects: Path,
    scale: Any,
    progress: bool,
) -> ZarrSink:
    """Label the volume in ``store``'s values block by block (``labeller``: a window's values ->
    labels, foreground, score map) into a sink for ``target`` (closed by the caller, last) and write
    the objects table to ``objects``; block results already kept are not made again."""
    values = store.sink("values", store.folder / "values.zarr")
    uncertainty = (
        store.sink("uncertainty", store.folder / "uncertainty.zarr")
        if "uncertainty" in store.arrays
        else None
    )
    keys = store.scratch("keys", ArraySpec(plan.shape, "int64", plan.axes, plan.chunks))
    count = len(plan.regions)
    bar = tqdm(total=2 * count, unit="block", desc="labels", disable=None if progress else True, leave=False)
    cut = 0  # blocks with clusters wider than the cap
    owned, stats = [], []
    for index, region in enumerate(plan.regions):
        part = store.part(index)
        if part is None:
            found: BlockObjects = label_block(labeller, values, uncertainty, plan, index)
            keys[region] = found.keys
            part = {"owned": found.owned, "stats": found.stats, "cut": np.array(found.cut)}
            store.save_part(index, **part)
        owned.append(part["owned"])
        stats.append(part["stats"])
        cut += int(part["cut"]) > 0
        bar.update()
    sorted_keys, ids = assign_ids(owned)
    total = int(sorted_keys.size)
    dtype = label_dtype(total)
    sink = ZarrSink(target, plan.shape, dtype, plan.axes, scale, plan.chunks, store.folder / "labels.zarr")
    for region in plan.regions:
        sink[region] = keys_to_ids(keys[region], sorted_keys, ids, dtype)
        bar.update()
    bar.close()
    table = objects_rows(
        np.concatenate([np.zeros((0, stats[0].shape[1])), *stats]),
        np.arange(1, total + 1),
        plan.axes,
        uncertainty is not None,
    )
    objects.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(objects) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    if cut:
        log.warning(
            "%s: %d block(s) meet clusters of touching objects wider than %s voxels, labelled block by "
            "block: their objects are cut at block borders (a larger --block-size keeps them whole)",
            target.name,
            cut,
            " x ".join(map(str, plan.caps)),
        )
    log.info("%s: %d object(s) labelled block by block", target.name, total)
    return sink
