"""The one tile loop: every network idl runs over tiles runs here.

A sample is a dict of named channels-last images (one entry for a network with one input), read
whole or window by window. :func:`layout` decides how it is tiled (the ownership grid of
:mod:`idl.infer.core.grid`, the halo its outputs need, the padding a bioimage.io package asks for, or
one whole tile when the image is itself a valid input size); :func:`run_tiles` feeds each tile's
windows, pre-processed with statistics of the whole image, to a forward callable and hands each
output to its merger (:mod:`idl.infer.tiling.mergers`), which decides what becomes of it: an array
in memory, a TIFF or OME-Zarr sink out of core, Monte Carlo statistics, objects. The loop knows no
task and no output kind, and no torch: the forward of an ONNX Runtime session comes from
:func:`network_forward`, training's validation hands in a torch module's.

Monte Carlo sampling is the same loop drawing several samples per tile (``draws``): a batch then
holds samples of one tile, and a tile stops early when every merger says it is settled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from idl.infer.core.axes import reorder
from idl.infer.core.errors import DataError, ModelError
from idl.infer.core.grid import AxisSize, PaddedView, Tile, round_up, tile_grid
from idl.infer.core.processing import apply_ops, fit_ops, network_tile, split_pointwise
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.empty import EmptyTiles
from idl.infer.tiling.mergers import Merger, OutputGrid

# inputs id -> (N, C, *spatial) network tiles, and the draws per tile -> outputs id -> (N * draws, K,
# *spatial) in idl's axes (channels first), the draws of each tile together
Forward = Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]


def batched(items: Sequence[Any], size: int) -> list[list[Any]]:
    """``items`` in consecutive groups of ``size`` (the last one shorter)."""
    iterator = iter(items)
    chunks = []
    while chunk := list(islice(iterator, size)):
        chunks.append(chunk)
    return chunks


def run_tiles(
    tiles: Sequence[Tile],
    read: Callable[[Tile], dict[str, np.ndarray]],
    forward: Forward,
    mergers: Mapping[str, Merger],
    batch_size: int = 1,
    draws: int = 0,
    progress: bool = False,
    skip: EmptyTiles | None = None,
) -> dict[str, Any]:
    """Run ``forward`` over ``tiles`` and merge every output; returns each merger's result by output.

    ``read`` gives a tile's network inputs (input id -> ``(C, *spatial)``). Without ``draws`` each
    call takes ``batch_size`` tiles; with ``draws`` (Monte Carlo samples) each call draws up to
    ``batch_size`` samples of one tile, until ``draws`` are drawn or every merger is settled. The
    progress bar counts tiles, or samples when sampling (many samples of one tile show progress and
    an estimate from the first call). With ``skip``, tiles it finds empty are not run: their output is
    the network's for a constant background tile (:mod:`idl.infer.tiling.empty`)."""
    sampling = draws > 0
    bar = tqdm(
        total=len(tiles) * (draws if sampling else 1),
        unit="sample" if sampling else "tile",
        disable=None if progress else True,  # None: a terminal only
        leave=False,
    )
    for chunk in batched(tiles, 1 if sampling else batch_size):
        inputs = [read(tile) for tile in chunk]
        blank = [skip is not None and skip.empty(i) for i in inputs]
        running = [i for i, b in zip(inputs, blank, strict=True) if not b]
        x = {name: np.stack([i[name] for i in running]) for name in inputs[0]} if running else {}
        if not sampling:
            out = forward(x, 1) if running else {}
            row = 0
            for tile, tile_inputs, empty in zip(chunk, inputs, blank, strict=True):
                if empty:
                    assert skip is not None
                    values = skip.output(tile_inputs, forward, 1)
                else:
                    values = {name: value[row : row + 1] for name, value in out.items()}
                    row += 1
                for name, merger in mergers.items():
                    merger.add(tile, values[name])
                    merger.close(tile)
            bar.update(len(chunk))
            continue
        tile, drawn = chunk[0], 0
        while drawn < draws:
            n = min(batch_size, draws - drawn)
            out = skip.output(inputs[0], forward, n) if skip is not None and blank[0] else forward(x, n)
            for name, merger in mergers.items():
                merger.add(tile, out[name])
            drawn += n
            bar.update(n)
            if all(merger.settled(tile) for merger in mergers.values()):
                break
        bar.update(draws - drawn)  # a tile that stopped early skips the rest
        for merger in mergers.values():
            merger.close(tile)
    bar.close()
    return {name: merger.finalize() for name, merger in mergers.items()}


