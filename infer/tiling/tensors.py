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
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from idl.infer.core.axes import reorder
from idl.infer.core.errors import BatchError, DataError, IdlError, ModelError
from idl.infer.core.grid import AxisSize, Tile, round_up, tile_grid
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.processing import apply_ops, fit_ops, network_tile, split_pointwise
from idl.infer.io.omezarr import image_stem
from idl.infer.io.places import remove_leftovers
from idl.infer.io.record import OutputRecord, claim
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.tensors import OutputTensor, Tensors
from idl.infer.tiling.predict import PredictOptions, load_input, runs_whole, write_output

log = logging.getLogger("idl")


def _shared_shape(tensors: Tensors, images: Mapping[str, np.ndarray]) -> tuple[int, ...]:
    """The spatial shape all input images share (channels-last images)."""
    missing = [t.id for t in tensors.inputs if t.id not in images]
    if missing:
        raise DataError(f"no image for the input(s) {', '.join(missing)}")
    shapes = {name: image.shape[:-1] for name, image in images.items()}
    if len(set(shapes.values())) != 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise DataError(f"the inputs of one sample must have the same size; got {listed}")
    return next(iter(shapes.values()))


def _input_halo(tensors: Tensors, axis: str) -> int:
    """Input pixels of context the outputs' halos need along ``axis`` (the largest over outputs), a
    whole number of output pixels of every down-sampled output."""
    need = 0
    for out in tensors.outputs:
        scale = out.scale.get(axis, 1.0)
        unit = round(1 / scale) if scale < 1 and abs(1 / scale - round(1 / scale)) < 1e-6 else 1
        need = max(need, round_up(math.ceil(out.halo.get(axis, 0) / scale - 1e-9), unit))
    return need


def _rule(tensors: Tensors, axis: str) -> AxisSize:
    """The size rule tiles follow along ``axis``: the inputs' (the coarsest step when they differ)."""
    rules = [t.io.sizes[axis] for t in tensors.inputs if axis in t.io.sizes]
    return max(rules, key=lambda r: (r.step, r.minimum))


def _to_output(value: int, scale: float, label: str) -> int:
    """An input coordinate as an output pixel index, which must be whole."""
    scaled = value * scale
    if abs(scaled - round(scaled)) > 1e-6:
        raise ModelError(
            f"output '{label}': input pixel {value} falls inside an output pixel (scale {scale:g}); choose a "
            "--tile-size that is a multiple of the scale, or one larger than the image to run it whole."
        )
    return round(scaled)


def predict_tensors(
    model: LoadedModel, images: Mapping[str, np.ndarray], options: PredictOptions
) -> dict[str, np.ndarray]:
    """Run a multi-tensor network over one sample: ``images`` maps each input's id to its raw
    channels-last image; returns each output's id -> its post-processed ``(K, *spatial)`` array."""
    tensors: Tensors = model.tensors
    spatial = tensors.spatial
    original = _shared_shape(tensors, images)
    rules = [_rule(tensors, a) for a in spatial]
    tile = [options.bounded_tile(model.io, original)] * len(spatial)
    whole = all(runs_whole(t.io, original, tile) for t in tensors.inputs)
    halos = [0 if whole else _input_halo(tensors, a) for a in spatial]
    if options.overlap is not None and not whole:
        halos = [options.halo(h, t) for h, t in zip(halos, tile, strict=True)]
    pad = tensors.inputs[0].io.input_pad is not None and any(halos)
    padding = halos if pad else [0] * len(halos)
    padded = {}
    for tensor in tensors.inputs:
        image = np.asarray(images[tensor.id])
        if pad and tensor.io.input_pad is not None:
            mode, value = tensor.io.input_pad, tensor.io.input_pad_value
            extra = {"constant_values": value} if mode == "constant" else {}
            image = np.pad(image, [*[(h, h) for h in padding], (0, 0)], mode=mode, **extra)
        padded[tensor.id] = image
    shape = next(iter(padded.values())).shape[:-1]
    if whole:
        grid = tile_grid(shape, tuple(shape), (0,) * len(shape), [AxisSize(n, 0) for n in shape])
    else:
        grid = tile_grid(shape, tuple(tile), tuple(halos), rules)
    if any(o.offset.get(a, 0) for o in tensors.outputs for a in spatial) and len(grid) > 1:
        raise ModelError(
            f"{model.label}: an output has an offset (it is not the input's size times its scale); such "
            "networks run whole: give images of a valid input size and a --tile-size at least as large."
        )
    pre = {t.id: fit_ops(t.io.preprocessing, padded[t.id], t.io.image_axes) for t in tensors.inputs}
    heads = {o.id: split_pointwise(o.postprocessing)[0] for o in tensors.outputs}
    batch_axes = "bc" + spatial
    results: dict[str, np.ndarray] = {}
    runner = model.runner
    size = options.batch_for(model.io)  # the summary IOSpec carries the inputs' batch limit
    bar = tqdm(total=len(grid), unit="tile", disable=not options.progress or len(grid) < 2, leave=False)
    for start in range(0, len(grid), size):
        chunk = grid[start : start + size]
        feed = [
            t.io.to_model(
                np.stack([network_tile(padded[t.id], c.window, pre[t.id], t.io.image_axes) for c in chunk])
            )
            for t in tensors.inputs
        ]
        raw = runner.run_all(feed)
        for out, value in zip(tensors.outputs, raw, strict=True):
            value = apply_ops(heads[out.id], reorder(value, out.axes, batch_axes), batch_axes)
            target = results.get(out.id)
            if target is None:
                out_shape = tuple(out.size(a, n) for a, n in zip(spatial, shape, strict=True))
                target = results[out.id] = np.zeros((value.shape[1], *out_shape), np.float32)
            for tile, region in zip(chunk, value, strict=True):
                _place(target, region, tile, out, spatial, shape)
        bar.update(len(chunk))
    bar.close()
    final = {}
    for out in tensors.outputs:
        array = results[out.id]
        if any(padding):
            starts = [
                _to_output(p, out.scale.get(a, 1.0), out.id) for a, p in zip(spatial, padding, strict=True)
            ]
            crop = tuple(
                slice(b, b + out.size(a, n)) for a, b, n in zip(spatial, starts, original, strict=True)
            )
            array = array[(slice(None), *crop)]
        tail = split_pointwise(out.postprocessing)[1]
        if tail:
            axes = "c" + spatial
            array = apply_ops(fit_ops(tail, array, axes), array, axes).astype(np.float32)
        final[out.id] = array
    return final


