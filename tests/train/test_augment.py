"""Augmentations keep image and ground truth aligned, label values exact, follow their probability and
range, match scipy's own transforms, and are reproducible under a seed."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk

from idl.train.augment import (
    DEFAULTS,
    GEOMETRIC,
    INTENSITY,
    NAMES,
    RIGHT_ANGLES,
    Setting,
    _elastic_field,
    augment_pair,
    resolve,
)


def always(*names: str, **ranges: tuple[float, float]) -> dict[str, Setting]:
    """The named augmentations applied to every sample, with our ranges unless given."""
    return {n: Setting(1.0, ranges.get(n, DEFAULTS[n].range)) for n in names}


def _labels(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape[-2:], np.uint16)
    for k in range(1, 9):
        centre = rng.uniform(15, shape[-2] - 15), rng.uniform(15, shape[-1] - 15)
        labels[disk(centre, rng.uniform(5, 10), shape=labels.shape)] = k
    return np.broadcast_to(labels, shape).copy()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("names", [(n,) for n in (*RIGHT_ANGLES, *GEOMETRIC)] + [(*RIGHT_ANGLES, *GEOMETRIC)])
@pytest.mark.parametrize("shape", [(96, 96), (5, 96, 96)])
def test_geometric_transforms_keep_image_and_labels_aligned(names, shape) -> None:
    labels = _labels(shape)
    image = (labels > 0).astype(np.float32)[..., None]  # a mask drawn from the image's own features
    moved, target = augment_pair(image, labels, always(*names), np.random.default_rng(3))
    assert target is not None and target.dtype == np.uint16 and target.shape == labels.shape
    assert set(np.unique(target)) <= set(np.unique(labels))  # nearest neighbour: no new values
    assert _iou(moved[..., 0] > 0.5, target > 0) > 0.9
    assert _iou(target > 0, labels > 0) < 0.95  # it did move


def test_rotation_and_shift_equal_scipy_references() -> None:
    image = np.zeros((64, 64, 1), np.float32)
    image[10:20, 30:50] = 1.0
    image[40:44, 5:60] = 0.5
    rotated, _ = augment_pair(image, None, always("rotate", rotate=(20.0, 20.0)), np.random.default_rng(0))
    reference = ndimage.rotate(image[..., 0], 20, reshape=False, order=1, mode="constant")
    np.testing.assert_allclose(rotated[..., 0], reference, atol=1e-5)
    shifted, _ = augment_pair(image, None, always("shift", shift=(0.25, 0.25)), np.random.default_rng(0))
    np.testing.assert_allclose(shifted[..., 0], ndimage.shift(image[..., 0], (16, 16), order=1), atol=1e-5)


@pytest.mark.parametrize("leading", [(), (3,)])
def test_a_patch_turns_with_its_surroundings_not_black_corners(leading) -> None:
    """A patch in the middle of an image, turned by 40 degrees with its window: the turn of the whole
    image about the patch's centre, cropped (scipy's reference); turned alone it gets black corners."""
    rng = np.random.default_rng(5)
    plane = ndimage.gaussian_filter(rng.uniform(0.2, 1.0, (97, 97)), 2).astype(np.float32)
    image = np.broadcast_to(plane[..., None], (*leading, 97, 97, 1)).copy()
    labels = np.broadcast_to((plane > np.median(plane)).astype(np.uint8), (*leading, 97, 97)).copy()
    window = tuple(slice(1, 3) for _ in leading) + (slice(24, 73), slice(24, 73))  # centred on (48, 48)
    turn = always("rotate", rotate=(40.0, 40.0))
    moved, target = augment_pair(image, labels, turn, np.random.default_rng(0), window=window)
    assert moved.shape == (*((2,) if leading else ()), 49, 49, 1) and target.shape == moved.shape[:-1]
    reference = ndimage.rotate(plane, 40, reshape=False, order=1, mode="constant")[24:73, 24:73]
    reference_labels = ndimage.rotate(labels[(0,) * len(leading)], 40, reshape=False, order=0)[24:73, 24:73]
    for k in range(moved.shape[0] if leading else 1):
        at = (k,) if leading else ()
        np.testing.assert_allclose(moved[at][..., 0], reference, atol=1e-5)
        assert (target[at] != reference_labels).mean() < 0.01  # nearest neighbour ties at half pixels
    assert moved.min() > 0.1  # every pixel came from the image
    alone, _ = augment_pair(image[window], None, turn, np.random.default_rng(0))
    assert (alone == 0).mean() > 0.1  # the patch turned on its own: black corners


def test_horizontal_and_vertical_flips_use_their_own_axis() -> None:
    image = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    labels = np.arange(12, dtype=np.uint8).reshape(3, 4)
    h = augment_pair(image, labels, always("hflip"), np.random.default_rng(0))
    v = augment_pair(image, labels, always("vflip"), np.random.default_rng(0))
    np.testing.assert_array_equal(h[0], image[:, ::-1])
    np.testing.assert_array_equal(h[1], labels[:, ::-1])
    np.testing.assert_array_equal(v[0], image[::-1])
    np.testing.assert_array_equal(v[1], labels[::-1])
    volume = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)  # (Z, Y, X, C): Z is never flipped
    np.testing.assert_array_equal(
        augment_pair(volume, None, always("vflip"), np.random.default_rng(0))[0], volume[:, ::-1]
    )


def test_elastic_field_is_smooth_and_as_strong_as_asked() -> None:
    fields = np.stack([_elastic_field(np.random.default_rng(i), (128, 128), 4.0) for i in range(10)])
    assert 0.7 * 4.0 < fields.std() < 1.0 * 4.0  # the control points' sigma, slightly damped between them
    steps = np.abs(np.diff(fields, axis=-1)).max()
    assert steps < 1.0  # neighbours move alike: no tearing of objects


def test_regression_targets_move_exactly_like_the_image() -> None:
    image = np.random.default_rng(0).random((64, 64, 1)).astype(np.float32)
    moved, target = augment_pair(image, image[..., 0].copy(), always(*GEOMETRIC), np.random.default_rng(1))
    np.testing.assert_allclose(target, moved[..., 0], atol=1e-6)


def _test_image() -> tuple[np.ndarray, np.ndarray]:
    labels = _labels((64, 64))
    ramp = np.linspace(0.0, 0.3, 64, dtype=np.float32)[None, :, None]  # in-between values for gamma
    return (labels > 0).astype(np.float32)[..., None] * 0.6 + 0.1 + ramp, labels


@pytest.mark.parametrize("name", INTENSITY)
def test_intensity_transforms_leave_the_ground_truth_alone(name: str) -> None:
    image, labels = _test_image()
    changed, target = augment_pair(image, labels.copy(), always(name), np.random.default_rng(2))
    np.testing.assert_array_equal(target, labels)
    assert changed.dtype == np.float32 and changed.shape == image.shape
    assert float(np.abs(changed - image).mean()) > 1e-3


def test_intensity_transforms_do_what_their_names_say() -> None:
    image, _ = _test_image()

    def run(name: str, **ranges: tuple[float, float]) -> np.ndarray:
        return augment_pair(image, None, always(name, **ranges), np.random.default_rng(0))[0]

    scaled = run("feature_scaling")
    assert (float(scaled.min()), float(scaled.max())) == pytest.approx((0.0, 1.0), abs=1e-6)
    standard = run("std_normalization")
    assert (float(standard.mean()), float(standard.std())) == pytest.approx((0.0, 1.0), abs=1e-4)
    np.testing.assert_allclose(run("brightness", brightness=(1.5, 1.5)), image * 1.5, rtol=1e-6)
    contrast = run("contrast", contrast=(2.0, 2.0))
    np.testing.assert_allclose(contrast, (image - image.mean()) * 2 + image.mean(), atol=1e-5)
    thresholded = run("threshold_background")
    below = image < image.mean()
    assert np.all(thresholded[below] == image.min()) and np.array_equal(thresholded[~below], image[~below])
    resampled = run("resample", resample=(4.0, 4.0))  # down 4x and up: detail lost, level kept
    assert abs(float(resampled.mean() - image.mean())) < 0.01
    assert float(np.abs(np.diff(resampled[..., 0], axis=1)).mean()) < float(
        np.abs(np.diff(image[..., 0], axis=1)).mean()
    )
    noisy = run("gaussian_noise", gaussian_noise=(0.1, 0.1))
    assert float((noisy - image).std()) == pytest.approx(0.1, rel=0.05)


def test_probability_is_the_share_of_samples_changed() -> None:
    image = np.arange(16, dtype=np.float32).reshape(4, 4, 1)
    augmentation = {"hflip": Setting(0.3)}
    changed = [
        not np.array_equal(augment_pair(image, None, augmentation, np.random.default_rng(i))[0], image)
        for i in range(2000)
    ]
    assert np.mean(changed) == pytest.approx(0.3, abs=0.03)
    never = {n: Setting(0.0, DEFAULTS[n].range) for n in NAMES}
    out, target = augment_pair(image, image[..., 0].copy(), never, np.random.default_rng(0))
    np.testing.assert_array_equal(out, image)


def test_augmentation_is_reproducible_under_a_seed() -> None:
    labels = _labels((64, 64))
    image = (labels > 0).astype(np.float32)[..., None]
    augmentation = resolve(NAMES)
    a = augment_pair(image, labels, augmentation, np.random.default_rng(7))
    b = augment_pair(image, labels, augmentation, np.random.default_rng(7))
    c = augment_pair(image, labels, augmentation, np.random.default_rng(8))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_settings_are_checked_with_helpful_messages() -> None:
    assert resolve(("rotate",), {"rotate": {"probability": 0.8, "range": [-90, 90]}}) == {
        "rotate": Setting(0.8, (-90.0, 90.0))
    }
    assert list(resolve(("zoom", "flip"))) == ["flip", "zoom"]  # applied in one fixed order
    cases = {
        "unknown augmentation 'elastik'. Did you mean 'elastic'?": (("elastik",), {}),
        "probability must be a number in \\[0, 1\\], got 1.5": (("flip",), {"flip": {"probability": 1.5}}),
        "'flip' has no strength": (("flip",), {"flip": {"range": [0, 1]}}),
        "range must be \\[lowest, highest\\] with -0.5 <= lowest <= highest <= 0.5": (
            ("shift",),
            {"shift": {"range": [0, 2]}},
        ),
        "unknown setting 'chance'": (("blur",), {"blur": {"chance": 0.2}}),
        "'gamma', which is not switched on": (("blur",), {"gamma": {}}),
    }
    for message, (names, settings) in cases.items():
        with pytest.raises(ValueError, match=message):
            resolve(names, settings)


def test_config_names_every_augmentation() -> None:
    from idl.train.config import ConfigError, TrainConfig

    config = TrainConfig(
        int8=False, augment=("rotate", "flip", "gamma"), augment_settings={"gamma": {"probability": 1}}
    )
    assert config.augment == ("flip", "rotate", "gamma")
    assert config.augmentation["gamma"] == Setting(1.0, DEFAULTS["gamma"].range)
    assert config.to_dict()["augment_settings"]["rotate"] == {"probability": 0.5, "range": [-30.0, 30.0]}
    assert TrainConfig(
        int8=False,
    ).augment == ("flip", "rot90")  # the default is unchanged
    with pytest.raises(ConfigError, match="unknown augmentation 'elastics'. Did you mean 'elastic'"):
        TrainConfig(int8=False, augment=("elastics",))
