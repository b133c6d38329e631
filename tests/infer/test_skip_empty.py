"""--skip-empty: the tile test on hand-made tiles, and prediction that equals the full one on every
tile it runs and the network's answer for plain background elsewhere (in memory, out of core, Monte
Carlo)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from idl.infer.runtime.tensors import Tensors
from idl.infer.service.load import load_model
from idl.infer.tiling.empty import DEFAULT_THRESHOLD, EmptyTiles, block_means, contrast, noise_level
from idl.infer.tiling.engine import layout, tile_reader
from idl.infer.tiling.predict import PredictOptions, predict_image, predict_probabilities


def test_the_tile_test_sees_noise_as_empty_and_a_faint_object_as_not(rng) -> None:
    noise = rng.normal(100, 3, (1, 512, 512)).astype(np.float32)
    assert noise_level(noise[0]) == pytest.approx(3, rel=0.05)  # neighbour differences: sqrt(2) x 3
    assert 1.5 < contrast(noise) < 2.5 < DEFAULT_THRESHOLD  # block means of noise stay near 2 units
    faint = noise.copy()
    yy, xx = np.mgrid[:512, :512]
    faint[0][(yy - 20) ** 2 + (xx - 500) ** 2 < 36] += 5 * 3  # a 12 px disk, 5 noise units, at an edge
    assert contrast(faint) > DEFAULT_THRESHOLD + 2  # its 5 units above the noise's block means
    assert contrast(np.zeros((1, 64, 64), np.float32)) == 0  # flat: empty
    spot = np.zeros((2, 64, 64), np.float32)
    spot[1, 30:34, 30:34] = 1
    assert contrast(spot) == float("inf")  # noise-free with something in a channel: run
    np.testing.assert_allclose(block_means(np.arange(16.0).reshape(4, 4), 2), [[2.5, 4.5], [10.5, 12.5]])
    assert block_means(np.ones((2, 9, 9)), 4).shape == (1, 2, 2)  # a short axis is averaged whole


def _sparse(rng, shape=(300, 400)) -> np.ndarray:
    image = rng.normal(100, 2, shape).astype(np.float32)
    image[40:60, 250:280] += 80  # one object, in one corner of the image
    return image


def test_tiles_that_run_equal_full_prediction_and_the_rest_is_background(small_package: Path, rng) -> None:
    model = load_model(small_package)
    image = _sparse(rng)[..., None]
    io, tile, halo = model.io, 64, 8
    run = model.network()
    full, _ = predict_probabilities(run, image, io, tile, halo)
    skip = EmptyTiles()
    skipped, _ = predict_probabilities(run, image, io, tile, halo, skip=skip)
    tensors = Tensors.single(io)
    where = layout(tensors, image.shape[:-1], (tile, tile), (halo, halo))
    read = tile_reader(tensors, {"input": image}, where)  # a tile's input as the network gets it
    assert skip.run + skip.skipped == len(where.tiles) and 0 < skip.run < skip.skipped
    grid, ran = where.grid(tensors, "output"), 0
    for t in where.tiles:
        owned = (slice(None), *grid.regions(t)[0])  # in the image (the package pads the input)
        if contrast(read(t)["input"]) > DEFAULT_THRESHOLD:  # ran: as the full prediction
            ran += 1
            np.testing.assert_array_equal(skipped[owned], full[owned])
        else:  # the output for a constant tile: a constant per channel
            values = skipped[owned].reshape(2, -1)
            assert np.all(values == values[:, :1])
    assert ran == skip.run
    # the background answer: what the network says of the background level (here the full
    # prediction's median far from the object, within the noise the smoothing leaves)
    far = (slice(None), slice(150, 300), slice(0, 200))
    assert np.abs(np.median(skipped[far], axis=(1, 2)) - np.median(full[far], axis=(1, 2))).max() < 0.5


def test_out_of_core_skips_as_in_memory(small_package: Path, tmp_path: Path, rng) -> None:
    """A lazily read TIFF predicted tile by tile into a TIFF sink gives the in-memory result."""
    model = load_model(small_package)
    image = _sparse(rng, (700, 900))
    (tmp_path / "in").mkdir()
    tifffile.imwrite(tmp_path / "in" / "a.tif", image)  # uncompressed: read window by window
    options = PredictOptions(tile_size=128, overlap=0.125, skip_empty=DEFAULT_THRESHOLD, out_of_core_bytes=1)
    in_memory = predict_image(
        model, image[..., None], PredictOptions(tile_size=128, overlap=0.125, skip_empty=4.0)
    )
    from idl.infer.tiling.files import predict_files

    predict_files(model, [tmp_path / "in" / "a.tif"], tmp_path / "out", options)
    written = tifffile.imread(tmp_path / "out" / "a.tif")
    np.testing.assert_allclose(written, in_memory.probabilities, atol=1e-6)
    full = predict_image(model, image[..., None], PredictOptions(tile_size=128, overlap=0.125))
    differ = np.abs(in_memory.probabilities - full.probabilities) > 1e-5
    assert 0.3 < differ.mean() < 0.99  # the background tiles hold the constant answer, not the noise's


def test_a_negative_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="skip_empty must be a contrast >= 0"):
        PredictOptions(skip_empty=-1.0)
