"""A lab's shared MLflow server: a real ``mlflow server`` (SQLite backend) on 127.0.0.1, a training run
logged there, its package registered, and ``idl-predict models:/NAME/VERSION``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image
from idl.train.pipeline import train_project

from .conftest import fresh_copy, tiny


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path):
    """``mlflow server`` with a SQLite store and served artifacts; yields its URI, stopped by its PID."""
    port = _free_port()
    store = tmp_path / "server"
    store.mkdir()
    mlflow = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(store / "artifacts")]
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError((tmp_path / "server.log").read_text()[-3000:])
        time.sleep(0.5)
    yield uri, process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log.close()


@pytest.mark.slow
def test_training_logs_to_a_server_and_predicts_from_its_registry(
    server, small_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, process = server
    monkeypatch.setenv("IDL_MODEL_CACHE", str(tmp_path / "cache"))
    # what idl-predict --tracking-uri and the registry download set in this process: restored after
    for name in (
        "MLFLOW_TRACKING_URI",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.setenv(name, "recorded")  # the value before this test comes back afterwards
        monkeypatch.delenv(name)
    project = tmp_path / "nuclei"
    fresh_copy(small_project, project)
    config = tiny(epochs=2, tracking_uri=uri, registered_model="lab-nuclei")
    result = train_project(project, config, progress=False)
    assert result.package is not None and not (project / "mlflow.db").exists()  # all on the server

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_jaccard"] == pytest.approx(result.summary["jaccard"])
    assert [m.step for m in client.get_metric_history(result.run_id, "train_loss")] == [1, 2]
    version = client.get_model_version("lab-nuclei", "1")
    assert version.run_id == result.run_id
    assert float(version.tags["test_jaccard"]) == pytest.approx(result.summary["jaccard"], rel=1e-5)
    assert version.tags["task"] == "semantic" and version.tags["package"] == result.package.name
    files = [f.path for f in client.list_artifacts(result.run_id, "package")]
    assert files == [f"package/{result.package.name}"]

    image = project / "test" / "image"
    local = CliRunner().invoke(
        predict_cli.main, [str(result.package), str(image), "--out", str(tmp_path / "a")]
    )
    assert local.exit_code == 0, local.output
    args = ["models:/lab-nuclei/1", str(image), "--out", str(tmp_path / "b"), "--tracking-uri", uri]
    registered = CliRunner().invoke(predict_cli.main, args)
    assert registered.exit_code == 0, registered.output
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tif"))
    assert len(names) == 3 and names == sorted(p.name for p in (tmp_path / "b").glob("*.tif"))
    for name in names:
        assert np.array_equal(read_image(tmp_path / "a" / name), read_image(tmp_path / "b" / name))

    missing = CliRunner().invoke(predict_cli.main, ["models:/lab-nuclei/2", "--info", "--tracking-uri", uri])
    assert missing.exit_code != 0 and "could not be fetched from the MLflow registry" in missing.output
    assert "RESOURCE_DOES_NOT_EXIST" in missing.output

    os.killpg(process.pid, signal.SIGTERM)  # the server stops by its PID; the version is in the cache
    process.wait(timeout=30)
    again = CliRunner().invoke(predict_cli.main, [*args[:2], "--out", str(tmp_path / "c"), *args[4:]])
    assert again.exit_code == 0, again.output
    started = time.monotonic()
    gone = CliRunner().invoke(predict_cli.main, ["models:/lab-nuclei/3", "--info", "--tracking-uri", uri])
    assert gone.exit_code != 0 and "could not be fetched from the MLflow registry" in gone.output
    assert time.monotonic() - started < 60  # two retries, not MLflow's seven (about four minutes)
