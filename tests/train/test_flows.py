"""Flow-field training (--model flows): packed targets, the loss against its definition, validation
on exact targets, and a short run through the pipeline (package, tiled = whole image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei, write_instance_project
from idl.infer.post.flows import diffused_heat, flow_field
from idl.train.data import Sample
from idl.train.tasks.instance import LabelsAP
from idl.train.tasks.instance.flows import FLOW_SCALE, flow_labels, flow_targets, flows_loss, pack, unpack


def _labels(seed: int = 0, size: int = 64) -> np.ndarray:
    return synthetic_nuclei(np.random.default_rng(seed), NucleiSpec(size=size))[1].astype(np.int64)


def test_packed_targets_keep_labels_and_the_flows() -> None:
    labels = _labels(0, 96)
    packed = pack(labels)
    assert packed.dtype == np.int64
    back, heat = unpack(packed)
    np.testing.assert_array_equal(back, labels)
    assert np.abs(heat - diffused_heat(labels)).max() <= 0.5 / 65535 + 1e-12
    foreground, flows, weight = flow_targets(packed[None])
    np.testing.assert_array_equal(foreground[0], labels > 0)
    exact = flow_field(labels)
    inside = (labels > 0) & (weight[0] > 0)
    cosine = (flows[0] * exact).sum(axis=0)[inside]
    assert np.quantile(cosine, 0.99) > 0.999 and cosine.mean() > 0.99  # 16 bits of heat lose little
    assert weight[0, 0].max() == 0 and weight[0, -1].max() == 0 and weight[0, 1:-1, 1:-1].min() == 1


def test_the_loss_is_cross_entropy_plus_half_the_scaled_squared_error() -> None:
    labels = np.stack([_labels(0), _labels(1)])
    packed = torch.from_numpy(np.stack([pack(x) for x in labels]))
    foreground, flows, weight = flow_targets(packed.numpy())
    out = torch.from_numpy(np.concatenate([foreground[:, None], flows], axis=1))
    loss = flows_loss()
    entropy = F.binary_cross_entropy(
        torch.from_numpy(foreground).clamp(1e-6, 1 - 1e-6), torch.from_numpy(foreground)
    )
    assert float(loss(out, packed)) == pytest.approx(float(entropy), rel=1e-5)
    # every flow component 0.1 off: (0.1 * 5)^2 / 2 = 0.125 over the weighted pixels
    off = out.clone()
    off[:, 1:] += 0.1
    expected = float(entropy) + (0.1 * FLOW_SCALE) ** 2 / 2
    assert float(loss(off, packed)) == pytest.approx(expected, rel=1e-5)
    # the outermost pixels do not count
    edge = out.clone()
    edge[:, 1:, 0, :] += 1.0
    assert float(loss(edge, packed)) == pytest.approx(float(entropy), rel=1e-5)


def test_validation_of_exact_targets_finds_every_nucleus() -> None:
    score = LabelsAP(flow_labels)
    for seed in (2, 3):
        labels = _labels(seed, 96)
        out = np.concatenate([(labels > 0).astype(np.float32)[None], flow_field(labels)])
        score.add(out, Sample(str(seed), np.zeros((96, 96, 1), np.float32), pack(labels), labels))
    assert score.result() > 0.95


@pytest.mark.slow  # trains for more than ten seconds
def test_a_short_flow_run_exports_packages_and_tiles(tmp_path: Path) -> None:
    from idl.infer.evaluate.instance_metrics import counts_per_threshold, scores_from_counts
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image
    from idl.train.config import TrainConfig
    from idl.train.pipeline import train_project

    project = write_instance_project(tmp_path / "p", 6, 2, 0, NucleiSpec(size=96))
    config = TrainConfig(
        int8=False,
        task="instance",
        model="flows",
        epochs=8,
        steps_per_epoch=6,
        batch_size=4,
        depth=2,
        base_filters=8,
        image_size=64,
        learning_rate=3e-3,
        mc_samples=2,
    )
    train_project(project, config, progress=False)
    model = load_model(project / "model")
    assert model.info.kind == "flows" and model.info.num_classes == 3
    assert (project / "results" / "nuclei_000.tif").is_file()
    assert (project / "results" / "objects" / "nuclei_000.csv").is_file()
    image = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=150))[0][..., None]
    whole = predict_image(model, image, PredictOptions(tile_size=256))
    tiled = predict_image(model, image, PredictOptions(tile_size=64)).mask
    matched = scores_from_counts(counts_per_threshold(whole.mask.astype(np.int64), tiled.astype(np.int64)))
    # 30 nuclei: the same objects, but a pixel whose probability or flow lies within rounding of a
    # threshold or of the edge between two sinks may go either way (a tile's outputs differ from the
    # whole image's by about 1e-6); on exact outputs tiles and whole agree exactly
    # (tests/infer/test_flows.py)
    assert whole.mask.max() == tiled.max() > 10
    assert matched["ap50"] == 1.0 and matched["ap50_95"] > 0.98
    mc = predict_image(model, image, PredictOptions(tile_size=64, mc_samples=3))
    assert mc.uncertainty is not None and mc.uncertainty.shape == (150, 150) and mc.uncertainty.max() > 0
    import zipfile

    import yaml

    packages = list((project / "model").glob("*.zip"))
    with zipfile.ZipFile(packages[0]) as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    # the thresholds fitted on the validation images travel with the model and its package
    fitted = model.info.postprocessing
    assert set(fitted) == {"prob_threshold", "flow_error"}
    assert len(model.info.training["postprocessing"]["scores"]) == 18
    assert rdf["config"]["idl"]["postprocessing"]["steps"] == 200
    assert rdf["config"]["idl"]["postprocessing"]["flow_error_threshold"] == fitted["flow_error"]
    assert rdf["config"]["idl"]["postprocessing"]["probability_threshold"] == fitted["prob_threshold"]
    assert rdf["outputs"][0]["id"] == "flows"
    plan = json.loads((project / "model" / "plan.json").read_text())
    assert plan["reference"] == ""  # instance runs are never restarted


def test_thresholds_are_fitted_on_validation_images() -> None:
    """A network whose flows point the right way at a fifth of their length (unsure everywhere):
    cellpose's flow-error limit of 0.4 drops every object (error 0.64), the fit finds a limit that
    keeps them, and records what each setting scored, the defaults first."""
    from idl.train.tasks.instance.flows import FLOW_ERROR_GRID, PROB_GRID, fit_thresholds

    pairs = []
    for seed in (2, 3):
        labels = _labels(seed, 96)
        pairs.append(
            (np.concatenate([(labels > 0).astype(np.float32)[None], 0.2 * flow_field(labels)]), labels)
        )
    fit = fit_thresholds(pairs)
    assert fit.scores[0][0] == {"prob_threshold": 0.5, "flow_error": 0.4} and fit.scores[0][1] == 0.0
    assert len(fit.scores) == len(PROB_GRID) * len(FLOW_ERROR_GRID)
    assert fit.thresholds == {"prob_threshold": 0.5, "flow_error": 0.8}  # the first limit above 0.64
    assert fit.best > 0.95
    assert "flow_error 0.8 fitted on the validation images: ap50_95" in fit.describe()
