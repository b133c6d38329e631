from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from idl.infer.core.errors import IdlError
from idl.train.checkpoint import load_checkpoint
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

FAST = dict(
    depth=2,
    base_filters=4,
    image_size=48,
    batch_size=4,
    steps_per_epoch=3,
    evaluate=False,
    uncertainty=False,
    package=False,  # packages are tested in tests/export
)


def _copy_train_split(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "train", dst / "train")
    return dst


@pytest.mark.slow  # trains for more than ten seconds
def test_resumed_run_equals_uninterrupted_run(
    small_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from idl.train.tracking import Tracker

    straight = _copy_train_split(small_project, tmp_path / "straight")
    resumed = _copy_train_split(small_project, tmp_path / "resumed")
    train_project(straight, TrainConfig(epochs=3, patience=5, **FAST), progress=False)
    logged = Tracker.log_metrics

    def interrupted(self, metrics, step=None):  # Ctrl-C after the second epoch's checkpoint
        logged(self, metrics, step=step)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Tracker, "log_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_project(resumed, TrainConfig(epochs=3, patience=5, **FAST), progress=False)
    monkeypatch.setattr(Tracker, "log_metrics", logged)
    with pytest.raises(IdlError, match="already holds a trained model.*--resume"):
        train_project(resumed, TrainConfig(epochs=3, patience=5, **FAST), progress=False)
    other = {**FAST, "base_filters": 8}
    with pytest.raises(IdlError, match="holds a network built with .*--config"):
        train_project(resumed, TrainConfig(epochs=3, patience=5, **other), resume=True, progress=False)
    result = train_project(resumed, TrainConfig(epochs=3, patience=5, **FAST), resume=True, progress=False)
    assert result.state.epoch == 3
    a = load_checkpoint(straight / "model" / "last.pt")
    b = load_checkpoint(resumed / "model" / "last.pt")
    assert [h["train_loss"] for h in a["state"]["history"]] == [
        h["train_loss"] for h in b["state"]["history"]
    ]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


@pytest.mark.slow  # trains for more than ten seconds
def test_overwrite_without_dropout_removes_the_old_model(small_project: Path, tmp_path: Path) -> None:
    project = _copy_train_split(small_project, tmp_path / "p")
    shutil.copytree(small_project / "test", project / "test")
    train_project(
        project, TrainConfig(epochs=1, **{**FAST, "uncertainty": True, "mc_samples": 2}), progress=False
    )
    assert (project / "model" / "model_mc.onnx").is_file() and (project / "results" / "uncertainty").is_dir()
    config = TrainConfig(epochs=1, dropout=0.0, **{**FAST, "uncertainty": True})
    result = train_project(project, config, overwrite=True, progress=False)
    assert result.onnx_mc is None and not (project / "model" / "model_mc.onnx").exists()
    assert not (project / "results" / "uncertainty").exists()
    assert len(list((project / "results").glob("*.tif"))) == 3
