"""Lazily read images: windows equal those of the image in memory; streamed statistics are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from idl.infer.lazy import ChannelsLastView, is_lazy, open_channels_last
from idl.infer.processing import EnsureDtype, ScaleRange, ZeroMeanUnitVariance, fit_ops
from idl.infer.sinks import TiffSink
from idl.infer.tiling import read_window


def test_multipage_and_uncompressed_tiffs_read_window_by_window(tmp_path: Path, rng) -> None:
    volume = rng.integers(0, 4000, (2, 12, 30, 20), dtype=np.uint16)  # c, z, y, x
    tifffile.imwrite(tmp_path / "paged.tif", volume, photometric="minisblack", compression="zlib")
    tifffile.imwrite(tmp_path / "plain.tif", volume, photometric="minisblack")
    expected = np.moveaxis(volume, 0, -1)  # z, y, x, c
    for name in ("paged.tif", "plain.tif"):
        image, axes, guessed = open_channels_last(tmp_path / name, None, "zyx")
        assert is_lazy(image) and axes == "czyx" and guessed and image.shape == (12, 30, 20, 2)
        window = (slice(3, 9), slice(20, 36), slice(0, 16))  # past the y border: reflected
        np.testing.assert_array_equal(read_window(image, window), read_window(expected, window))
    assert type(open_channels_last(tmp_path / "paged.tif", None, "zyx")[0].source).__name__ == "Array"  # zarr


def test_streamed_statistics_equal_in_memory_ones(tmp_path: Path, rng) -> None:
    image = rng.integers(0, 60000, (40, 33, 2)).astype(np.uint16)
    np.save(tmp_path / "x.npy", image)
    lazy = ChannelsLastView(np.load(tmp_path / "x.npy", mmap_mode="r"), "yxc", "yx")
    chains = (
        [ScaleRange("yx", 1.0, 99.8, 1e-6)],  # 16 bit: exact histogram
        [EnsureDtype("float32"), ScaleRange(None, 0.5, 99.5, 1e-6)],  # float: all values sampled here
        [ZeroMeanUnitVariance("yx")],
    )
    for ops in chains:
        expected, got = fit_ops(ops, image, "yxc")[-1], fit_ops(ops, lazy, "yxc")[-1]
        np.testing.assert_allclose(got.center, expected.center, rtol=1e-6)
        np.testing.assert_allclose(got.scale, expected.scale, rtol=1e-6)


def test_tiff_sink_writes_atomically(tmp_path: Path) -> None:
    sink = TiffSink(tmp_path / "out.tif", (4, 8, 8), np.float32)
    for z in range(4):
        sink[z] = np.full((8, 8), z, np.float32)
    assert not (tmp_path / "out.tif").exists()  # only the partial file so far
    assert [w.start for w, _ in sink.blocks()] == [0]
    sink.close()
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif")[:, 0, 0], [0, 1, 2, 3])
    assert not list(tmp_path.glob(".*"))
    other = TiffSink(tmp_path / "gone.tif", (2, 2), np.uint8)
    other.discard()
    assert not list(tmp_path.glob("*gone*"))


@pytest.mark.parametrize("axes", ["zyx", "yx"])
def test_small_images_stay_numpy(tmp_path: Path, axes: str, rng) -> None:
    from idl.infer.io import write_tiff

    write_tiff(tmp_path / "img.png.tif", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    image, _, _ = open_channels_last(tmp_path / "img.png.tif", "yx", "yx")
    assert image.shape == (20, 30, 1)


def test_large_2d_image_out_of_core_equals_in_memory(model_dir: Path, tmp_path: Path) -> None:
    """A 2D .npy is memory-mapped and predicted out of core with the same mask as in memory."""
    from idl.infer.io import read_image
    from idl.infer.model import load_model
    from idl.infer.predict import PredictOptions, predict_files
    from idl.infer.synthetic import NucleiSpec, synthetic_nuclei

    image = synthetic_nuclei(np.random.default_rng(5), NucleiSpec(size=300, objects=(20, 30)))[0]
    np.save(tmp_path / "big.npy", image)
    model = load_model(model_dir)
    for name, limit in (("memory", 2**40), ("streamed", 0)):
        options = PredictOptions(tile_size=128, progress=False, out_of_core_bytes=limit)
        predict_files(model, [tmp_path / "big.npy"], tmp_path / name, options, save_probabilities=True)
    np.testing.assert_array_equal(
        read_image(tmp_path / "streamed" / "big.tif"), read_image(tmp_path / "memory" / "big.tif")
    )
    streamed = read_image(tmp_path / "streamed" / "probabilities" / "big.tif")
    memory = read_image(tmp_path / "memory" / "probabilities" / "big.tif")
    assert np.abs(streamed - memory.reshape(streamed.shape)).max() <= 1e-6
