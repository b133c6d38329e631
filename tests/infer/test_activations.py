"""The activation explorer on a package made elsewhere (no idl metadata, no torch): its layers from
the ONNX graph alone, and a layer that is the graph's own output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from idl.infer.runtime.activations import find_layers, list_layers, with_outputs
from idl.infer.service.activations import capture, layers_for, read_for
from idl.infer.service.load import load_model
from tests.infer.conftest import smoothing_net


def test_layers_of_any_onnx_graph(tmp_path: Path) -> None:
    smoothing_net(tmp_path / "net.onnx")
    layers = list_layers(tmp_path / "net.onnx")
    assert [(layer.name, layer.op, layer.shape) for layer in layers] == [("out", "Conv", ("n", 2, "y", "x"))]
    assert list_layers(tmp_path / "net.onnx", (1, 1, 32, 24))[0].shape == (1, 2, 32, 24)
    # an output that is already the graph's is not added twice
    import onnx

    assert [
        o.name for o in onnx.load_from_string(with_outputs(tmp_path / "net.onnx", layers)).graph.output
    ] == ["out"]


def test_a_packages_layer_is_its_output(small_package: Path, tmp_path: Path, rng) -> None:
    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = load_model(small_package)
    image = rng.random((40, 24, 1)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", image[..., 0])
    read = read_for(model, tmp_path / "a.tif", None)
    layers = find_layers(layers_for(model, read), ["out"])
    assert layers[0].shape == (1, 2, 40, 24)
    shape, maps = capture(model, read, layers)
    assert shape == (1, 1, 40, 24)
    expected = predict_image(model, read, PredictOptions(tile_size=512)).probabilities
    assert np.abs(maps["out"] - expected).max() <= 1e-6
