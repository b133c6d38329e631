"""End to end as a user runs it: demo data -> idl-train -> idl-predict, and the U-Net beats Otsu."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from idl.infer.core.project import pair_files
from idl.infer.evaluate.baseline import otsu_jaccard


def _cli(name: str, *args: str) -> str:
    code = f"from idl.cli.{name} import main; main()"
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_demo_project_unet_beats_otsu(tmp_path: Path) -> None:
    project = tmp_path / "demo"
    _cli("demo", str(project), "--n-train", "24", "--n-test", "6", "--size", "192")
    out = _cli(
        "train",
        str(project),
        "--task",
        "SemanticSegmentation",
        "--epochs",
        "25",
        "--steps-per-epoch",
        "5",
        "--batch-size",
        "4",
        "--patience",
        "6",
        "--image-size",
        "128",
        "--mc-samples",
        "8",
        "--quiet",
    )
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    baseline = otsu_jaccard(pair_files(project / "test"))
    print(f"test Jaccard: U-Net {summary['jaccard']:.4f}, Otsu threshold {baseline:.4f}")
    assert "test: Jaccard" in out
    assert summary["jaccard"] > baseline + 0.05
    pred = _cli(
        "predict",
        str(project / "model"),
        str(project / "test" / "image"),
        "--out",
        str(tmp_path / "pred"),
        "--gt",
        str(project / "test" / "groundtruth"),
        "--quiet",
    )
    assert "Jaccard" in pred
    again = json.loads((tmp_path / "pred" / "evaluation" / "summary.json").read_text())
    print(f"idl-predict without Monte Carlo dropout: Jaccard {again['jaccard']:.4f}")
    assert again["jaccard"] > baseline + 0.03


@pytest.mark.slow
def test_classification_demo_learns_and_its_uncertainty_flags_mistakes(tmp_path: Path) -> None:
    project = tmp_path / "cells"
    _cli("demo", str(project), "--task", "classification", "--n-train", "240", "--n-test", "150")
    # 12 epochs of 6 steps (at 64 px the validation loss was lowest at epoch 9 of 20)
    args = ["--task", "Classification", "--model", "resnet18", "--epochs", "12", "--steps-per-epoch", "6"]
    args += ["--image-size", "32"]  # the 64 px crops resized: a quarter of the pixels to train on
    # int8 graphs: the demo test above and tests/export/test_quantize.py
    out = _cli("train", str(project), *args, "--mc-samples", "20", "--no-package", "--no-int8", "--quiet")
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    print(
        f"test accuracy {summary['accuracy']:.4f}, AUC {summary['auc']:.4f}, uncertainty AUROC wrong vs "
        f"right {summary['uncertainty_auroc']:.3f} (InstantDL's {summary['uncertainty_instantdl_auroc']:.3f})"
    )
    assert "test: accuracy" in out
    # measured at 32 px: accuracy 0.853, AUC 0.975, uncertainty AUROC 0.842; at 64 px 0.77, 0.93, 0.71,
    # and without the batch-norm statistics recomputed after each epoch 0.68, 0.86, 0.63
    assert summary["accuracy"] > 0.7  # three balanced classes: chance is 0.33
    assert summary["auc"] > 0.88
    # with ~25 of 150 wrong, an uninformative score lands at 0.5 +- 0.06
    assert summary["uncertainty_auroc"] > 0.68


@pytest.mark.slow
def test_instance_unet_beats_otsu_and_connected_components(tmp_path: Path) -> None:
    from idl.infer.datasets.synthetic import NucleiSpec, write_instance_project
    from idl.infer.evaluate.baseline import otsu_instance_scores

    project = write_instance_project(tmp_path / "nuclei", 24, 6, 0, NucleiSpec(size=192))
    args = ["--task", "InstanceSegmentation", "--epochs", "25", "--patience", "8", "--image-size", "128"]
    args += ["--steps-per-epoch", "5", "--batch-size", "4"]
    _cli("train", str(project), *args, "--mc-samples", "8", "--no-int8", "--quiet")
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    baseline = otsu_instance_scores(pair_files(project / "test"))
    print(
        f"ap50 / ap50_95: U-Net {summary['ap50']:.4f} / {summary['ap50_95']:.4f}, Otsu + connected "
        f"components {baseline['ap50']:.4f} / {baseline['ap50_95']:.4f}"
    )
    # measured: 0.81 / 0.67 against 0.28 / 0.19
    assert summary["ap50"] > baseline["ap50"] + 0.3 and summary["ap50_95"] > baseline["ap50_95"] + 0.2
    (package,) = (project / "model").glob("*.bioimageio.zip")
    out = tmp_path / "pred"
    _cli(
        "predict",
        str(package),
        str(project / "test" / "image"),
        "--out",
        str(out),
        "--gt",
        str(project / "test" / "groundtruth"),
        "--quiet",
    )
    again = json.loads((out / "evaluation" / "summary.json").read_text())
    assert again["ap50"] > baseline["ap50"] + 0.3
    assert len(list((out / "objects").glob("*.csv"))) == 6


@pytest.mark.slow
def test_tiled_instance_prediction_of_a_large_image_equals_whole_image(tmp_path: Path) -> None:
    """2048 x 2048 px, ~500 nuclei: labels from 512-px tiles against one whole-image pass. Labels are
    made from the assembled probabilities, so no object is cut or doubled at a tile border."""
    import numpy as np

    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei, write_instance_project
    from idl.infer.evaluate.instance_metrics import instance_scores
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    project = write_instance_project(tmp_path / "nuclei", 12, 2, 1, NucleiSpec(size=192))
    args = [
        "--task",
        "instance",
        "--epochs",
        "8",
        "--image-size",
        "128",
        "--no-uncertainty",
        "--no-package",
        "--no-int8",
    ]
    args += ["--steps-per-epoch", "3", "--batch-size", "4"]
    _cli("train", str(project), *args, "--quiet")
    model = load_model(project / "model")
    image, _ = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=2048, objects=(400, 500)))
    tiled = predict_image(model, image[..., None], PredictOptions(tile_size=512, progress=False)).mask
    whole = predict_image(model, image[..., None], PredictOptions(tile_size=2048, progress=False)).mask
    scores = instance_scores(whole, tiled)
    print(f"{int(whole.max())} objects whole, {int(tiled.max())} tiled; ap50 {scores['ap50']:.4f}")
    assert whole.max() > 100
    assert scores["precision"] >= 0.95 and scores["recall"] >= 0.95  # matched at IoU 0.5
    assert int(tiled.max()) == int(whole.max())  # none doubled at tile borders


@pytest.mark.slow
def test_maskrcnn_trains_resumes_exports_and_predicts(tmp_path: Path) -> None:
    """The Mask R-CNN path as a user runs it, on a tiny project (a few epochs learn little; the
    accuracy is measured in bench/instance.py)."""
    import pandas as pd

    from idl.infer.datasets.synthetic import NucleiSpec, write_instance_project

    project = write_instance_project(tmp_path / "nuclei", 8, 2, 0, NucleiSpec(size=128))
    args = ["--task", "instance", "--model", "maskrcnn", "--patience", "5", "--quiet"]
    args += ["--steps-per-epoch", "2", "--batch-size", "2"]  # Mask R-CNN steps cost seconds on a CPU
    _cli("train", str(project), *args, "--epochs", "3", "--no-package", "--no-evaluate")
    # the package of a detector (and its ~100 s of bioimage.io tests) is tests/models/test_maskrcnn.py's
    _cli("train", str(project), *args, "--epochs", "4", "--resume", "--no-package", "--evaluate")
    config = json.loads((project / "model" / "config.json").read_text())
    assert (
        config["model"] == "maskrcnn" and config["learning_rate"] == 1e-4 and config["uncertainty"] is False
    )
    state = __import__("torch").load(project / "model" / "last.pt", weights_only=True)["state"]
    losses = [h["train_loss"] for h in state["history"]]
    assert len(losses) == 4 and losses[-1] < losses[0] * 0.8
    assert all("val_ap50" in h for h in state["history"])
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    assert {"ap50", "ap50_95", "jaccard", "n_objects"} <= set(summary)
    from click.testing import CliRunner

    from idl.cli import predict as predict_cli

    out = tmp_path / "pred"
    model, images = str(project / "model"), str(project / "test" / "image")
    result = CliRunner().invoke(predict_cli.main, [model, images, "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(out / "objects" / "nuclei_000.csv")
    assert list(table.columns) == ["label", "area", "centroid_y", "centroid_x", "score"]
    mc = CliRunner().invoke(
        predict_cli.main, [model, images, "--out", str(tmp_path / "mc"), "--mc-samples", "4"]
    )
    assert mc.exit_code != 0 and "Mask R-CNN has no dropout" in mc.output
