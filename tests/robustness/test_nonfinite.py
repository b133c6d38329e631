"""NaN and inf pixels: found when an image is read, named with their count and position, ignored by
the normalization, 0 for the network, NaN in the outputs (0 in masks), or refused with
``--on-nonfinite error``; the same in memory and out of core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.core.nonfinite import find_nonfinite
from idl.infer.core.processing import ScaleRange, ZeroMeanUnitVariance, apply_ops, fit_ops
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model
from idl.infer.tiling.files import predict_files
from idl.infer.tiling.predict import PredictOptions

LOW, HIGH, EPS = 1.0, 99.8, 1e-6  # the identity model's normalization (ModelInfo's defaults)


def _image(rng: np.random.Generator, bad: dict[tuple[int, int], float]) -> np.ndarray:
    """A 64 x 80 float32 image, bright square on noise, with ``bad`` values at given pixels."""
    image = rng.normal(100, 5, (64, 80)).astype(np.float32)
    image[16:48, 20:60] += 60
    for (y, x), value in bad.items():
        image[y, x] = value
    return image


def test_finding_counts_and_places_them(rng) -> None:
    image = _image(rng, {(5, 7): np.nan, (40, 2): np.inf, (63, 79): -np.inf})
    found = find_nonfinite(image)
    assert found is not None and (found.count, found.nan, found.first) == (3, 1, (5, 7))
    assert found.describe("yx") == "3 non-finite pixel value(s) (1 NaN, 2 inf), the first at y=5, x=7"
    assert find_nonfinite(np.zeros((4, 4), np.uint16)) is None
    assert find_nonfinite(np.nan_to_num(image)) is None


def test_statistics_ignore_nonfinite_pixels_in_memory_and_streamed(rng, tmp_path: Path) -> None:
    image = _image(rng, {(5, 7): np.nan, (40, 2): np.inf})[..., None]
    finite = np.isfinite(image)
    for op in (ScaleRange("yx", LOW, HIGH, EPS), ZeroMeanUnitVariance("yx")):
        (fitted,) = fit_ops([op], image, "yxc")
        streamed = np.load(_npy(tmp_path / "image.npy", image), mmap_mode="r")
        (lazy,) = fit_ops([op], streamed, "yxc")
        out, out_lazy = apply_ops([fitted], image, "yxc"), apply_ops([lazy], image, "yxc")
        assert np.isfinite(out[finite]).all()
        np.testing.assert_allclose(out_lazy[finite], out[finite], rtol=1e-5, atol=1e-5)
    lo, hi = np.percentile(image[finite], [LOW, HIGH])
    (fitted,) = fit_ops([ScaleRange("yx", LOW, HIGH, EPS)], image, "yxc")
    np.testing.assert_allclose(
        apply_ops([fitted], image, "yxc")[finite],
        (image[finite] - lo) / (hi - lo + EPS),
        rtol=1e-5,
        atol=1e-6,
    )


def _npy(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_idl_predict_writes_nan_where_the_input_was_nan_and_warns(
    identity_model, rng, tmp_path: Path
) -> None:
    model = identity_model()
    image = _image(rng, {(5, 7): np.nan})
    write_tiff(tmp_path / "in" / "cells.tif", image)
    out = tmp_path / "out"
    args = [str(model), str(tmp_path / "in"), "--out", str(out), "--save-probabilities", "--quiet"]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 0, result.output
    assert "cells.tif: 1 non-finite pixel value(s) (1 NaN, 0 inf), the first at y=5, x=7" in result.output
    probability, mask = (
        np.squeeze(read_image(out / "probabilities" / "cells.tif")),
        read_image(out / "cells.tif"),
    )
    bad = ~np.isfinite(image)
    assert np.isnan(probability[bad]).all() and np.isfinite(probability[~bad]).all()
    lo, hi = np.percentile(image[~bad], [LOW, HIGH])
    np.testing.assert_allclose(probability[~bad], (image[~bad] - lo) / (hi - lo + EPS), rtol=1e-5, atol=1e-6)
    assert mask[bad].tolist() == [0]
    square = np.zeros(image.shape, bool)
    square[16:48, 20:60] = True
    assert np.mean(mask.astype(bool) == square) > 0.99  # not the empty mask a NaN normalization gave


def test_on_nonfinite_error_refuses_the_image_and_writes_nothing(identity_model, rng, tmp_path: Path) -> None:
    write_tiff(tmp_path / "in" / "cells.tif", _image(rng, {(40, 2): np.inf, (50, 3): np.nan}))
    out = tmp_path / "out"
    args = [
        str(identity_model()),
        str(tmp_path / "in"),
        "--out",
        str(out),
        "--on-nonfinite",
        "error",
        "--quiet",
    ]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 1
    assert "cells.tif: 2 non-finite pixel value(s) (1 NaN, 1 inf), the first at y=40, x=2" in result.output
    assert "--on-nonfinite error" in result.output
    assert not (out / "cells.tif").exists()


@pytest.mark.parametrize("mc", [0, 4])
def test_out_of_core_marks_the_same_pixels_as_in_memory(identity_model, rng, tmp_path: Path, mc: int) -> None:
    model = load_model(identity_model())
    if mc:  # the identity graph as its own Monte Carlo twin
        (Path(model.weights).parent / "model_mc.onnx").write_bytes(Path(model.weights).read_bytes())
        model = load_model(Path(model.weights).parent)
    image = _image(rng, {(5, 7): np.nan, (33, 70): -np.inf})
    _npy(tmp_path / "cells.npy", image)  # .npy is read window by window
    outputs = {}
    for name, limit in (("memory", 1 << 30), ("tiles", 1)):
        options = PredictOptions(tile_size=32, mc_samples=mc, progress=False, out_of_core_bytes=limit)
        predict_files(model, [tmp_path / "cells.npy"], tmp_path / name, options, save_probabilities=True)
        # np.squeeze: in memory a one-channel probability map is written (1, Y, X), out of core (Y, X)
        outputs[name] = [
            np.squeeze(read_image(tmp_path / name / sub / "cells.tif")) for sub in ("probabilities", ".")
        ]
        if mc:
            outputs[name].append(read_image(tmp_path / name / "uncertainty" / "cells.tif"))
    bad = ~np.isfinite(image)
    for memory, tiles in zip(outputs["memory"], outputs["tiles"], strict=True):
        np.testing.assert_array_equal(memory, tiles)
    probability, mask = outputs["tiles"][:2]
    assert np.isnan(probability[bad]).all() and not np.isnan(probability[~bad]).any()
    assert mask[bad].tolist() == [0, 0] and mask.sum() > 1000
    if mc:
        uncertainty = outputs["tiles"][2]
        assert np.isnan(uncertainty[bad]).all() and np.isfinite(uncertainty[~bad]).all()
