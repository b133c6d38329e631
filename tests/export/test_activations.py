"""The activation explorer on idl's U-Nets (2D and 3D): the layer list read from the ONNX graph, and
the figure and TIFF stacks of named layers, whose last layer reproduces the prediction; and
--skip-empty on the same small U-Net, with Monte Carlo sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner

from idl.cli.predict import main as predict_main
from idl.export.onnx import export_onnx
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.formats.tiff import write_tiff
from idl.models import UNet, UNetSpec
from tests.export.conftest import unet_info


def _model(folder: Path, dims: int) -> Path:
    torch.manual_seed(dims)
    spec = UNetSpec(depth=2, base_filters=4, dims=dims)
    export_onnx(UNet(spec).eval(), unet_info(spec), folder)
    return folder


def _run(*args: str) -> str:
    result = CliRunner().invoke(predict_main, [*args, "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output


def test_layers_are_listed_with_their_shapes_for_the_image(tmp_path: Path, rng) -> None:
    model = _model(tmp_path / "m", 2)
    write_tiff(tmp_path / "a.tif", rng.integers(0, 255, (70, 90)).astype(np.uint8))
    listing = _run(str(model), str(tmp_path / "a.tif"), "--activations").splitlines()
    assert listing[0].split() == ["layer", "op", "shape"]
    rows = {line.split()[0]: line.split(maxsplit=2)[1:] for line in listing[1:]}
    # 70 x 90 px is padded to the size multiple 4 (72 x 92); each pooling halves it
    assert rows["/encoder.0/body/body.5/Relu"] == ["Relu", "1 x 4 x 72 x 92"]
    assert rows["/pools.1/MaxPool"] == ["MaxPool", "1 x 8 x 18 x 23"]
    assert rows["/bottleneck/body/body.5/Relu"] == ["Relu", "1 x 16 x 18 x 23"]
    assert rows["/Concat_1"] == ["Concat", "1 x 8 x 72 x 92"]
    assert rows["/head/Conv"] == ["Conv", "1 x 1 x 72 x 92"]


def test_maps_of_named_layers_are_written_and_the_last_is_the_prediction(tmp_path: Path, rng) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = _model(tmp_path / "m", 2)
    image = rng.integers(0, 255, (70, 90)).astype(np.uint8)
    write_tiff(tmp_path / "a.tif", image)
    layers = "/encoder.0/body/body.5/Relu,/bottleneck/body/body.5/Relu,/head/Conv"
    out = tmp_path / "act"
    said = _run(
        str(model), str(tmp_path / "a.tif"), "--activations", layers, "--maps", "3", "--out", str(out)
    )
    assert "wrote 1 figure(s) and 3 TIFF stack(s)" in said
    assert (out / "a.activations.png").stat().st_size > 10_000
    encoder = tifffile.imread(out / "a" / "encoder.0_body_body.5_Relu.tif")
    bottleneck = tifffile.imread(out / "a" / "bottleneck_body_body.5_Relu.tif")
    assert encoder.shape == (3, 70, 90) and bottleneck.shape == (3, 18, 23)  # cropped to the image
    assert encoder.min() >= 0 and encoder.std() > 0  # ReLU maps, not blank
    head = tifffile.imread(out / "a" / "head_Conv.tif")
    expected = predict_image(load_model(model), image[..., None], PredictOptions(tile_size=512)).probabilities
    assert np.abs(1 / (1 + np.exp(-head)) - expected[0]).max() <= 1e-5  # prepared as prediction prepares


def test_volumes_show_a_plane_and_stack_zcyx(tmp_path: Path, rng) -> None:
    model = _model(tmp_path / "m", 3)
    write_tiff(tmp_path / "v.tif", rng.integers(0, 255, (20, 40, 50)).astype(np.uint8))
    out = tmp_path / "act"
    _run(
        str(model),
        str(tmp_path / "v.tif"),
        "--activations",
        "/encoder.1/body/body.5/Relu",
        "--out",
        str(out),
        "--plane",
        "5",
    )
    stack = tifffile.TiffFile(out / "v" / "encoder.1_body_body.5_Relu.tif").series[0]
    assert stack.axes == "ZCYX" and stack.shape == (10, 8, 20, 25)  # half of 20 x 40 x 50, 8 maps
    assert (out / "v.activations.png").is_file()


def test_an_unknown_layer_names_the_nearest(tmp_path: Path, rng) -> None:
    model = _model(tmp_path / "m", 2)
    write_tiff(tmp_path / "a.tif", rng.integers(0, 255, (32, 32)).astype(np.uint8))
    result = CliRunner().invoke(
        predict_main, [str(model), str(tmp_path / "a.tif"), "--activations", "/encoder.0/Relu", "--out", "x"]
    )
    assert result.exit_code != 0
    assert (
        "the network has no layer '/encoder.0/Relu'. Did you mean '/encoder.0/body/body.5/Relu'?"
        in result.output
    )
    missing = CliRunner().invoke(
        predict_main, [str(model), str(tmp_path / "a.tif"), "--activations", "/head/Conv"]
    )
    assert missing.exit_code != 0 and "--out DIR is required to write the activations" in missing.output


@pytest.mark.parametrize("maps", [1, 5])
def test_the_figure_has_a_row_per_layer_and_the_maps_asked_for(tmp_path: Path, rng, maps: int) -> None:
    from idl.infer.service.activations import Activations, write_activations

    layers = {"a": rng.random((8, 16, 16)).astype(np.float32), "b": rng.random((2, 8, 8)).astype(np.float32)}
    written = write_activations(Activations("x.tif", (1, 1, 16, 16), layers), tmp_path, maps)
    assert [p.name for p in written] == ["a.tif", "b.tif", "x.activations.png"]
    first = tifffile.imread(written[0])  # ImageJ drops an axis of one
    assert first.shape == ((maps, 16, 16) if maps > 1 else (16, 16))
    np.testing.assert_array_equal(tifffile.imread(written[1]).reshape(-1, 8, 8), layers["b"][:maps])


def test_skip_empty_with_an_idl_model_and_monte_carlo(tmp_path: Path, rng, caplog) -> None:
    """--skip-empty on a U-Net: the tiles around the one object run as in full prediction; the
    background tiles get the network's answer for a constant tile, with Monte Carlo samples too (one
    set of samples for all of them). A constant tile's output is constant but for the zero padding of
    the tile's border, which a halo of 12 px (overlap 0.25 of 96 px) leaves slightly visible."""
    import logging

    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = load_model(_model(tmp_path / "m", 2))
    image = rng.normal(100, 2, (400, 400, 1)).astype(np.float32)
    image[20:50, 20:50] += 100
    options = {"tile_size": 96, "overlap": 0.25}
    with caplog.at_level(logging.INFO, logger="idl"):
        skipped = predict_image(model, image, PredictOptions(**options, skip_empty=4.0))
    assert "--skip-empty: 35 of 36 tile(s) were background and not run" in caplog.text
    full = predict_image(model, image, PredictOptions(**options))
    corner = (slice(None), slice(0, 60), slice(0, 60))
    np.testing.assert_array_equal(skipped.probabilities[corner], full.probabilities[corner])
    far = skipped.probabilities[:, 250:, 250:]
    assert far.std() < 1e-3
    assert abs(float(far.mean()) - float(np.median(full.probabilities[:, 250:, 250:]))) < 0.05
    mc = predict_image(model, image, PredictOptions(**options, skip_empty=4.0, mc_samples=4))
    assert (
        mc.uncertainty is not None
        and mc.uncertainty[250:, 250:].std() < 0.1 * mc.uncertainty[250:, 250:].mean()
    )
    assert mc.uncertainty[250:, 250:].mean() > 0  # the constant tile's samples differ


