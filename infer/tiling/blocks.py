"""One volume predicted block by block into OME-Zarr: in this process, by the shards of a job array
(``--shard I/N``) or by Dask workers (:mod:`idl.infer.service.cluster`), all through one function,
:func:`predict_block`, so every way of running it writes the same numbers.

The volume's space is cut into blocks whose sides are multiples of the output's zarr chunks (the
:class:`BlockGrid`): each block owns whole chunks, so the processes never write the same chunk and need
no lock. A block is predicted by the one tile loop over its window, the block grown by the model's
halo on every side (aligned to the network's size step, so pooling lines up as on the whole volume):
each voxel of the block is owned by a tile that sees at least the halo around it, as in-process tiling
promises. The input's normalization is fitted once on the whole volume (kept in the block store), the
Monte Carlo samples of each block drawn from a seed of its own: a block gives the same values whoever
predicts it, in whatever order.

Every finished block is recorded in the store (:mod:`idl.infer.io.blocks`); a killed or re-submitted
run predicts only the rest. Whoever finishes the last block takes the last step: the mask (Otsu's
threshold from every block's histogram, as out-of-core prediction does), the OME-Zarr metadata, and
the outputs moved to their final names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import IdlError
from idl.infer.core.grid import round_up
from idl.infer.core.nonfinite import check_nonfinite, has_floats
from idl.infer.io.blocks import PLAN, ArraySpec, BlockStore, store_folder
from idl.infer.io.formats.ome_zarr import default_chunks
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.engine import fitted_inputs, needs_whole_output
from idl.infer.tiling.predict import (
    PredictOptions,
    _check_tiles,
    _halos,
    empty_tiles,
    outputs_of,
    predict_probabilities,
    sampling,
    tile_shape,
)

log = logging.getLogger("idl")

# block sides by default: 64 MB of float32 per channel in 3D (256^3), 16 MB in 2D (2048^2); whole
# chunks of default_chunks (64 voxels, 512 px)
DEFAULT_BLOCK = {2: 2048, 3: 256}


@dataclass(frozen=True)
class BlockGrid:
    """The blocks of a space ``shape``: sides ``block`` (the last ones shorter), each a multiple of
    the zarr ``chunk`` per axis."""

    shape: tuple[int, ...]
    block: tuple[int, ...]
    chunk: tuple[int, ...]

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block, strict=True))

    @property
    def count(self) -> int:
        return math.prod(self.counts)

    def region(self, index: int) -> tuple[slice, ...]:
        """The voxels block ``index`` (row-major) owns."""
        position = np.unravel_index(index, self.counts)
        return tuple(
            slice(int(p) * b, min(n, (int(p) + 1) * b))
            for p, b, n in zip(position, self.block, self.shape, strict=True)
        )

    def window(self, index: int, halos: Sequence[int], aligns: Sequence[int]) -> tuple[slice, ...]:
        """The input block ``index`` is predicted from: its region and ``halos`` voxels around it,
        within the volume, starting on a multiple of each axis's size step (``aligns``) and as long as
        a multiple of it unless it reaches the volume's end."""
        window = []
        for r, h, a, n in zip(self.region(index), halos, aligns, self.shape, strict=True):
            start = max(0, (r.start - h) // a * a)
            window.append(slice(start, min(n, start + round_up(r.stop + h - start, a))))
        return tuple(window)


def block_grid(shape: Sequence[int], side: int, chunk: Sequence[int], aligns: Sequence[int]) -> BlockGrid:
    """Blocks of about ``side`` per axis over ``shape``: each side a multiple of the axis's chunk
    (itself made a multiple of the network's size step, ``aligns``), at most the axis."""
    chunks, blocks = [], []
    for n, c, a in zip(shape, chunk, aligns, strict=True):
        c = min(n, round_up(min(c, side), a))
        chunks.append(c)
        blocks.append(min(n, round_up(side, c)))
    return BlockGrid(tuple(shape), tuple(blocks), tuple(chunks))


def block_seed(seed: int, index: int) -> int:
    """The Monte Carlo seed of block ``index``: its own, from ``seed``."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


class Cropped:
    """An output target over a block's window that keeps only the block's region: writes (in the
    window's coordinates) land in ``buffer`` (the region, with the channel axis when ``channels``),
    the rest is dropped."""

    def __init__(self, buffer: np.ndarray, local: tuple[slice, ...], window: tuple[int, ...], channels: bool):
        self.buffer, self.local, self.channels = buffer, local, channels
        lead = (buffer.shape[0],) if channels else ()
        self.shape = (*lead, *window)
        self.ndim = len(self.shape)

    def __setitem__(self, index: tuple[Any, ...], value: np.ndarray) -> None:
        lead, spatial = (index[:1], index[1:]) if self.channels else ((), index)
        into, take = [], []
        for s, own in zip(spatial, self.local, strict=True):
            start, stop = max(s.start, own.start), min(s.stop, own.stop)
            if start >= stop:
                return
            into.append(slice(start - own.start, stop - own.start))
            take.append(slice(start - s.start, stop - s.start))
        value = np.asarray(value)
        self.buffer[(*lead, *into)] = value[(*(slice(None) for _ in lead), *take)]


class WindowView:
    """A lazily read channels-last image seen through a window of its space axes."""

    def __init__(self, image: Any, window: tuple[slice, ...]) -> None:
        self.image, self.window = image, window
        self.shape = (*(w.stop - w.start for w in window), image.shape[-1])
        self.dtype, self.ndim = np.dtype(image.dtype), len(self.shape)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize

    def __getitem__(self, index: Any) -> np.ndarray:
        index = tuple(index if isinstance(index, tuple) else (index,))
        index = index + (slice(None),) * (self.ndim - len(index))
        moved = []
        for s, w in zip(index[:-1], self.window, strict=True):
            start, stop, _ = s.indices(w.stop - w.start)
            moved.append(slice(w.start + start, w.start + stop))
        return np.asarray(self.image[(*moved, index[-1])])


def blockable(model: LoadedModel) -> str:
    """Why ``model`` cannot predict a volume block by block (empty: it can)."""
    outputs = outputs_of(model)
    if outputs.whole_image and not outputs.labels_by_blocks:
        return outputs.whole_image
    tensors = model.tensors
    if not tensors.simple:
        return "this package's outputs are not of its input's size"
    if needs_whole_output(tensors):
        return "this package post-processes with statistics of the whole output"
    if model.io.input_pad is not None:
        return "this package pads its whole input"
    return ""


@dataclass(frozen=True)
class Volume:
    """What the blocks of one volume need: the model's tiles and halos, the grid, the outputs' places."""

    name: str  # the output's file name, <stem>.ome.zarr
    grid: BlockGrid
    tile: tuple[int, ...]
    halos: tuple[int, ...]
    aligns: tuple[int, ...]  # the network's size step per axis
    channels: int
    out_dir: Path

    @property
    def store(self) -> Path:
        return store_folder(self.out_dir, self.name)

    def window(self, index: int) -> tuple[slice, ...]:
        """The input block ``index`` is predicted from (:meth:`BlockGrid.window`)."""
        return self.grid.window(index, self.halos, self.aligns)


def plan_volume(
    model: LoadedModel, shape: Sequence[int], name: str, out_dir: Path, options: PredictOptions
) -> Volume:
    """The blocks, tiles and halos of a volume of space ``shape`` (``options.block_size``)."""
    io = model.io
    dims = len(io.spatial)
    side = options.block_size or DEFAULT_BLOCK.get(dims, 256)
    aligns = tuple(io.sizes[a].align for a in io.spatial)
    chunks = default_chunks(tuple(shape), io.spatial)
    grid = block_grid(shape, side, chunks, aligns)
    # the default budget is not grown to half the machine's memory: the tile is every worker's, and
    # a machine may run several (--dask local:N)
    tile = tile_shape(model, options, grid.block, grow=False)
    halos = _halos(model, options, tile)
    return Volume(name, grid, tile, halos, aligns, io.out_channels, out_dir)


def _arrays(volume: Volume, options: PredictOptions) -> dict[str, ArraySpec]:
    """The store's arrays: the network's values (channel axis when several), the uncertainty."""
    spatial = volume.grid.shape
    k = volume.channels
    axes = "zyx"[-len(spatial) :]
    arrays = {
        "values": ArraySpec(
            spatial if k == 1 else (k, *spatial),
            "float32",
            axes if k == 1 else "c" + axes,
            volume.grid.chunk if k == 1 else (1, *volume.grid.chunk),
        )
    }
    if options.sampled:
        arrays["uncertainty"] = ArraySpec(spatial, "float32", axes, volume.grid.chunk)
    return arrays


def settings_key(options: PredictOptions) -> dict[str, Any]:
    """What the values of a block depend on, so a store is never continued with other settings."""
    keys = ("tile_size", "overlap", "mc_samples", "uncertainty", "mc_tolerance", "skip_empty", "seed", "tta")
    return {k: getattr(options, k) for k in (*keys, "mc_answer", "block_size")}


def open_store(
    model: LoadedModel, image: Any, source: Path, volume: Volume, options: PredictOptions
) -> BlockStore:
    """The volume's block store, created (normalization fitted on the whole volume, non-finite
    voxels counted) when it does not exist yet."""
    folder = volume.store
    plan = {
        "input": str(Path(source).resolve()),
        "model": model.label,
        "settings": settings_key(options),
        "grid": {"shape": list(volume.grid.shape), "block": list(volume.grid.block)},
        "blocks": volume.grid.count,
    }
    if (folder / PLAN).is_file():
        return BlockStore.open_or_create(folder, plan, _arrays(volume, options), None)
    found = check_nonfinite(image, str(source), model.io.image_axes, options.on_nonfinite)
    stats = {
        "fitted": fitted_inputs(Tensors.single(model.io), {"input": image}),
        "nonfinite": found is not None,
    }
    return BlockStore.open_or_create(folder, plan, _arrays(volume, options), stats)


def predict_block(
    model: LoadedModel, image: Any, volume: Volume, store: BlockStore, index: int, options: PredictOptions
) -> None:
    """Predict block ``index`` of the volume ``image`` (channels-last, read lazily) and write its
    chunks into ``store``'s arrays (the caller records it done)."""
    io, grid = model.io, volume.grid
    region = grid.region(index)
    window = volume.window(index)
    view = WindowView(image, window)
    local = tuple(slice(r.start - w.start, r.stop - w.start) for r, w in zip(region, window, strict=True))
    size = tuple(r.stop - r.start for r in region)
    inner = view.shape[:-1]
    stats = store.stats()
    values = np.zeros((volume.channels, *size), np.float32)
    uncertainty = np.zeros(size, np.float32) if options.sampled else None
    _check_tiles(io, inner, volume.tile, volume.halos)
    if options.mc_samples:
        model.reseed(block_seed(options.seed, index))
    try:
        predict_probabilities(
            image=view,
            io=io,
            tile_size=volume.tile,
            halo=volume.halos,
            progress=False,
            output=Cropped(values, local, inner, True),
            uncertainty_out=None if uncertainty is None else Cropped(uncertainty, local, inner, False),
            mark_nonfinite=bool(stats["nonfinite"]) and has_floats(view),
            skip=empty_tiles(options),
            fitted=stats["fitted"],
            **sampling(model, options, outputs_of(model)),
        )
    except ValueError as exc:  # tiling arithmetic the checks did not foresee
        raise IdlError(f"cannot tile block {index} for the model: {exc}") from exc
    summary = outputs_of(model).block_summary(values, options)
    if summary is not None:
        store.save_summary(index, summary)
    target = store.sink("values", Path(volume.name))
    target[region if volume.channels == 1 else (slice(None), *region)] = (
        values[0] if volume.channels == 1 else values
    )
    if uncertainty is not None:
        store.sink("uncertainty", Path(volume.name))[region] = uncertainty


def by_cost(volume: Volume, blocks: list[int]) -> list[int]:
    """``blocks`` with the most expensive first (the largest window: blocks at the volume's faces
    have less halo to read), so workers taking them in this order finish together: on 16 blocks of a
    60 x 512 x 512 volume and 2 workers the row-major order left one worker a block behind the other."""

    def cost(index: int) -> int:
        return math.prod(w.stop - w.start for w in volume.window(index))

    return sorted(blocks, key=lambda index: (-cost(index), index))


# the steps a volume's blocks go through, each block by block: predicted; then, in the last step, the
# semantic mask, or the instance labels' two passes (idl.infer.tiling.block_labels)
PREDICT, MASK, LABELS, IDS = "predict", "mask", "labels", "ids"


@dataclass(frozen=True)
class BlockJob:
    """What a worker elsewhere needs to take a step of blocks of a volume (picklable): the input file
    and its axes, the volume's plan, the settings, the step; the model it loads itself (once per
    worker)."""

    source: Path
    axes: str | None
    volume: Volume
    options: PredictOptions
    step: str = PREDICT
