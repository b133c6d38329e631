"""Output places are checked before any work; temporary files of a killed run are removed by the next
run; SIGTERM cleans up like Ctrl-C and says how to continue."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.io.images import write_tiff
from idl.infer.io.record import RECORD_NAME, OutputRecord

PREDICT = [sys.executable, "-c", "from idl.cli.predict import main; main()"]


def _image(folder: Path) -> Path:
    write_tiff(folder / "a.tif", np.random.default_rng(0).random((40, 48)).astype(np.float32))
    return folder


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(
    identity_model, tmp_path: Path, where: str
) -> None:
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "out"
    args = [str(identity_model()), str(_image(tmp_path / "in")), "--out", str(out)]
    result = CliRunner().invoke(predict_cli.main, args)
    if where == "file":  # click's own check of --out: a usage error
        assert result.exit_code == 2 and f"Directory '{out}' is a file." in result.output
    else:
        assert result.exit_code == 1
        expected = f"{out}: cannot be the output folder, it lies under the file {tmp_path / 'taken'}."
        assert expected in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root's override")
def test_a_read_only_output_folder_is_refused_before_any_work(identity_model, tmp_path: Path) -> None:
    out = tmp_path / "readonly"
    out.mkdir()
    out.chmod(0o555)
    try:
        # as root, permission bits are ignored: drop the capabilities that override them
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *PREDICT]
        args = [str(identity_model()), str(_image(tmp_path / "in")), "--out", str(out), "--quiet"]
        done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=120)
    finally:
        out.chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert f"{out}: cannot write into the output folder (Permission denied)" in done.stderr
    assert "Traceback" not in done.stderr and not list(out.iterdir())


def test_a_killed_runs_temporary_files_are_removed(identity_model, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "uncertainty").mkdir(parents=True)
    leftovers = [out / ".a.tif.x1y2z3.tmp.tif", out / ".big.tif.part", out / "uncertainty" / ".a.tif.part"]
    for path in leftovers:
        path.write_bytes(b"half written")
    (out / ".keep.txt").write_text("the user's own hidden file")
    args = [str(identity_model()), str(_image(tmp_path / "in")), "--out", str(out)]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 0, result.output
    assert "removed 1 unfinished file(s) of an interrupted run" in result.output
    assert (
        not any(p.exists() for p in leftovers) and (out / ".keep.txt").exists() and (out / "a.tif").exists()
    )


def test_sigterm_during_a_large_write_cleans_up_and_says_how_to_continue(
    identity_model, tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    np.save(inputs / "big.npy", np.random.default_rng(0).random((6000, 6000), np.float32))  # 144 MB
    out = tmp_path / "out"
    args = [str(identity_model()), str(inputs), "--out", str(out), "--tile-size", "256", "--quiet"]
    process = subprocess.Popen([*PREDICT, *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not list(out.glob(".*.part")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)  # until the tiles are being written
    assert process.poll() is None, "finished before it could be interrupted"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted. Finished images are kept in --out; the same command continues" in stderr
    # no partial file, hidden or final; the record of what idl wrote says the image was started only
    assert not [p for p in out.rglob("*") if p.is_file() and p.name != RECORD_NAME]
    assert [e.complete for e in OutputRecord.read(out).entries.values()] == [False]