def test_a_classifiers_layers_for_its_resized_input(tmp_path: Path, rng) -> None:
    from idl.models import ResNetClassifier, ResNetSpec

    torch.manual_seed(0)
    net = ResNetClassifier(ResNetSpec(1, 3, "resnet18", 0.2, True)).eval()
    info = ModelInfo(
        task="classification",
        in_channels=1,
        num_classes=3,
        size_multiple=1,
        halo=0,
        input_size=(32, 32),
        class_names=("a", "b", "c"),
        dropout=0.2,
    )
    export_onnx(net, info, tmp_path / "m")
    write_tiff(tmp_path / "x.tif", rng.integers(0, 255, (50, 40)).astype(np.uint8))  # resized to 32 x 32
    rows = _run(str(tmp_path / "m"), str(tmp_path / "x.tif"), "--activations").splitlines()
    assert "/net/maxpool/MaxPool                               MaxPool            1 x 64 x 16 x 16" in rows
    _run(
        str(tmp_path / "m"),
        str(tmp_path / "x.tif"),
        "--activations",
        "/net/maxpool/MaxPool",
        "--out",
        str(tmp_path / "a"),
    )
    assert tifffile.imread(tmp_path / "a" / "x" / "net_maxpool_MaxPool.tif").shape == (8, 16, 16)
    refused = CliRunner().invoke(
        predict_main,
        [str(tmp_path / "m"), str(tmp_path / "x.tif"), "--out", str(tmp_path / "o"), "--tta", "d4"],
    )
    assert refused.exit_code != 0 and "--tta is for networks that output images" in refused.output
