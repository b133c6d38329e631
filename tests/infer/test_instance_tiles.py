"""Tiled prediction with a label-image network: each object exactly once, as on the whole image."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage.draw import disk

from idl.infer.core.grid import tile_grid
from idl.infer.core.model_info import ModelInfo
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling.mergers import owned_objects, paste_objects
from idl.infer.tiling.predict import predict_objects


def _components(batch: np.ndarray) -> np.ndarray:
    """A stand-in for Mask R-CNN: connected components of the bright pixels, score 0.9 each."""
    labels, _ = ndimage.label(batch[0, 0] > 0.5)
    return np.stack([labels, 0.9 * (labels > 0)]).astype(np.float32)[np.newaxis]


def _disks(shape: tuple[int, int], n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.zeros(shape, np.float32)
    for _ in range(n):
        centre = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        image[disk(centre, rng.uniform(4, 15), shape=shape)] = 1.0
    return image


def _io(halo: int):
    info = ModelInfo(
        task="instance", in_channels=1, num_classes=2, size_multiple=1, halo=halo, output="labels"
    )
    return io_for_info(info)


def test_tiled_labels_equal_whole_image_labels_object_for_object() -> None:
    image = _disks((600, 700), 300)
    whole, _ = ndimage.label(image > 0.5)
    tiled, scores = predict_objects(_components, image[..., None], _io(40), 160, 40)
    assert tiled.dtype == np.uint16
    assert tiled.max() == whole.max() > 100  # as many objects, numbered 1..N
    # the same partition of the pixels: every whole-image object is exactly one tiled object
    pairs = np.unique(np.stack([whole.ravel(), tiled.ravel()]), axis=1)
    assert pairs.shape[1] == whole.max() + 1
    np.testing.assert_array_equal(scores, np.where(tiled > 0, 0.9, 0.0).astype(np.float32))


def test_a_halo_smaller_than_the_objects_cuts_them() -> None:
    """The control: with too little overlap, objects at tile borders come out in pieces."""
    image = _disks((600, 700), 300)
    whole, _ = ndimage.label(image > 0.5)
    tiled, _ = predict_objects(_components, image[..., None], _io(2), 160, 2)
    assert tiled.max() > whole.max()


def test_an_object_belongs_to_the_tile_owning_its_centre() -> None:
    tiles = tile_grid((100,), (60,), (10,), [1])  # windows 0-60 and 40-100, owning 0-50 and 50-100
    image = np.zeros(100, np.int64)
    image[40:48] = 1  # centre 43.5: the first tile's
    image[48:58] = 2  # centre 52.5: the second tile's, though the first sees it whole too
    owners = [owned_objects(image[t.window], t) for t in tiles]
    assert owners == [[1], [2]]


def test_a_second_detection_of_a_kept_object_is_dropped() -> None:
    labels = np.zeros((10, 10), np.uint32)
    labels[2:6, 2:6] = 1  # kept from an earlier tile
    scores = np.where(labels > 0, 0.8, 0.0).astype(np.float32)
    tile = np.zeros((10, 10), np.int64)
    tile[2:6, 3:7] = 4  # the same object seen again, 12 of 16 pixels taken: dropped
    tile[6:9, 4:8] = 5  # a neighbour touching it: all 12 pixels free, kept
    tile[0:2, 0:4] = 6  # 4 of its 8 pixels free: kept, on those pixels only
    labels[0, 0:4] = 1
    count = paste_objects(labels, scores, tile, np.full((10, 10), 0.7, np.float32), [4, 5, 6], 1)
    assert count == 3
    assert np.count_nonzero(labels == 2) == 12 and np.count_nonzero(labels == 3) == 4
    assert np.count_nonzero(labels == 1) == 16 + 4 and float(scores[7, 5]) == pytest.approx(0.7)
    again = np.where(tile == 4, 0, labels).astype(np.uint32)
    again[2:6, 2:6] = 1
    assert paste_objects(again.copy(), scores.copy(), tile, scores, [4], 3) == 3
    assert paste_objects(again, scores.copy(), tile, scores, [4], 3, min_share=0.0) == 4  # the sliver
