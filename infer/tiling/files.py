"""A batch of image files predicted into a folder: each image in memory, out of core into TIFF or
OME-Zarr sinks, or, for one volume written to OME-Zarr, block by block (:mod:`idl.infer.tiling.blocks`,
shared among the shards of a job array or Dask workers), all under the one batch driver.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import IdlError
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.project import OBJECTS_DIR, PROBABILITY_DIR, UNCERTAINTY_DIR
from idl.infer.io.formats import open_sink
from idl.infer.io.images import atomic_path
from idl.infer.io.lazy import is_lazy
from idl.infer.io.omezarr import image_stem
from idl.infer.io.physical import pixel_sizes
from idl.infer.io.scenes import scene_names, scene_pixel_sizes, scene_stems
from idl.infer.io.sinks import ChannelView
from idl.infer.runtime.model import LoadedModel
from idl.infer.tiling.batch import Batch, Item, Pending, run_batch
from idl.infer.tiling.blocks import blockable
from idl.infer.tiling.engine import needs_whole_output
from idl.infer.tiling.predict import (
    Outputs,
    Prediction,
    PredictOptions,
    _check_tiles,
    _halos,
    check_batch,
    empty_tiles,
    load_input,
    outputs_of,
    predict_image,
    predict_probabilities,
    report_skipped,
    sampling,
    tile_shape,
    write_output,
)
from idl.infer.tiling.volume import BlockRunner, predict_volume

log = logging.getLogger("idl")


def _output_image(model: LoadedModel, result: Prediction) -> np.ndarray:
    """What is written as the prediction: the class mask, or a package's output (channel axis first,
    dropped when there is one channel) in the dtype the package declares."""
    if result.mask is not None:
        return result.mask
    output = result.probabilities
    if output.shape[0] == 1:
        output = output[0]
    return output.astype(model.io.output_dtype, copy=False)


def _predict_out_of_core(
    model: LoadedModel,
    image: Any,
    name: str,
    out_dir: Path,
    options: PredictOptions,
    save_probabilities: bool,
    nonfinite: bool = False,
    scale: Mapping[str, float] | None = None,
) -> tuple[Path, float | None]:
    """Predict a lazily read image with every output written tile by tile into TIFF files (or
    OME-Zarr), so memory follows the tiles, not the image. Returns the prediction's path and the
    threshold."""
    io, outputs = model.io, outputs_of(model)
    shape, k, ext = image.shape[:-1], io.out_channels, options.suffix
    if outputs.makes_mask:  # probabilities first (kept only when asked for), then the mask
        hidden = out_dir / f".{name}.prob{ext}"
        target = out_dir / PROBABILITY_DIR / f"{name}{ext}" if save_probabilities else hidden
    else:
        target = out_dir / f"{name}{ext}"

    def sink(path: Path, sink_shape: tuple[int, ...], dtype: Any) -> Any:
        axes = ("c" if len(sink_shape) > len(shape) else "") + io.spatial
        return open_sink(path, sink_shape, dtype, options.out_format, axes, scale)

    sinks: list[Any] = []
    uncertainty = None
    try:
        values = sink(target, shape if k == 1 else (k, *shape), np.float32)
        sinks.append(values)
        if options.sampled:
            uncertainty = sink(out_dir / UNCERTAINTY_DIR / f"{name}{ext}", shape, np.float32)
            sinks.append(uncertainty)
        tile = tile_shape(model, options, shape)
        halos = _halos(model, options, tile)
        _check_tiles(io, shape, tile, halos)
        skip = empty_tiles(options)
        if options.mc_samples:
            model.reseed(options.seed)
        predict_probabilities(
            image=image,
            io=io,
            tile_size=tile,
            halo=halos,
            progress=options.progress,
            output=ChannelView(values) if k == 1 else values,
            uncertainty_out=uncertainty,
            mark_nonfinite=nonfinite,
            skip=skip,
            **sampling(model, options, outputs),
        )
        report_skipped(skip)
        threshold = None
        if outputs.makes_mask:
            mask = sink(out_dir / f"{name}{ext}", shape, np.uint8)
            sinks.append(mask)
            threshold = outputs.mask_blocks(values, mask, options)
            mask.close()
        if save_probabilities or not outputs.makes_mask:
            values.close()
        else:
            values.discard()
        if uncertainty is not None:
            uncertainty.close()
    except BaseException:
        for sink in sinks:
            sink.discard()
        raise
    return out_dir / f"{name}{ext}", threshold


def _write_objects(path: Path, result: Prediction) -> Path:
    """``objects/<name>.csv``: label, area, centroid and (with MC) mean uncertainty per object."""
    from idl.infer.post.instance_labels import objects_table

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        objects_table(result.mask, result.uncertainty, result.scores).to_csv(
            tmp, index=False, float_format="%.6g"
        )
    return path


def expected_outputs(
    out_dir: Path, stem: str, options: PredictOptions, outputs: Outputs, save_probabilities: bool
) -> list[Path]:
    """Every file prediction writes for an image named ``stem``; the first is the prediction."""
    ext = options.suffix
    paths = [out_dir / f"{stem}{ext}"]
    if options.sampled:
        paths.append(out_dir / UNCERTAINTY_DIR / f"{stem}{ext}")
    if outputs.objects:
        paths.append(out_dir / OBJECTS_DIR / f"{stem}.csv")
    if save_probabilities and outputs.saves_probabilities:
        paths.append(out_dir / PROBABILITY_DIR / f"{stem}{ext}")
    return paths


def predict_files(
    model: LoadedModel,
    inputs: Sequence[Path],
    out_dir: Path,
    options: PredictOptions,
    axes: str | None = None,
    save_probabilities: bool = False,
    blocks: BlockRunner | None = None,
) -> list[Path]:
    """Predict every input file and write ``out_dir/<name>.tif`` (+ uncertainty, probabilities),
    under the one batch driver's policy (:func:`idl.infer.tiling.batch.run_batch`: keep going past
    bad inputs, skip what an earlier run finished, refuse files idl did not write). One volume written
    to OME-Zarr is shared by block (:mod:`idl.infer.tiling.blocks`) among the shards, or the workers of
    ``blocks`` (a Dask cluster), instead of by file."""
    outputs = outputs_of(model)
    check_batch(model, options)
    items, scenes = [], {}  # scenes: item name -> scene index, for files of several images
    for p in inputs:
        names = scene_names(p)
        stems = scene_stems(image_stem(p), names) if names else [image_stem(p)]
        for index, stem in enumerate(stems):
            if names:
                scenes[stem] = index
            expected = expected_outputs(out_dir, stem, options, outputs, save_probabilities)
            items.append(Item(stem, {"input": p}, tuple(expected)))
    if scenes:
        log.info("%d image(s) from files of several scenes, each predicted as <file>_<scene>", len(scenes))
    # one volume into OME-Zarr: the shards (or Dask's workers) share its blocks, not the files
    by_block = options.out_format == "zarr" and len(items) == 1 and not scenes
    if by_block and (options.shard is not None or blocks is not None or options.block_size):
        why = blockable(model)
        if why:
            raise IdlError(
                f"{inputs[0]}: this model cannot predict a volume block by block ({why}), so --shard, "
                "--dask and --block-size cannot share it; predict it in one process without them."
            )
    elif blocks is not None:
        raise IdlError("--dask predicts one volume into OME-Zarr: give one image and --out-format zarr.")

    def work(group: Sequence[Item]) -> list[Any]:
        return [
            _predict_file(
                model,
                item.source,
                out_dir,
                options,
                axes,
                save_probabilities,
                outputs,
                item.name,
                scenes.get(item.name),
                by_block,
                blocks,
            )
            for item in group
        ]

    folders = tuple(out_dir / sub for sub in (UNCERTAINTY_DIR, PROBABILITY_DIR, OBJECTS_DIR))
    batch = Batch(
        out_dir,
        model.label,
        options.overwrite,
        options.progress,
        leftovers=folders,
        shard=options.shard,
        split=not by_block,
    )
    done = run_batch(items, batch, work)
    finished = [path for _, path in done.results if isinstance(path, Path)]
    return [item.outputs[0] for item in done.skipped] + finished


def _predict_file(
    model: LoadedModel,
    path: Path,
    out_dir: Path,
    options: PredictOptions,
    axes: str | None,
    save_probabilities: bool,
    outputs: Outputs,
    name: str,
    scene: int | None = None,
    by_block: bool = False,
    blocks: BlockRunner | None = None,
) -> Path | Pending:
    """Predict one input file (or scene ``scene`` of it) and write its outputs named ``name``;
    returns the prediction's path (:class:`Pending` while other shards have blocks of it left).
    With ``by_block`` the file is the one volume whose blocks the shard (or ``blocks``, Dask) shares;
    otherwise a volume into OME-Zarr read out of core is predicted by blocks here, all of them."""
    image = load_input(path, axes, model.io, lazy=scene is None, scene=scene)
    ext = options.suffix
    large = is_lazy(image) and image.nbytes > options.out_of_core_bytes
    shared = by_block and (options.shard is not None or blocks is not None)
    if (
        options.out_format == "zarr"
        and scene is None
        and (large or shared or options.block_size)
        and not blockable(model)
    ):
        shard, runner = (options.shard, blocks) if by_block else (None, None)
        return predict_volume(
            model, image, path, out_dir, f"{name}{ext}", options, save_probabilities, runner, axes, shard
        )
    # the input's pixel sizes, kept in OME-TIFF and OME-Zarr outputs
    scale = pixel_sizes(path) if scene is None else scene_pixel_sizes(path, scene)
    found = check_nonfinite(image, str(path), model.io.image_axes, options.on_nonfinite)
    # a package's input padding is read lazily too (engine.PaddedView); statistics of the whole output
    # are not
    whole_image_needed = outputs.whole_image or needs_whole_output(model.tensors)
    if is_lazy(image) and whole_image_needed and image.nbytes > options.out_of_core_bytes:
        log.warning(
            "%s: %s, so the image is predicted in memory",
            path.name,
            outputs.whole_image or "this package post-processes with statistics of the whole output",
        )
    if is_lazy(image) and (image.nbytes <= options.out_of_core_bytes or whole_image_needed):
        image = np.asarray(image[tuple(slice(None) for _ in image.shape)])
    if is_lazy(image):
        target, threshold = _predict_out_of_core(
            model, image, name, out_dir, options, save_probabilities, found is not None, scale
        )
        note = f" (threshold {threshold:.3f})" if isinstance(threshold, float) else ""
        log.info("%s -> %s, written tile by tile%s", path.name, target.name, note)
        return target
    result = predict_image(model, image, options)
    stem = name
    # the prediction itself last: when it exists, so does everything else of the image
    if result.uncertainty is not None:
        write_output(out_dir / UNCERTAINTY_DIR / f"{stem}{ext}", result.uncertainty, options, model.io, scale)
    if outputs.objects:
        _write_objects(out_dir / OBJECTS_DIR / f"{stem}.csv", result)
    if save_probabilities and result.mask is not None:
        probabilities = result.probabilities
        write_output(out_dir / PROBABILITY_DIR / f"{stem}{ext}", probabilities, options, model.io, scale)
    target = write_output(out_dir / f"{stem}{ext}", _output_image(model, result), options, model.io, scale)
    threshold = f" (threshold {result.threshold:.3f})" if result.threshold is not None else ""
    log.info("%s -> %s%s", path.name, target.name, threshold)
    return target
