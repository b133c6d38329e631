"""Running a classifier with ONNX Runtime: one image in, one value per class out, no tiles.

Each image is resized to the model's input size and normalized as in training
(:func:`idl.infer.post.classify.prepare_image`), and images run in batches. With Monte Carlo dropout
every image is run ``S`` times through the Monte Carlo graph, a batch of copies at a time, and its
sampled class distributions go through the same statistics as every task's
(:class:`idl.infer.post.uncertainty.SampleMoments`): the ``uncertainty`` column is the map
``--uncertainty`` names (default: the entropy of the mean distribution, normalized to [0, 1]), and
``uncertainty_instantdl`` the samples' mean entropy (InstantDL's). Files go through the one batch
driver (:mod:`idl.infer.tiling.batch`), whose table is ``results.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from idl.infer.core.axes import match_channels
from idl.infer.core.errors import DataError, IdlError, ModelError
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.processing import apply_ops
from idl.infer.core.shard import Shard
from idl.infer.io.images import read_channels_last
from idl.infer.io.omezarr import image_stem
from idl.infer.post.classify import (
    BATCH_BYTES,
    RESULTS_NAME,
    ClassScores,
    class_names_for,
    prepare_image,
    results_table,
    write_results,
)
from idl.infer.post.typicality import InputReference
from idl.infer.post.uncertainty import SampleMoments
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel
from idl.infer.tiling.batch import Batch, Item, run_batch

log = logging.getLogger("idl")

DEFAULT_MAP = "entropy"  # the classifier's uncertainty column unless --uncertainty names another


def _probabilities(model: LoadedModel, output: np.ndarray) -> np.ndarray:
    """Class probabilities ``(N, K)`` from a network output: the model's post-processing, then a
    softmax when the result is not a distribution yet (packages that output logits)."""
    p = apply_ops(model.io.postprocessing, output.reshape(output.shape[0], -1), "bc").astype(np.float64)
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        if not model.details.get("softmax_warned"):
            log.warning("%s: the outputs are not probabilities; applying a softmax", model.label)
            model.details["softmax_warned"] = True
        p = np.exp(p - p.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
    return p


def classify_batch(
    model: LoadedModel,
    x: np.ndarray,
    mc_samples: int = 0,
    batch: int = 32,
    advance: Callable[[int], object] | None = None,
    uncertainty: str | None = None,
) -> ClassScores:
    """Class probabilities (and Monte Carlo scores) for prepared inputs ``(N, C, H, W)``; ``advance``
    is told how many samples each call drew (a progress bar's update); ``uncertainty`` names the map
    of the ``uncertainty`` column (:data:`idl.infer.post.uncertainty.MAPS`)."""
    run = model.network(mc=False)
    probabilities = np.concatenate(
        [_probabilities(model, run(x[i : i + batch])) for i in range(0, len(x), batch)]
    )
    if mc_samples < 2:
        return ClassScores(probabilities)
    run_mc = model.network(mc=True)
    # ``batch`` rows per call, each an image's copy, image by image (ONNX Runtime draws fresh masks
    # for every row); only one call's copies exist at a time, so memory stays at one batch whatever
    # the number of samples
    total = len(x) * mc_samples
    flat = []
    for start in range(0, total, batch):
        rows = np.arange(start, min(start + batch, total)) // mc_samples
        flat.append(_probabilities(model, run_mc(x[rows])))
        if advance is not None:
            advance(len(rows))
    samples = np.concatenate(flat).reshape(len(x), mc_samples, -1).transpose(1, 2, 0)  # (S, K, N)
    moments = SampleMoments.zeros(samples.shape[1:], entropy=True)
    moments.add(samples)
    return ClassScores(
        probabilities,
        moments.mean().T,
        moments.map(uncertainty or DEFAULT_MAP),
        moments.mean_entropy(),
    )


def batch_size(io: IOSpec, requested: int) -> int:
    """Images per call: as many as fit in ``BATCH_BYTES`` (at least ``requested``), but no more than
    a package's network takes (e.g. 1 without a batch axis)."""
    per_image = io.in_channels * int(np.prod([io.sizes[a].minimum for a in io.spatial])) * 4
    batch = max(requested, min(256, max(1, BATCH_BYTES // per_image)))
    return min(batch, io.max_batch) if io.max_batch else batch


def read_input(path: Path, axes: str | None, io: IOSpec, on_nonfinite: str) -> np.ndarray:
    """One image as the classifier's input ``(C, H, W)``, checked."""
    image, resolved, _ = read_channels_last(path, axes, io.spatial)
    check_nonfinite(image, str(path), io.image_axes, on_nonfinite)
    image = match_channels(image, io.in_channels)
    if image.shape[-1] != io.in_channels:
        raise DataError(
            f"{path}: has {image.shape[-1]} channel(s) (axes '{resolved}') but the model expects "
            f"{io.in_channels}. Pass the right --axes or convert the image."
        )
    return prepare_image(image, io)


def _check_classifier(model: LoadedModel) -> None:
    io = model.io
    if io.output_axes.strip("b") != "c" or any(a in io.output_axes for a in "zyx"):
        raise ModelError(f"{model.label}: this model outputs images, not one value per class.")


def _scores(model: LoadedModel, x: np.ndarray, settings: Classify, progress: bool = False) -> ClassScores:
    """:func:`classify_batch` with the model's atypicality (idl classifiers store their training
    inputs' statistics); with Monte Carlo sampling a progress bar counts the samples, so many
    samples show progress and an estimate from the first call."""
    batch = batch_size(model.io, settings.batch_size)
    sampling = settings.mc_samples >= 2
    bar = tqdm(
        total=len(x) * settings.mc_samples,
        unit="sample",
        desc="classify",
        leave=False,
        disable=None if progress and sampling else True,
    )
    scores = classify_batch(model, x, settings.mc_samples, batch, bar.update, settings.uncertainty)
    bar.close()
    stored = model.info.input_reference if model.info is not None else {}
    if stored:
        scores = replace(scores, atypicality=InputReference.from_dict(stored).atypicality(x))
    return scores


@dataclass(frozen=True)
class Classify:
    """How images are classified."""

    mc_samples: int = 0
    axes: str | None = None
    batch_size: int = 1
    on_nonfinite: str = "replace"
    uncertainty: str | None = None
    progress: bool = False
    seed: int = 0  # Monte Carlo samples are drawn from it: the same command writes the same table


def classify_files(
    model: LoadedModel, files: Sequence[Path], settings: Classify = Classify()
) -> tuple[list[str], ClassScores]:
    """Classify image files in memory (no outputs written); returns their file names and scores. An
    unreadable file stops it: :func:`predict_classes` is the batch that keeps going."""
    _check_classifier(model)
    if settings.mc_samples:
        model.reseed(settings.seed)
    x = np.stack([read_input(p, settings.axes, model.io, settings.on_nonfinite) for p in files])
    return [p.name for p in files], _scores(model, x, settings, settings.progress)


@dataclass
class ResultsTable:
    """``results.csv``: one row per image, by file name (the batch driver's table)."""

    path: Path

    def read(self) -> dict[str, dict[str, Any]]:
        if not self.path.is_file():
            return {}
        import pandas as pd  # imported where needed: idl-predict starts 0.2 s sooner without it

        table = pd.read_csv(self.path, dtype={"filename": str})
        return {str(row["filename"]): row for row in table.to_dict("records")}

    def write(self, rows: Sequence[dict[str, Any]]) -> Path:
        import pandas as pd

        return write_results(pd.DataFrame(list(rows)), self.path.parent)


def predict_classes(
    model: LoadedModel,
    files: Sequence[Path],
    out_dir: Path,
    settings: Classify = Classify(),
    groundtruth: dict[str, str] | None = None,
    progress: bool = True,
    overwrite: bool = True,
    shard: Shard | None = None,
) -> Path:
    """Classify ``files`` into ``out_dir/results.csv`` (with a ``groundtruth`` column when the
    labels are given, keyed by file name without suffix as in ``groundtruth.csv``) under the one
    batch driver's policy: unreadable images are reported at the end, the rows of images of earlier
    runs are kept, and without ``overwrite`` images already classified from the same files and model
    are not classified again."""
    if not files:
        raise DataError("no images to classify.")
    _check_classifier(model)
    if settings.mc_samples:
        model.reseed(settings.seed)
    path = out_dir / RESULTS_NAME
    names = class_names_for(model)
    items = [Item(f.name, {"input": f}, (path,)) for f in files]

    def work(group: Sequence[Item]) -> list[Any]:
        outcomes: list[Any] = []
        inputs = []
        for item in group:
            try:
                inputs.append(read_input(item.source, settings.axes, model.io, settings.on_nonfinite))
                outcomes.append(None)
            except ModelError:
                raise
            except IdlError as exc:
                outcomes.append(exc)
        if inputs:
            scores = _scores(model, np.stack(inputs), settings, progress)
            read = [item.name for item, outcome in zip(group, outcomes, strict=True) if outcome is None]
            table = results_table(read, scores, names)
            if groundtruth is not None:
                table["groundtruth"] = [groundtruth.get(image_stem(Path(n)), "") for n in read]
            rows = iter(table.to_dict("records"))
            outcomes = [next(rows) if o is None else o for o in outcomes]
        return outcomes

    group = batch_size(model.io, settings.batch_size)
    batch = Batch(out_dir, model.label, overwrite, progress, "image", group, (), ResultsTable(path), shard)
    done = run_batch(items, batch, work)
    if done.results:
        import pandas as pd

        predicted = pd.DataFrame([row for _, row in done.results])["prediction"].value_counts()
        counts = ", ".join(f"{k}: {v}" for k, v in predicted.to_dict().items())
        log.info("%d image(s) classified -> %s (%s)", len(done.results), path, counts)
    return path
