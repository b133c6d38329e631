"""Labels made block by block (idl.infer.post.block_labels, idl.infer.tiling.block_labels): the whole
image's objects where they fit the cap, unique ids everywhere, wide clusters cut at block borders."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from idl.infer.post.block_labels import assign_ids, block_objects, keys_to_ids
from idl.infer.post.instance_labels import labels_from_probabilities
from idl.infer.tiling.block_labels import caps_for, grown, margins
from idl.infer.tiling.blocks import block_grid


def _components(foreground: np.ndarray) -> np.ndarray:
    return ndimage.label(foreground, structure=np.ones((3, 3), bool))[0]


def _by_blocks(image: np.ndarray, labeller, side: int, caps: tuple[int, ...]) -> tuple[np.ndarray, int]:  # noqa: ANN001
    """The ``(K, ...)`` ``image`` labelled block by block as the last step does (``labeller``: a
    window's values -> labels, foreground), windows grown up to the cap."""
    shape = image.shape[1:]
    grid = block_grid(shape, side, (side,) * len(shape), (1,) * len(shape))
    keys, owned, cut = np.zeros(shape, np.int64), [], 0
    for index in range(grid.count):
        region = grid.region(index)
        tried = margins(caps)
        for margin in tried:
            window = grown(region, margin, shape)
            labels, foreground = labeller(image[(slice(None), *window)])
            found = block_objects(labels, foreground, window, region, shape, caps, margin == tried[-1])
            if found is not None:
                break
        keys[region] = found.keys
        owned.append(found.owned)
        cut += found.cut
    sorted_keys, ids = assign_ids(owned)
    return keys_to_ids(keys, sorted_keys, ids, np.uint32), cut


def _components_of(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _components(window[0]), window[0]


def test_objects_narrower_than_the_cap_come_out_whole_and_wide_ones_are_cut_with_unique_ids() -> None:
    rng = np.random.default_rng(3)
    foreground = np.zeros((120, 150), bool)
    yy, xx = np.indices(foreground.shape)
    for _ in range(40):  # blobs up to 12 px wide, many across the borders of blocks of 20
        cy, cx, r = rng.uniform(0, 120), rng.uniform(0, 150), rng.uniform(2, 6)
        foreground |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    foreground[60:63, 5:140] = True  # a bar 135 px long: wider than the cap of 32
    whole = _components(foreground)
    labels, cut = _by_blocks(foreground[None], _components_of, 20, (32, 32))
    assert labels.max() == len(np.unique(labels)) - 1  # ids 1..N, each once
    assert cut > 0
    bar = whole[61, 50]
    for i in range(1, whole.max() + 1):
        mine = np.unique(labels[whole == i])
        assert mine.min() > 0
        if i == bar:  # one object per block the bar's cluster crosses (at least 7 blocks of 20)
            assert len(mine) >= 7
        else:
            assert len(mine) == 1 and np.array_equal(labels == mine[0], whole == i), i
    # with a cap as wide as the image, the bar too comes out whole
    labels, cut = _by_blocks(foreground[None], _components_of, 20, (120, 150))
    assert cut == 0 and labels.max() == whole.max()
    assert all(len(np.unique(labels[whole == i])) == 1 for i in range(1, whole.max() + 1))


def test_margins_grow_to_the_cap_and_caps_follow_the_block() -> None:
    assert margins((32, 64)) == [(8, 16), (16, 32), (32, 64)]
    # windows of at most 2**26 voxels: 256 + 2 x 72 = 400 (64 M voxels), 128 + 2 x 136 = 400
    assert caps_for((1024, 2048, 2048), (256, 256, 256)) == (72, 72, 72)
    assert caps_for((1024, 2048, 2048), (128, 128, 128)) == (136, 136, 136)
    assert caps_for((256, 2048, 2048), (256, 256, 256)) == (128, 128, 128)  # z is one block: 256 x 512²
    assert caps_for((60, 512, 512), (64, 256, 256)) == (60, 512, 512)  # the whole volume fits
    assert caps_for((20, 512), (20, 2048)) == (20, 512)
    assert caps_for((100, 100, 100), (64, 64, 64), budget=10) == (32, 32, 32)  # never below 32
    assert grown((slice(10, 20), slice(0, 8)), (4, 4), (22, 30)) == (slice(6, 22), slice(0, 12))


def test_the_watersheds_labels_by_blocks_are_the_whole_maps_even_with_saturated_probabilities() -> None:
    """A confident network's interiors are exactly 1.0: the watershed's ties between equal values must
    be broken alike in every window (each foreground cluster flooded on its own), or two blocks split a
    cluster differently and own keys the other never made."""
    rng = np.random.default_rng(5)
    shape = (96, 112)
    yy, xx = np.indices(shape)
    foreground, interior = np.zeros(shape, bool), np.zeros(shape, bool)
    for _ in range(45):  # discs, many touching, their cores the interiors
        cy, cx, r = rng.uniform(0, 96), rng.uniform(0, 112), rng.uniform(3, 7)
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        foreground |= d2 < r * r
        interior |= d2 < (r - 2) ** 2
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = ~foreground
    probabilities[1] = interior & foreground
    probabilities[2] = foreground & ~interior

    def labeller(window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return labels_from_probabilities(window), window[0] < 0.5

    whole = labels_from_probabilities(probabilities)
    labels, cut = _by_blocks(probabilities, labeller, 16, (112, 112))
    assert cut == 0 and whole.max() > 20
    np.testing.assert_array_equal(labels > 0, whole > 0)
    pairs = np.unique(np.stack([labels[labels > 0], whole[whole > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1] == len(np.unique(whole)) - 1
