"""Training data checked when read: NaN or inf pixels named, ignored by the normalization and 0 for the
network (never a NaN loss), or refused with on_nonfinite="error"; non-finite targets always refused;
a broken test set found before training, not after it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.errors import ConfigError, DataError
from idl.infer.core.normalize import Normalization
from idl.infer.io.images import read_image, write_tiff
from idl.train.config import TrainConfig
from idl.train.data import load_regression_data, load_semantic_data


def _project(root: Path, bad_target: bool = False) -> Path:
    rng = np.random.default_rng(0)
    for i in range(2):
        image = rng.normal(100, 5, (32, 40)).astype(np.float32)
        mask = np.zeros((32, 40), np.uint8)
        mask[8:20, 10:30] = 1
        image += 50 * mask
        target = image / 10
        if i == 1:
            image[3, 4], image[30, 1] = np.nan, np.inf
            if bad_target:
                target[7, 9] = np.nan
        write_tiff(root / "image" / f"im{i}.tif", image)
        write_tiff(root / "groundtruth" / f"im{i}.tif", target if bad_target else mask)
    return root


def test_training_images_with_nan_are_named_and_normalized_without_it(tmp_path: Path, caplog) -> None:
    split = _project(tmp_path / "train")
    with caplog.at_level(logging.WARNING, logger="idl"):
        data = load_semantic_data(split, Normalization())
    assert "im1.tif: 2 non-finite pixel value(s) (1 NaN, 1 inf), the first at y=3, x=4" in caplog.text
    image = data.samples[1].image[..., 0]
    assert np.isfinite(image).all() and image[3, 4] == 0.0 and image[30, 1] == 0.0
    raw = read_image(split / "image" / "im1.tif")
    finite = np.isfinite(raw)
    lo, hi = np.percentile(raw[finite], [1.0, 99.8])
    np.testing.assert_allclose(image[finite], (raw[finite] - lo) / (hi - lo + 1e-6), rtol=1e-5, atol=1e-6)


def test_on_nonfinite_error_refuses_training_images(tmp_path: Path) -> None:
    split = _project(tmp_path / "train")
    with pytest.raises(DataError, match=r"im1\.tif: 2 non-finite pixel value\(s\).*first at y=3, x=4"):
        load_semantic_data(split, Normalization(), on_nonfinite="error")
    with pytest.raises(ConfigError, match="on_nonfinite must be one of replace, error, got 'skip'"):
        TrainConfig(int8=False, on_nonfinite="skip")


def test_a_nan_regression_target_is_refused_with_its_place(tmp_path: Path) -> None:
    split = _project(tmp_path / "train", bad_target=True)
    with pytest.raises(
        DataError, match=r"im1\.tif: the ground truth holds 1 non-finite .* first at y=7, x=9"
    ):
        load_regression_data(split, Normalization())


def test_a_test_mask_of_the_wrong_size_fails_before_training(tmp_path: Path) -> None:
    from idl.train.pipeline import train_project

    project = tmp_path / "project"
    _project(project / "train")
    _project(project / "test")
    write_tiff(project / "test" / "groundtruth" / "im0.tif", np.zeros((30, 40), np.uint8))
    where = r"im0\.tif: ground-truth shape \(30, 40\) does not match its image .*\(YX = \(32, 40\)\)"
    with pytest.raises(DataError, match=where):
        train_project(
            project, TrainConfig(int8=False, epochs=1, steps_per_epoch=1, device="cpu"), progress=False
        )
    assert not (project / "model" / "last.pt").exists()  # nothing was trained
