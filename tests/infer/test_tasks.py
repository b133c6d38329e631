"""The task interface of the inference side: a task registered from this file alone runs through
idl-predict (with evaluation), idl-evaluate and idl-predict --info. No torch: the model is an ONNX graph
built here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from idl.cli import evaluate as evaluate_cli
from idl.cli import predict as predict_cli
from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import read_image, write_text, write_tiff
from idl.infer.tasks import registry
from idl.infer.tasks.base import Summary
from idl.infer.tasks.pixels import PixelTask, Scoring

NOISY = 4  # bright background pixels in the second image: the toy threshold gets them wrong


class ToyThreshold(PixelTask):
    """A 'task' whose network passes the normalized image through: foreground is what is brighter
    than 0.5, scored by the fraction of pixels that agree with the mask."""

    kind = "toy-threshold"
    task = "toy-threshold"

    def describe(self, info: ModelInfo) -> list[str]:
        return ["task: toy-threshold, bright pixels are foreground"]

    def score(self, scoring: Scoring) -> Summary:
        agree = total = 0
        for item in scoring.items:
            predicted = read_image(item.prediction) > 0.5
            truth = read_image(item.groundtruth) > 0
            agree += int(np.count_nonzero(predicted == truth))
            total += truth.size
        summary: Summary = {"agreement": agree / total, "n_images": len(scoring.items)}
        scoring.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(scoring.out_dir / "summary.json", json.dumps(summary))
        return summary


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> ToyThreshold:
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))  # registered for this test only
    return registry.register(ToyThreshold())


def _identity_model(folder: Path) -> Path:
    """model.onnx: the normalized input passed through, with idl's metadata naming the toy kind."""
    folder.mkdir(parents=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "toy", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    info = ModelInfo(
        task="toy-threshold", in_channels=1, num_classes=2, size_multiple=1, halo=0, output="probabilities"
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    return folder


def _images(folder: Path) -> tuple[Path, Path]:
    square = np.zeros((32, 32), np.float32)
    square[8:24, 8:24] = 1.0
    noisy = square.copy()
    noisy[0, :NOISY] = 0.7  # above the toy threshold, but background
    for name, image in (("a", square), ("b", noisy)):
        write_tiff(folder / "image" / f"{name}.tif", image)
        write_tiff(folder / "groundtruth" / f"{name}.tif", (square > 0).astype(np.uint8))
    return folder / "image", folder / "groundtruth"


def test_a_task_registered_here_predicts_and_evaluates_end_to_end(toy: ToyThreshold, tmp_path: Path) -> None:
    model = _identity_model(tmp_path / "model")
    images, truth = _images(tmp_path / "data")
    assert (
        ModelInfo.from_json(
            ModelInfo(task="toy-threshold", in_channels=1, num_classes=2, size_multiple=1, halo=0).to_json()
        ).kind
        == "toy-threshold"
    )

    info = CliRunner().invoke(predict_cli.main, [str(model), "--info"])
    assert info.exit_code == 0, info.output
    assert "task: toy-threshold, bright pixels are foreground" in info.output

    out = tmp_path / "out"
    args = [str(model), str(images), "--out", str(out), "--gt", str(truth), "--quiet"]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 0, result.output
    expected = 1 - NOISY / (2 * 32 * 32)
    assert f"agreement {expected:.4g}" in result.output
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    assert summary == {"agreement": pytest.approx(expected), "n_images": 2}
    assert read_image(out / "b.tif")[0, :NOISY] == pytest.approx(0.7, abs=1e-3)  # what the toy wrote

    again = CliRunner().invoke(
        evaluate_cli.main, [str(out), str(truth), "--task", "toy-threshold", "--out", str(tmp_path / "ev")]
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["agreement"] == pytest.approx(expected)


def test_models_of_an_unknown_kind_say_which_tasks_exist(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no task 'toy-threshold' is known; known: classification, instance"):
        registry.task_named("toy-threshold")
    assert registry.task_names() == ("semantic", "instance", "regression", "classification")


def test_legacy_models_get_their_kind_from_task_and_output() -> None:
    maskrcnn = ModelInfo(
        task="instance", in_channels=1, num_classes=2, size_multiple=1, halo=0, output="labels"
    )
    unet = ModelInfo(task="instance", in_channels=1, num_classes=3, size_multiple=16, halo=40)
    assert (maskrcnn.kind, unet.kind) == ("detection", "instance")
    old = json.loads(unet.to_json())
    del old["kind"]
    assert ModelInfo.from_json(json.dumps(old)).kind == "instance"
    assert registry.task_named("detection").task == "instance"
