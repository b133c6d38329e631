from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.errors import DataError
from idl.infer.core.normalize import Normalization
from idl.infer.io.images import write_tiff
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
    train, val, description = split_validation(samples, 0.2, seed=5)
    assert len(val) == 2 and len(train) == 8 and description.startswith("2 of 10 images")
    assert {s.name for s in train}.isdisjoint({s.name for s in val})
    assert [s.name for s in split_validation(samples, 0.2, seed=5)[1]] == [s.name for s in val]
    assert split_validation(samples, 0.0, seed=5)[:2] == (samples, [])


def test_one_image_holds_out_a_block_away_from_the_training_region() -> None:
    image = np.arange(100 * 300, dtype=np.float32).reshape(100, 300, 1)
    labels = np.arange(100 * 300, dtype=np.int32).reshape(100, 300)
    sample = Sample("only", image, (labels % 2).astype(np.uint8), labels)
    train, val, description = split_validation([sample], 0.2, seed=0, gap=48, multiple=16)
    (t,), (v,) = train, val
    # the longest axis (x, 300 px): the last 60 px validate, 48 px away from the 192 px trained on
    assert t.image.shape == (100, 192, 1) and v.image.shape == (100, 60, 1) and v.labels.shape == (100, 60)
    assert v.image[0, 0, 0] == 240 and t.image[0, -1, 0] == 191 and v.labels[0, 0] == 240
    assert (
        description
        == "one training image: x >= 240 of only (60 of 300 px), 48 px away from the training region "
        "(x < 192)"
    )
    volume = Sample("v", np.zeros((20, 64, 40, 1), np.float32), np.zeros((20, 64, 40), np.uint8))
    (t,), (v,), _ = split_validation([volume], 0.25, seed=0, gap=8, multiple=8)
    assert t.target.shape == (20, 40, 40) and v.target.shape == (20, 16, 40)  # along y, never z


def test_too_small_for_the_gap_shrinks_it_with_a_warning(caplog) -> None:
    sample = Sample("s", np.zeros((64, 80, 1), np.float32), np.zeros((64, 80), np.uint8))
    with caplog.at_level("WARNING", logger="idl"):
        (t,), (v,), _ = split_validation([sample], 0.2, seed=0, gap=96, multiple=16)
    # half of the 80 px (in multiples of 16) stays for training: 80 - 16 - 48 leaves a 16 px gap
    assert v.target.shape == (64, 16) and t.target.shape == (64, 48)
    assert "half the image for training; the gap is 16 px" in caplog.text
    with pytest.raises(DataError, match=r"s: the only training image is 40 px .*--val-fraction 0"):
        split_validation(
            [Sample("s", np.zeros((40, 40, 1), np.float32), np.zeros((40, 40), np.uint8))], 0.2, 0, 8, 16
        )


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


def test_an_epoch_is_a_fixed_number_of_patches_from_all_images_by_size() -> None:
    big = Sample("big", np.zeros((300, 300, 1), np.float32), np.zeros((300, 300), np.uint8))
    small = Sample("small", np.zeros((100, 100, 1), np.float32), np.zeros((100, 100), np.uint8))
    for samples in ([big, small], [big, small] * 10):
        assert len(PatchDataset(samples, 32, (), seed=0, steps=50, batch_size=4)) == 200
    dataset = PatchDataset([big, small], 32, (), seed=0, steps=500, batch_size=4)
    chosen = [dataset.window(i, np.random.default_rng((0, 0, i)))[0] for i in range(2000)]
    assert np.mean(np.array(chosen) == 0) == pytest.approx(0.9, abs=0.02)  # 9x the pixels


def test_a_third_of_the_patches_hold_sparse_foreground(rng) -> None:
    target = np.zeros((512, 512), np.uint8)
    target[100:104, 400:404] = 1  # 16 of 262144 pixels
    target[300:302, 20:22] = 2  # a rarer class still gets its share
    sample = Sample("sparse", rng.random((512, 512, 1)).astype(np.float32), target)
    dataset = PatchDataset([sample], 64, (), seed=3, steps=600, batch_size=1)
    hits = np.array([[np.any(dataset[i][1].numpy() == c) for c in (1, 2)] for i in range(600)])
    # chance alone puts a class in about 1.6 % of 64 px patches; forced: 1/3, split between the classes
    assert hits[:, 0].mean() == pytest.approx(1 / 6 + 0.016, abs=0.04)
    assert hits[:, 1].mean() == pytest.approx(1 / 6 + 0.016, abs=0.04)
    regression = Sample("r", sample.image, rng.random((512, 512, 1)).astype(np.float32))
    assert PatchDataset([regression], 64, (), seed=0).positions == [{}]


def test_patches_are_square_in_plane_so_rotations_apply() -> None:
    from idl.train.data import Sample, patch_shape_for

    samples = [Sample("a", np.zeros((40, 100, 1), np.float32), np.zeros((40, 100), np.uint8))]
    assert patch_shape_for(samples, (64, 64), (8, 8), "yx") == (40, 40)
    volumes = [Sample("v", np.zeros((20, 48, 80, 1), np.float32), np.zeros((20, 48, 80), np.uint8))]
    assert patch_shape_for(volumes, (16, 64, 64), (4, 8, 8), "zyx") == (16, 48, 48)


def test_foreground_positions_are_each_values_pixels_in_row_major_order() -> None:
    """One sort groups a label image's thousands of values: each value's positions are
    ``np.argwhere(target == value)``, and a class with more than the cap keeps the same seeded
    choice of them."""
    from idl.train.data import MAX_COORDINATES, foreground_positions

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3000, size=(60, 80)).astype(np.int64)
    found = foreground_positions(labels, 1)
    assert sorted(found) == sorted(int(v) for v in np.unique(labels) if v)
    for value in (1, 17, 2999):
        np.testing.assert_array_equal(found[value], np.argwhere(labels == value))
    big = np.zeros((200, 200), np.uint8)
    big[:, :120] = 1  # 24 000 pixels of class 1
    chosen = foreground_positions(big, 5)[1]
    everything = np.argwhere(big == 1)
    expected = everything[np.random.default_rng(5).choice(len(everything), MAX_COORDINATES, replace=False)]
    np.testing.assert_array_equal(chosen, expected)
