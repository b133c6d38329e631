from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from idl.infer.core.grid import AxisSize, axis_tiles, read_window, round_up, tile_grid
from idl.infer.core.model_info import ModelInfo
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling.predict import predict_probabilities


@pytest.mark.parametrize("size", [1, 15, 16, 17, 100, 511, 512, 513, 1000, 2048])
@pytest.mark.parametrize("tile,halo,multiple", [(64, 8, 16), (128, 32, 16), (96, 20, 8), (512, 64, 16)])
def test_axis_tiles_partition_the_axis_with_halo(size: int, tile: int, halo: int, multiple: int) -> None:
    tiles = axis_tiles(size, tile, halo, multiple)
    owned = np.zeros(size, int)
    padded = round_up(size, multiple)
    for t in tiles:
        owned[t.start : t.stop] += 1
        assert t.origin % multiple == 0 and t.size % multiple == 0
        assert 0 <= t.origin and t.origin + t.size <= padded
        # the owned region keeps `halo` pixels of context inside the tile, except at the image border
        assert t.start == 0 or t.start - t.origin >= halo
        assert t.stop == size or t.origin + t.size - t.stop >= halo
    assert owned.tolist() == [1] * size


def test_axis_tiles_rejects_halo_larger_than_tile() -> None:
    with pytest.raises(ValueError, match="no room for a halo"):
        axis_tiles(1000, 64, 32, 16)


def test_tile_grid_counts() -> None:
    # 4096 px, 512-px tiles, stride 384 -> 11 tiles per axis
    assert len(tile_grid((4096, 4096), (512, 512), (64, 64), 16)) == 121
    assert len(tile_grid((100, 40), (512, 512), (64, 64), 16)) == 1


def test_read_window_pads_like_the_whole_image() -> None:
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30, 1)
    whole = np.pad(image, ((0, 4), (0, 2), (0, 0)), mode="reflect")
    window = (slice(8, 24), slice(16, 32))
    np.testing.assert_array_equal(read_window(image, window), whole[8:24, 16:32])


def test_read_window_repeats_edges_of_tiny_images() -> None:
    image = np.arange(5 * 3, dtype=np.float32).reshape(5, 3, 1)
    whole = np.pad(image, ((0, 11), (0, 13), (0, 0)), mode="edge")  # pads >= size: edge, as the U-Net
    np.testing.assert_array_equal(read_window(image, (slice(0, 16), slice(0, 16))), whole)


# a single-channel network accepting multiples of 16, fed percentile-normalized images
IO_16 = io_for_info(ModelInfo("semantic", 1, 2, 16, 0, output="probabilities"))


def _box_model(radius: int):
    """A fake network with a known receptive field: a (2r+1)^2 box mean with zero padding."""

    def run(batch: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                ndimage.uniform_filter(x, size=(1, 2 * radius + 1, 2 * radius + 1), mode="constant")
                for x in batch
            ]
        )

    return run


@pytest.mark.parametrize("shape", [(300, 257), (64, 64), (1000, 333)])
def test_tiled_equals_whole_when_halo_covers_receptive_field(shape: tuple[int, int], rng) -> None:
    image = rng.random((*shape, 1)).astype(np.float32)
    run = _box_model(radius=6)
    whole, _ = predict_probabilities(run, image, IO_16, tile_size=max(shape) + 16, halo=0)
    tiled, _ = predict_probabilities(run, image, IO_16, tile_size=96, halo=8, batch_size=3)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)


def test_tiled_differs_when_halo_is_too_small(rng) -> None:
    image = rng.random((300, 300, 1)).astype(np.float32)
    run = _box_model(radius=6)
    whole, _ = predict_probabilities(run, image, IO_16, tile_size=320, halo=0)
    tiled, _ = predict_probabilities(run, image, IO_16, tile_size=96, halo=0)
    assert np.abs(tiled - whole).max() > 0.05


def test_axis_size_rules() -> None:
    fixed = AxisSize(64, 0)
    assert (fixed.at_least(10), fixed.at_least(100), fixed.at_most(1000)) == (64, 100, 64)
    odd = AxisSize(20, 8)  # minimum not a multiple of the step
    assert (odd.at_least(1), odd.at_least(21), odd.at_least(28), odd.at_most(50)) == (20, 28, 28, 44)
    tiles = axis_tiles(100, 64, 8, fixed)  # a fixed-size network still covers any length
    assert all(t.size == 64 for t in tiles) and tiles[0].start == 0 and tiles[-1].stop == 100
    assert all(a.stop == b.start for a, b in zip(tiles, tiles[1:], strict=False))
    tiles = axis_tiles(100, 60, 8, odd)
    assert all(t.size == 60 and t.origin % 8 == 0 for t in tiles[:-1])


def test_tiles_whose_samples_agree_stop_early(rng) -> None:
    """--mc-tolerance: a Monte Carlo network whose samples agree on the left half of the image (the
    image is 0 there) and scatter on the right: left tiles stop after MIN_SAMPLES, right ones draw all
    20 (the halves of 20 such samples still differ by more than 10 %); the mean and map are those
    of the samples each tile drew. Without a tolerance all draw 20."""
    from idl.infer.post.uncertainty import MIN_SAMPLES

    image = np.zeros((64, 64, 1), np.float32)
    image[:, 32:] = 1.0

    def noisy(batch: np.ndarray) -> np.ndarray:  # probabilities 0.5 +- 0.3 noise where the input is 1
        return np.clip(0.1 + batch * (0.4 + 0.3 * rng.standard_normal(batch.shape)), 0, 1).astype(np.float32)

    drawn: list[int] = []
    mean, spread = predict_probabilities(
        noisy, image, IO_16, 32, 0, samples=20, uncertainty_map="std", tolerance=0.1, drawn=drawn
    )
    assert drawn == [MIN_SAMPLES, 20] * 2  # tiles row by row: left, right
    assert np.all(spread[:, :32] == 0) and np.allclose(mean[0, :, :32], 0.1)
    assert spread[:, 32:].min() > 0 and abs(mean[0, :, 32:].mean() - 0.5) < 0.05
    drawn.clear()
    predict_probabilities(noisy, image, IO_16, 32, 0, samples=20, uncertainty_map="std", drawn=drawn)
    assert drawn == [20] * 4
