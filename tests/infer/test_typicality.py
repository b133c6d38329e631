"""The input check: descriptors, Mahalanobis distances against scipy, and noise far from training data."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import mahalanobis

from idl.infer.post.typicality import SHRINKAGE, InputReference, descriptors, fit_reference


def _blobs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Normalized images like the training data of a classifier: one bright blob on a dark field."""
    yy, xx = np.mgrid[:24, :24]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(8, 16), rng.uniform(8, 16), rng.uniform(3, 6)
        image = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) + rng.normal(0, 0.03, (24, 24))
        out.append(image[np.newaxis])
    return np.stack(out).astype(np.float32)


def test_descriptors_by_hand() -> None:
    x = np.zeros((1, 2, 4, 4))
    x[0, 0, :, 2:] = 1.0  # a vertical edge in channel 0
    d = descriptors(x)
    assert d.shape == (1, 8)
    # per channel: mean, std, fraction > 0.5, mean |dy| + mean |dx|
    np.testing.assert_allclose(d[0, [0, 2, 4, 6]], [0.5, 0.5, 0.5, 0 + 4 / 12])
    np.testing.assert_allclose(d[0, [1, 3, 5, 7]], 0.0)


def test_distances_equal_scipys_mahalanobis(rng: np.random.Generator) -> None:
    train = _blobs(rng, 60)
    reference = fit_reference(train)
    features = descriptors(train)
    cov = np.cov(features, rowvar=False)
    shrunk = (1 - SHRINKAGE) * cov + SHRINKAGE * np.trace(cov) / len(cov) * np.eye(len(cov))
    inverse = np.linalg.inv(shrunk)
    expected = [mahalanobis(f, features.mean(axis=0), inverse) for f in features[:5]]
    np.testing.assert_allclose(reference.distances(features[:5]), expected, rtol=1e-9)
    # the scale comes from held-out distances: the training images' own are a little smaller
    assert 0.8 < np.percentile(reference.atypicality(train), 99) < 1.0
    fresh = reference.atypicality(_blobs(rng, 400))
    assert 0.8 < np.percentile(fresh, 99) < 1.5  # new images like the training ones: about 1
    again = InputReference.from_dict(reference.to_dict())
    np.testing.assert_allclose(again.atypicality(train[:3]), reference.atypicality(train[:3]))


def test_new_blobs_are_typical_and_noise_is_not(rng: np.random.Generator) -> None:
    reference = fit_reference(_blobs(rng, 80))
    typical = reference.atypicality(_blobs(rng, 40))
    noise = reference.atypicality(rng.random((40, 1, 24, 24)).astype(np.float32))
    assert np.median(typical) < 1.0 and np.median(noise) > 5.0
    assert noise.min() > typical.max()
