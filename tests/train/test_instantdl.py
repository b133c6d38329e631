"""InstantDL config files run unchanged: keys in any case, Python literals, data_gen_args, its losses."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from idl.train.augment import Setting
from idl.train.config import ConfigError, TrainConfig, json_text, load_config_file, resolve_config
from idl.train.instantdl import augmentations

# An InstantDL config as its own example files write it: mixed key case, every data_gen_args key,
# Python literals (True/False/None) and weights that are not there.
INSTANTDL_CONFIG = """{
    "use_algorithm": "SemanticSegmentation",
    "path": "PROJECT",
    "pretrained_weights_path": "logs/pretrained_weights_Lung_SemanticSegmentation.hdf5",
    "batchsize": 4,
    "Iterations_Over_Dataset": 3,
    "data_gen_args": {
        "save_augmented_images": True,
        "resample_images": True,
        "std_normalization": False,
        "feature_scaling": False,
        "horizontal_flip": True,
        "vertical_flip": True,
        "poission_noise": 1,
        "rotation_range": 20,
        "zoom_range": 1.5,
        "contrast_range": 0.2,
        "brightness_range": 0.1,
        "gamma_shift": 0.3,
        "threshold_background_image": False,
        "threshold_background_groundtruth": False,
        "gaussian_blur_image": False,
        "gaussian_blur_label": False,
        "binarize_mask": False
    },
    "loss_function": "binary crossentropy dice loss",
    "num_classes": 1,
    "Image_size": None,
    "calculate_uncertainty": True,
    "evaluation": True
}"""


def test_python_literals_become_json_outside_strings_only() -> None:
    text = '{"a": True, "b": [False, None], "c": "True or None", "d": "say \\"False\\""}'
    assert json.loads(json_text(text)) == {
        "a": True,
        "b": [False, None],
        "c": "True or None",
        "d": 'say "False"',
    }


def test_data_gen_args_map_to_our_augmentations_with_their_strengths() -> None:
    args = json.loads(json_text(INSTANTDL_CONFIG.replace("PROJECT", "x")))["data_gen_args"]
    mapped, save = augmentations(args, "c.json")
    assert save is True
    assert mapped == {
        "resample": {},
        "hflip": {},
        "vflip": {},
        "poisson_noise": {},
        "rotate": {"range": [-20.0, 20.0]},
        "zoom": {"crop_px": 150},  # InstantDL: a crop up to 150 px smaller, scaled back
        "contrast": {"range": [0.8, 1.2]},
        "brightness": {"range": [0.9, 1.1]},
        "gamma": {"range": [0.7, 1.3]},
    }
    small = {"rotation_range": 90, "width_shift_range": 0.1, "height_shift_range": 0.2, "zoom_range": 0.25}
    assert augmentations(small, "c.json")[0] == {
        "rot90": {},
        "shift": {"range": [-0.2, 0.2]},  # the wider of the two
        "zoom": {"crop_px": 25},
    }
    assert augmentations({"zoom_range": [0.8, 1.2]}, "c.json")[0] == {"zoom": {"range": [0.8, 1.2]}}
    more = {"gaussian_noise": 0.1, "gaussian_blur_image": 2, "threshold_background_image": True}
    assert augmentations(more, "c.json")[0] == {
        "gaussian_noise": {"range": [0.0, 0.1]},
        "blur": {"range": [0.0, 2.0]},
        "threshold_background": {},
    }
    assert augmentations({"horizontal_flip": False, "rotation_range": 0, "zoom_range": None}, "c")[0] == {}


def test_data_gen_args_errors_and_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(
        ConfigError,
        match="c.json: unknown data_gen_args key 'horizontal_flipp'. Did you mean 'horizontal_flip'",
    ):
        augmentations({"horizontal_flipp": True}, "c.json")
    with pytest.raises(ConfigError, match="'rotation_range' needs a number, got True"):
        augmentations({"rotation_range": True}, "c.json")
    with caplog.at_level(logging.WARNING, logger="idl"):
        assert augmentations({"binarize_mask": True, "gaussian_blur_label": 1.0}, "c.json")[0] == {}
    assert "'binarize_mask' is ignored: masks are read as classes" in caplog.text
    assert "'gaussian_blur_label' is ignored: it would blur the ground truth" in caplog.text
    with pytest.raises(ConfigError, match="shift': range must be .* <= 0.5"):
        TrainConfig(**_overrides({"data_gen_args": {"width_shift_range": 2}}))


def _overrides(data: dict) -> dict:
    from idl.train.config import config_from_mapping

    return config_from_mapping(data, "c.json")


def test_instantdl_losses_are_used_where_they_fit(caplog: pytest.LogCaptureFixture) -> None:
    semantic = TrainConfig(
        int8=False, **_overrides({"use_algorithm": "SemanticSegmentation", "loss_function": "dice_loss"})
    )
    assert semantic.resolved_loss(2) == "dice"
    with caplog.at_level(logging.WARNING, logger="idl"):  # InstantDL's own examples pair these
        mse = TrainConfig(**_overrides({"use_algorithm": "SemanticSegmentation", "loss_function": "mse"}))
        assert mse.resolved_loss(2) == "bce+dice"
        classify = TrainConfig(
            int8=False,
            **_overrides({"use_algorithm": "Classification", "loss_function": "binary_crossentropy"}),
        )
        assert classify.resolved_loss(15) == "ce"
    assert "loss_function 'bce' does not fit classification; training with 'ce'" in caplog.text
    with pytest.raises(ConfigError, match="loss 'mse' does not fit binary segmentation"):
        TrainConfig(int8=False, loss="mse").resolved_loss(2)  # our own key: no silent fallback


def test_instantdl_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING, logger="idl"):
        assert "pretrained" not in _overrides({"pretrained_weights_path": "logs/missing.hdf5"})
    assert "'logs/missing.hdf5' not found; training from scratch" in caplog.text
    (tmp_path / "w.hdf5").write_bytes(b"\x89HDF")
    with pytest.raises(ConfigError, match="'w.hdf5' holds Keras weights from InstantDL"):
        _overrides({"Pretrained_Weights_Path": "w.hdf5"})
    assert "pretrained" not in _overrides(
        {"use_pretrained_weights": False, "pretrained_weights_path": "w.hdf5"}
    )
    assert _overrides({"pretrained_weights": True}) == {}


def test_file_settings_and_command_line_overrides(tmp_path: Path, caplog) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(
        json.dumps(
            {
                "task": "semantic",
                "augment": {"rotate": {"probability": 0.9, "range": [-90, 90]}, "flip": {}, "gamma": {}},
                "Image_size": [64, 64, 8, 1],
            }
        )
    )
    config = resolve_config(cfg)
    assert config.augmentation["rotate"] == Setting(0.9, (-90.0, 90.0))
    assert (config.image_size, config.patch_z) == (64, 8)
    narrowed = resolve_config(cfg, augment=("rotate",), epochs=2)  # the command line names win
    assert (narrowed.augment, narrowed.epochs) == (("rotate",), 2)
    assert narrowed.augmentation["rotate"].probability == 0.9
    # InstantDL's iterations_over_dataset limits the planned epochs; 0 (predict with its Keras
    # weights) cannot be done, so training runs the planned budget, with a warning
    assert load_config_file_and_build(tmp_path, {"iterations_over_dataset": 200}).epoch_limit == 200
    with caplog.at_level("WARNING", logger="idl"):
        zero = load_config_file_and_build(tmp_path, {"iterations_over_dataset": 0, "image_size": False})
    assert (zero.epoch_limit, zero.epochs, zero.image_size) == (None, None, None)
    assert "iterations_over_dataset 0 asks InstantDL to only predict" in caplog.text
    with pytest.raises(ConfigError, match="epochs must be >= 1 .*idl-predict"):
        TrainConfig(int8=False, epochs=0)


def test_instantdl_zoom_is_a_crop_in_pixels_of_the_image(tmp_path: Path) -> None:
    """InstantDL's ``zoom_range: 2`` crops up to 200 px off the image and scales the rest back: a
    magnification of up to 512 / 312 for its 512 px lung slices, 2x (the crop limited to half the side)
    for 96 px tiles, and nothing else changes."""
    config = load_config_file_and_build(tmp_path, {"data_gen_args": {"zoom_range": 2}})
    assert (config.instantdl_zoom_px, config.augment) == (200, ("zoom",))
    assert config.augmentation["zoom"].range == (0.8, 1.25)  # ours until the image side is known
    assert config.with_image_side(512).augmentation["zoom"] == Setting(0.5, (1.0, 1.641))
    assert config.with_image_side(96).augmentation["zoom"].range == (1.0, 2.0)
    assert config.with_image_side(1000).augmentation["zoom"].range == (1.0, 1.25)
    plain = TrainConfig(int8=False, augment=("zoom",))
    assert plain.with_image_side(512) == plain


def load_config_file_and_build(folder: Path, data: dict) -> TrainConfig:
    cfg = folder / "x.json"
    cfg.write_text(json.dumps(data))
    return TrainConfig(**load_config_file(cfg))


@pytest.mark.slow
def test_instantdl_config_trains_end_to_end(
    small_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``idl-train --config config.json`` with InstantDL's file as written: project from 'path', Python
    literals, data_gen_args; command-line flags override it; the resolved config is saved and logged."""
    import mlflow

    from idl.cli import train as train_cli

    project = tmp_path / "lung"
    shutil.copytree(small_project / "train", project / "train")
    shutil.copytree(small_project / "test", project / "test")
    config_file = tmp_path / "config.json"
    config_file.write_text(INSTANTDL_CONFIG.replace('"PROJECT"', '"lung"'))
    monkeypatch.chdir(tmp_path)  # InstantDL reads 'path' from the working folder
    flags = ["--depth", "2", "--filters", "8", "--image-size", "64", "--mc-samples", "3", "--no-package"]
    result = CliRunner().invoke(train_cli.main, ["--config", str(config_file), *flags, "--quiet"])
    assert result.exit_code == 0, result.output

    saved = json.loads((project / "model" / "config.json").read_text())
    assert (saved["task"], saved["epochs"], saved["batch_size"], saved["num_classes"]) == (
        "semantic",
        3,  # the planned budget, limited by iterations_over_dataset
        4,
        2,
    )
    assert saved["epoch_limit"] == 3
    assert (saved["depth"], saved["base_filters"], saved["image_size"]) == (2, 8, 64)  # flags won
    assert saved["augment"] == [
        "hflip",
        "vflip",
        "rotate",
        "zoom",
        "resample",
        "contrast",
        "brightness",
        "gamma",
        "poisson_noise",
    ]
    assert saved["augment_settings"]["rotate"] == {"probability": 0.5, "range": [-20.0, 20.0]}
    assert (saved["instantdl_loss"], saved["pretrained"]) == ("bce+dice", None)
    assert (project / "model" / "augmentations.png").stat().st_size > 10_000  # save_augmented_images
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    assert 0.0 <= summary["jaccard"] <= 1.0 and summary["n_images"] == 3
    assert len(list((project / "results" / "uncertainty").glob("*.tif"))) == 3

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    run = mlflow.search_runs(experiment_names=["idl"], output_format="list")[0]
    assert run.data.params["augment"] == str(saved["augment"])
    # zoom_range 1.5 crops up to 150 px, at most half of the 96 px images: up to 2x
    assert run.data.params["augment_settings.zoom.range"] == "[1.0, 2.0]"
    assert run.data.params["data.loss"] == "bce+dice"


def test_project_folder_from_the_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from idl.train.config import project_of_config

    (tmp_path / "configs").mkdir()
    (tmp_path / "data" / "lung").mkdir(parents=True)
    cfg = tmp_path / "configs" / "c.json"
    cfg.write_text('{"path": "data/lung", "use_algorithm": "Regression"}')
    monkeypatch.chdir(tmp_path)  # InstantDL's way: relative to the working folder
    assert project_of_config(cfg) == Path("data/lung")
    beside = tmp_path / "data" / "c.json"
    beside.write_text('{"path": "lung"}')  # not in the working folder: relative to the config file
    assert project_of_config(beside) == tmp_path / "data" / "lung"
    cfg.write_text('{"path": "nowhere"}')
    with pytest.raises(ConfigError, match="project folder 'nowhere' was found neither in the working folder"):
        project_of_config(cfg)
    cfg.write_text('{"use_algorithm": "Regression"}')
    with pytest.raises(ConfigError, match="no 'path' names the project folder"):
        project_of_config(cfg)
