from __future__ import annotations

import json
from pathlib import Path

import pytest

from idl.train.config import ConfigError, TrainConfig, config_from_mapping, load_config_file, resolve_config


def test_instantdl_keys_are_translated(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "use_algorithm": "SemanticSegmentation",
                "path": "x",
                "pretrained_weights": False,
                "batchsize": 2,
                "iterations_over_dataset": 7,
                "data_gen_args": {"horizontal_flip": True},
                "loss_function": "dice_loss",
                "num_classes": 2,
                "image_size": [128, 128, 1],
                "seeds": True,
                "calculate_uncertainty": False,
                "evaluation": True,
            }
        )
    )
    config = resolve_config(cfg, epochs=None, batch_size=3)
    assert (config.task, config.epoch_limit, config.batch_size, config.resolved_loss(2)) == (
        "semantic",
        7,
        3,
        "dice",
    )
    assert config.epochs is None  # planned, then limited to 7
    assert config.batch_images == 2  # InstantDL's batchsize, kept apart; our batch_size won
    assert (config.image_size, config.uncertainty, config.pretrained) == (128, False, None)


def test_instantdl_nulls_binary_classes_and_flips(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text(
        json.dumps(
            {
                "image_size": None,
                "num_classes": 1,
                "loss_function": "binary_crossentropy",
                "data_gen_args": {"horizontal_flip": False, "vertical_flip": False, "rotation_range": 90},
            }
        )
    )
    config = resolve_config(cfg)
    assert (config.image_size, config.num_classes, config.augment) == (None, 2, ("rot90",))
    assert (config.loss, config.instantdl_loss, config.resolved_loss(2)) == (None, "bce", "bce")


def test_wrongly_typed_values_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"c\.json: 'epochs' must be a whole number, got '5'"):
        config_from_mapping({"epochs": "5"}, "c.json")
    with pytest.raises(
        ConfigError, match=r"c\.json: 'evaluation' must be true or false, got 1"
    ):  # InstantDL's key
        config_from_mapping({"evaluation": 1}, "c.json")


def test_unknown_key_names_valid_ones(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"epocs": 3}))
    with pytest.raises(
        ConfigError, match=r"unknown key 'epocs'\. Did you mean 'epochs'\? Valid keys: .*batch_size"
    ):
        load_config_file(cfg)


def test_saved_config_loads_back(tmp_path: Path) -> None:
    original = TrainConfig(
        epochs=5, depth=3, augment=("flip", "elastic"), augment_settings={"elastic": {"probability": 0.9}}
    )
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(original.to_dict()))
    assert resolve_config(cfg) == original


def test_bad_values() -> None:
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        TrainConfig(loss="hinge")
    with pytest.raises(ConfigError, match="unknown loss 'tverski'. Did you mean 'tversky'"):
        TrainConfig(loss="tverski")
    with pytest.raises(ConfigError, match="model 'resnet5' does not fit .* Did you mean 'resnet50'"):
        TrainConfig(task="classification", model="resnet5")
    with pytest.raises(ConfigError, match="device 'cuda0' is not known. Did you mean 'cuda'"):
        TrainConfig(device="cuda0")
    with pytest.raises(ConfigError, match="does not fit binary"):
        TrainConfig(loss="ce").resolved_loss(2)
    with pytest.raises(ConfigError, match="unknown task 'segment'"):
        config_from_mapping({"use_algorithm": "segment"}, "config.json")
    assert config_from_mapping({"task": "InstanceSegmentation"}, "x") == {"task": "instance"}
