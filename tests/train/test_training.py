from __future__ import annotations

import shutil
from dataclasses import replace
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
    train_project(straight, TrainConfig(int8=False, epochs=3, patience=5, **FAST), progress=False)
    logged = Tracker.log_metrics

    def interrupted(self, metrics, step=None):  # Ctrl-C after the second epoch's checkpoint
        logged(self, metrics, step=step)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Tracker, "log_metrics", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_project(resumed, TrainConfig(int8=False, epochs=3, patience=5, **FAST), progress=False)
    monkeypatch.setattr(Tracker, "log_metrics", logged)
    with pytest.raises(IdlError, match="already holds a trained model.*--resume"):
        train_project(resumed, TrainConfig(int8=False, epochs=3, patience=5, **FAST), progress=False)
    other = {**FAST, "base_filters": 8}
    with pytest.raises(IdlError, match="holds a network built with .*--config"):
        train_project(
            resumed, TrainConfig(int8=False, epochs=3, patience=5, **other), resume=True, progress=False
        )
    result = train_project(
        resumed, TrainConfig(int8=False, epochs=3, patience=5, **FAST), resume=True, progress=False
    )
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
        project,
        TrainConfig(int8=False, epochs=1, **{**FAST, "uncertainty": True, "mc_samples": 2}),
        progress=False,
    )
    assert (project / "model" / "model_mc.onnx").is_file() and (project / "results" / "uncertainty").is_dir()
    config = TrainConfig(int8=False, epochs=1, dropout=0.0, **{**FAST, "uncertainty": True})
    result = train_project(project, config, overwrite=True, progress=False)
    assert result.onnx_mc is None and not (project / "model" / "model_mc.onnx").exists()
    assert not (project / "results" / "uncertainty").exists()
    assert len(list((project / "results").glob("*.tif"))) == 3


@pytest.mark.slow  # trains for more than ten seconds
def test_an_extended_budget_is_in_the_plan_the_log_and_the_checkpoint(
    small_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from idl.train import budget

    project = _copy_train_split(small_project, tmp_path / "p")
    # validation "still rising" at every check: 5 epochs -> 8 (after epoch 3) -> 10, the cap of 2x
    monkeypatch.setattr(budget, "trend", lambda scores: budget.Trend(0.5, 0.4, 1))
    monkeypatch.setattr(budget, "stuck", lambda best, reference: False)  # never started again here
    caplog.set_level("INFO", logger="idl")
    result = train_project(project, TrainConfig(int8=False, epochs=5, budget_cap=2.0, **FAST), progress=False)
    assert result.state.epoch == 10 and result.state.epochs == 10
    plan = json.loads((project / "model" / "plan.json").read_text())
    assert (plan["epochs"], plan["max_epochs"], plan["extended_to"], plan["total_steps"]) == (
        5,
        10,
        8 + 2,
        30,
    )
    assert plan["extensions"] == [
        "after epoch 3: validation jaccard 0.5000 in the last 1 epoch(s), 0.4000 before, still rising: "
        "extended to 8 epochs (24 steps)",
        "after epoch 4: validation jaccard 0.5000 in the last 1 epoch(s), 0.4000 before, still rising: "
        "extended to 10 epochs (30 steps)",
    ]
    assert "budget: " + plan["extensions"][0] in caplog.text and plan["restarts"] == []
    assert plan["reference"].startswith(("Otsu threshold", "all foreground"))
    assert "5 epochs x 3 steps = 15 steps, up to 10 epochs while validation still rises" in caplog.text
    assert load_checkpoint(project / "model" / "last.pt")["state"]["extensions"] == plan["extensions"]

    # epochs set and no cap given: the budget is the user's
    monkeypatch.undo()
    from idl.train.pipeline import _budget_cap
    from idl.train.plan import Plan

    planned = Plan(2, (48, 48), 4, 2, False, 3, 5, 10, 1e-3, 1, sources={"epochs": "cpu budget"})
    assert (
        _budget_cap(
            TrainConfig(
                int8=False,
            ),
            planned,
        )
        == budget.CAP
        == 3.0
    )
    assert (
        _budget_cap(
            TrainConfig(
                int8=False,
            ),
            replace(planned, sources={"epochs": "set"}),
        )
        == 1.0
    )
    assert _budget_cap(TrainConfig(int8=False, val_fraction=0.0), planned) == 1.0
    assert (
        _budget_cap(TrainConfig(int8=False, budget_cap=1.5), replace(planned, sources={"epochs": "set"}))
        == 1.5
    )
