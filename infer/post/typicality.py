"""How unusual an input image is compared with the training images: a check that needs no network.

Monte Carlo dropout uncertainty flags a classifier's doubtful predictions well, but images unlike any
training image (noise, another kind of sample, a wrong channel) often get *confident* predictions
(docs/benchmarks.md). So each classifier also stores a small reference of its training inputs: a few
statistics per channel of the normalized network input (mean, standard deviation, fraction of bright
pixels, mean gradient magnitude), their mean and (shrunk) covariance, and the 99th percentile of the
training images' Mahalanobis distances. ``atypicality`` is an image's distance divided by that
percentile: up to about 1 the image looks like the training images; well above 1 it does not, and
its prediction should not be trusted whatever the uncertainty says.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SHRINKAGE = 0.1  # covariance -> (1 - s) cov + s * mean variance * I: stable with few images


def descriptors(x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Statistics of normalized inputs ``(N, C, H, W)``: per channel the mean, standard deviation,
    fraction of pixels above 0.5 and mean gradient magnitude; shape ``(N, 4 C)``. Computed ``chunk``
    images at a time, so memory stays small for large training sets."""
    out = []
    for start in range(0, len(x), chunk):
        b = x[start : start + chunk].astype(np.float64)
        gradient = np.abs(np.diff(b, axis=2)).mean(axis=(2, 3)) + np.abs(np.diff(b, axis=3)).mean(axis=(2, 3))
        out.append(
            np.concatenate(
                [b.mean(axis=(2, 3)), b.std(axis=(2, 3)), (b > 0.5).mean(axis=(2, 3)), gradient], 1
            )
        )
    return np.concatenate(out)


@dataclass(frozen=True)
class InputReference:
    """Mean and precision of the training descriptors, and the distance that 99 % of them stay under."""

    mean: tuple[float, ...]
    precision: tuple[tuple[float, ...], ...]
    scale: float

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each descriptor row to the training mean."""
        centred = features - np.asarray(self.mean)
        return np.sqrt(
            np.maximum(np.einsum("ni,ij,nj->n", centred, np.asarray(self.precision), centred), 0.0)
        )

    def atypicality(self, x: np.ndarray) -> np.ndarray:
        """Distance of normalized inputs ``(N, C, H, W)`` in units of the training 99th percentile."""
        return self.distances(descriptors(x)) / self.scale

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> InputReference:
        return cls(tuple(data["mean"]), tuple(tuple(r) for r in data["precision"]), float(data["scale"]))


def _moments(features: np.ndarray) -> InputReference:
    """Mean and shrunk precision of descriptor rows (scale 1)."""
    mean = features.mean(axis=0)
    cov = np.atleast_2d(np.cov(features, rowvar=False)) if len(features) > 1 else np.eye(features.shape[1])
    ridge = max(float(np.trace(cov)) / len(cov), 1e-6)
    precision = np.linalg.inv((1 - SHRINKAGE) * cov + SHRINKAGE * ridge * np.eye(len(cov)))
    return InputReference(tuple(mean), tuple(map(tuple, precision)), 1.0)


def fit_reference(x: np.ndarray, folds: int = 5, seed: int = 0) -> InputReference:
    """The reference of training inputs ``(N, C, H, W)`` (normalized, at the network's input size).

    The scale is the 99th percentile of *held-out* distances (each image measured against the other
    folds), so that images like the training images score about 1 or less even for small training
    sets, where the images' distances to their own mean would be optimistic."""
    features = descriptors(x)
    reference = _moments(features)
    if len(features) >= 2 * folds:
        order = np.random.default_rng(seed).permutation(len(features))
        held_out = np.empty(len(features))
        for part in np.array_split(order, folds):
            rest = np.setdiff1d(order, part)
            held_out[part] = _moments(features[rest]).distances(features[part])
    else:
        held_out = reference.distances(features)
    scale = float(np.percentile(held_out, 99)) or 1.0
    return InputReference(reference.mean, reference.precision, scale)
