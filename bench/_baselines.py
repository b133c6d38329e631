"""Classical baselines for bench/real_data.py, each fitted on the training split only and scored on
the test split with the same score the network's evaluation reports first:

- binary segmentation: Otsu's threshold of the raw image (Jaccard over all test pixels);
- instance segmentation: Otsu + connected components (AP50:95 from the match counts of all images);
- multi-class segmentation: logistic regression per pixel on its intensity and Gaussian-smoothed
  intensities (mean foreground Jaccard);
- regression: a linear fit of the Gaussian-smoothed input (median per-image Pearson r);
- classification: logistic regression on the images' pixel intensities (accuracy).

Which side of Otsu's threshold is foreground (bright or dark objects) and how much to smooth the
regression input are chosen on the training split, never on the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from idl.infer.core.project import Pair
from idl.infer.evaluate.instance_metrics import MatchCounts, counts_per_threshold, scores_from_counts
from idl.infer.evaluate.metrics import confusion_matrix, jaccard, pearson
from idl.infer.io.images import read_channels_last, read_image
from idl.infer.post.instance_labels import binary_to_labels
from idl.infer.post.labels import semantic_target

SIGMAS = (1.0, 2.0, 4.0)  # smoothing scales of the pixel classifier's features


def first_channel(pair: Pair, dims: int) -> np.ndarray:
    """The first channel of an image as float32 (the baselines are single-channel)."""
    return read_channels_last(pair.image, None, "zyx"[-dims:])[0][..., 0].astype(np.float32)


def otsu_mask(image: np.ndarray, bright: bool) -> np.ndarray:
    from skimage.filters import threshold_otsu

    above = image > threshold_otsu(image)
    return (above if bright else ~above).astype(np.uint8)


def bright_objects(train: list[Pair], dims: int) -> bool:
    """Whether the foreground is brighter than the background in the training images."""
    inside, outside = [], []
    for pair in train:
        image = first_channel(pair, dims)
        fg = read_image(pair.groundtruth) > 0
        fg = fg.reshape(image.shape) if fg.size == image.size else fg[..., 0]
        inside.append(image[fg].mean() if fg.any() else np.nan)
        outside.append(image[~fg].mean() if (~fg).any() else np.nan)
    return bool(np.nanmean(inside) >= np.nanmean(outside))


def otsu_jaccard(train: list[Pair], test: list[Pair], dims: int = 2) -> float:
    """Jaccard over all test pixels of Otsu masks (polarity from the training split)."""
    bright = bright_objects(train, dims)
    total = np.zeros((2, 2), np.int64)
    for pair in test:
        gt = semantic_target(read_image(pair.groundtruth), 2, str(pair.groundtruth), dims)
        total += confusion_matrix(otsu_mask(first_channel(pair, dims), bright), gt, 2)
    return jaccard(total)


def otsu_instance_ap(train: list[Pair], test: list[Pair], dims: int = 2) -> float:
    """AP50:95 of connected components of Otsu masks (polarity from the training split)."""
    bright = bright_objects(train, dims)
    totals = [MatchCounts(0, 0, 0)] * 10
    for pair in test:
        labels = binary_to_labels(otsu_mask(first_channel(pair, dims), bright))
        counts = counts_per_threshold(read_image(pair.groundtruth), labels)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return scores_from_counts(totals)["ap50_95"]


def _features(image: np.ndarray) -> np.ndarray:
    """Per-pixel features ``(n, 1 + len(SIGMAS))``: the intensity scaled to 0..1 by the image's 1st and
    99.8th percentiles, and its Gaussian-smoothed versions."""
    low, high = np.percentile(image, (1, 99.8))
    scaled = (image - low) / max(high - low, 1e-6)
    layers = [scaled] + [ndimage.gaussian_filter(scaled, s) for s in SIGMAS]
    return np.stack([layer.ravel() for layer in layers], axis=1)


def pixel_classifier_jaccard(train: list[Pair], test: list[Pair], num_classes: int, seed: int = 0) -> float:
    """Mean foreground Jaccard of a logistic-regression pixel classifier (multi-class segmentation)."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for pair in train:
        x = _features(first_channel(pair, 2))
        y = semantic_target(read_image(pair.groundtruth), num_classes, str(pair.groundtruth)).ravel()
        keep = rng.choice(len(y), min(len(y), 20_000), replace=False)
        xs.append(x[keep])
        ys.append(y[keep])
    model = LogisticRegression(max_iter=500).fit(np.concatenate(xs), np.concatenate(ys))
    total = np.zeros((num_classes, num_classes), np.int64)
    for pair in test:
        image = first_channel(pair, 2)
        gt = semantic_target(read_image(pair.groundtruth), num_classes, str(pair.groundtruth))
        pred = model.predict(_features(image)).reshape(image.shape)
        total += confusion_matrix(pred, gt, num_classes)
    return jaccard(total)


def linear_fit_pearson(train: list[Pair], test: list[Pair], dims: int = 2) -> float:
    """Median per-image Pearson r of a linear fit of the Gaussian-smoothed input (the smoothing that
    fits the training split best). Pearson r does not change under a linear map, so the fit's
    coefficients do not matter for the score, only the sign (taken from the training split)."""

    def target(pair: Pair) -> np.ndarray:
        return read_channels_last(pair.groundtruth, None, "zyx"[-dims:])[0][..., 0]

    def smooth(image: np.ndarray, sigma: float) -> np.ndarray:
        return ndimage.gaussian_filter(image, sigma) if sigma else image

    best, best_score = 0.0, -np.inf
    for sigma in (0.0, *SIGMAS):
        score = np.mean([abs(pearson(smooth(first_channel(p, dims), sigma), target(p))) for p in train])
        if score > best_score:
            best, best_score = sigma, score
    sign = np.sign(np.mean([pearson(smooth(first_channel(p, dims), best), target(p)) for p in train])) or 1.0
    return float(np.median([sign * pearson(smooth(first_channel(p, dims), best), target(p)) for p in test]))


def logistic_accuracy(
    train: list[tuple[Path, str]], test: list[tuple[Path, str]], size: tuple[int, int]
) -> float:
    """Accuracy of logistic regression on the pixel intensities of images resized to ``size`` and scaled
    to 0..1 per image and channel (classification). Images take the channels of the first training
    image as idl-train does (grey repeated into RGB, RGB of equal channels reduced to grey)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from idl.infer.core.axes import match_channels
    from idl.infer.post.classify import resize_to

    channels = read_channels_last(train[0][0], None, "yx")[0].shape[-1]

    def matrix(items: list[tuple[Path, str]]) -> np.ndarray:
        rows = []
        for path, _ in items:
            image = match_channels(read_channels_last(path, None, "yx")[0].astype(np.float32), channels)
            image = resize_to(image, size)
            low, high = image.min(axis=(0, 1)), image.max(axis=(0, 1))
            rows.append(((image - low) / np.maximum(high - low, 1e-6)).ravel())
        return np.stack(rows)

    scaler = StandardScaler().fit(matrix(train))
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(matrix(train)), [c for _, c in train])
    predicted = model.predict(scaler.transform(matrix(test)))
    return float(np.mean([p == c for p, (_, c) in zip(predicted, test, strict=True)]))
