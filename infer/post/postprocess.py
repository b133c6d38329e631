"""From probabilities to masks: Otsu or fixed thresholds (binary), arg-max (multi-class)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Otsu is InstantDL's default threshold. On a probability map with no foreground at all it would
# still split the background noise in two, so the threshold is kept inside these bounds: a map whose
# probabilities all stay below 0.1 yields an empty mask.
OTSU_BOUNDS = (0.1, 0.9)


OTSU_BINS = 256


def probability_histogram(probability: np.ndarray) -> np.ndarray:
    """Counts of a probability map in Otsu's 256 bins on [0, 1] (summable over blocks)."""
    return np.histogram(probability, bins=OTSU_BINS, range=(0.0, 1.0))[0]


def otsu_threshold(probability: np.ndarray | None = None, counts: np.ndarray | None = None) -> float:
    """Otsu's threshold of a probability map (256 bins on [0, 1]), clipped to ``OTSU_BOUNDS``; give
    the map, or its histogram ``counts`` accumulated block by block."""
    if counts is None:
        counts = probability_histogram(probability)
    edges = np.linspace(0.0, 1.0, OTSU_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    if np.count_nonzero(counts) < 2:
        return 0.5
    return float(np.clip(otsu_of_histogram(counts, centers), *OTSU_BOUNDS))


def otsu_of_histogram(counts: np.ndarray, centers: np.ndarray) -> float:
    """The bin centre that maximizes the between-class variance of a histogram: scikit-image's
    ``threshold_otsu(hist=(counts, centers))``, the same sums in the same order (the tests compare
    them). Written out because importing ``skimage.filters``' thresholding imports SciPy's ndimage,
    0.27 s of every idl-predict start."""
    counts, centers = np.asarray(counts), np.asarray(centers)
    kept = np.flatnonzero(counts)  # the empty bins at either end trimmed, as scikit-image does
    counts, centers = counts[kept[0] : kept[-1] + 1].astype(np.float32), centers[kept[0] : kept[-1] + 1]
    below = np.cumsum(counts)  # the weight of the class at or below each bin
    above = np.cumsum(counts[::-1])[::-1]
    mean_below = np.cumsum(counts * centers) / below
    mean_above = (np.cumsum((counts * centers)[::-1]) / above[::-1])[::-1]
    between = below[:-1] * above[1:] * (mean_below[:-1] - mean_above[1:]) ** 2
    return float(centers[np.argmax(between)])


def parse_threshold(value: str | float) -> str | float:
    """``'otsu'`` or a float in (0, 1), from a command-line string."""
    if isinstance(value, str) and value.strip().lower() == "otsu":
        return "otsu"
    try:
        number = float(value)
    except ValueError as exc:
        raise ValueError(f"threshold must be 'otsu' or a number between 0 and 1, got '{value}'") from exc
    if not 0.0 < number < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {number}")
    return number


def uncalibrated(probability: np.ndarray, temperature: float) -> np.ndarray:
    """The probabilities of a calibrated network's output before its temperature (idl.train.calibrate):
    ``sigmoid(T * logit(p))``."""
    # in place, in two arrays of the image's size (the expression took five: 320 MB more at 4096 x 4096
    # px, on top of ONNX Runtime's arena, which keeps the tiles' memory to the end)
    p = np.clip(probability.astype(np.float32, copy=False), 1e-7, 1 - 1e-7)
    q = np.negative(p)
    np.log1p(q, out=q)
    np.log(p, out=p)
    p -= q
    del q
    p *= np.float32(-temperature)
    np.exp(p, out=p)
    p += np.float32(1.0)
    return np.reciprocal(p, out=p)


def calibrated(threshold: float, temperature: float) -> float:
    """A threshold of the uncalibrated probabilities as one of the calibrated: ``sigmoid(logit(t) / T)``."""
    t = min(max(threshold, 1e-7), 1 - 1e-7)
    return float(1.0 / (1.0 + np.exp(-(np.log(t) - np.log1p(-t)) / temperature)))


def otsu_counts(probability: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The histogram :func:`calibrated_otsu` takes of one block of a probability map (on the scale
    before the calibration's ``temperature``); summable over blocks."""
    return probability_histogram(
        probability if temperature == 1.0 else uncalibrated(probability, temperature)
    )


def otsu_of_counts(counts: np.ndarray, temperature: float = 1.0) -> float:
    """Otsu's threshold, on the calibrated scale, from the summed :func:`otsu_counts` of every block."""
    threshold = otsu_threshold(counts=counts)
    return threshold if temperature == 1.0 else calibrated(threshold, temperature)


def calibrated_otsu(blocks: Iterable[np.ndarray], temperature: float = 1.0) -> float:
    """Otsu's threshold of a probability map given in ``blocks`` (the whole map, or its blocks out of
    core), taken on the probabilities as they were before a calibration's ``temperature`` and given
    back on the calibrated scale: Otsu's method is not blind to a rescaling of the probabilities, as
    the arg-max is, so this keeps a calibrated model's masks its uncalibrated ones."""
    return otsu_of_counts(sum(otsu_counts(b, temperature) for b in blocks), temperature)


def to_mask(
    probabilities: np.ndarray, threshold: str | float, temperature: float = 1.0
) -> tuple[np.ndarray, float | None]:
    """Class map (uint8) from ``(K, Y, X)`` probabilities, plus the threshold used (binary only).

    One channel means binary (sigmoid): foreground where ``p > threshold``. More channels (softmax):
    the most probable class. A calibrated network's (``temperature``) Otsu threshold is
    :func:`calibrated_otsu`'s, so calibrating changes no mask.
    """
    if probabilities.shape[0] == 1:
        p = probabilities[0]
        t = calibrated_otsu([p], temperature) if threshold == "otsu" else float(threshold)
        mask = np.empty(p.shape, np.uint8)
        np.greater(p, t, out=mask.view(bool))  # no temporary boolean image
        return mask, t
    return np.argmax(probabilities, axis=0).astype(np.uint8), None
