"""Classification training: data loading, stratified split, class weights, settings checks, and a
short run through the whole pipeline (ONNX = torch, MC samples differ, package = model folder)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from idl.infer.core.errors import DataError
from idl.infer.core.normalize import Normalization
from idl.infer.datasets.synthetic import write_classification_project
from idl.infer.io.images import write_tiff
from idl.train.config import ConfigError, TrainConfig, parse_class_weights, resolve_config
from idl.train.tasks.classification.data import class_weights, load_classification_data, split_stratified


def test_images_resized_to_the_common_size(tmp_path: Path, rng: np.random.Generator) -> None:
    split = tmp_path / "train"
    sizes = [(20, 20), (20, 20), (30, 24)]
    for i, size in enumerate(sizes):
        write_tiff(split / "image" / f"im{i}.tif", rng.integers(0, 255, (*size, 3)).astype(np.uint8))
    (split / "groundtruth.csv").write_text("filename,groundtruth\nim0,b\nim1,a\nim2,b\n")
    data = load_classification_data(split, Normalization())
    assert data.images.shape == (3, 3, 20, 20) and data.input_size == (20, 20)
    assert data.class_names == ("a", "b") and data.labels.tolist() == [1, 0, 1]
    assert data.images.min() < 0.05 and data.images.max() > 0.95  # normalized per image
    assert load_classification_data(split, Normalization(), image_size=12).images.shape == (3, 3, 12, 12)


def test_stratified_split_holds_out_every_class() -> None:
    labels = np.array([0] * 20 + [1] * 5 + [2] * 2)
    train, val = split_stratified(labels, 0.2, seed=0)
    assert sorted(np.bincount(labels[val], minlength=3).tolist()) == [1, 1, 4]
    assert len(set(train) | set(val)) == 27 and not set(train) & set(val)
    with pytest.raises(DataError, match="too few images to hold any out"):
        split_stratified(np.array([0, 1]), 0.2, 0)


def test_balanced_class_weights_equal_scikit_learns() -> None:
    labels = np.array([0] * 30 + [1] * 6 + [2] * 12)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(class_weights("balanced", labels, 3), expected)
    assert class_weights(None, labels, 3) is None
    with pytest.raises(ConfigError, match="gives 2 weight"):
        class_weights((1.0, 2.0), labels, 3)
    with pytest.raises(DataError, match="class 2 has no training image"):
        class_weights("balanced", np.array([0, 1]), 3)


def test_classification_settings_are_checked() -> None:
    with pytest.raises(
        ConfigError, match="model 'unet' does not fit the classification task. Use one of resnet18"
    ):
        TrainConfig(int8=False, task="classification", model="unet")
    with pytest.raises(ConfigError, match="model 'resnet50' does not fit the semantic task"):
        TrainConfig(int8=False, task="semantic", model="resnet50")
    with pytest.raises(ConfigError, match="loss 'dice' does not fit classification; use one of ce"):
        TrainConfig(int8=False, task="classification", loss="dice").resolved_loss(3)
    with pytest.raises(ConfigError, match="class weights must be 'balanced' or one number per class"):
        parse_class_weights("heavy")
    with pytest.raises(ConfigError, match="class_weights must be 'balanced' or one number per class"):
        TrainConfig(int8=False, task="classification", class_weights="heavy")
    config = TrainConfig(int8=False, task="classification")
    assert (config.resolved_model("cpu"), config.classification_batch_size, config.image_size) == (
        "resnet18",  # planned for the device: a CPU affords 3x the steps of resnet50
        32,
        None,
    )
    assert (
        config.resolved_model("cuda") == "resnet50"
        and TrainConfig(
            int8=False,
        ).resolved_model("cpu")
        == "unet"
    )


def test_instantdl_classification_config(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {"use_algorithm": "Classification", "batchsize": 8, "image_size": [32, 32, 1], "num_classes": 3}
        )
    )
    config = resolve_config(path, class_weights="1,2,0.5")
    assert (config.task, config.classification_batch_size, config.image_size) == ("classification", 8, 32)
    assert config.batch_size is None and config.batch_images == 8  # InstantDL's batchsize counts images
    assert config.class_weights == (1.0, 2.0, 0.5)


def test_run_writes_results_and_evaluation(classified_project: Path) -> None:
    table = pd.read_csv(classified_project / "results" / "results.csv", dtype={"groundtruth": str})
    assert list(table.columns[:5]) == [
        "filename",
        "prediction",
        "probability_dividing",
        "probability_elongated",
        "probability_round",
    ]
    assert {"prediction_mc", "uncertainty", "uncertainty_instantdl", "groundtruth"} <= set(table.columns)
    probs = table[[c for c in table if c.startswith("probability_")]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert table["uncertainty"].between(0, 1).all()
    assert (table["uncertainty"] >= table["uncertainty_instantdl"] - 1e-6).all()
    summary = json.loads((classified_project / "evaluation" / "summary.json").read_text())
    correct = (table["prediction"] == table["groundtruth"]).mean()
    assert summary["accuracy"] == pytest.approx(correct)
    assert summary["n_images"] == 15 and summary["num_classes"] == 3
    assert (classified_project / "evaluation" / "confusion_matrix.png").is_file()


def test_onnx_equals_torch_and_monte_carlo_samples_differ(classified_project: Path) -> None:
    from idl.infer.runtime.session import OnnxRunner
    from idl.models import set_mc_dropout
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(classified_project / "model" / "best.pt"))
    assert info.input_size == (32, 32) and info.class_names == ("dividing", "elongated", "round")
    x = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x).numpy()
    got = OnnxRunner(classified_project / "model" / "model.onnx", "cpu")(x.numpy())
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)  # the stated export tolerance
    mc = OnnxRunner(classified_project / "model" / "model_mc.onnx", "cpu")(
        np.repeat(x[:1].numpy(), 4, axis=0)
    )
    assert np.abs(mc[0] - mc[1]).max() > 1e-3 and np.abs(mc[2] - mc[3]).max() > 1e-3
    set_mc_dropout(net, True)
    with torch.no_grad():  # the torch MC samples spread about as much as ONNX Runtime's
        torch_spread = net(x[:1].repeat(64, 1, 1, 1)).std(0).mean().item()
    onnx_spread = (
        OnnxRunner(classified_project / "model" / "model_mc.onnx", "cpu")(
            np.repeat(x[:1].numpy(), 64, axis=0)
        )
        .std(0)
        .mean()
    )
    assert 0.5 < onnx_spread / torch_spread < 2.0


def test_package_predicts_like_the_model_folder(classified_project: Path, tmp_path: Path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.classify import classify_files

    package = classified_project / "model" / f"{classified_project.name}-resnet18.bioimageio.zip"
    assert package.is_file()
    files = sorted((classified_project / "test" / "image").iterdir())
    _, folder = classify_files(load_model(classified_project / "model"), files)
    _, packaged = classify_files(load_model(package), files)
    np.testing.assert_allclose(packaged.probabilities, folder.probabilities, atol=1e-6)
    from bioimageio.spec import load_model_description

    descr = load_model_description(package, perform_io_checks=False)
    assert [str(a.id) for a in descr.outputs[0].axes] == ["batch", "channel"]
    assert [str(n) for n in descr.outputs[0].axes[1].channel_names] == ["dividing", "elongated", "round"]
    assert [a.size for a in descr.inputs[0].axes[2:]] == [32, 32]


@pytest.mark.slow  # trains for more than ten seconds
def test_resume_pretrained_and_early_test_label_check(tmp_path: Path) -> None:
    from idl.train.pipeline import train_project

    project = write_classification_project(tmp_path / "a", n_train=24, n_test=6, seed=5, size=16)
    base = TrainConfig(
        int8=False,
        task="classification",
        model="resnet18",
        epochs=3,
        steps_per_epoch=3,
        batch_size=8,
        package=False,
        uncertainty=False,
    )
    first = train_project(project, replace(base, epochs=2), progress=False)
    assert first.state.epoch == 2
    resumed = train_project(project, base, resume=True, progress=False)
    assert resumed.state.epoch == 3 and len(resumed.state.history) == 3

    # fine-tune on two of the classes: everything but the classifier's last layer is transferred
    other = write_classification_project(tmp_path / "b", n_train=24, n_test=6, seed=6, size=16)
    csv = other / "train" / "groundtruth" / "groundtruth.csv"
    csv.write_text(csv.read_text().replace("dividing", "round"))
    test_csv = other / "test" / "groundtruth" / "groundtruth.csv"
    test_csv.write_text(test_csv.read_text().replace("dividing", "round"))
    tuned = TrainConfig(**{**base.__dict__, "epochs": 1, "pretrained": str(project / "model" / "best.pt")})
    train_project(other, tuned, progress=False)
    report = (other / "model" / "pretrained.txt").read_text()
    assert (
        "net.fc.1.weight" in report
        and "skipped: shape (3, 512) in the pretrained weights, (2, 512) here" in report
    )
    assert re.search(r"net\.layer4\.1\.conv2\.1\.weight +loaded \(512, 512, 3, 3\)", report)

    # a test label the training data does not have fails before any training, and --overwrite has
    # not removed the previous model yet
    test_csv.write_text(test_csv.read_text().replace(",round", ",mitotic", 1))
    with pytest.raises(DataError, match=r"class\(es\) 'mitotic' are not among the model's classes"):
        train_project(other, TrainConfig(**{**base.__dict__, "epochs": 1}), overwrite=True, progress=False)
    assert (other / "model" / "best.pt").is_file() and (other / "results" / "results.csv").is_file()


def test_noise_images_are_flagged_atypical(classified_project: Path, tmp_path: Path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.classify import classify_files

    rng = np.random.default_rng(0)
    noise = [
        write_tiff(tmp_path / f"noise_{i}.tif", rng.poisson(130, (32, 32)).astype(np.uint16))
        for i in range(8)
    ]
    model = load_model(classified_project / "model")
    _, flagged = classify_files(model, noise)
    table = pd.read_csv(classified_project / "results" / "results.csv")
    assert flagged.atypicality is not None
    assert np.median(table["atypicality"]) < 1.0  # the test images look like the training images
    assert flagged.atypicality.min() > 2 * table["atypicality"].max()


def test_training_inputs_equal_what_inference_feeds_the_network(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    from idl.infer.core.model_info import ModelInfo
    from idl.infer.io.images import read_channels_last
    from idl.infer.post.classify import prepare_image
    from idl.infer.tasks.registry import io_for_info

    split = tmp_path / "train"
    for i, size in enumerate([(40, 40), (40, 40), (56, 30)]):
        write_tiff(split / "image" / f"im{i}.tif", rng.integers(0, 4000, (*size, 2)).astype(np.uint16))
    (split / "groundtruth.csv").write_text("filename,groundtruth\nim0,a\nim1,b\nim2,a\n")
    data = load_classification_data(split, Normalization(), axes="yxc", image_size=24)
    info = ModelInfo("classification", 2, 2, 1, 0, input_size=(24, 24), class_names=("a", "b"))
    io = io_for_info(info)
    for i in range(3):
        image = read_channels_last(split / "image" / f"im{i}.tif", "yxc", "yx")[0]
        np.testing.assert_allclose(prepare_image(image, io), data.images[i], atol=1e-6)


def test_mlflow_keys_are_cleaned() -> None:
    from idl.train.tracking import _flatten

    flat = _flatten({"data": {"images_per_class": {"CD4+": 3, "mitosis (late)": 2}}})
    assert flat == {"data.images_per_class.CD4_": 3, "data.images_per_class.mitosis _late_": 2}


def test_a_classifier_package_without_idl_metadata_runs_like_ours(
    classified_project: Path, tmp_path: Path
) -> None:
    """Anyone's classifier package (fixed input size, batch + channel output) is classified too, with
    the output channel names as classes."""
    import zipfile

    import yaml
    from click.testing import CliRunner

    from idl.cli import predict as predict_cli

    package = classified_project / "model" / f"{classified_project.name}-resnet18.bioimageio.zip"
    folder = tmp_path / "foreign"
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    rdf.pop("config")  # no idl model info, no Monte Carlo graph description
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    images = classified_project / "test" / "image"
    out = tmp_path / "out"
    result = CliRunner().invoke(
        predict_cli.main, [str(folder / "rdf.yaml"), str(images), "--out", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    theirs = pd.read_csv(out / "results.csv")
    ours = pd.read_csv(classified_project / "results" / "results.csv")
    assert list(theirs.columns) == [
        "filename",
        "prediction",
        *[f"probability_{c}" for c in ("dividing", "elongated", "round")],
    ]
    np.testing.assert_allclose(theirs.iloc[:, 2:5].to_numpy(), ours.iloc[:, 2:5].to_numpy(), atol=1e-5)
    assert (theirs["prediction"] == ours["prediction"]).all()


@pytest.mark.slow  # trains for more than ten seconds
def test_colour_training_images_and_grey_test_images_make_a_package(tmp_path: Path) -> None:
    """InstantDL's MNIST example: RGB training images, grey test images. The package's test tensor
    (cut from the first test image) takes the model's three channels."""
    from idl.infer.io.images import read_image
    from idl.train.pipeline import train_project

    project = write_classification_project(tmp_path / "mnist", n_train=24, n_test=6, seed=5)
    for path in (project / "train" / "image").iterdir():
        write_tiff(path, np.repeat(read_image(path)[..., None], 3, axis=-1))
    config = TrainConfig(
        int8=False,
        task="classification",
        model="resnet18",
        epochs=1,
        steps_per_epoch=2,
        batch_size=4,
        uncertainty=False,
    )
    result = train_project(project, config, progress=False)  # failed in ONNX Runtime before
    import zipfile

    zipfile.ZipFile(result.package).extract("test_input.npy", tmp_path)
    test_input = np.load(tmp_path / "test_input.npy")  # (batch, channel, y, x)
    assert test_input.shape[1] == 3 and np.array_equal(test_input[0, 0], test_input[0, 2])