def run_sample(
    tensors: Tensors,
    images: Mapping[str, Any],
    forward: Forward,
    where: Layout,
    mergers: Mapping[str, Merger],
    batch_size: int = 1,
    draws: int = 0,
    progress: bool = False,
    skip: EmptyTiles | None = None,
    fitted: Mapping[str, tuple[Any, ...]] | None = None,
) -> dict[str, Any]:
    """:func:`run_tiles` over one sample laid out by :func:`layout`: its inputs read from ``images``
    (input id -> raw channels-last image) and ``forward`` followed by the outputs' pointwise
    post-processing; ``skip`` leaves out empty tiles; ``fitted``: each input's pre-processing fitted
    already (:func:`fitted_inputs`), when ``images`` are parts of a larger sample."""
    read = tile_reader(tensors, images, where, fitted)
    heads = with_heads(tensors, forward)
    return run_tiles(where.tiles, read, heads, mergers, batch_size, draws, progress, skip)


def runs_whole(io: Any, shape: Sequence[int], tile: Sequence[int]) -> bool:
    """Whether an image of ``shape`` is itself a valid input size of the network and fits one tile:
    then it runs whole, without the halo padding bioimage.io tools add to other sizes, so a package's
    own test input reproduces its authors' test output."""
    rules = [io.sizes[a] for a in io.spatial]
    return all(r.at_least(n) == n and n <= t for r, n, t in zip(rules, shape, tile, strict=True))


def output_halo(tensors: Tensors, axis: str) -> int:
    """Input pixels of context the outputs' halos need along ``axis`` (the largest over outputs), a
    whole number of output pixels of every down-sampled output."""
    need = 0
    for out in tensors.outputs:
        scale = out.scale.get(axis, 1.0)
        unit = round(1 / scale) if scale < 1 and abs(1 / scale - round(1 / scale)) < 1e-6 else 1
        need = max(need, round_up(math.ceil(out.halo.get(axis, 0) / scale - 1e-9), unit))
    return need


def size_rule(tensors: Tensors, axis: str) -> AxisSize:
    """The size rule tiles follow along ``axis``: the inputs' (the coarsest step when they differ)."""
    rules = [t.io.sizes[axis] for t in tensors.inputs if axis in t.io.sizes]
    return max(rules, key=lambda r: (r.step, r.minimum))


@dataclass(frozen=True)
class Layout:
    """How one sample is tiled: its space ``shape`` as given (``original``), the ``padding`` on both
    sides of each axis (bioimage.io's input padding by the halo), the padded ``shape`` and its
    ``tiles``."""

    spatial: str
    original: tuple[int, ...]
    padding: tuple[int, ...]
    shape: tuple[int, ...]
    tiles: list[Tile]

    def grid(self, tensors: Tensors, output: str) -> OutputGrid:
        """Where the tiles' owned regions land in the output ``output``."""
        out = next(o for o in tensors.outputs if o.id == output)
        scale = tuple(out.scale.get(a, 1.0) for a in self.spatial)
        length = tuple(out.size(a, n) for a, n in zip(self.spatial, self.original, strict=True))
        return OutputGrid(self.shape, length, scale, self.padding, output)


