"""Star-convex polygon training (--model stardist): the loss against its definition, validation on
exact targets, and a short run through the pipeline (ONNX = torch, package, tiled = whole image)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei, write_instance_project
from idl.infer.evaluate.instance_metrics import counts_per_threshold, scores_from_counts
from idl.infer.post.stardist import labels_from_stars, object_probability, star_distances
from idl.train.data import Sample
from idl.train.tasks.instance import LabelsAP
from idl.train.tasks.instance.stardist import BACKGROUND_WEIGHT, DISTANCE_WEIGHT, star_labels, stardist_loss


def _labels(seed: int = 0, size: int = 64) -> np.ndarray:
    image, labels = synthetic_nuclei(np.random.default_rng(seed), NucleiSpec(size=size))
    return labels.astype(np.int64)


def test_the_loss_is_cross_entropy_plus_weighted_distance_error() -> None:
    labels = np.stack([_labels(0), _labels(1)])
    prob = np.stack([object_probability(x) for x in labels])
    dist = np.stack([star_distances(x, 8) for x in labels])
    out = torch.from_numpy(np.concatenate([prob[:, None], dist], axis=1))
    loss = stardist_loss(8)
    target = torch.from_numpy(prob)
    entropy = F.binary_cross_entropy(target.clamp(1e-6, 1 - 1e-6), target)
    assert float(loss(out, torch.from_numpy(labels))) == pytest.approx(float(entropy), rel=1e-5)
    # distances all one pixel too long: the weighted error inside objects is 1, the background's 1
    # over the background's share of the elements
    longer = out.clone()
    longer[:, 1:] += 1
    background = float(np.mean(np.broadcast_to(prob[:, None] == 0, dist.shape)))
    expected = float(entropy) + DISTANCE_WEIGHT * 1.0 + BACKGROUND_WEIGHT * background
    assert float(loss(longer, torch.from_numpy(labels))) == pytest.approx(expected, rel=1e-5)


def test_validation_of_exact_targets_finds_every_nucleus() -> None:
    score = LabelsAP(star_labels)
    for seed in (2, 3):
        labels = _labels(seed, 96)
        out = np.concatenate([object_probability(labels)[None], star_distances(labels, 32)])
        score.add(out, Sample(str(seed), np.zeros((96, 96, 1), np.float32), labels, labels))
        found, _ = labels_from_stars(out[0], out[1:])
        ap50 = scores_from_counts(counts_per_threshold(labels, found))["ap50"]
        assert ap50 == 1.0
    assert score.result() > 0.6  # polygons of 32 rays approximate the outlines


@pytest.mark.slow  # trains for more than ten seconds
def test_a_short_run_exports_packages_and_tiles_exactly(tmp_path: Path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image
    from idl.train.config import TrainConfig
    from idl.train.pipeline import train_project

    project = write_instance_project(tmp_path / "p", 6, 2, 0, NucleiSpec(size=96))
    config = TrainConfig(
        int8=False,
        task="instance",
        model="stardist",
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
    info = json.loads((project / "model" / "plan.json").read_text())
    assert info["network"] == "" and info["reference"] == ""  # a U-Net plan; never restarted
    model = load_model(project / "model")
    assert model.info.kind == "stardist" and model.info.num_classes == 33
    assert (project / "results" / "nuclei_000.tif").is_file()
    assert (project / "results" / "objects" / "nuclei_000.csv").is_file()
    # tiled == whole image: each tile's polygons, each object kept by the tile owning its centre
    image = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=150))[0][..., None]
    whole = predict_image(model, image, PredictOptions(tile_size=256)).mask
    tiled = predict_image(model, image, PredictOptions(tile_size=64)).mask
    matched = scores_from_counts(counts_per_threshold(whole.astype(np.int64), tiled.astype(np.int64)))
    print(f"stardist, 64 px tiles vs the whole 150 px image: {whole.max()} objects, {matched}")
    # a network of 48 steps proposes a hundred and more overlapping polygons, some larger than the
    # tiles' halo, so a tile may not see every proposal that competes with one it owns; on exact
    # outputs tiled and whole agree object for object (tests/infer/test_stardist.py)
    assert whole.max() > 3 and matched["ap50"] > 0.9
    # with Monte Carlo samples: labels from the whole stitched map of the samples' means
    mc_whole = predict_image(model, image, PredictOptions(tile_size=256, mc_samples=3))
    mc_tiled = predict_image(model, image, PredictOptions(tile_size=64, mc_samples=3))
    for mc in (mc_whole, mc_tiled):  # dropout masks differ per tile, so these are two draws
        assert mc.uncertainty is not None and mc.uncertainty.shape == (150, 150)
        assert mc.mask.max() > 3
    from idl.infer.post.instance_labels import objects_table

    table = objects_table(mc_whole.mask, mc_whole.uncertainty)
    # one uncertainty per object: the mean over its pixels of the samples' standard deviation
    assert len(table) == mc_whole.mask.max() and (table["uncertainty_mean"] > 0).mean() > 0.9
    # the package holds the network and describes the post-processing
    import zipfile

    import yaml

    packages = list((project / "model").glob("*.zip"))
    with zipfile.ZipFile(packages[0]) as package:
        rdf = yaml.safe_load(package.read("rdf.yaml"))
    assert rdf["config"]["idl"]["postprocessing"]["rays"] == 32
    assert rdf["config"]["idl"]["postprocessing"]["nms_iou_threshold"] == 0.4
    assert rdf["outputs"][0]["id"] == "stars"
