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


def descriptors(x: np.ndarray) -> np.ndarray:
    """Statistics of normalized inputs ``(N, C, H, W)``: per channel the mean, standard deviation,
    fraction of pixels above 0.5 and mean gradient magnitude; shape ``(N, 4 C)``."""
    x = x.astype(np.float64, copy=False)
    gradient = np.abs(np.diff(x, axis=2)).mean(axis=(2, 3)) + np.abs(np.diff(x, axis=3)).mean(axis=(2, 3))
    parts = [x.mean(axis=(2, 3)), x.std(axis=(2, 3)), (x > 0.5).mean(axis=(2, 3)), gradient]
    return np.concatenate(parts, axis=1)


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


def fit_reference(x: np.ndarray) -> InputReference:
    """The reference of training inputs ``(N, C, H, W)`` (normalized, at the network's input size)."""
    features = descriptors(x)
    mean = features.mean(axis=0)
    cov = np.atleast_2d(np.cov(features, rowvar=False)) if len(features) > 1 else np.eye(features.shape[1])
    ridge = max(float(np.trace(cov)) / len(cov), 1e-12)
    precision = np.linalg.inv((1 - SHRINKAGE) * cov + SHRINKAGE * ridge * np.eye(len(cov)))
    reference = InputReference(tuple(mean), tuple(map(tuple, precision)), 1.0)
    scale = float(np.percentile(reference.distances(features), 99)) or 1.0
    return InputReference(reference.mean, reference.precision, scale)
