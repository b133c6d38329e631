"""Star-convex polygons (infer/post/stardist.py) on hand-built objects: distances against geometry,
two touching convex objects kept apart, overlapping proposals suppressed."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import regionprops

from idl.infer.post.stardist import (
    Stars,
    labels_from_stars,
    object_probability,
    polygons_to_labels,
    ray_directions,
    star_distances,
    suppress,
)


def _disk(shape: tuple[int, int], centre: tuple[int, int], radius: float, value: int = 1) -> np.ndarray:
    labels = np.zeros(shape, np.int32)
    labels[disk(centre, radius, shape=shape)] = value
    return labels


def test_distances_from_a_disk_centre_and_a_square() -> None:
    labels = _disk((41, 41), (20, 20), 10.5)
    dist = star_distances(labels, 16)
    # from the centre every ray leaves the disk after about its radius (pixel edges: within 1 px)
    assert np.all(np.abs(dist[:, 20, 20] - 10.5) < 1.0)
    assert dist[:, labels == 0].max() == 0
    square = np.zeros((20, 20), np.int32)
    square[5:15, 5:15] = 3
    d = star_distances(square, 4)  # right, down, left, up (rows grow downwards)
    # from pixel (7, 6): 8.5 px to the right edge (x = 14.5), 7.5 down, 1.5 left, 2.5 up
    np.testing.assert_allclose(d[:, 7, 6], [8.5, 7.5, 1.5, 2.5], atol=1e-6)
    np.testing.assert_allclose(ray_directions(4), [[0, 1], [1, 0], [0, -1], [-1, 0]], atol=1e-12)


def test_object_probability_is_one_at_each_centre() -> None:
    labels = _disk((30, 60), (15, 15), 8, 1) + _disk((30, 60), (15, 40), 5, 2)
    prob = object_probability(labels)
    assert prob[15, 15] == 1.0 and prob[15, 40] == 1.0 and prob[labels == 0].max() == 0
    assert 0 < prob[15, 8] < 0.2  # a pixel at the left edge of the first disk
    assert prob.dtype == np.float32


def test_two_touching_objects_come_back_apart() -> None:
    """A disk and a square that share an edge: from their exact targets (probability and
    distances) the polygons reproduce both objects, each with IoU above 0.9."""
    labels = _disk((48, 64), (24, 18), 12, 1)
    labels[14:34, 30:50] = 2  # touches the disk's right edge
    prob, dist = object_probability(labels), star_distances(labels, 32)
    found, scores = labels_from_stars(prob, dist)
    assert found.max() == 2
    for region in regionprops(labels):
        ids, counts = np.unique(found[labels == region.label], return_counts=True)
        best = ids[np.argmax(counts)]
        inter = counts.max()
        union = region.area + np.count_nonzero(found == best) - inter
        assert inter / union > 0.9
    assert scores[24, 18] == pytest.approx(1.0) and scores[found == 0].max() == 0


def test_overlapping_proposals_are_suppressed_and_the_more_probable_wins() -> None:
    n = 16
    radius = np.full((3, n), 6.0)
    stars = Stars(
        centres=np.array([[20.0, 20.0], [21.0, 21.0], [20.0, 32.0]]),
        distances=radius,
        probabilities=np.array([0.9, 0.8, 0.7], np.float32),
    )
    # the second's centre lies in the first: another proposal of the same object, dropped at any IoU
    # threshold; the third overlaps the first by a sliver (IoU about 0.01), kept unless the threshold
    # is below that
    assert suppress(stars, (40, 60), 0.4) == [0, 2]
    assert suppress(stars, (40, 60), 0.9) == [0, 2]
    assert suppress(stars, (40, 60), 0.001) == [0]
    labels = polygons_to_labels(stars, [0, 2], (40, 60))
    assert labels[20, 20] == 1 and labels[20, 32] == 2
    assert labels[20, 26] == 1  # on the line where both polygons reach: the more probable one's


def test_tiles_keep_each_object_once_as_the_whole_image_does(tile_objects) -> None:
    """The exact outputs of 288 x 288 px of touching nuclei, cut into 128 px tiles with a 32 px halo:
    each tile makes its own polygons and keeps those whose centre it owns, and the label image
    matches the whole image's object for object (AP50:95 1.0 against it)."""
    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
    from idl.infer.evaluate.instance_metrics import counts_per_threshold, scores_from_counts
    from idl.infer.post.stardist import objects_from_output

    labels = synthetic_nuclei(np.random.default_rng(4), NucleiSpec(size=288))[1].astype(np.int64)
    out = np.concatenate([object_probability(labels)[None], star_distances(labels, 32)])
    whole, _ = labels_from_stars(out[0], out[1:])
    tiled, scores, tiles = tile_objects(out, objects_from_output)
    assert len(tiles) == 16
    crossing = [
        k
        for k in np.unique(whole)[1:]
        if len({t for t in range(len(tiles)) if _owns(tiles[t], whole == k)}) > 1
    ]
    assert crossing  # objects lie across tile borders
    assert tiled.max() == whole.max() > 10
    result = scores_from_counts(counts_per_threshold(whole, tiled.astype(np.int64)))
    assert result["ap50_95"] == 1.0
    assert scores[tiled > 0].min() >= 0.5 and scores[tiled == 0].max() == 0


def _owns(tile, mask: np.ndarray) -> bool:
    return bool(mask[tile.owned].any())
