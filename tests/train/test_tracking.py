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
