"""Lazily read images: windows equal those of the image in memory; streamed statistics are exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from idl.infer.core.grid import read_window
from idl.infer.core.processing import EnsureDtype, ScaleRange, ZeroMeanUnitVariance, fit_ops
from idl.infer.io.lazy import ChannelsLastView, is_lazy, open_channels_last
from idl.infer.io.record import RECORD_NAME
from idl.infer.io.sinks import TiffSink


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


def test_formats_without_windowed_reading_are_read_whole(tmp_path: Path, rng) -> None:
    from skimage.io import imsave

    imsave(tmp_path / "img.png", rng.integers(0, 255, (20, 30), dtype=np.uint8), check_contrast=False)
    image, _, _ = open_channels_last(tmp_path / "img.png", "yx", "yx")
    assert image.shape == (20, 30, 1) and not is_lazy(image)


def test_large_2d_image_out_of_core_equals_in_memory(model_dir: Path, tmp_path: Path) -> None:
    """A 2D .npy is memory-mapped and predicted out of core with the same mask as in memory."""
    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
    from idl.infer.io.images import read_image
    from idl.infer.service.load import load_model
    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

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


def test_page_stack_fallback_reads_windows(tmp_path: Path, rng) -> None:
    from idl.infer.io.lazy import PagedTiff

    volume = rng.integers(0, 4000, (2, 6, 20, 10), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack", compression="zlib")
    paged = PagedTiff(tmp_path / "stack.tif")
    window = (slice(1, 2), slice(2, 5), slice(3, 17), slice(0, 10))
    np.testing.assert_array_equal(paged[window], volume[window])


def test_ome_zarr_in_and_out(model_dir: Path, tmp_path: Path) -> None:
    """OME-Zarr images are read with their recorded axes; --out-format zarr writes OME-Zarr, in memory
    and out of core, with the masks of the TIFF path; --gt evaluates them."""
    import json

    import zarr
    from click.testing import CliRunner

    from idl.cli import predict as predict_cli
    from idl.infer.io.images import read_image
    from idl.infer.io.omezarr import write_ome_zarr

    project = model_dir.parent
    image_path = sorted((project / "test" / "image").iterdir())[0]
    image = read_image(image_path)
    inputs = tmp_path / "inputs"
    write_ome_zarr(inputs / f"{image_path.stem}.ome.zarr", image[np.newaxis], "cyx")  # channel first
    gt = project / "test" / "groundtruth"
    tif = CliRunner().invoke(
        predict_cli.main,
        [str(model_dir), str(image_path), "--out", str(tmp_path / "t"), "--quiet", "--precision", "fp32"],
    )
    assert tif.exit_code == 0, tif.output
    expected = read_image(tmp_path / "t" / image_path.name)
    args = [
        str(model_dir),
        str(inputs),
        "--out",
        str(tmp_path / "z"),
        "--out-format",
        "zarr",
        "--gt",
        str(gt),
        "--quiet",
        "--precision",
        "fp32",  # as the library call below (the int8 graph's masks may differ by 0.1 %)
    ]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 0, result.output
    out = tmp_path / "z" / f"{image_path.stem}.ome.zarr"
    group = zarr.open_group(store=str(out), mode="r")
    assert [a["name"] for a in group.attrs["multiscales"][0]["axes"]] == ["y", "x"]
    np.testing.assert_array_equal(np.asarray(group["0"][...]), expected)
    summary = json.loads((tmp_path / "z" / "evaluation" / "summary.json").read_text())
    assert 0.5 < summary["jaccard"] <= 1.0
    from idl.infer.service.load import load_model
    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

    options = PredictOptions(progress=False, out_of_core_bytes=0, out_format="zarr", tile_size=104)
    predict_files(load_model(model_dir), [inputs / f"{image_path.stem}.ome.zarr"], tmp_path / "s", options)
    np.testing.assert_array_equal(read_image(tmp_path / "s" / f"{image_path.stem}.ome.zarr"), expected)
    assert [p.name for p in (tmp_path / "s").glob(".*")] == [RECORD_NAME]  # no temporary file
