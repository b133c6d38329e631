"""Pixel-wise regression end to end: ground-truth units, Pearson against a baseline, evaluation files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from idl.infer.datasets.synthetic import NucleiSpec, write_regression_project
from idl.infer.evaluate.metrics import pearson
from idl.infer.io.images import read_image
from idl.infer.service.load import load_model
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_regression")

SCALE = 1000.0


@pytest.fixture(scope="module")
def regression_project(tmp_path_factory) -> Path:
    """In-silico staining, targets in the thousands; a small U-Net trained briefly."""
    project = write_regression_project(
        tmp_path_factory.mktemp("staining"),
        n_train=14,
        n_test=3,
        seed=4,
        spec=NucleiSpec(size=96),
        scale=SCALE,
    )
    config = TrainConfig(
        int8=False,
        task="regression",
        epochs=30,  # at 15 (45 steps) the outcome hung on the seed: Pearson 0.02-0.85
        steps_per_epoch=3,
        batch_size=4,
        patience=30,
        depth=2,
        base_filters=8,
        image_size=96,
        learning_rate=3e-3,
        mc_samples=3,
    )
    train_project(project, config, progress=False)
    return project


def test_predictions_come_back_in_ground_truth_units(regression_project: Path) -> None:
    targets = [read_image(p) for p in sorted((regression_project / "train" / "groundtruth").iterdir())]
    model = load_model(regression_project / "model")
    info = model.info
    stacked = np.concatenate([t.ravel() for t in targets]).astype(np.float64)
    assert info.task == "regression" and model.io.out_channels == 1
    assert info.target_mean[0] == pytest.approx(stacked.mean(), rel=1e-6)
    assert info.target_std[0] == pytest.approx(stacked.std(), rel=1e-6)
    # the network's output in standard units, mapped back exactly: raw * std + mean
    raw = np.random.default_rng(0).normal(size=(1, 1, 8, 8)).astype(np.float32)
    from idl.infer.core.processing import apply_ops

    mapped = apply_ops(model.io.postprocessing, raw, "bcyx")
    np.testing.assert_allclose(mapped, raw * info.target_std[0] + info.target_mean[0], rtol=1e-6)
    names = sorted(p.name for p in (regression_project / "test" / "groundtruth").iterdir())
    gt = np.stack([read_image(regression_project / "test" / "groundtruth" / n) for n in names])
    pred = np.stack([read_image(regression_project / "results" / n) for n in names])
    assert pred.dtype == np.float32 and pred.shape == gt.shape
    slope = np.polyfit(gt.ravel(), pred.ravel(), 1)[0]
    print(f"test set: mean prediction {pred.mean():.1f} vs truth {gt.mean():.1f}, slope {slope:.2f}")
    assert 1 / 3 < pred.mean() / gt.mean() < 3  # hundreds, as the targets (standard units would be ~0)
    assert 0.25 < slope < 2  # a briefly trained model under-predicts bright nuclei


def test_regression_beats_the_intensity_baseline(regression_project: Path) -> None:
    summary = json.loads((regression_project / "evaluation" / "summary.json").read_text())
    baseline = np.median(
        [
            abs(pearson(read_image(p), read_image(regression_project / "test" / "groundtruth" / p.name)))
            for p in sorted((regression_project / "test" / "image").iterdir())
        ]
    )
    print(f"test Pearson: U-Net {summary['pearson_median']:.3f}, input intensity baseline {baseline:.3f}")
    assert summary["pearson_median"] > baseline + 0.2
    assert {"pearson_mean", "mae", "mse", "mean_relative_error", "uncertainty_mean"} <= set(summary)
    metrics = (regression_project / "evaluation" / "metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("filename,pearson,mae,mse,mean_relative_error") and len(metrics) == 4
    assert (regression_project / "evaluation" / "pearson_boxplot.png").is_file()
    uncertainty = read_image(regression_project / "results" / "uncertainty" / "stain_000.tif")
    assert uncertainty.min() >= 0 and uncertainty.max() > 1.0  # a standard deviation in target units


def test_regression_package_maps_back_to_units(regression_project: Path) -> None:
    package = next((regression_project / "model").glob("*.bioimageio.zip"))
    rdf = yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))
    (post,) = [p for p in rdf["outputs"][0]["postprocessing"] if p["id"] != "ensure_dtype"]
    info = load_model(regression_project / "model").info
    assert post["id"] == "scale_linear"
    assert post["kwargs"]["gain"] == pytest.approx(info.target_std[0])
    assert post["kwargs"]["offset"] == pytest.approx(info.target_mean[0])
    image = read_image(next((regression_project / "test" / "image").iterdir()))[..., None]
    from idl.infer.tiling.predict import PredictOptions, predict_image

    options = PredictOptions(progress=False)
    from_package = predict_image(load_model(package), image, options).probabilities
    from_folder = predict_image(load_model(regression_project / "model"), image, options).probabilities
    np.testing.assert_allclose(from_package, from_folder, rtol=1e-6, atol=1e-3)


def test_the_monte_carlo_sigma_is_calibrated_and_every_copy_applies_it(regression_project: Path) -> None:
    """The factor fitted on the validation images is recorded, carried by the package, and multiplies
    the standard-deviation map exactly (the same samples, drawn from the same seed)."""
    from dataclasses import replace

    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = load_model(regression_project / "model")
    calibration = model.info.training["calibration"]
    scale = model.info.sigma_scale
    assert scale == pytest.approx(calibration["sigma_scale"], abs=1e-6) and scale != 1.0
    assert model.io.sigma_scale == scale
    for k in ("1sigma", "2sigma"):
        assert (
            0.0 <= calibration[f"coverage_{k}_before"] <= 1.0
            and 0.0 <= calibration[f"coverage_{k}_after"] <= 1.0
        )
    # the coverage moves the way the factor says: wider intervals cover more
    assert (calibration["coverage_1sigma_after"] > calibration["coverage_1sigma_before"]) == (scale > 1.0)
    package = load_model(next((regression_project / "model").glob("*.bioimageio.zip")))
    assert package.io.sigma_scale == scale
    image = read_image(next((regression_project / "test" / "image").iterdir()))[..., None]
    options = PredictOptions(progress=False, mc_samples=4)
    calibrated = predict_image(model, image, options).uncertainty
    model.io = replace(model.io, sigma_scale=1.0)
    raw = predict_image(model, image, options).uncertainty
    assert raw.std() > 0
    np.testing.assert_allclose(calibrated, raw * scale, rtol=1e-5, atol=1e-7)


def test_demo_and_evaluate_commands_for_regression(regression_project: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from idl.cli import demo, evaluate

    result = CliRunner().invoke(
        demo.main,
        [str(tmp_path / "demo"), "--task", "regression", "--n-train", "2", "--n-test", "2", "--size", "64"],
    )
    assert result.exit_code == 0, result.output
    assert "the raw intensity scores a median Pearson r of 0." in result.output
    assert read_image(tmp_path / "demo" / "train" / "groundtruth" / "stain_000.tif").dtype == np.float32
    args = [
        str(regression_project / "results"),
        str(regression_project / "test" / "groundtruth"),
        "--task",
        "regression",
        "--out",
        str(tmp_path / "ev"),
    ]
    result = CliRunner().invoke(evaluate.main, args)
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "ev" / "summary.json").read_text())
    first = json.loads((regression_project / "evaluation" / "summary.json").read_text())
    assert again["pearson_median"] == pytest.approx(first["pearson_median"], abs=1e-12)
    assert "Pearson median" in result.output
