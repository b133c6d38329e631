"""Tiling against whole-image prediction for random shapes, tiles and halos (a property-based test);
huge --tile-size values are capped by the memory available instead of exhausting it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from idl.infer.core.grid import AxisSize, smallest_tile
from idl.infer.core.model_info import ModelInfo
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling import predict
from idl.infer.tiling.predict import bounded_tile, predict_probabilities


def _network(radius: int):
    """A fake network with a known receptive field: half the pixel (pointwise) plus the mean of its
    (2r+1)^2 neighbourhood (zero outside the tile), as a U-Net mixes both."""

    def run(batch: np.ndarray) -> np.ndarray:
        size = (1, 2 * radius + 1, 2 * radius + 1)
        return np.stack([0.5 * x + ndimage.uniform_filter(x, size=size, mode="constant") for x in batch])

    return run


@settings(max_examples=80, deadline=None)
@given(
    height=st.integers(1, 260),
    width=st.integers(1, 260),
    radius=st.integers(0, 6),
    multiple=st.sampled_from([1, 4, 8, 16]),
    blocks=st.integers(1, 16),
    spare=st.integers(0, 6),
    batch=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_tiled_prediction_equals_the_whole_image(
    height: int, width: int, radius: int, multiple: int, blocks: int, spare: int, batch: int, seed: int
) -> None:
    io = io_for_info(ModelInfo("semantic", 1, 2, multiple, 0, output="probabilities"))
    halo = radius + spare  # at least the receptive field
    tile = max(multiple * blocks, smallest_tile(halo, AxisSize(multiple, multiple)))
    image = np.random.default_rng(seed).random((height, width, 1)).astype(np.float32)
    run = _network(radius)
    whole, _ = predict_probabilities(run, image, io, tile_size=max(height, width) + multiple, halo=0)
    tiled, _ = predict_probabilities(run, image, io, tile_size=tile, halo=halo, batch_size=batch)
    assert tiled.shape == whole.shape == (1, height, width)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_a_huge_tile_is_capped_by_the_memory_available(caplog) -> None:
    gib = 2**30
    # 6000 x 6000 px at 256 B/px: about 8.6 GB, more than a quarter of 1 GiB
    assert bounded_tile(100_000, (6000, 6000), 1, gib) == 1024
    assert "--tile-size 100000 would need about 8.6 GB" in caplog.text
    assert bounded_tile(512, (6000, 6000), 1, gib) == 512  # 64 MB: fits
    assert bounded_tile(100_000, (6000, 6000), 1, None) == 100_000  # unknown memory: as asked
    assert bounded_tile(4096, (600, 600), 1, gib) == 4096  # tiles are never larger than the image
    assert bounded_tile(4096, (600, 600), 4, gib) == 512  # a batch of four 600 x 600 tiles: 352 MB
    assert bounded_tile(100_000, (400, 400, 400), 1, gib) == 101  # 3D: the cube root


def test_idl_predict_caps_the_tile_and_gives_the_same_result(identity_model, monkeypatch, tmp_path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = load_model(identity_model())
    image = np.random.default_rng(0).random((700, 900, 1)).astype(np.float32)
    whole = predict_image(model, image, PredictOptions(tile_size=4096, progress=False)).probabilities
    monkeypatch.setattr(predict, "available_memory", lambda: 64 * 2**20)  # 64 MiB free
    capped = predict_image(model, image, PredictOptions(tile_size=100_000, progress=False)).probabilities
    np.testing.assert_array_equal(capped, whole)


@pytest.mark.parametrize("side", [1, 2])
def test_images_of_one_or_two_pixels_are_predicted(identity_model, side: int) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    image = np.arange(side * side, dtype=np.float32).reshape(side, side, 1)
    result = predict_image(load_model(identity_model()), image, PredictOptions(progress=False))
    assert result.probabilities.shape == (1, side, side) and result.mask.shape == (side, side)


def test_a_constant_image_gets_an_empty_mask(caplog) -> None:
    from idl.infer.tiling.predict import Prediction, empty_if_constant

    flat_output = np.full((1, 32, 32), 0.3, np.float32)
    flat_output[:, :2] = 0.6  # a network's border effect on a constant input
    noisy_mask = (flat_output[0] > 0.45).astype(np.uint8)
    result = Prediction(flat_output, noisy_mask.copy(), None, 0.45)
    empty_if_constant(result, np.zeros((32, 32, 1), np.float32))
    assert not result.mask.any() and "a constant image (every pixel 0)" in caplog.text
    kept = Prediction(flat_output, noisy_mask.copy(), None, 0.45)
    image = np.zeros((32, 32, 1), np.float32)
    image[5, 5] = 1.0
    empty_if_constant(kept, image)
    assert kept.mask.sum() == noisy_mask.sum() == 64  # an image with contrast keeps its mask
