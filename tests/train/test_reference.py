"""The answers without training that a run must beat (train/reference.py), against scikit-image,
scikit-learn and scipy computed independently."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr
from skimage.filters import threshold_otsu
from sklearn.metrics import jaccard_score

from idl.train.reference import binary_segmentation, classification, majority_segmentation, regression


def _dark_lungs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A bright body with two dark lungs, dark air around it: Otsu's dark mask takes the air too."""
    image = np.full((64, 64), 0.05, np.float32)
    image[8:56, 8:56] = 0.8
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 14:28] = truth[16:48, 36:50] = 1
    image[truth == 1] = 0.1
    return (image + rng.normal(0, 0.02, image.shape)).astype(np.float32)[..., None], truth


def test_binary_reference_is_the_better_otsu_mask_or_all_foreground() -> None:
    rng = np.random.default_rng(0)
    pairs = [_dark_lungs(rng) for _ in range(3)]
    result = binary_segmentation([p[0] for p in pairs], [p[1] for p in pairs])
    dark = np.concatenate([(p[0][..., 0] <= threshold_otsu(p[0][..., 0])).ravel() for p in pairs])
    truth = np.concatenate([p[1].ravel() for p in pairs])
    assert result.name == "Otsu threshold, dark objects"
    assert result.score == pytest.approx(jaccard_score(truth, dark))
    assert 0.3 < result.score < 0.5  # the air is taken for lung
    # small bright objects: Otsu's bright mask is exact
    image = np.zeros((32, 32, 1), np.float32)
    image[4:10, 4:10] = 1
    assert binary_segmentation([image], [(image[..., 0] > 0).astype(np.uint8)]).score == 1.0
    # a flat image and a target that is mostly foreground: "all foreground" wins
    truth = np.ones((10, 10), np.uint8)
    truth[0] = 0
    flat = binary_segmentation([np.zeros((10, 10, 1), np.float32)], [truth])
    assert flat.name == "all foreground" and flat.score == pytest.approx(0.9)


def test_multiclass_regression_and_classification_references() -> None:
    targets = [np.array([[0, 0, 1], [0, 2, 0]], np.uint8)]
    majority = majority_segmentation(targets, 3)
    assert majority.name == "class 0 everywhere" and majority.score == 0.0  # no foreground class found
    rng = np.random.default_rng(1)
    x = rng.random((2, 16, 16, 1)).astype(np.float32)
    y = np.concatenate([-3 * x + 0.5 * rng.random(x.shape), x**2], axis=-1)
    expected = np.mean(
        [abs(pearsonr(x[i, ..., 0].ravel(), y[i, ..., t].ravel())[0]) for i in range(2) for t in range(2)]
    )
    assert regression(list(x), list(y)).score == pytest.approx(expected, rel=1e-6)
    labels = np.array([2, 2, 1, 2, 0])
    result = classification(labels)
    assert result.name == "class 2 for every image" and result.score == pytest.approx(0.6)
