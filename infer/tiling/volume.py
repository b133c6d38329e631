"""One volume predicted block by block, from start to end: its blocks predicted (here, by a shard of a
job array, or by a runner such as Dask's workers), then the last step: the semantic mask or the
instance labels, made block by block too (by the same runner when there is one), the OME-Zarr
metadata, and the outputs moved into place.

Every step is taken block by block through :func:`block_step`, whoever takes it, so one process, the
shards and Dask's workers write the same volume. What the blocks are and how one is predicted:
:mod:`idl.infer.tiling.blocks`; the labels' passes: :mod:`idl.infer.tiling.block_labels`.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from idl.infer.core.errors import IdlError
from idl.infer.core.project import OBJECTS_DIR, PROBABILITY_DIR, UNCERTAINTY_DIR, image_stem
from idl.infer.core.shard import Shard
from idl.infer.io.blocks import ArraySpec, BlockStore
from idl.infer.io.physical import pixel_sizes
from idl.infer.runtime.model import LoadedModel
from idl.infer.tiling.batch import Pending
from idl.infer.tiling.block_labels import (
    LabelPlan,
    assign_step,
    caps_for,
    ids_step,
    keys_spec,
    label_step,
    labels_left,
)
from idl.infer.tiling.blocks import (
    IDS,
    LABELS,
    MASK,
    PREDICT,
    BlockJob,
    Volume,
    by_cost,
    open_store,
    plan_volume,
    predict_block,
)
from idl.infer.tiling.predict import PredictOptions, load_input, outputs_of

log = logging.getLogger("idl")

MADE = "made"  # kept in the store once the mask or labels are complete

# takes a step of the given blocks of a job somewhere (a Dask cluster: idl.infer.service.cluster),
# through block_step; returns when all are done or raises
BlockRunner = Callable[[BlockJob, list[int]], None]


@functools.lru_cache(maxsize=4)
def label_plan(volume: Volume) -> LabelPlan:
    """What the labels' passes need of ``volume`` (made once per process and volume: every block's
    step asks for it)."""
    grid = volume.grid
    return LabelPlan(
        grid.shape,
        tuple(grid.region(i) for i in range(grid.count)),
        caps_for(grid.shape, grid.block),
        grid.chunk,
        "zyx"[-len(grid.shape) :],  # the store's arrays' space axes (blocks._arrays)
    )


def block_step(model: LoadedModel, job: BlockJob, index: int, by: str, image: Any = None) -> None:
    """Take ``job``'s step for block ``index``: predict it (from ``image``, else read from the input
    file) and record it done by ``by``; or make its mask, or a pass of its labels."""
    store = BlockStore(job.volume.store)
    outputs = outputs_of(model)
    if job.step == PREDICT:
        if image is None:
            image = load_input(job.source, job.axes, model.io, lazy=True)
        predict_block(model, image, job.volume, store, index, job.options)
        store.mark(index, by)
    elif job.step == MASK:
        region = job.volume.grid.region(index)
        values = store.sink("values", store.folder / "values.zarr")
        threshold = store.arrays_of("threshold")
        level = None if threshold is None else float(threshold["threshold"])
        values_block = values[(slice(None), *region)] if values.ndim > len(region) else values[region][None]
        store.attach("mask")[region] = outputs.block_mask(values_block, level)
    elif job.step == LABELS:
        label_step(outputs.block_labels, store, label_plan(job.volume), index)
    elif job.step == IDS:
        ids_step(store, label_plan(job.volume), index)
    else:
        raise ValueError(f"unknown block step {job.step!r}")


def _each(
    model: LoadedModel,
    job: BlockJob,
    blocks: list[int],
    runner: BlockRunner | None,
    progress: bool,
    by: str = "one process",
    image: Any = None,
) -> None:
    """Take ``job``'s step for ``blocks``: by ``runner``, or here one after the other (recorded as
    done by ``by``; ``image``: the input, already open)."""
    if not blocks:
        return
    if runner is not None:
        runner(job, blocks)
        return
    bar = tqdm(
        total=len(blocks), unit="block", desc=job.step, disable=None if progress else True, leave=False
    )
    for index in blocks:
        block_step(model, job, index, by, image)
        bar.update()
    bar.close()


def finish_volume(
    model: LoadedModel,
    store: BlockStore,
    job: BlockJob,
    save_probabilities: bool,
    scale: Any = None,
    runner: BlockRunner | None = None,
) -> Path | None:
    """The last step, once every block is done: the mask (semantic models) or the labels (instance
    models), block by block (by ``runner`` when given), the OME-Zarr metadata, each output moved to its
    place. Returns the prediction's path, or None when blocks are left or another process takes the
    step."""
    if len(store.done()) < store.count:
        return None
    with store.finishing() as mine:
        if not mine or not store.folder.is_dir():
            return None
        volume, options = job.volume, job.options
        out, name = volume.out_dir, volume.name
        outputs = outputs_of(model)
        target = out / name
        everything = list(range(store.count))
        made = None  # the prediction made here (labels, mask), closed last
        kind = "labels" if outputs.labels_by_blocks else "mask" if outputs.makes_mask else ""
        if kind and store.arrays_of(MADE) is not None:  # made by a last step killed before the moves
            made = store.attach(kind, target, scale)
        elif outputs.labels_by_blocks:
            plan = label_plan(volume)
            store.scratch("keys", keys_spec(plan))  # before the workers write into it
            _each(model, replace(job, step=LABELS), labels_left(store, plan), runner, options.progress)
            objects = out / OBJECTS_DIR / f"{image_stem(target)}.csv"
            made = assign_step(store, plan, target, objects, scale)
            _each(model, replace(job, step=IDS), everything, runner, options.progress)
        elif outputs.makes_mask:
            threshold = outputs.block_threshold(options, store.summaries())
            if threshold is not None:
                store.save_arrays("threshold", threshold=threshold)
                log.info("%s: threshold %.3f from every block's histogram", name, threshold)
            axes = store.arrays["values"].axes.lstrip("c")
            spec = ArraySpec(volume.grid.shape, "uint8", axes, volume.grid.chunk)
            made = store.add_array("mask", spec, target)
            made.scale = dict(scale or {})
            _each(model, replace(job, step=MASK), everything, runner, options.progress)
        if kind:
            store.save_arrays(MADE, done=np.ones(1))  # the values may move now: the prediction is made
        # the companions first, the prediction itself last: when it exists, so does everything else (a
        # last step killed between two moves finds the moved arrays gone and goes on)
        if store.holds("uncertainty"):
            store.sink("uncertainty", out / UNCERTAINTY_DIR / name, scale).close()
        if made is None:
            store.sink("values", target, scale).close()
        else:
            if save_probabilities and store.holds("values"):
                store.sink("values", out / PROBABILITY_DIR / name, scale).close()
            made.close()
        store.remove()
    return target


def predict_volume(
    model: LoadedModel,
    image: Any,
    source: Path,
    out_dir: Path,
    name: str,
    options: PredictOptions,
    save_probabilities: bool,
    runner: BlockRunner | None = None,
    axes: str | None = None,
    shard: Shard | None = None,
) -> Path | Pending:
    """Predict the volume ``image`` (read from ``source``) into ``out_dir/name`` (OME-Zarr) block by
    block: ``shard``'s blocks (all without one) here, or every block by ``runner``; then, when no
    block is left, the last step (``axes``: the input's, as given). Returns the prediction's path, or
    :class:`Pending` while blocks are left to other shards."""
    volume = plan_volume(model, image.shape[:-1], name, out_dir, options)
    if options.overwrite and volume.store.exists():
        if shard is not None:
            raise IdlError(
                "--overwrite with --shard: the shards would remove each other's blocks. Delete "
                f"{volume.store} once, then submit the shards without --overwrite."
            )
        BlockStore(volume.store).remove()
    store = open_store(model, image, source, volume, options)
    job = BlockJob(source, axes, volume, options)
    done = store.done()
    if done:
        log.info("%s: %d of %d block(s) were finished earlier", volume.name, len(done), store.count)
    todo = [i for i in range(store.count) if (shard is None or shard.owns(i)) and i not in done]
    by = shard.label if shard else "one process"
    order = by_cost(volume, todo) if runner is not None else todo
    _each(model, job, order, runner, options.progress, by, image)
    target = finish_volume(model, store, job, save_probabilities, pixel_sizes(source), runner)
    if target is not None:
        log.info("%s -> %s, %d block(s)", source.name, target.name, volume.grid.count)
        return target
    left = store.count - len(store.done()) if store.folder.is_dir() else 0
    return Pending(f"this shard's blocks are done; {left} of {store.count} block(s) are left to other shards")
