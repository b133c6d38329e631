"""What the robustness tests share: a model whose network passes its normalized input through, so
every output value can be computed by hand (an ONNX graph made here, no torch)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from idl.infer.core.model_info import METADATA_KEY, ModelInfo


def write_identity_model(folder: Path, task: str = "semantic", kind: str = "") -> Path:
    """``folder/model.onnx``: the normalized input as the foreground probability of a binary
    ``task`` model (any image size, no halo; ``kind``: the network's, for the instance task)."""
    folder.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        task=task, in_channels=1, num_classes=2, size_multiple=1, halo=0, output="probabilities", kind=kind
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    return folder


@pytest.fixture
def identity_model(tmp_path: Path) -> Callable[..., Path]:
    """Makes :func:`write_identity_model` models under the test's folder."""
    return lambda task="semantic", kind="": write_identity_model(tmp_path / f"model-{task}{kind}", task, kind)


def write_mean_classifier(folder: Path) -> Path:
    """``folder/model.onnx``: a two-class classifier of 16 x 16 images whose logits are the image's
    mean and its negative (class ``bright`` for bright images)."""
    folder.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["mean"]),
        helper.make_node("Neg", ["mean"], ["negative"]),
        helper.make_node("Concat", ["negative", "mean"], ["y"], axis=1),
    ]
    model = helper.make_model(
        helper.make_graph(nodes, "mean", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    info = ModelInfo(
        task="classification",
        in_channels=1,
        num_classes=2,
        size_multiple=1,
        halo=0,
        input_size=(16, 16),
        class_names=("dark", "bright"),
        output="logits",
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    return folder


@pytest.fixture
def mean_classifier(tmp_path: Path) -> Path:
    """A :func:`write_mean_classifier` model under the test's folder."""
    return write_mean_classifier(tmp_path / "classifier")