def _place(
    target: np.ndarray, region: np.ndarray, tile: Tile, out: OutputTensor, spatial: str, shape: Sequence[int]
) -> None:
    """Copy the part of one tile's output ``region`` ``(K, *spatial)`` that the tile owns into
    ``target``. Owned bounds between tiles map to output pixels by rounding down, the same for both
    neighbours, so the output is covered once."""
    into, take = [slice(None)], [slice(None)]
    axes = zip(spatial, tile.window, tile.owned, shape, target.shape[1:], strict=True)
    for axis, window, owned, n, length in axes:
        scale = out.scale.get(axis, 1.0)
        origin = _to_output(window.start, scale, out.id)
        begin = math.floor(owned.start * scale + 1e-9)
        end = length if owned.stop >= n else math.floor(owned.stop * scale + 1e-9)
        into.append(slice(begin, end))
        take.append(slice(begin - origin, end - origin))
    target[tuple(into)] = region[tuple(take)]


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


def predict_tensor_files(
    model: LoadedModel,
    samples: Sequence[Mapping[str, Path]],
    out_dir: Path,
    options: PredictOptions,
    axes: str | None = None,
) -> list[Path]:
    """Predict every sample (input id -> file) and write each output tensor under its id; keeps going
    past unreadable samples (:class:`BatchError` at the end), skips finished ones unless
    ``options.overwrite``."""
    tensors: Tensors = model.tensors
    first = tensors.inputs[0]
    written, failures = [], []
    for tensor in tensors.outputs:
        remove_leftovers(out_dir / tensor.id)
    record = OutputRecord.read(out_dir)
    planned = {
        image_stem(s[first.id]): (
            s[first.id],
            [output_path(out_dir, o.id, image_stem(s[first.id]), options) for o in tensors.outputs],
        )
        for s in samples
    }
    claim(record, planned, model.label, options.overwrite)
    for sample in tqdm(samples, unit="sample", disable=not options.progress or len(samples) < 2):
        stem = image_stem(sample[first.id])
        source, targets = planned[stem]
        if not options.overwrite and record.finished(stem, targets, source, model.label):
            log.info("%s: already predicted, skipped; pass --overwrite to predict it again", stem)
            written.extend(targets)
            continue
        record.start(stem, targets, source, model.label)
        try:
            images = {}
            for tensor in tensors.inputs:
                path = sample[tensor.id]
                images[tensor.id] = load_input(path, axes, tensor.io)
                check_nonfinite(images[tensor.id], str(path), tensor.io.image_axes, options.on_nonfinite)
            results = predict_tensors(model, images, options)
        except ModelError:
            raise
        except IdlError as exc:
            log.error("not predicted: %s", exc)
            failures.append((sample[first.id], str(exc)))
            continue
        for out, target in zip(tensors.outputs, targets, strict=True):
            array = results[out.id]
            array = (array[0] if array.shape[0] == 1 else array).astype(out.dtype, copy=False)
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_output(target, array, options, first.io))
        record.finish(stem, targets, source, model.label)
        log.info("%s -> %s", stem, ", ".join(str(t.relative_to(out_dir)) for t in targets))
    if failures:
        raise BatchError(failures, len(samples))
    return written
