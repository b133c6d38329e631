"""kill -9 during training: the checkpoint of the last finished epoch survives (written atomically),
--resume completes the run, and no half-written file is left."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.infer.io.record import RECORD_NAME
from idl.train.checkpoint import load_checkpoint

TRAIN = [sys.executable, "-c", "from idl.cli.train import main; main()"]


@pytest.mark.slow
def test_sigkill_during_training_then_resume_completes(tmp_path: Path) -> None:
    project = write_semantic_project(tmp_path / "p", n_train=6, n_test=2, seed=3, spec=NucleiSpec(size=96))
    args = [str(project), "--task", "semantic", "--epochs", "6", "--steps-per-epoch", "4", "--depth", "2"]
    args += ["--filters", "4", "--no-package", "--no-uncertainty", "--no-evaluate", "--no-int8", "--quiet"]
    process = subprocess.Popen([*TRAIN, *args], stderr=subprocess.DEVNULL)
    last = project / "model" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert process.poll() is None, "training ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_at = load_checkpoint(last)["state"]["epoch"]  # a whole checkpoint, whatever the moment
    assert 1 <= killed_at < 6
    done = subprocess.run([*TRAIN, *args, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(last)["state"]["epoch"] == 6
    assert (project / "model" / "model.onnx").is_file()
    # no half-written file anywhere (the record of what idl-predict wrote is no temporary file)
    assert not [p for p in project.rglob(".*") if p.is_file() and p.name != RECORD_NAME]
