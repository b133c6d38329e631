"""Tiling against whole-image prediction for random shapes, tiles and halos (a property-based test);
huge --tile-size values are capped by the memory available instead of exhausting it."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage
from skimage.draw import disk

from idl.infer.core.grid import AxisSize, smallest_tile
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.sinks import NpySink
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling import predict
from idl.infer.tiling.predict import bounded_tile, predict_objects, predict_probabilities


def _network(radius: int):
    """A fake network with a known receptive field: half the pixel (pointwise) plus the mean of its
    (2r+1)^2 neighbourhood (zero outside the tile), as a U-Net mixes both."""

    def run(batch: np.ndarray) -> np.ndarray:
        size = (1, 2 * radius + 1, 2 * radius + 1)
        return np.stack([0.5 * x + ndimage.uniform_filter(x, size=size, mode="constant") for x in batch])

    return run


MERGERS = ("placed", "sink", "nonfinite", "monte-carlo")


def _tiled(run, image, io, tile: int, halo: int, batch: int, merger: str) -> np.ndarray:
    """The tiled output through one of the tile loop's mergers: values placed in memory, written into
    a sink on disk (out of core), placed with the non-finite rule (a finite image: unchanged), or
    Monte Carlo statistics of deterministic 'samples' (their mean: the values)."""
    if merger == "sink":
        with tempfile.TemporaryDirectory() as folder:
            sink = NpySink(Path(folder) / "out.npy", image.shape[:-1], np.float32)
            predict_probabilities(run, image, io, tile_size=tile, halo=halo, batch_size=batch, output=sink)
            return np.concatenate([block for _, block in sink.blocks()])[np.newaxis]
    if merger == "monte-carlo":
        mean, spread = predict_probabilities(run, image, io, tile, halo, batch, samples=3)
        np.testing.assert_allclose(spread, (mean * (1 - mean))[0], atol=1e-5)  # no disagreement
        return mean
    marked = merger == "nonfinite"
    return predict_probabilities(run, image, io, tile, halo, batch, mark_nonfinite=marked)[0]


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
    merger=st.sampled_from(MERGERS),
)
def test_tiled_prediction_equals_the_whole_image(
    height: int,
    width: int,
    radius: int,
    multiple: int,
    blocks: int,
    spare: int,
    batch: int,
    seed: int,
    merger: str,
) -> None:
    io = io_for_info(ModelInfo("semantic", 1, 2, multiple, 0, output="probabilities"))
    halo = radius + spare  # at least the receptive field
    tile = max(multiple * blocks, smallest_tile(halo, AxisSize(multiple, multiple)))
    image = np.random.default_rng(seed).random((height, width, 1)).astype(np.float32)
    run = _network(radius)
    whole, _ = predict_probabilities(run, image, io, tile_size=max(height, width) + multiple, halo=0)
    tiled = _tiled(run, image, io, tile, halo, batch, merger)
    assert tiled.shape == whole.shape == (1, height, width)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def _components(batch: np.ndarray) -> np.ndarray:
    """A stand-in for Mask R-CNN: connected components of the bright pixels, score 0.9 each."""
    labels, _ = ndimage.label(batch[0, 0] > 0.5)
    return np.stack([labels, 0.9 * (labels > 0)]).astype(np.float32)[np.newaxis]


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(20, 220),
    width=st.integers(20, 220),
    blocks=st.integers(2, 8),
    seed=st.integers(0, 2**16),
)
def test_the_objects_merger_gives_the_whole_images_objects(
    height: int, width: int, blocks: int, seed: int
) -> None:
    """Objects smaller than the halo: each kept once, by the tile that owns its centre, so the tiled
    label image is the whole image's up to the numbering."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width), np.float32)
    for _ in range(rng.integers(1, 12)):
        centre, radius = (rng.uniform(0, height), rng.uniform(0, width)), rng.uniform(1.5, 6)
        image[disk(centre, radius, shape=image.shape)] = 1.0
    whole, _ = ndimage.label(image > 0.5)
    io = io_for_info(ModelInfo("instance", 1, 2, 1, 14, output="labels"))
    tiled, _ = predict_objects(_components, image[..., None], io, max(2 * 14 + 8, 8 * blocks), 14)
    pairs = np.unique(np.stack([whole.ravel(), tiled.ravel()]), axis=1)  # one tiled object per object
    assert tiled.max() == whole.max() and pairs.shape[1] == whole.max() + 1


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


def test_the_default_tile_grows_to_what_the_halo_needs_and_a_given_one_is_refused(monkeypatch) -> None:
    """A 3D U-Net of depth 4 has a 96-voxel halo: the default 128-voxel tile would own nothing, so it
    grows to the smallest tile the halo allows (208); a --tile-size the user gave is kept and refused
    with what it needs."""
    from idl.infer.core.errors import IdlError
    from idl.infer.tiling.predict import PredictOptions, _check_tiles

    info = ModelInfo(
        task="semantic",
        in_channels=1,
        num_classes=2,
        size_multiple=16,
        halo=96,
        dims=3,
        axes="zyx",
        z_multiple=16,
        z_halo=96,
    )
    io = io_for_info(info)
    monkeypatch.setattr(predict, "available_memory", lambda: 64 * 2**30)
    smallest = smallest_tile(96, io.sizes["y"])
    assert smallest == 208
    assert PredictOptions().bounded_tile(io, (60, 256, 256), smallest) == 208
    _check_tiles(io, (60, 256, 256), (208,) * 3, (96, 96, 96))  # passes
    assert PredictOptions(tile_size=128).bounded_tile(io, (60, 256, 256), smallest) == 128
    with pytest.raises(
        IdlError, match="--tile-size 128 is too small along y: each tile needs 96 px of context"
    ):
        _check_tiles(io, (60, 256, 256), (128,) * 3, (96, 96, 96))
