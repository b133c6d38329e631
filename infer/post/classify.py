"""Image classification with ONNX Runtime: class probabilities, Monte Carlo uncertainty, results.csv.

Each image is resized to the model's input size (linear interpolation, anti-aliased when shrinking),
normalized like in training (per-channel percentiles of the resized image, bioimage.io's
``scale_range``), and run in batches. With Monte Carlo dropout every image is run ``S`` times
through the MC graph; from the sampled class distributions ``p_1 .. p_S``:

- ``uncertainty`` = H(mean p) / log K, the entropy of the mean predictive distribution normalized to
  [0, 1] (0: all mass on one class in every sample; 1: uniform). It counts both kinds of doubt: a
  flat prediction and samples that disagree.
- ``uncertainty_instantdl`` = mean over samples of H(p_s) / log K, InstantDL's per-sample entropy. It
  sees only how flat each sample is, not whether the samples agree; it is never above ``uncertainty``
  (entropy is concave), and the gap between the two is the mutual information (the samples'
  disagreement).
- ``prediction_mc`` = arg max of the mean distribution.

Uncertainty says little about images unlike the training images, which often get confident
predictions; idl classifiers therefore also report ``atypicality``, how far an image's input
statistics lie from the training images' (see :mod:`idl.infer.post.typicality`; about 1 or less: typical).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from idl.infer.core.axes import match_channels
from idl.infer.core.errors import BatchError, DataError, IdlError, ModelError
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.processing import apply_ops, fit_ops
from idl.infer.io.images import atomic_path, read_channels_last
from idl.infer.io.omezarr import image_stem
from idl.infer.io.record import OutputRecord, claim
from idl.infer.post.classes import canonical
from idl.infer.post.typicality import InputReference
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel

log = logging.getLogger("idl")

RESULTS_NAME = "results.csv"
BATCH_BYTES = 32 * 2**20  # network input per call at most (the batch adapts to the image size)


def resize_to(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """A channels-last image as float32 at spatial ``size`` (linear, anti-aliased when shrinking);
    unchanged in size when it already fits."""
    from skimage.transform import resize

    image = image.astype(np.float32, copy=False)
    if image.shape[:-1] == tuple(size):
        return image
    shrink = any(n > s for n, s in zip(image.shape[:-1], size, strict=True))
    out = resize(image, (*size, image.shape[-1]), order=1, anti_aliasing=shrink, preserve_range=True)
    return out.astype(np.float32)


def prepare_image(image: np.ndarray, io: IOSpec) -> np.ndarray:
    """A raw channels-last image -> the network input ``(C, H, W)``: resized to the model's fixed size,
    then pre-processed (percentile normalization for idl models, as in training)."""
    image = resize_to(image, [io.sizes[a].minimum for a in io.spatial])
    ops = fit_ops(io.preprocessing, image, io.image_axes)  # non-finite pixels ignored (core.nonfinite)
    prepared = np.nan_to_num(apply_ops(ops, image, io.image_axes), nan=0.0, posinf=0.0, neginf=0.0)
    return np.ascontiguousarray(np.moveaxis(prepared, -1, 0), np.float32)


def normalized_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy of class distributions ``(..., K)`` divided by log K: values in [0, 1]."""
    k = p.shape[-1]
    q = np.clip(p.astype(np.float64), 1e-12, 1.0)
    return (-(q * np.log(q)).sum(axis=-1) / np.log(k)).clip(0.0, 1.0)


@dataclass(frozen=True)
class ClassScores:
    """Per image: class probabilities, and with Monte Carlo dropout the mean of the sampled
    distributions and both uncertainties (see the module docstring)."""

    probabilities: np.ndarray  # (N, K), deterministic graph
    mc_probabilities: np.ndarray | None = None  # (N, K), mean over samples
    uncertainty: np.ndarray | None = None  # (N,), entropy of the mean
    uncertainty_instantdl: np.ndarray | None = None  # (N,), mean per-sample entropy
    atypicality: np.ndarray | None = None  # (N,), how unlike the training inputs (idl.infer.post.typicality)


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


