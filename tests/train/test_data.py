from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idl.infer.errors import DataError
from idl.infer.io import write_tiff
from idl.infer.normalize import Normalization
from idl.train.augment import augment_pair, resolve
from idl.train.data import PatchDataset, Sample, load_semantic_data, split_validation


def test_loads_binary_masks_of_any_encoding(tmp_path: Path, rng) -> None:
    for i, fg in enumerate([1, 255]):
        mask = np.zeros((32, 32), np.uint8)
        mask[5:15, 5:15] = fg
        write_tiff(tmp_path / "image" / f"{i}.tif", rng.integers(0, 1000, (32, 32)).astype(np.uint16))
        write_tiff(tmp_path / "groundtruth" / f"{i}.tif", mask)
    data = load_semantic_data(tmp_path, Normalization())
    assert data.num_classes == 2 and data.in_channels == 1 and data.axes == "yx"
    assert [int(s.target.sum()) for s in data.samples] == [100, 100]


def test_classes_are_counted_over_all_masks(tmp_path: Path) -> None:
    for i, value in enumerate([1, 2]):  # each mask alone looks binary; together they are 3 classes
        mask = np.zeros((16, 16), np.uint8)
        mask[:4] = value
        write_tiff(tmp_path / "image" / f"{i}.tif", np.zeros((16, 16), np.uint16))
        write_tiff(tmp_path / "groundtruth" / f"{i}.tif", mask)
    data = load_semantic_data(tmp_path, Normalization())
    assert data.num_classes == 3
    assert [int(s.target.max()) for s in data.samples] == [1, 2]


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    write_tiff(tmp_path / "image" / "a.tif", np.zeros((32, 32), np.uint16))
    write_tiff(tmp_path / "groundtruth" / "a.tif", np.zeros((32, 31), np.uint8))
    with pytest.raises(
        DataError, match=r"groundtruth/a\.tif: ground-truth shape \(32, 31\) does not match its image"
    ):
        load_semantic_data(tmp_path, Normalization())


def test_multiclass_values_out_of_range(tmp_path: Path) -> None:
    write_tiff(tmp_path / "image" / "a.tif", np.zeros((16, 16), np.uint16))
    write_tiff(tmp_path / "groundtruth" / "a.tif", np.arange(256, dtype=np.uint8).reshape(16, 16) % 5)
    with pytest.raises(DataError, match=r"class value\(s\) \[3, 4\] outside 0\.\.2"):
        load_semantic_data(tmp_path, Normalization(), num_classes=3)


def test_split_is_seeded_and_disjoint() -> None:
    samples = [
        Sample(str(i), np.zeros((16, 16, 1), np.float32), np.zeros((16, 16), np.uint8)) for i in range(10)
    ]
    train, val = split_validation(samples, 0.2, seed=5)
    assert len(val) == 2 and len(train) == 8
    assert {s.name for s in train}.isdisjoint({s.name for s in val})
    assert [s.name for s in split_validation(samples, 0.2, seed=5)[1]] == [s.name for s in val]
    with pytest.raises(DataError, match="at least 2"):
        split_validation(samples[:1], 0.2, 0)


def test_augmentation_keeps_image_and_mask_aligned(rng) -> None:
    image = rng.random((32, 32, 1)).astype(np.float32)
    target = (image[..., 0] > 0.5).astype(np.uint8)  # a mask drawn from the image itself
    for seed in range(8):
        aug_image, aug_target = augment_pair(
            image, target, resolve(("flip", "rot90")), np.random.default_rng(seed)
        )
        assert np.array_equal((aug_image[..., 0] > 0.5).astype(np.uint8), aug_target)


def test_patches_are_reproducible(rng) -> None:
    samples = [Sample("a", rng.random((50, 60, 1)).astype(np.float32), np.zeros((50, 60), np.uint8))]
    a, b = (PatchDataset(samples, 32, resolve(("flip",)), seed=1) for _ in range(2))
    assert np.array_equal(a[0][0].numpy(), b[0][0].numpy())
    b.epoch = 1
    assert not np.array_equal(a[0][0].numpy(), b[0][0].numpy())


def test_patches_are_square_in_plane_so_rotations_apply() -> None:
    from idl.train.data import Sample, patch_shape_for

    samples = [Sample("a", np.zeros((40, 100, 1), np.float32), np.zeros((40, 100), np.uint8))]
    assert patch_shape_for(samples, (64, 64), (8, 8), "yx") == (40, 40)
    volumes = [Sample("v", np.zeros((20, 48, 80, 1), np.float32), np.zeros((20, 48, 80), np.uint8))]
    assert patch_shape_for(volumes, (16, 64, 64), (4, 8, 8), "zyx") == (16, 48, 48)
