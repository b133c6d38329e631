"""Monte Carlo prediction that a user can repeat: the same idl-predict command with --mc-samples
writes the same files, bit for bit; another --seed draws other samples; the mask is the
deterministic prediction's unless --mc-answer mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from click.testing import CliRunner

from idl.cli.predict import main as predict_main
from idl.export.onnx import export_onnx
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.io.formats.tiff import write_tiff
from tests.export.conftest import fresh_unet


def _predict(model: Path, images: Path, out: Path, *args: str) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(predict_main, [str(model), str(images), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return {str(p.relative_to(out)): tifffile.imread(p) for p in sorted(out.rglob("*.tif"))}


def test_the_same_command_writes_the_same_files(tmp_path: Path) -> None:
    net, info = fresh_unet(3)
    export_onnx(net, info, tmp_path / "model")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_tiff(tmp_path / "in" / f"n{i}.tif", synthetic_nuclei(rng, NucleiSpec(size=150))[0])
    args = ("--mc-samples", "10", "--tile-size", "96")
    first = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "a", *args)
    again = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "b", *args)
    assert sorted(first) == ["n0.tif", "n1.tif", "uncertainty/n0.tif", "uncertainty/n1.tif"]
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    other = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "c", *args, "--seed", "1")
    assert np.abs(other["uncertainty/n0.tif"] - first["uncertainty/n0.tif"]).max() > 1e-4
    # one image alone gets the samples it got among others (each image starts from the seed)
    alone = _predict(tmp_path / "model", tmp_path / "in" / "n1.tif", tmp_path / "d", *args)
    np.testing.assert_array_equal(alone["uncertainty/n1.tif"], first["uncertainty/n1.tif"])
    plain = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "e", "--tile-size", "96")
    np.testing.assert_array_equal(plain["n0.tif"], first["n0.tif"])  # the deterministic answer
    mean = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "f", *args, "--mc-answer", "mean")
    np.testing.assert_array_equal(mean["uncertainty/n0.tif"], first["uncertainty/n0.tif"])
