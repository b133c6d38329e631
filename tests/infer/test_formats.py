"""Image formats by suffix (idl.infer.io.formats): a format registered in this file alone is read and
written by idl-predict end to end; every registered format that writes round-trips an array, whole and
tile by tile. No torch."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.core import project
from idl.infer.core.errors import DataError
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.io.disk import DiskFull, atomic_path
from idl.infer.io.formats import (
    ImageFormat,
    format_of,
    formats,
    open_sink,
    output_formats,
    register,
    unregister,
    write_image,
)
from idl.infer.io.images import read_image
from idl.infer.io.places import LEFTOVER
from idl.infer.io.sinks import NpySink
from idl.infer.tiling.predict import PredictOptions

from ..robustness.conftest import write_identity_model


def read_toy(path: Path) -> np.ndarray:
    """A ``.toy`` file: one image row per line, numbers separated by spaces."""
    return np.loadtxt(path, dtype=np.float32, ndmin=2)


def write_toy(path: Path, array: np.ndarray, axes: str) -> Path:
    """Write a 2D array as a ``.toy`` file, atomically like every writer of idl."""
    if array.ndim != 2:
        raise DataError(f"{path}: a .toy file holds one 2D plane, got axes {axes}")
    with atomic_path(path) as tmp:
        np.savetxt(tmp, array, fmt="%.9g")
    return path


@pytest.fixture
def toy() -> Iterator[ImageFormat]:
    """The ``toy`` format (``.toy``: text, read whole, written whole, no sink of its own)."""
    fmt = register(
        ImageFormat(name="toy", suffixes=(".toy",), description="text files", read=read_toy, write=write_toy)
    )
    yield fmt
    unregister("toy")


@pytest.fixture
def image() -> np.ndarray:
    """A 24 x 32 image with values that a text file keeps exactly (float32 printed with 9 digits)."""
    return np.random.default_rng(3).random((24, 32)).astype(np.float32)


def test_a_registered_input_format_is_read_by_idl_predict_end_to_end(
    toy: ImageFormat, image: np.ndarray, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.savetxt(inputs / "cells.toy", image, fmt="%.9g")
    (inputs / "notes.txt").write_text("not an image\n")  # no format claims .txt: left out
    model, out = write_identity_model(tmp_path / "model"), tmp_path / "out"
    result = CliRunner().invoke(
        predict_cli.main, [str(model), str(inputs), "--out", str(out), "--save-probabilities"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "cells.tif",
        "probabilities",
    ]
    # the identity network's foreground probability is the normalized input, the mask its Otsu threshold
    expected = normalize(image[..., np.newaxis], Normalization())[..., 0]
    probabilities = read_image(out / "probabilities" / "cells.tif")[0]  # (classes - 1, y, x)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    mask = read_image(out / "cells.tif")
    assert mask.shape == image.shape and set(np.unique(mask)) == {0, 1}
    assert expected[mask == 1].min() > expected[mask == 0].max()


def test_a_registered_output_format_is_an_out_format_of_idl_predict(
    toy: ImageFormat, image: np.ndarray, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "cells.npy", image)
    model = write_identity_model(tmp_path / "model")
    help_text = CliRunner().invoke(predict_cli.main, ["--help"]).output
    assert "--out-format [tif|npy|zarr|toy]" in help_text
    runs = {}
    for fmt in ("tif", "toy"):
        out = tmp_path / fmt
        result = CliRunner().invoke(
            predict_cli.main, [str(model), str(inputs), "--out", str(out), "--out-format", fmt]
        )
        assert result.exit_code == 0, result.output
        runs[fmt] = out
    assert sorted(p.name for p in runs["toy"].iterdir() if not p.name.startswith(".")) == ["cells.toy"]
    written = read_toy(runs["toy"] / "cells.toy")
    np.testing.assert_array_equal(written, read_image(runs["tif"] / "cells.tif"))
    assert set(np.unique(written)) == {0.0, 1.0}


def test_an_output_format_without_a_sink_is_written_out_of_core_through_a_temporary_file(
    toy: ImageFormat, image: np.ndarray, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A lazily read input (a memory-mapped .npy) predicted out of core into a format without a sink."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling.files import predict_files

    np.save(tmp_path / "cells.npy", image)
    model = load_model(write_identity_model(tmp_path / "model"))
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    predict_files(model, [tmp_path / "cells.npy"], whole, PredictOptions(out_format="toy", progress=False))
    options = PredictOptions(out_format="toy", out_of_core_bytes=0, tile_size=16, progress=False)
    predict_files(model, [tmp_path / "cells.npy"], tiled, options)
    assert "cells.npy -> cells.toy, written tile by tile (threshold" in caplog.text
    np.testing.assert_array_equal(read_toy(tiled / "cells.toy"), read_toy(whole / "cells.toy"))
    assert not [p for p in tiled.iterdir() if LEFTOVER.match(p.name)]


def test_an_unregistered_format_is_no_choice_and_no_image(toy: ImageFormat, tmp_path: Path) -> None:
    (tmp_path / "a.toy").write_text("1 2\n3 4\n")
    assert project.is_image_file(tmp_path / "a.toy") and ".toy" in project.IMAGE_SUFFIXES
    np.testing.assert_array_equal(read_image(tmp_path / "a.toy"), [[1, 2], [3, 4]])
    unregister("toy")
    try:
        assert not project.is_image_file(tmp_path / "a.toy")
        assert output_formats() == ("tif", "npy", "zarr")
        with pytest.raises(DataError) as caught:
            read_image(tmp_path / "a.toy")
        assert str(caught.value) == (
            f"{tmp_path / 'a.toy'}: unsupported file type '.toy'. Convert it to one of "
            ".tif, .tiff, .png, .jpg, .jpeg, .npy, .czi, .nd2, .lif."
        )
        result = CliRunner().invoke(
            predict_cli.main, ["m", str(tmp_path), "--out", str(tmp_path / "o"), "--out-format", "toy"]
        )
        assert result.exit_code == 2
        assert "Invalid value for '--out-format': 'toy' is not one of 'tif', 'npy', 'zarr'." in result.output
    finally:
        register(toy)  # the fixture removes it again


def test_formats_are_found_by_suffix_case_insensitive_and_the_longest_suffix_wins(tmp_path: Path) -> None:
    assert [f.name for f in formats()] == ["tif", "png", "jpeg", "npy", "zarr", "bioio"]
    assert format_of(Path("a.TIFF")).name == "tif" and format_of(Path("b.JPG")).name == "jpeg"
    assert format_of(Path("cells.OME.ZARR")).name == "zarr" and format_of(Path("x.bmp")) is None
    assert format_of(Path(".tif")) is None  # a hidden file named after a suffix
    assert project.image_stem(Path("cells.OME.zarr")) == "cells"
    assert project.image_stem(Path("cells.zarr")) == "cells"
    assert project.image_stem(Path("a.b.tif")) == "a.b" and project.image_stem(Path("x.bmp")) == "x"
    (tmp_path / "c.ome.zarr").mkdir()
    (tmp_path / "d.tif").mkdir()  # a folder with a file suffix: a mask folder, not an image folder
    assert project.is_image_file(tmp_path / "c.ome.zarr") and not project.is_image_file(tmp_path / "d.tif")
    assert project.IMAGE_SUFFIXES == (
        ".tif",
        ".tiff",
        ".png",
        ".jpg",
        ".jpeg",
        ".npy",
        ".czi",
        ".nd2",
        ".lif",
    )
    assert project.FOLDER_SUFFIXES == (".ome.zarr", ".zarr")


def test_a_claimed_name_or_suffix_is_refused() -> None:
    with pytest.raises(ValueError, match="image format big: .tif belongs to tif"):
        register(ImageFormat(name="big", suffixes=(".tif",), read=read_toy))
    with pytest.raises(ValueError, match="an image format named npy is registered already"):
        register(ImageFormat(name="npy", suffixes=(".npz",), read=read_toy))
    with pytest.raises(ValueError, match="suffixes are lower case and start with '.'"):
        ImageFormat(name="upper", suffixes=(".TOY",), read=read_toy)
    assert [f.name for f in formats()] == ["tif", "png", "jpeg", "npy", "zarr", "bioio"]


def test_an_unknown_output_format_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError) as caught:
        PredictOptions(out_format="png")  # PNG is read, never written
    assert str(caught.value) == "output format must be one of tif, npy, zarr, got png"
    assert PredictOptions(out_format="zarr").suffix == ".ome.zarr"
    assert PredictOptions(out_format="npy").suffix == ".npy" and PredictOptions().suffix == ".tif"


WRITING = ["tif", "npy", "zarr", "toy"]


def arrays() -> list[tuple[np.ndarray, str]]:
    rng = np.random.default_rng(5)
    return [
        (rng.integers(0, 255, (20, 30)).astype(np.uint8), "yx"),
        (rng.integers(0, 60000, (20, 30)).astype(np.uint16), "yx"),
        (rng.random((20, 30)).astype(np.float32), "yx"),
        (rng.random((2, 12, 14)).astype(np.float32), "cyx"),
        (rng.integers(0, 9, (5, 12, 14)).astype(np.int32), "zyx"),
    ]


@pytest.mark.parametrize("name", WRITING)
def test_every_writing_format_round_trips_an_array(name: str, toy: ImageFormat, tmp_path: Path) -> None:
    fmt = next(f for f in formats() if f.name == name)
    for i, (array, axes) in enumerate(arrays()):
        if name == "toy" and array.ndim != 2:
            continue  # a .toy file holds one plane
        path = write_image(tmp_path / f"a{i}{fmt.suffix}", array, name, axes)
        assert path == tmp_path / f"a{i}{fmt.suffix}"
        back = read_image(path)
        np.testing.assert_array_equal(back, array)
        if name != "toy":  # text keeps the values, not the dtype
            assert back.dtype == array.dtype, (name, axes)
        if fmt.records_axes:
            assert fmt.open is not None and fmt.open(path)[1] == axes
    assert not [p for p in tmp_path.iterdir() if LEFTOVER.match(p.name)]


@pytest.mark.parametrize("name", WRITING)
def test_tile_by_tile_writing_equals_a_whole_write(name: str, toy: ImageFormat, tmp_path: Path) -> None:
    fmt = next(f for f in formats() if f.name == name)
    rng = np.random.default_rng(6)
    array, axes = (rng.random((40, 50)).astype(np.float32), "yx")
    whole = write_image(tmp_path / f"whole{fmt.suffix}", array, name, axes)
    sink = open_sink(tmp_path / f"tiled{fmt.suffix}", array.shape, array.dtype, name, axes)
    for y in range(0, 40, 16):
        for x in range(0, 50, 20):
            sink[y : y + 16, x : x + 20] = array[y : y + 16, x : x + 20]
    assert not (tmp_path / f"tiled{fmt.suffix}").exists()  # only the partial output so far
    np.testing.assert_array_equal(np.concatenate([b for _, b in sink.blocks()]), array)
    assert sink.close() == tmp_path / f"tiled{fmt.suffix}"
    np.testing.assert_array_equal(read_image(tmp_path / f"tiled{fmt.suffix}"), read_image(whole))
    gone = open_sink(tmp_path / f"gone{fmt.suffix}", (4, 4), np.uint8, name, "yx")
    gone[0:2, 0:2] = 1
    gone.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([whole.name, f"tiled{fmt.suffix}"])


def test_a_npy_sink_on_a_full_disk_names_its_output_and_removes_the_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = NpySink(tmp_path / "big.npy", (100, 1000), np.float32)

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "pwrite", full)
    with pytest.raises(DiskFull) as caught:
        sink[0:10, :] = np.ones((10, 1000), np.float32)
    assert str(caught.value).startswith(f"No space left on {tmp_path / 'big.npy'} (needs about 0.38 MB, ")
    assert not list(tmp_path.iterdir())


def test_predictions_of_a_folder_format_are_paired_by_the_name_without_its_suffix(
    image: np.ndarray, tmp_path: Path
) -> None:
    """``a.ome.zarr`` is the prediction of ``a.tif``: idl-evaluate pairs it with ``gt/a.tif``."""
    from idl.cli import evaluate as evaluate_cli
    from idl.infer.io.images import write_tiff

    write_tiff(tmp_path / "in" / "a.tif", image)
    write_tiff(tmp_path / "gt" / "a.tif", (image > 0.5).astype(np.uint8))
    model = write_identity_model(tmp_path / "model")
    summaries = {}
    for fmt in ("tif", "zarr"):
        out = tmp_path / f"pred-{fmt}"
        args = [str(model), str(tmp_path / "in"), "--out", str(out), "--out-format", fmt]
        assert CliRunner().invoke(predict_cli.main, args).exit_code == 0
        args = [str(out), str(tmp_path / "gt"), "--out", str(tmp_path / f"ev-{fmt}"), "--task", "semantic"]
        result = CliRunner().invoke(evaluate_cli.main, args)
        assert result.exit_code == 0, result.output
        summaries[fmt] = (tmp_path / f"ev-{fmt}" / "summary.json").read_text()
    assert (tmp_path / "pred-zarr" / "a.ome.zarr").is_dir()
    assert summaries["zarr"] == summaries["tif"] and '"n_images": 1' in summaries["tif"]
