"""Tiled prediction of networks with several inputs and outputs (:class:`~idl.infer.runtime.tensors.Tensors`).

All inputs share one spatial grid and are tiled together, window for window. The context kept around
each tile is the largest halo any output asks for, in input pixels (an output halo of ``h`` at
``scale`` output pixels per input pixel needs ``h / scale`` input pixels). Each output's owned region
is the tile's owned input region times its scale, so down-sampled (or up-sampled) outputs assemble
seamlessly; tile origins are multiples of the inputs' size step, which keeps them on whole output
pixels. As for single-tensor packages (:func:`idl.infer.tiling.predict.predict_probabilities`): an
image that is itself a valid input size and fits one tile runs whole, unpadded; otherwise inputs are
padded by the halo as bioimage.io tools do (when the package asks for it), pre-processed with
statistics of the whole image, post-processed per tile where that is pointwise. Everything is in
memory.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError, IdlError
from idl.infer.core.grid import read_window
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.project import UNCERTAINTY_DIR
from idl.infer.io.formats import open_sink
from idl.infer.io.lazy import is_lazy
from idl.infer.io.omezarr import image_stem
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.batch import Batch, Item, run_batch
from idl.infer.tiling.engine import (
    finish,
    layout,
    needs_whole_output,
    network_forward,
    output_halo,
    run_sample,
    shared_shape,
)
from idl.infer.tiling.mergers import Merger, MonteCarlo, NonFinite, Placed
from idl.infer.tiling.predict import (
    PredictOptions,
    empty_tiles,
    load_input,
    report_skipped,
    tile_shape,
    write_output,
)

log = logging.getLogger("idl")


def predict_tensors(
    model: LoadedModel,
    images: Mapping[str, Any],
    options: PredictOptions,
    targets: Mapping[str, Any] | None = None,
    spreads: Mapping[str, Any] | None = None,
    nonfinite: bool = False,
) -> dict[str, Any]:
    """Run a network of any tensors over one sample through the tile loop
    (:mod:`idl.infer.tiling.engine`): ``images`` maps each input's id to its raw channels-last image
    (read whole or lazily). Returns each output's id -> its post-processed ``(K, *spatial)`` array,
    or what ``targets`` (array-likes by output id, e.g. sinks written tile by tile) received. With
    ``options.mc_samples`` the Monte Carlo graph draws them and each output is the samples' mean;
    its uncertainty map goes into ``spreads`` (by output id; in memory: returned as
    ``"<id>:uncertainty"``). With ``nonfinite`` outputs of the input's size are NaN where an input
    pixel was not finite."""
    tensors: Tensors = model.tensors
    original = shared_shape(tensors, images)
    tile = tile_shape(model, options, original)
    halos = None
    if options.overlap is not None:
        halos = [options.halo(output_halo(tensors, a), t) for a, t in zip(tensors.spatial, tile, strict=True)]
    where = layout(tensors, original, tile, halos)
    if targets and needs_whole_output(tensors):
        raise IdlError(
            "this package post-processes with statistics of the whole output; that needs the image in "
            "memory, but it is read lazily. Save it as a compressed TIFF to predict it."
        )
    sampling = options.mc_samples > 0
    # a package made elsewhere says nothing of what its outputs mean: their samples' standard deviation
    # is an uncertainty of any values (InstantDL's map is one of probabilities)
    known = model.info is not None and model.io.uncertainty != "std"
    spread = options.uncertainty or ("instantdl" if known else "std")

    def bad(region: tuple[slice, ...]) -> np.ndarray:
        return ~np.all(
            [np.isfinite(read_window(images[t.id], region)).all(axis=-1) for t in tensors.inputs], axis=0
        )

    def placer(output: str, target: Any, channels: bool = True) -> Placed | NonFinite:
        placed = Placed(where.grid(tensors, output), target, channels)
        scaled = any(s != 1.0 for s in placed.grid.scale)
        return NonFinite(placed, bad) if nonfinite and not scaled else placed

    mergers: dict[str, Merger] = {}
    for out in tensors.outputs:
        target = (targets or {}).get(out.id)
        channels = target is None or len(target.shape) > len(tensors.spatial)
        if sampling:
            spread_target = (spreads or {}).get(out.id)
            if spread_target is None:
                spread_target = np.empty(where.grid(tensors, out.id).length, np.float32)
            mergers[out.id] = MonteCarlo(
                placer(out.id, target, channels),
                placer(out.id, spread_target, False),
                spread,
                options.mc_tolerance,
                model.io.sigma_scale,
            )
        else:
            mergers[out.id] = placer(out.id, target, channels)
    runner = model.session(mc=sampling)
    forward = network_forward(runner, tensors, sampler=sampling and model.counts_samples())
    inputs = {t.id: images[t.id] for t in tensors.inputs}
    size = options.batch_for(model.io)  # the summary IOSpec carries the inputs' batch limit
    progress = options.progress and (len(where.tiles) > 1 or sampling)
    skip = empty_tiles(options)
    results = run_sample(tensors, inputs, forward, where, mergers, size, options.mc_samples, progress, skip)
    report_skipped(skip)
    if sampling:
        results = {
            **{name: value for name, (value, _) in results.items()},
            **{f"{name}:uncertainty": spread_map for name, (_, spread_map) in results.items()},
        }
    return results if targets else finish(tensors, results)


def pair_inputs(named: Mapping[str, Sequence[Path]], tensors: Tensors) -> list[dict[str, Path]]:
    """The samples of a multi-input network: for each input tensor its files (``--input NAME=PATH``),
    matched across tensors by image name; every tensor needs one file of each name."""
    unknown = sorted(set(named) - {t.id for t in tensors.inputs})
    missing = [t.id for t in tensors.inputs if t.id not in named]
    if unknown or missing:
        raise DataError(
            "the model's inputs are "
            + ", ".join(t.id for t in tensors.inputs)
            + (f"; no input is called {', '.join(unknown)}" if unknown else "")
            + (f"; no images given for {', '.join(missing)}" if missing else "")
            + ". Give each as --input NAME=PATH (a file or a folder)."
        )
    by_name = {tensor: {image_stem(p): p for p in files} for tensor, files in named.items()}
    first = tensors.inputs[0].id
    samples = []
    for stem, path in by_name[first].items():
        lacking = [t for t, files in by_name.items() if stem not in files]
        if lacking:
            raise DataError(f"{path}: no image named {stem} for the input(s) {', '.join(lacking)}.")
        samples.append({t: by_name[t][stem] for t in by_name})
    extra = sorted({stem for files in by_name.values() for stem in files} - set(by_name[first]))
    if extra:
        raise DataError(f"images without a counterpart for the input '{first}': {', '.join(extra)}.")
    return samples


def output_path(out_dir: Path, tensor: str, stem: str, options: PredictOptions) -> Path:
    """Where an output tensor of a sample is written: ``OUT/<tensor id>/<image name><format suffix>``
    (``.tif``, ``.ome.zarr``, ...: the output format's, from :mod:`idl.infer.io.formats`)."""
    return out_dir / tensor / f"{stem}{options.suffix}"


def sample_outputs(out_dir: Path, tensors: Tensors, stem: str, options: PredictOptions) -> list[Path]:
    """Every file a sample's prediction writes: each output tensor, and with Monte Carlo sampling its
    uncertainty map (``OUT/uncertainty/<tensor id>/<image name>``)."""
    paths = [output_path(out_dir, o.id, stem, options) for o in tensors.outputs]
    if options.mc_samples:
        paths += [output_path(out_dir / UNCERTAINTY_DIR, o.id, stem, options) for o in tensors.outputs]
    return paths


def predict_tensor_files(
    model: LoadedModel,
    samples: Sequence[Mapping[str, Path]],
    out_dir: Path,
    options: PredictOptions,
    axes: str | None = None,
) -> list[Path]:
    """Predict every sample (input id -> file) and write each output tensor under its id, under the
    one batch driver's policy (:func:`idl.infer.tiling.batch.run_batch`). Large inputs that can be
    read window by window are predicted out of core, into outputs written tile by tile."""
    tensors: Tensors = model.tensors
    first = tensors.inputs[0]
    if options.mc_samples:
        model.reseed(options.seed)
    items = [
        Item(
            image_stem(s[first.id]),
            dict(s),
            tuple(sample_outputs(out_dir, tensors, image_stem(s[first.id]), options)),
        )
        for s in samples
    ]

    def work(group: Sequence[Item]) -> list[Any]:
        return [_predict_sample(model, item, out_dir, options, axes) for item in group]

    leftovers = tuple(
        folder / o.id for folder in (out_dir, out_dir / UNCERTAINTY_DIR) for o in tensors.outputs
    )
    batch = Batch(
        out_dir,
        model.label,
        options.overwrite,
        options.progress,
        "sample",
        leftovers=leftovers,
        shard=options.shard,
    )
    done = run_batch(items, batch, work)
    return [p for item in done.skipped for p in item.outputs] + [
        p for _, paths in done.results for p in paths
    ]


def _predict_sample(
    model: LoadedModel, item: Item, out_dir: Path, options: PredictOptions, axes: str | None
) -> list[Path]:
    """One sample: its inputs read (lazily when large), predicted in memory or out of core, each
    output written under its tensor's id."""
    tensors: Tensors = model.tensors
    images, found = {}, False
    for tensor in tensors.inputs:
        path = item.inputs[tensor.id]
        images[tensor.id] = load_input(path, axes, tensor.io, lazy=True)
        found = (
            check_nonfinite(images[tensor.id], str(path), tensor.io.image_axes, options.on_nonfinite)
            is not None
            or found
        )
    lazy = any(is_lazy(i) for i in images.values())
    large = sum(i.nbytes for i in images.values()) > options.out_of_core_bytes
    if lazy and large and needs_whole_output(tensors):
        log.warning(
            "%s: this package post-processes with statistics of the whole output, so the sample is "
            "predicted in memory",
            item.name,
        )
    if not (lazy and large) or needs_whole_output(tensors):
        images = {name: np.asarray(i[tuple(slice(None) for _ in i.shape)]) for name, i in images.items()}
        return _write_in_memory(model, images, item, out_dir, options, found)
    return _write_out_of_core(model, images, item, out_dir, options, found)


def _output_axes(tensors: Tensors, channels: int) -> str:
    return ("c" if channels > 1 else "") + tensors.spatial


def _write_in_memory(
    model: LoadedModel,
    images: Mapping[str, Any],
    item: Item,
    out_dir: Path,
    options: PredictOptions,
    nonfinite: bool,
) -> list[Path]:
    tensors: Tensors = model.tensors
    results = predict_tensors(model, images, options, nonfinite=nonfinite)
    arrays = {}
    for out in tensors.outputs:
        values = results[out.id]
        values = (values[0] if values.shape[0] == 1 else values).astype(out.dtype, copy=False)
        arrays[output_path(out_dir, out.id, item.name, options)] = values
        if options.mc_samples:
            spread = output_path(out_dir / UNCERTAINTY_DIR, out.id, item.name, options)
            arrays[spread] = results[f"{out.id}:uncertainty"]
    written = []
    for target, array in arrays.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(write_output(target, array, options, tensors.inputs[0].io))
    log.info("%s -> %s", item.name, ", ".join(str(p.relative_to(out_dir)) for p in written))
    return written


def _write_out_of_core(
    model: LoadedModel,
    images: Mapping[str, Any],
    item: Item,
    out_dir: Path,
    options: PredictOptions,
    nonfinite: bool,
) -> list[Path]:
    """Every output (and uncertainty map) written tile by tile, so memory follows the tiles."""
    tensors: Tensors = model.tensors
    shape = shared_shape(tensors, images)
    sinks: list[Any] = []
    targets, spreads = {}, {}
    try:
        for out in tensors.outputs:
            length = tuple(out.size(a, n) for a, n in zip(tensors.spatial, shape, strict=True))
            sink_shape = length if out.channels == 1 else (out.channels, *length)
            path = output_path(out_dir, out.id, item.name, options)
            targets[out.id] = open_sink(
                path, sink_shape, np.dtype(out.dtype), options.out_format, _output_axes(tensors, out.channels)
            )
            sinks.append(targets[out.id])
            if options.mc_samples:
                spread_path = output_path(out_dir / UNCERTAINTY_DIR, out.id, item.name, options)
                spreads[out.id] = open_sink(
                    spread_path, length, np.dtype(np.float32), options.out_format, tensors.spatial
                )
                sinks.append(spreads[out.id])
        predict_tensors(model, images, options, targets, spreads, nonfinite)
        written = [sink.close() for sink in sinks]
    except BaseException:
        for sink in sinks:
            sink.discard()
        raise
    log.info(
        "%s -> %s, written tile by tile", item.name, ", ".join(str(p.relative_to(out_dir)) for p in written)
    )
    return written
