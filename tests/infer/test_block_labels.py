"""Labels made block by block (idl.infer.post.block_labels, idl.infer.tiling.block_labels): the whole
image's objects where they fit the cap, unique ids everywhere, wide clusters cut at block borders."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from idl.infer.post.block_labels import assign_ids, block_objects, keys_to_ids
from idl.infer.tiling.block_labels import caps_for, grown, margins
from idl.infer.tiling.blocks import block_grid


def _components(foreground: np.ndarray) -> np.ndarray:
    return ndimage.label(foreground, structure=np.ones((3, 3), bool))[0]


def _by_blocks(foreground: np.ndarray, side: int, caps: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The image labelled block by block as the last step does: windows grown up to the cap."""
    grid = block_grid(foreground.shape, side, (side, side), (1, 1))
    keys, owned, cut = np.zeros(foreground.shape, np.int64), [], 0
    for index in range(grid.count):
        region = grid.region(index)
        tried = margins(caps)
        for margin in tried:
            window = grown(region, margin, foreground.shape)
            piece = foreground[window]
            found = block_objects(
                _components(piece), piece, window, region, foreground.shape, caps, margin == tried[-1]
            )
            if found is not None:
                break
        keys[region] = found.keys
        owned.append(found.owned)
        cut += found.cut
    sorted_keys, ids = assign_ids(owned)
    return keys_to_ids(keys, sorted_keys, ids, np.uint32), cut


def test_objects_narrower_than_the_cap_come_out_whole_and_wide_ones_are_cut_with_unique_ids() -> None:
    rng = np.random.default_rng(3)
    foreground = np.zeros((120, 150), bool)
    yy, xx = np.indices(foreground.shape)
    for _ in range(40):  # blobs up to 12 px wide, many across the borders of blocks of 20
        cy, cx, r = rng.uniform(0, 120), rng.uniform(0, 150), rng.uniform(2, 6)
        foreground |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
    foreground[60:63, 5:140] = True  # a bar 135 px long: wider than the cap of 32
    whole = _components(foreground)
    labels, cut = _by_blocks(foreground, 20, (32, 32))
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
    labels, cut = _by_blocks(foreground, 20, (120, 150))
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