def mc_scores(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(S, N, K)`` sampled distributions -> mean ``(N, K)``, entropy of the mean and mean entropy."""
    mean = samples.mean(axis=0)
    return mean, normalized_entropy(mean), normalized_entropy(samples).mean(axis=0)


def classify_batch(
    model: LoadedModel,
    x: np.ndarray,
    mc_samples: int = 0,
    batch: int = 32,
    advance: Callable[[int], object] | None = None,
) -> ClassScores:
    """Class probabilities (and MC scores) for prepared inputs ``(N, C, H, W)``; ``advance`` is told
    how many Monte Carlo samples each call drew (a progress bar's update)."""
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
    samples = np.concatenate(flat).reshape(len(x), mc_samples, -1).transpose(1, 0, 2)
    return ClassScores(probabilities, *mc_scores(samples))


def class_names_for(model: LoadedModel) -> tuple[str, ...]:
    """The model's class names: idl's, a package's output channel names, or ``class0``..."""
    k = model.io.out_channels
    if model.info is not None:
        names = tuple(model.info.class_names)
    else:  # spelled as labels are (``01`` is class ``1``)
        names = tuple(canonical(str(n)) for n in model.details.get("channel_names", ()))
    return names if len(names) == k else tuple(f"class{i}" for i in range(k))


def results_table(names: Sequence[str], scores: ClassScores, class_names: Sequence[str]) -> pd.DataFrame:
    """``filename, prediction, probability_<class>..., [prediction_mc, mc_probability_<class>...,
    uncertainty, uncertainty_instantdl], [atypicality]`` as a table."""
    table = pd.DataFrame({"filename": list(names)})
    table["prediction"] = [class_names[i] for i in scores.probabilities.argmax(axis=1)]
    for i, name in enumerate(class_names):
        table[f"probability_{name}"] = scores.probabilities[:, i]
    if scores.mc_probabilities is not None:
        table["prediction_mc"] = [class_names[i] for i in scores.mc_probabilities.argmax(axis=1)]
        for i, name in enumerate(class_names):
            table[f"mc_probability_{name}"] = scores.mc_probabilities[:, i]
        table["uncertainty"] = scores.uncertainty
        table["uncertainty_instantdl"] = scores.uncertainty_instantdl
    if scores.atypicality is not None:
        table["atypicality"] = scores.atypicality
    return table


def _batch_size(io: IOSpec, requested: int) -> int:
    """Images per call: as many as fit in ``BATCH_BYTES`` (at least ``requested``), but no more than
    a package's network takes (e.g. 1 without a batch axis)."""
    per_image = io.in_channels * int(np.prod([io.sizes[a].minimum for a in io.spatial])) * 4
    batch = max(requested, min(256, max(1, BATCH_BYTES // per_image)))
    return min(batch, io.max_batch) if io.max_batch else batch


def classify_files(
    model: LoadedModel,
    files: Sequence[Path],
    mc_samples: int = 0,
    axes: str | None = None,
    batch_size: int = 1,
    progress: bool = True,
    on_nonfinite: str = "replace",
    failures: list[tuple[Path, str]] | None = None,
) -> tuple[list[str], ClassScores]:
    """Classify image files; returns their file names and scores. Non-finite pixels are handled by
    ``on_nonfinite`` (:mod:`idl.infer.core.nonfinite`). With a ``failures`` list, an image that
    cannot be read is added to it with the reason and left out, instead of stopping the batch."""
    io = model.io
    if io.output_axes.strip("b") != "c" or any(a in io.output_axes for a in "zyx"):
        raise ModelError(f"{model.label}: this model outputs images, not one value per class.")
    batch = _batch_size(io, batch_size)
    stored = model.info.input_reference if model.info is not None else {}
    reference = InputReference.from_dict(stored) if stored else None
    names, parts = [], []
    # with Monte Carlo sampling the bar counts samples: many samples show progress and an estimate
    sampling = mc_samples >= 2
    bar = tqdm(
        total=len(files) * (mc_samples if sampling else 1),
        unit="sample" if sampling else "image",
        disable=not progress,
        desc="classify",
    )
    for start in range(0, len(files), batch):
        chunk = files[start : start + batch]
        inputs = []
        for path in chunk:
            try:
                inputs.append(_read_input(path, axes, io, on_nonfinite))
            except IdlError as exc:
                if failures is None or isinstance(exc, ModelError):
                    raise
                log.error("not classified: %s", exc)
                failures.append((path, str(exc)))
                continue
            names.append(path.name)
        if not inputs:
            continue
        x = np.stack(inputs)
        scores = classify_batch(model, x, mc_samples, batch, bar.update if sampling else None)
        if not sampling:
            bar.update(len(chunk))
        if reference is not None:
            scores = replace(scores, atypicality=reference.atypicality(x))
        parts.append(scores)
    bar.close()
    if not parts:
        assert failures
        raise BatchError(failures, len(files))
    fields = {
        f: (np.concatenate([getattr(p, f) for p in parts]) if getattr(parts[0], f) is not None else None)
        for f in ClassScores.__dataclass_fields__
    }
    return names, ClassScores(**fields)


def _read_input(path: Path, axes: str | None, io: IOSpec, on_nonfinite: str) -> np.ndarray:
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


def write_results(table: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``out_dir/results.csv`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / RESULTS_NAME) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return out_dir / RESULTS_NAME


def predict_classes(
    model: LoadedModel,
    files: Sequence[Path],
    out_dir: Path,
    mc_samples: int = 0,
    axes: str | None = None,
    groundtruth: dict[str, str] | None = None,
    batch_size: int = 1,
    progress: bool = True,
    on_nonfinite: str = "replace",
    overwrite: bool = True,
) -> Path:
    """Classify ``files`` and write ``out_dir/results.csv`` (with a ``groundtruth`` column when the
    labels are given, keyed by file name without suffix as in ``groundtruth.csv``). Without
    ``overwrite``, a ``results.csv`` that idl wrote (:mod:`idl.infer.io.record`) and that lists every
    file already, from the same files and model, is kept as it is; its rows of other images are kept
    beside the new ones. A ``results.csv`` idl did not write is replaced only with ``overwrite``."""
    if not files:
        raise DataError("no images to classify.")
    path = out_dir / RESULTS_NAME
    record = OutputRecord.read(out_dir)
    planned = {f.name: (f, [path]) for f in files}
    claim(record, planned, model.label, overwrite)
    earlier = None if overwrite or not path.is_file() else pd.read_csv(path, dtype={"filename": str})
    if earlier is not None and all(
        record.finished(n, [path], f, model.label) for n, (f, _) in planned.items()
    ):
        log.info("%s lists every image already; skipped (pass --overwrite to classify them again)", path)
        return path
    for name, (source, outputs) in planned.items():
        record.start(name, outputs, source, model.label)
    failures: list[tuple[Path, str]] = []
    names, scores = classify_files(
        model, files, mc_samples, axes, batch_size, progress, on_nonfinite, failures
    )
    table = results_table(names, scores, class_names_for(model))
    if groundtruth is not None:
        table["groundtruth"] = [groundtruth.get(image_stem(Path(n)), "") for n in names]
    if earlier is not None:  # the rows of images this run did not classify stay
        kept = earlier[~earlier["filename"].isin(planned)]
        table = pd.concat([table, kept], ignore_index=True) if len(kept) else table
    path = write_results(table, out_dir)
    for name in names:
        record.finish(name, [path], planned[name][0], model.label)
    for name in table["filename"][len(names) :]:  # the earlier rows kept
        record.rewritten(str(name), [path])
    counts = table["prediction"].value_counts().to_dict()
    log.info(
        "%d image(s) classified -> %s (%s)",
        len(names),
        path,
        ", ".join(f"{k}: {v}" for k, v in counts.items()),
    )
    if failures:
        raise BatchError(failures, len(files))
    return path
