"""What a classifier's inputs and outputs are: images resized and normalized for the network, class
scores per image and the ``results.csv`` table (pure numpy and pandas; the network runs in
:mod:`idl.infer.tiling.classify`).

Each image is resized to the model's input size (linear interpolation, anti-aliased when shrinking)
and normalized like in training (per-channel percentiles of the resized image, bioimage.io's
``scale_range``). With Monte Carlo dropout every image is run ``S`` times; from the sampled class
distributions ``p_1 .. p_S``:

- ``uncertainty``: the map ``--uncertainty`` names (:data:`idl.infer.post.uncertainty.MAPS`), by
  default H(mean p) / log K, the entropy of the mean predictive distribution normalized to [0, 1]
  (0: all mass on one class in every sample; 1: uniform). It counts both kinds of doubt: a flat
  prediction and samples that disagree.
- ``uncertainty_instantdl`` = mean over samples of H(p_s) / log K, InstantDL's per-sample entropy. It
  sees only how flat each sample is, not whether the samples agree; it is never above the entropy of
  the mean (entropy is concave), and the gap between the two is the mutual information (the
  samples' disagreement, ``--uncertainty mutual-information``, in bits).
- ``prediction_mc`` = arg max of the mean distribution.

Uncertainty says little about images unlike the training images, which often get confident
predictions; idl classifiers therefore also report ``atypicality``, how far an image's input
statistics lie from the training images' (see :mod:`idl.infer.post.typicality`; about 1 or less: typical).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from idl.infer.core.processing import apply_ops, fit_ops
from idl.infer.io.images import atomic_path
from idl.infer.post.classes import canonical
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel

if TYPE_CHECKING:
    import pandas as pd

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


@dataclass(frozen=True)
class ClassScores:
    """Per image: class probabilities, and with Monte Carlo dropout the mean of the sampled
    distributions and both uncertainties (see the module docstring)."""

    probabilities: np.ndarray  # (N, K), deterministic graph
    mc_probabilities: np.ndarray | None = None  # (N, K), mean over samples
    uncertainty: np.ndarray | None = None  # (N,), entropy of the mean
    uncertainty_instantdl: np.ndarray | None = None  # (N,), mean per-sample entropy
    atypicality: np.ndarray | None = None  # (N,), how unlike the training inputs (idl.infer.post.typicality)


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
    import pandas as pd  # imported here: 0.26 s of every idl-predict start, for classifiers alone

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


def write_results(table: pd.DataFrame, out_dir: Path) -> Path:
    """Write ``out_dir/results.csv`` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / RESULTS_NAME) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return out_dir / RESULTS_NAME
