"""SegNet through the pipeline (``--task semantic --model segnet``): it trains, exports ONNX within
the tolerance of torch, writes a bioimage.io package that passes test_model and cites SegNet, and its
tiled prediction equals the whole image's."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from idl.infer.core.errors import ConfigError
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei, write_semantic_project
from idl.train.config import TrainConfig


def test_segnet_is_a_semantic_model_only() -> None:
    with pytest.raises(ConfigError, match="model 'segnet' does not fit the instance task"):
        TrainConfig(int8=False, task="instance", model="segnet")
    assert TrainConfig(int8=False, task="semantic", model="segnet").model == "segnet"


@pytest.mark.slow  # trains for about ten seconds and validates a package
def test_a_short_run_trains_exports_and_tiles_exactly(tmp_path: Path) -> None:
    from idl.export.bioimageio import validate_package
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image
    from idl.train.pipeline import train_project

    project = write_semantic_project(tmp_path / "p", 6, 2, 0, NucleiSpec(size=96))
    config = TrainConfig(
        int8=False,
        task="semantic",
        model="segnet",
        epochs=15,
        steps_per_epoch=6,
        batch_size=4,
        depth=2,
        base_filters=8,
        image_size=64,
        learning_rate=3e-3,
        mc_samples=2,
    )
    train_project(project, config, progress=False)
    settings = json.loads((project / "model" / "config.json").read_text())
    assert settings["model"] == "segnet"
    model = load_model(project / "model")
    assert model.info.halo == 4 * 2**2 and model.info.training["architecture"] == "segnet"
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    assert summary["jaccard"] > 0.5  # the synthetic nuclei are easy: SegNet learns them in 90 steps

    image = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=150))[0][..., None]
    whole = predict_image(model, image, PredictOptions(tile_size=256))
    tiled = predict_image(model, image, PredictOptions(tile_size=48))
    assert np.abs(tiled.probabilities - whole.probabilities).max() <= 1e-5
    mc = predict_image(model, image, PredictOptions(tile_size=48, mc_samples=3))
    assert mc.uncertainty is not None and mc.uncertainty.max() > 0

    package = next((project / "model").glob("*.zip"))
    validation = validate_package(package)
    assert validation.status == "passed" and max(validation.differences.values()) <= 1e-4
    with zipfile.ZipFile(package) as archive:
        rdf = yaml.safe_load(archive.read("rdf.yaml"))
        assert "class SegNet(" in archive.read("segnet.py").decode()
    assert "segnet" in rdf["tags"] and "SegNet" in rdf["description"]
    assert [c["doi"] for c in rdf["cite"]] == ["10.1186/s12859-021-04037-3", "10.1109/TPAMI.2016.2644615"]
