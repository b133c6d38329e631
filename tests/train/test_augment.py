"""Augmentations keep image and ground truth aligned, label values exact, and are reproducible."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from idl.train import augment
from idl.train.augment import GEOMETRIC, INTENSITY, augment_more
from idl.train.data import augment_pair


@pytest.fixture(autouse=True)
def always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(augment, "PROBABILITY", 1.0)  # every named transform is applied


def _labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape[-2:], np.uint16)
    for k in range(1, 9):
        centre = rng.uniform(15, shape[-2] - 15), rng.uniform(15, shape[-1] - 15)
        labels[disk(centre, rng.uniform(5, 10), shape=labels.shape)] = k
    return np.broadcast_to(labels, shape).copy()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("names", [("rotate",), ("zoom",), ("shift",), GEOMETRIC])
@pytest.mark.parametrize("shape", [(96, 80), (5, 96, 80)])
def test_geometric_transforms_keep_image_and_labels_aligned(names, shape) -> None:
    labels = _labels(shape)
    image = (labels > 0).astype(np.float32)[..., None]  # a mask drawn from the image's own features
    moved, target = augment_more(image, labels, names, np.random.default_rng(3))
    assert target is not None and target.dtype == np.uint16
    assert set(np.unique(target)) <= set(np.unique(labels))  # nearest neighbour: no new values
    assert _iou(moved[..., 0] > 0.5, target > 0) > 0.9
    assert _iou(target > 0, labels > 0) < 0.95  # it did move


def test_regression_targets_move_exactly_like_the_image() -> None:
    image = np.random.default_rng(0).random((64, 64, 1)).astype(np.float32)
    moved, target = augment_more(image, image[..., 0].copy(), GEOMETRIC, np.random.default_rng(1))
    np.testing.assert_allclose(target, moved[..., 0], atol=1e-6)


@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_transforms_leave_the_ground_truth_alone(name: str) -> None:
    labels = _labels((64, 64))
    ramp = np.linspace(0.0, 0.3, 64, dtype=np.float32)[None, :, None]  # in-between values for gamma
    image = (labels > 0).astype(np.float32)[..., None] * 0.6 + 0.1 + ramp
    changed, target = augment_more(image, labels.copy(), (name,), np.random.default_rng(2))
    np.testing.assert_array_equal(target, labels)
    assert changed.dtype == np.float32 and float(np.abs(changed - image).mean()) > 1e-3


def test_augmentation_is_reproducible_under_a_seed() -> None:
    labels = _labels((64, 64))
    image = (labels > 0).astype(np.float32)[..., None]
    names = ("flip", "rot90", *GEOMETRIC, *INTENSITY)
    a = augment_pair(image, labels, names, np.random.default_rng(7))
    b = augment_pair(image, labels, names, np.random.default_rng(7))
    c = augment_pair(image, labels, names, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_config_names_every_augmentation() -> None:
    from idl.train.config import ConfigError, TrainConfig

    assert TrainConfig(augment=("flip", "rotate", "gamma")).augment == ("flip", "rotate", "gamma")
    assert TrainConfig().augment == ("flip", "rot90")  # the default is unchanged
    with pytest.raises(ConfigError, match="unknown augmentation.*elastic.*valid: flip, rot90, rotate"):
        TrainConfig(augment=("elastic",))
