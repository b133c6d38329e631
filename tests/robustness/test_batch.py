"""Batch runs keep going: every readable input is predicted, every bad one is reported at the end with
its reason and a non-zero exit code, nothing partial is left under a final name; a re-run skips what
is finished unless --overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from idl.cli import predict as predict_cli
from idl.infer.io.images import write_tiff


def _inputs(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    write_tiff(folder / "a.tif", rng.random((40, 48)).astype(np.float32))
    (folder / "b.tif").write_bytes(b"II*\x00" + rng.bytes(300))  # a TIFF header, then noise
    write_tiff(folder / "c.tif", rng.random((40, 48)).astype(np.float32))
    write_tiff(folder / "d.tif", rng.random((2, 40, 48)).astype(np.float32))  # two different channels
    return folder


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(predict_cli.main, list(args))
    return result.exit_code, result.output


def test_bad_inputs_are_reported_at_the_end_and_the_rest_is_predicted(identity_model, tmp_path: Path) -> None:
    model, images, out = identity_model(), _inputs(tmp_path / "in"), tmp_path / "out"
    code, output = _run(str(model), str(images), "--out", str(out), "--quiet")
    assert code == 1
    assert "2 of 4 input(s) failed; the other 2 were written:" in output
    assert f"{images / 'b.tif'}: " in output and f"{images / 'd.tif'}: " in output
    assert "has 2 channel(s)" in output  # d.tif's reason
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a.tif", "c.tif"]
    assert not list(tmp_path.rglob("*.part*"))


def test_a_rerun_skips_finished_images_unless_overwrite(identity_model, tmp_path: Path) -> None:
    model, images, out = identity_model(), _inputs(tmp_path / "in"), tmp_path / "out"
    for bad in ("b.tif", "d.tif"):
        (images / bad).unlink()
    assert _run(str(model), str(images), "--out", str(out), "--quiet")[0] == 0
    old = out / "a.tif"
    os.utime(old, (1_000_000_000, 1_000_000_000))
    code, output = _run(str(model), str(images), "--out", str(out))
    assert (
        code == 0
        and "a.tif: already predicted" in output
        and "skipped; pass --overwrite to predict it again" in output
    )
    assert old.stat().st_mtime == 1_000_000_000
    assert _run(str(model), str(images), "--out", str(out), "--overwrite", "--quiet")[0] == 0
    assert old.stat().st_mtime > 1_000_000_000


def test_a_classifier_batch_keeps_going_and_a_rerun_keeps_its_results(
    mean_classifier, tmp_path: Path
) -> None:
    model = mean_classifier
    images, out = _inputs(tmp_path / "in"), tmp_path / "out"
    code, output = _run(str(model), str(images), "--out", str(out), "--quiet")
    assert code == 1 and "2 of 4 input(s) failed; the other 2 were written:" in output
    table = (out / "results.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in table[1:]] == ["a.tif", "c.tif"]
    for bad in ("b.tif", "d.tif"):
        (images / bad).unlink()
    os.utime(out / "results.csv", (1_000_000_000, 1_000_000_000))
    code, output = _run(str(model), str(images), "--out", str(out))
    assert code == 0 and "lists every image already; skipped" in output
    assert (out / "results.csv").stat().st_mtime == 1_000_000_000


def test_what_the_shards_cannot_share_is_refused_before_any_work(
    identity_model, mean_classifier: Path, tmp_path: Path
) -> None:
    """A classifier's one results.csv, evaluation of a part, an instance model's volume by blocks and
    --dask for a batch of files are refused naming what to do instead; nothing is written."""
    images = _inputs(tmp_path / "in")
    for bad in ("b.tif", "d.tif"):
        (images / bad).unlink()
    code, output = _run(str(mean_classifier), str(images), "--out", str(tmp_path / "c"), "--shard", "1/2")
    assert (
        code == 1 and "--shard: this model writes one results.csv for all images, which the shards" in output
    )
    code, output = _run(
        str(identity_model()),
        str(images),
        "--out",
        str(tmp_path / "g"),
        "--shard",
        "1/2",
        "--gt",
        str(images),
    )
    assert code != 0 and "--gt with --shard: a shard sees only its part" in output
    code, output = _run(
        str(identity_model("instance", "stardist")),
        str(images / "a.tif"),
        "--out",
        str(tmp_path / "i"),
        "--out-format",
        "zarr",
        "--shard",
        "1/2",
    )
    assert code == 1
    assert (
        "cannot predict a volume block by block (instance labels are made from the whole map of the "
        "network's outputs)" in output
    )
    code, output = _run(str(identity_model()), str(images), "--out", str(tmp_path / "d"), "--dask", "local:1")
    assert (
        code == 1
        and "--dask predicts one volume into OME-Zarr: give one image and --out-format zarr." in output
    )
    assert not [p for p in tmp_path.iterdir() if p.name in ("c", "g", "i", "d") and any(p.glob("*.*"))]
