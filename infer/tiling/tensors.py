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
from tqdm import tqdm

from idl.infer.core.errors import BatchError, DataError, IdlError, ModelError
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.io.omezarr import image_stem
from idl.infer.io.places import remove_leftovers
from idl.infer.io.record import OutputRecord, claim
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.engine import (
    finish,
    layout,
    network_forward,
    output_halo,
    run_sample,
    shared_shape,
)
from idl.infer.tiling.mergers import Placed
from idl.infer.tiling.predict import PredictOptions, load_input, write_output

log = logging.getLogger("idl")


def predict_tensors(
    model: LoadedModel, images: Mapping[str, Any], options: PredictOptions
) -> dict[str, np.ndarray]:
    """Run a multi-tensor network over one sample through the tile loop
    (:mod:`idl.infer.tiling.engine`): ``images`` maps each input's id to its raw channels-last image;
    returns each output's id -> its post-processed ``(K, *spatial)`` array."""
    tensors: Tensors = model.tensors
    original = shared_shape(tensors, images)
    tile = [options.bounded_tile(model.io, original)] * len(tensors.spatial)
    halos = None
    if options.overlap is not None:
        halos = [options.halo(output_halo(tensors, a), t) for a, t in zip(tensors.spatial, tile, strict=True)]
    where = layout(tensors, original, tile, halos)
    mergers = {o.id: Placed(where.grid(tensors, o.id)) for o in tensors.outputs}
    forward = network_forward(model.runner, tensors)
    inputs = {t.id: images[t.id] for t in tensors.inputs}
    size = options.batch_for(model.io)  # the summary IOSpec carries the inputs' batch limit
    progress = options.progress and len(where.tiles) > 1
    results = run_sample(tensors, inputs, forward, where, mergers, size, 0, progress)
    return finish(tensors, results)


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
