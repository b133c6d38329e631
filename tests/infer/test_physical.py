"""Physical pixel sizes: read from OME-TIFF, ImageJ hyperstacks and OME-Zarr written here with
tifffile and zarr, kept in the predictions idl writes, per scene of a multi-series file; CZI, ND2 and
LIF through bioio where the [formats] extra is installed, and a clear error where it is not."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from idl.infer.core.errors import DataError
from idl.infer.io.formats.ome_zarr import write_ome_zarr
from idl.infer.io.formats.tiff import tiff_sink, write_tiff
from idl.infer.io.images import read_image
from idl.infer.io.physical import disagreeing, pixel_sizes, voxel_size
from idl.infer.io.scenes import read_scene, scene_names, scene_stems

SIZES = {"z": 1.0, "y": 0.2, "x": 0.2}  # micrometres: voxels five times longer in z


def test_ome_tiff_sizes_in_any_unit(tmp_path: Path) -> None:
    volume = np.zeros((6, 32, 40), np.uint16)
    meta = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0}
    tifffile.imwrite(tmp_path / "a.ome.tif", volume, ome=True, metadata=meta)
    assert pixel_sizes(tmp_path / "a.ome.tif") == pytest.approx(SIZES)
    nm = {
        **meta,
        "PhysicalSizeX": 200,
        "PhysicalSizeXUnit": "nm",
        "PhysicalSizeY": 200,
        "PhysicalSizeYUnit": "nm",
    }
    tifffile.imwrite(tmp_path / "b.ome.tif", volume, ome=True, metadata=nm)
    assert pixel_sizes(tmp_path / "b.ome.tif") == pytest.approx(SIZES)
    assert voxel_size(tmp_path / "b.ome.tif") == pytest.approx((1.0, 0.2, 0.2))


def test_imagej_hyperstack_sizes(tmp_path: Path) -> None:
    stack = np.zeros((6, 2, 32, 40), np.uint16)  # ZCYX
    meta = {"axes": "ZCYX", "spacing": 1.0, "unit": "micron"}
    tifffile.imwrite(tmp_path / "h.tif", stack, imagej=True, resolution=(5.0, 5.0), metadata=meta)
    assert pixel_sizes(tmp_path / "h.tif") == pytest.approx(SIZES)
    tifffile.imwrite(tmp_path / "p.tif", stack[0, 0], resolution=(72.0, 72.0))  # a printer's dpi
    assert pixel_sizes(tmp_path / "p.tif") == {}


def test_ome_zarr_sizes_and_the_writers_keep_them(tmp_path: Path) -> None:
    volume = np.arange(6 * 32 * 40, dtype=np.float32).reshape(6, 32, 40)
    write_ome_zarr(tmp_path / "v.ome.zarr", volume, "zyx", SIZES)
    assert pixel_sizes(tmp_path / "v.ome.zarr") == pytest.approx(SIZES)
    write_tiff(tmp_path / "v.tif", volume, "zyx", SIZES)  # an OME-TIFF
    assert pixel_sizes(tmp_path / "v.tif") == pytest.approx(SIZES)
    np.testing.assert_array_equal(read_image(tmp_path / "v.tif"), volume)
    sink = tiff_sink(tmp_path / "s.tif", (2, 32, 40), np.dtype(np.float32), "cyx", {"y": 0.3, "x": 0.3})
    sink[(slice(None), slice(0, 32), slice(0, 40))] = np.ones((2, 32, 40), np.float32)
    sink.close()
    assert pixel_sizes(tmp_path / "s.tif") == pytest.approx({"y": 0.3, "x": 0.3})
    write_tiff(tmp_path / "plain.tif", volume, "zyx")  # no sizes: a plain TIFF as before
    assert pixel_sizes(tmp_path / "plain.tif") == {}


def test_disagreeing_sizes_are_named() -> None:
    sizes = {Path("a.tif"): {"x": 0.2}, Path("b.tif"): {"x": 0.21}, Path("c.tif"): {"x": 0.25, "z": 1.0}}
    assert disagreeing(sizes) == ["c.tif: x 0.25 µm against the median 0.21 µm"]


def _two_series(path: Path) -> None:
    with tifffile.TiffWriter(path, ome=True) as writer:
        for name, shape, size in (("pos A", (64, 80), 0.5), ("pos/B", (48, 40), 0.25)):
            image = np.random.default_rng(0).integers(0, 255, shape).astype(np.uint8)
            writer.write(
                image, metadata={"axes": "YX", "Name": name, "PhysicalSizeX": size, "PhysicalSizeY": size}
            )


def test_each_scene_is_predicted_and_keeps_its_sizes(small_package: Path, tmp_path: Path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

    (tmp_path / "in").mkdir()
    _two_series(tmp_path / "in" / "multi.tif")
    assert scene_names(tmp_path / "in" / "multi.tif") == ["pos A", "pos/B"]
    assert scene_stems("multi", ["pos A", "pos/B", "pos A"]) == [
        "multi_pos_A",
        "multi_pos_B",
        "multi_pos_A_2",
    ]
    second, axes = read_scene(tmp_path / "in" / "multi.tif", 1)
    assert second.shape == (48, 40) and axes == "yx"
    tifffile.imwrite(
        tmp_path / "in" / "one.tif", second, ome=True, metadata={"axes": "YX", "PhysicalSizeX": 0.3}
    )
    written = predict_files(
        load_model(small_package), sorted((tmp_path / "in").iterdir()), tmp_path / "out", PredictOptions()
    )
    assert sorted(p.name for p in written) == ["multi_pos_A.tif", "multi_pos_B.tif", "one.tif"]
    assert tifffile.imread(tmp_path / "out" / "multi_pos_B.tif").shape == (2, 48, 40)
    assert pixel_sizes(tmp_path / "out" / "multi_pos_A.tif") == pytest.approx({"y": 0.5, "x": 0.5})
    assert pixel_sizes(tmp_path / "out" / "multi_pos_B.tif") == pytest.approx({"y": 0.25, "x": 0.25})
    assert pixel_sizes(tmp_path / "out" / "one.tif") == pytest.approx({"x": 0.3})


@pytest.mark.parametrize("suffix", [".czi", ".nd2", ".lif"])
def test_vendor_formats_without_the_extra_name_it(tmp_path: Path, monkeypatch, suffix: str) -> None:
    monkeypatch.setitem(sys.modules, "bioio", None)  # as if bioio were not installed
    path = tmp_path / f"scan{suffix}"
    path.write_bytes(b"not really")
    with pytest.raises(DataError, match=r"pip install 'idl-toolkit\[formats\]'"):
        read_image(path)
    assert pixel_sizes(path) == {}  # sizes unknown, not an error


def test_bioio_reads_what_it_writes_as_idl_does(tmp_path: Path) -> None:
    """With the [formats] extra: a file bioio writes itself gives the same array and pixel sizes
    through bioio as through idl's own TIFF reading."""
    pytest.importorskip("bioio")
    pytest.importorskip("bioio_ome_tiff")
    from bioio.writers import OmeTiffWriter
    from bioio_base.types import PhysicalPixelSizes

    from idl.infer.io.formats.bioio import bioio_pixel_sizes, read_bioio_scene

    volume = np.random.default_rng(1).integers(0, 1000, (2, 6, 32, 40)).astype(np.uint16)  # CZYX
    path = tmp_path / "b.ome.tiff"
    OmeTiffWriter.save(volume, path, dim_order="CZYX", physical_pixel_sizes=PhysicalPixelSizes(1.0, 0.2, 0.2))
    array, axes = read_bioio_scene(path)
    assert axes == "czyx"
    np.testing.assert_array_equal(array, volume)
    np.testing.assert_array_equal(read_image(path), volume)
    assert bioio_pixel_sizes(path) == pytest.approx(SIZES) == pixel_sizes(path)
