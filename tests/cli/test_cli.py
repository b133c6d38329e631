from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from skimage.filters import threshold_otsu

from idl.cli import evaluate as evaluate_cli
from idl.cli import export as export_cli
from idl.cli import predict as predict_cli
from idl.cli import train as train_cli
from idl.infer.evaluate.metrics import confusion_matrix, jaccard
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model


def _run(command, args: list[str]):
    result = CliRunner().invoke(command.main, args, catch_exceptions=False)
    return result


def test_predict_with_fixed_threshold_and_probabilities(model_dir: Path, tmp_path: Path) -> None:
    image = model_dir.parent / "test" / "image" / "nuclei_000.tif"
    out = tmp_path / "out"
    result = _run(
        predict_cli,
        [
            str(model_dir / "model.onnx"),
            str(image),
            "--out",
            str(out),
            "--threshold",
            "0.5",
            "--save-probabilities",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    prob = read_image(out / "probabilities" / "nuclei_000.tif")
    mask = read_image(out / "nuclei_000.tif")
    assert prob.shape == (1, 96, 96)
    np.testing.assert_array_equal(mask, (prob[0] > 0.5).astype(np.uint8))


def test_predict_then_evaluate_matches_direct_jaccard(trained_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    test = trained_project / "test"
    assert (
        _run(
            predict_cli, [str(trained_project / "model"), str(test / "image"), "--out", str(out), "--quiet"]
        ).exit_code
        == 0
    )
    result = _run(
        evaluate_cli, [str(out), str(test / "groundtruth"), "--images", str(test / "image"), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    total = sum(
        confusion_matrix(read_image(p), read_image(test / "groundtruth" / p.name), 2)
        for p in sorted(out.glob("*.tif"))
    )
    assert summary["jaccard"] == pytest.approx(jaccard(total))
    metrics = pd.read_csv(out / "evaluation" / "metrics.csv")
    assert list(metrics.columns) == ["filename", "jaccard", "dice", "accuracy", "baseline_jaccard"]
    assert len(metrics) == 3
    # the classical baseline beside it: Otsu's threshold of each image, the better polarity over the set
    otsu = {}
    for polarity in ("bright", "dark"):
        total = 0
        for p in sorted(out.glob("*.tif")):
            image = read_image(test / "image" / p.name).astype(np.float32)
            above = image > threshold_otsu(image)
            found = above if polarity == "bright" else ~above
            total = total + confusion_matrix(
                found.astype(np.uint8), read_image(test / "groundtruth" / p.name), 2
            )
        otsu[polarity] = jaccard(total)
    assert summary["baseline_jaccard"] == pytest.approx(max(otsu.values()))
    assert summary["jaccard_median"] == pytest.approx(metrics["jaccard"].median())
    assert len(list((out / "evaluation").glob("nuclei_*.png"))) == 3


def test_train_wrote_the_contracted_outputs(trained_project: Path) -> None:
    model = trained_project / "model"
    for name in ("best.pt", "last.pt", "config.json", "model.onnx", "model_mc.onnx"):
        assert (model / name).is_file(), name
    names = sorted(p.stem for p in (trained_project / "test" / "image").iterdir())
    assert sorted(p.stem for p in (trained_project / "results").glob("*.tif")) == names
    assert sorted(p.stem for p in (trained_project / "results" / "uncertainty").glob("*.tif")) == names
    summary = json.loads((trained_project / "evaluation" / "summary.json").read_text())
    assert {"jaccard", "jaccard_median", "dice", "accuracy", "uncertainty_mean"} <= set(summary)
    report = (trained_project / "evaluation" / "report.html").read_text()
    # the run's sections, its training curves from history.json, and the calibrated model's test ECE
    history = json.loads((model / "history.json").read_text())
    epochs = [h["epoch"] for h in history["epochs"]]
    assert epochs == list(range(1, len(epochs) + 1)) and history["best_epoch"] in epochs
    assert all("train_loss" in h and "val_jaccard" in h for h in history["epochs"])
    for section in ("summary", "run", "training", "uncertainty", "images", "gallery"):
        assert f'<section id="{section}">' in report, section
    assert 0 <= summary["ece"] < 0.5 and f'data-key="ece" data-value="{summary["ece"]!r}"' in report
    assert (trained_project / "mlflow.db").is_file()
    assert list((trained_project / "mlruns").rglob("model.onnx")), "ONNX model not logged to MLflow"


def test_export_from_checkpoint_reproduces_the_model(model_dir: Path, tmp_path: Path, rng) -> None:
    result = _run(export_cli, [str(model_dir / "best.pt"), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    x = rng.random((1, 1, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(load_model(tmp_path).runner(x), load_model(model_dir).runner(x), atol=1e-6)
    (package,) = tmp_path.glob("*.bioimageio.zip")  # test tensor from the project's first test image
    assert "passed bioimageio.core test_model" in result.output
    np.testing.assert_allclose(load_model(package).runner(x), load_model(model_dir).runner(x), atol=1e-6)
    assert list(model_dir.parent.joinpath("mlruns").rglob("*.bioimageio.zip")), "package not logged"


def test_info_describes_model_folders_and_packages(model_dir: Path) -> None:
    for model in (model_dir, next(model_dir.glob("*.bioimageio.zip"))):
        result = _run(predict_cli, ["--info", str(model)])
        assert result.exit_code == 0, result.output
        assert "input: axes bcyx (batch, channel, y, x), 1 channel(s)" in result.output
        assert "halo y: 48, x: 48" in result.output and "task: semantic, 2 classes" in result.output
        assert "test metrics: accuracy 0.9" in result.output and "jaccard 0." in result.output
        assert "Monte Carlo dropout: available (p = 0.2)" in result.output
    assert "postprocessing: sigmoid()" in result.output  # the package declares its activation


def test_predict_errors_are_clear(model_dir: Path, tmp_path: Path) -> None:
    rgb = tmp_path / "rgb.tif"
    # three different channels (equal ones would be taken as one grey channel)
    write_tiff(rgb, np.broadcast_to(np.array([0, 60, 120], np.uint8), (40, 40, 3)))
    result = CliRunner().invoke(predict_cli.main, [str(model_dir), str(rgb), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert "rgb.tif: has 3 channel(s)" in result.output and "expects 1" in result.output
    result = CliRunner().invoke(predict_cli.main, [str(tmp_path), str(rgb), "--out", str(tmp_path / "o")])
    assert "no model.onnx or bioimage.io rdf.yaml in this folder" in result.output
    result = CliRunner().invoke(
        predict_cli.main, [str(model_dir), str(rgb), "--out", "o", "--threshold", "2"]
    )
    assert "threshold must be between 0 and 1" in result.output
    image = model_dir.parent / "test" / "image" / "nuclei_000.tif"
    result = CliRunner().invoke(
        predict_cli.main, [str(model_dir), str(image), "--out", str(tmp_path / "o"), "--tile-size", "64"]
    )
    assert "--tile-size 64 is too small along y: each tile needs 48 px of context" in result.output


def test_training_commands_without_the_training_extras_say_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lab-PC install has no torch: idl-train and idl-export stop with the install command."""
    import importlib.util

    from idl.cli import export as export_cli

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in ("torch", "mlflow") else real(name, *a)
    )
    (tmp_path / "train" / "image").mkdir(parents=True)
    result = CliRunner().invoke(train_cli.main, [str(tmp_path), "--task", "semantic"])
    assert result.exit_code == 1
    assert "idl-train needs the training extras; not installed: torch, " in result.output
    assert "pip install 'idl-toolkit[train]'" in result.output
    (tmp_path / "best.pt").write_bytes(b"")
    result = CliRunner().invoke(export_cli.main, [str(tmp_path / "best.pt"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and "idl-export needs the training extras" in result.output


@pytest.mark.torch  # without torch, idl-train stops first with an install hint
def test_train_needs_a_task(small_project: Path) -> None:
    result = CliRunner().invoke(train_cli.main, [str(small_project)])
    assert result.exit_code != 0 and "name the task: --task semantic" in result.output
    result = CliRunner().invoke(train_cli.main, [str(small_project), "--task", "Segmentation"])
    assert "unknown task 'Segmentation'" in result.output
    result = CliRunner().invoke(train_cli.main, ["--task", "semantic"])
    assert result.exit_code != 0 and "give the PROJECT folder (or a --config file" in result.output


def test_classification_info_evaluate_and_errors(classified_project: Path, tmp_path: Path) -> None:
    model = classified_project / "model"
    info = _run(predict_cli, [str(model), "--info"])
    assert "task: classification, 3 classes (dividing, elongated, round); images are resized to 32 x 32" in (
        info.output
    )
    out = tmp_path / "pred"
    images = classified_project / "test" / "image"
    # the float32 graph, as idl-train's evaluation (--precision auto would run the int8 graph here)
    _run(predict_cli, [str(model), str(images), "--out", str(out), "--quiet", "--precision", "fp32"])
    table = pd.read_csv(out / "results.csv")
    assert "uncertainty" not in table and table["filename"].iloc[0] == "cell_000.tif"
    gt = classified_project / "test" / "groundtruth"
    result = _run(
        evaluate_cli, [str(out), str(gt), "--task", "Classification", "--images", str(images), "--quiet"]
    )
    summary = json.loads((out / "evaluation" / "summary.json").read_text())
    stored = json.loads((classified_project / "evaluation" / "summary.json").read_text())
    assert summary["accuracy"] == pytest.approx(stored["accuracy"])  # same model, same images
    assert summary["auc"] == pytest.approx(stored["auc"], abs=1e-6)
    assert f"accuracy {summary['accuracy']:.4f}" in result.output
    partial = tmp_path / "partial.csv"
    partial.write_text("filename,groundtruth\ncell_000.tif,round\n")
    bad = CliRunner().invoke(
        predict_cli.main, [str(model), str(images), "--out", str(out), "--gt", str(partial)]
    )
    assert (
        bad.exit_code != 0 and "partial.csv: no row for cell_001.tif (14 image(s) without one)" in bad.output
    )
    wrong = CliRunner().invoke(
        train_cli.main, [str(classified_project), "--task", "classification", "--model", "unet"]
    )
    assert wrong.exit_code != 0
    assert "model 'unet' does not fit the classification task. Use one of resnet18" in wrong.output


def test_export_a_classifier_checkpoint(classified_project: Path, tmp_path: Path, rng) -> None:
    model_dir = classified_project / "model"
    result = _run(export_cli, [str(model_dir / "best.pt"), "--out", str(tmp_path), "--no-package", "--quiet"])
    assert result.exit_code == 0, result.output
    x = rng.random((3, 1, 32, 32)).astype(np.float32)
    again, trained = load_model(tmp_path), load_model(model_dir)
    assert again.info.class_names == ("dividing", "elongated", "round") and again.info.input_size == (32, 32)
    np.testing.assert_allclose(again.runner(x), trained.runner(x), atol=1e-6)
    assert again.has_mc


def test_demo_writes_an_instance_project_with_its_baseline(tmp_path: Path) -> None:
    from idl.cli import demo as demo_cli
    from idl.infer.core.project import pair_files
    from idl.infer.evaluate.baseline import otsu_instance_scores

    project = tmp_path / "inst"
    result = _run(
        demo_cli, [str(project), "--task", "instance", "--n-train", "3", "--n-test", "2", "--size", "96"]
    )
    assert result.exit_code == 0, result.output
    labels = read_image(project / "train" / "groundtruth" / "nuclei_000.tif")
    assert labels.dtype == np.uint16 and len(np.unique(labels)) > 3  # one value per nucleus
    expected = otsu_instance_scores(pair_files(project / "test"))
    assert f"ap50 {expected['ap50']:.4f}, ap50_95 {expected['ap50_95']:.4f}" in result.output
    assert f"next: idl-train {project} --task instance" in result.output


def test_evaluating_label_images_as_classes_suggests_the_instance_task(tmp_path: Path) -> None:
    from idl.cli.evaluate import main as evaluate_main
    from idl.infer.evaluate.checks import looks_like_labels
    from idl.infer.io.formats.tiff import write_tiff

    labels = np.zeros((40, 40), np.uint16)
    labels[5:15, 5:15], labels[20:30, 20:35], labels[2:8, 30:38] = 1, 2, 3
    for folder in ("pred", "gt"):
        write_tiff(tmp_path / folder / "a.tif", labels)
    result = CliRunner().invoke(evaluate_main, [str(tmp_path / "pred"), str(tmp_path / "gt")])
    assert result.exit_code == 0, result.output
    said = "a.tif looks like a label image (3 objects, one value each), evaluated here as 4 classes: for "
    assert said in result.output
    assert looks_like_labels((labels > 0).astype(np.uint8)) == 0  # a binary mask is not
    classes = labels.copy()
    classes[30:35, 0:5] = 1  # a class in two places: classes, not labels
    assert looks_like_labels(classes) == 0
