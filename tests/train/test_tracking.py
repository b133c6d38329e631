from __future__ import annotations

from pathlib import Path

import pytest

from idl.train.tracking import Tracker


def test_tracking_uri_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    elsewhere = tmp_path / "server" / "runs.db"
    elsewhere.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    project = tmp_path / "project"
    project.mkdir()
    tracker = Tracker(project, None)
    tracker.log_params({"a": 1, "nested": {"b": 2}})
    tracker.log_metrics({"val_loss": 0.5}, step=1)
    tracker.end()
    assert elsewhere.is_file() and not (project / "mlflow.db").exists()
    run = mlflow.get_run(tracker.run_id)
    assert run.data.params == {"a": "1", "nested.b": "2"} and run.data.metrics == {"val_loss": 0.5}


def test_second_project_in_one_process_gets_its_own_store(tmp_path) -> None:
    """MLflow's set_tracking_uri writes MLFLOW_TRACKING_URI; a later project must not inherit it."""
    import os

    from idl.train.tracking import Tracker

    os.environ.pop("MLFLOW_TRACKING_URI", None)
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        tracker = Tracker(tmp_path / name, None)
        tracker.log_metrics({"x": 1.0})
        tracker.end()
        assert (tmp_path / name / "mlflow.db").is_file(), name
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_registry_that_refuses_leaves_the_trained_model_and_warns(
    small_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from idl.train.pipeline import train_project

    from .conftest import fresh_copy, tiny

    def refuse(self, *args, **kwargs):
        raise MlflowException("model registry functionality is unavailable")

    monkeypatch.setattr(MlflowClient, "create_model_version", refuse)
    project = fresh_copy(small_project, tmp_path / "p")
    with caplog.at_level("WARNING", logger="idl"):
        result = train_project(project, tiny(epochs=1, evaluate=False), progress=False)
    assert result.package is not None and result.package.is_file()
    assert "the package was not registered in MLflow's model registry" in caplog.text
    assert "model registry functionality is unavailable" in caplog.text
