"""The probe's other bad inputs, each with its exit code, message and no partial file under a final
name: a truncated TIFF, an empty folder, images without ground truth, broken groundtruth.csv files,
and SIGKILL during a large write (whose leftovers the next run removes)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idl.cli import evaluate as evaluate_cli
from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image, write_tiff
from idl.infer.io.record import RECORD_NAME

PREDICT = [sys.executable, "-c", "from idl.cli.predict import main; main()"]


def test_a_truncated_tiff_is_named_and_the_others_are_predicted(identity_model, tmp_path: Path) -> None:
    images = tmp_path / "in"
    rng = np.random.default_rng(0)
    write_tiff(images / "good.tif", rng.random((40, 48)).astype(np.float32))
    write_tiff(images / "cut.tif", rng.random((400, 480)).astype(np.float32))
    data = (images / "cut.tif").read_bytes()
    (images / "cut.tif").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    result = CliRunner().invoke(predict_cli.main, [str(identity_model()), str(images), "--out", str(out)])
    assert result.exit_code == 1
    assert (
        f"1 of 2 input(s) failed; the other 1 were written:\n  {images / 'cut.tif'}: cannot read"
        in result.output
    )
    assert "Check that the file is complete" in result.output
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["good.tif"]


def test_an_empty_folder_says_which_images_it_looked_for(identity_model, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = [str(identity_model()), str(tmp_path / "empty"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 1
    assert f"{tmp_path / 'empty'}: no images (.tif, .tiff" in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_images_without_ground_truth_fail_before_anything_is_predicted(
    identity_model, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        write_tiff(tmp_path / "in" / f"{name}.tif", rng.random((32, 32)).astype(np.float32))
    write_tiff(tmp_path / "gt" / "a.tif", np.zeros((32, 32), np.uint8))
    write_tiff(tmp_path / "gt" / "c.tif", np.zeros((32, 32), np.uint8))
    out = tmp_path / "out"
    args = [str(identity_model()), str(tmp_path / "in"), "--out", str(out), "--gt", str(tmp_path / "gt")]
    result = CliRunner().invoke(predict_cli.main, args)
    assert result.exit_code == 1
    assert "b.tif" in result.output and "ground truth" in result.output
    assert not (out / "a.tif").exists()  # found before the first prediction


@pytest.mark.parametrize(
    ("csv", "says"),
    [
        ("filename,groundtruth\nx.tif,a\ny.tif\n", "groundtruth.csv, row 3: the class is empty."),
        ("x.tif;a\ny.tif;b\n", "groundtruth.csv: the header must be filename,groundtruth; found 'x.tif;a'"),
        ("", "groundtruth.csv: the file is empty; it needs a header row filename,groundtruth."),
    ],
)
def test_broken_groundtruth_csv_files_name_the_row_or_the_header(tmp_path: Path, csv: str, says: str) -> None:
    results = "filename,prediction,probability_a,probability_b\nx.tif,a,0.9,0.1\ny.tif,b,0.2,0.8\n"
    (tmp_path / "results.csv").write_text(results)
    (tmp_path / "groundtruth.csv").write_text(csv)
    args = [str(tmp_path), str(tmp_path / "groundtruth.csv"), "--task", "classification"]
    result = CliRunner().invoke(evaluate_cli.main, [*args, "--out", str(tmp_path / "ev")])
    assert result.exit_code == 1
    assert f"{tmp_path / says}" in result.output
    assert not (tmp_path / "ev" / "summary.json").exists()


def test_sigkill_during_a_large_write_leaves_no_final_file_and_the_next_run_cleans_up(
    identity_model, tmp_path: Path
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    image = np.random.default_rng(0).random((6000, 6000), np.float32)
    np.save(inputs / "big.npy", image)  # 144 MB, predicted out of core
    model = identity_model()
    args = [str(model), str(inputs), "--out", str(out), "--tile-size", "256", "--quiet"]
    process = subprocess.Popen([*PREDICT, *args], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list(out.glob(".*.part")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert list(out.glob(".*.part")) and not (out / "big.tif").exists()  # only the hidden temporary file
    done = subprocess.run([*PREDICT, *args[:-1]], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "removed 1 unfinished file(s) of an interrupted run" in done.stderr
    leftovers = [p for p in out.glob(".*") if p.name != RECORD_NAME]  # the record of what idl wrote stays
    assert not leftovers and read_image(out / "big.tif").shape == (6000, 6000)