def shared_shape(tensors: Tensors, images: Mapping[str, Any]) -> tuple[int, ...]:
    """The space shape all input images of a sample share (channels-last images)."""
    missing = [t.id for t in tensors.inputs if t.id not in images]
    if missing:
        raise DataError(f"no image for the input(s) {', '.join(missing)}")
    shapes = {name: tuple(image.shape[:-1]) for name, image in images.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise DataError(f"the inputs of one sample must have the same size; got {listed}")
    shape = next(iter(shapes.values()))
    dims = len(tensors.spatial)
    if len(shape) != dims:
        raise DataError(f"the network expects {dims}D images ({tensors.spatial}c), got shape {shape}")
    return shape


def layout(
    tensors: Tensors,
    original: Sequence[int],
    tile: Sequence[int],
    halo: Sequence[int] | None = None,
) -> Layout:
    """Tile a sample of space shape ``original`` in tiles of ``tile`` with ``halo`` input pixels of
    context (default: what the outputs need). An image that is itself a valid input size and fits one
    tile runs whole, unpadded; otherwise inputs are padded by the halo where the package asks for it.
    Offsets (outputs not a multiple of the input's size) allow one whole tile only."""
    spatial, original = tensors.spatial, tuple(original)
    whole = all(runs_whole(t.io, original, tile) for t in tensors.inputs)
    halos = (
        (0,) * len(spatial)
        if whole
        else tuple(halo)
        if halo is not None
        else tuple(output_halo(tensors, a) for a in spatial)
    )
    pads = tensors.inputs[0].io.input_pad is not None and any(halos)
    padding = halos if pads else (0,) * len(spatial)
    shape = tuple(n + 2 * p for n, p in zip(original, padding, strict=True))
    if whole:
        tiles = tile_grid(shape, shape, (0,) * len(shape), [AxisSize(n, 0) for n in shape])
    else:
        tiles = tile_grid(shape, tuple(tile), halos, [size_rule(tensors, a) for a in spatial])
    if len(tiles) > 1 and any(o.offset.get(a, 0) for o in tensors.outputs for a in spatial):
        raise ModelError(
            "an output has an offset (it is not the input's size times its scale); such networks run "
            "whole: give images of a valid input size and a --tile-size at least as large."
        )
    return Layout(spatial, original, padding, shape, tiles)


def tiled_voxels(
    shapes: Sequence[Sequence[int]], tile: Sequence[int], halo: Sequence[int], multiples: Sequence[int]
) -> int:
    """The voxels the network sees when images of ``shapes`` are tiled (overlaps counted each time):
    what a prediction or a validation pass costs, for planning."""
    rules = list(multiples)
    return sum(
        math.prod(s.stop - s.start for s in t.window)
        for shape in shapes
        for t in tile_grid(tuple(shape), tuple(tile), tuple(halo), rules)
    )


def fitted_inputs(tensors: Tensors, images: Mapping[str, Any]) -> dict[str, tuple[Any, ...]]:
    """Each input's pre-processing with the statistics of its whole image (input id -> pointwise ops)."""
    return {t.id: fit_ops(t.io.preprocessing, images[t.id], t.io.image_axes) for t in tensors.inputs}


def tile_reader(
    tensors: Tensors,
    images: Mapping[str, Any],
    where: Layout,
    given: Mapping[str, tuple[Any, ...]] | None = None,
) -> Callable[[Tile], dict[str, np.ndarray]]:
    """A tile's network inputs: each input's window (padded as its package asks, read lazily when the
    image is), pre-processed with statistics of the whole image (or as ``given``)."""
    views, fitted = {}, dict(given or {})
    for tensor in tensors.inputs:
        image = images[tensor.id]
        io = tensor.io
        if any(where.padding) and io.input_pad is not None:
            image = PaddedView(image, where.padding, io.input_pad, io.input_pad_value)
        views[tensor.id] = image
        if tensor.id not in fitted:
            fitted[tensor.id] = fit_ops(io.preprocessing, image, io.image_axes)

    def read(tile: Tile) -> dict[str, np.ndarray]:
        return {
            t.id: network_tile(views[t.id], tile.window, fitted[t.id], t.io.image_axes)
            for t in tensors.inputs
        }

    return read


def with_heads(tensors: Tensors, forward: Forward) -> Forward:
    """``forward`` followed by each output's pointwise post-processing (per tile and per sample; the
    rest needs the whole output: :func:`finish`)."""
    heads = {o.id: split_pointwise(o.postprocessing)[0] for o in tensors.outputs}
    axes = tensors.batch_axes
    if not any(heads.values()):
        return forward

    def run(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
        out = forward(inputs, draws)
        return {
            name: apply_ops(heads[name], value, axes) if heads.get(name) else value
            for name, value in out.items()
        }

    return run


def finish(tensors: Tensors, results: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each in-memory output after the post-processing that needs the whole output (statistics of
    the assembled image, as bioimage.io's per-sample ops)."""
    final = dict(results)
    axes = "c" + tensors.spatial
    for out in tensors.outputs:
        tail = split_pointwise(out.postprocessing)[1]
        if tail and out.id in final:
            array = final[out.id]
            final[out.id] = apply_ops(fit_ops(tail, array, axes), array, axes).astype(np.float32)
    return final


def needs_whole_output(tensors: Tensors) -> bool:
    """Whether an output is post-processed with statistics of the whole output (then it is assembled
    in memory)."""
    return any(split_pointwise(o.postprocessing)[1] for o in tensors.outputs)


def network_forward(runner: Any, tensors: Tensors, sampler: bool = False) -> Forward:
    """The forward of an ONNX Runtime session (``runner.run_all``) over idl's axes: each input
    reordered into the network's axes, each output back into idl's. For a Monte Carlo graph the draws
    of a tile are copies of it in the batch, or, with ``sampler`` (a graph whose second input is the
    sample count, :data:`idl.infer.runtime.model.MC_SAMPLES_INPUT`), drawn by the graph itself, the
    part before its first dropout run once per call."""
    batch_axes = tensors.batch_axes

    def run(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
        feed = []
        for tensor in tensors.inputs:
            x = inputs[tensor.id]
            if draws > 1 and not sampler:
                x = np.repeat(x, draws, axis=0)
            feed.append(tensor.io.to_model(x))
        if sampler:
            feed.append(np.zeros(max(draws, 1), np.float32))
        raw = runner.run_all(feed)
        return {
            out.id: reorder(value, out.axes, batch_axes)
            for out, value in zip(tensors.outputs, raw, strict=False)
        }

    return run
