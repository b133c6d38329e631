"""Packages with only PyTorch weights get ONNX weights (``idl-export --to-onnx``), checked against the
source weights, and then run in idl-predict like any other package."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from idl.cli import export as export_cli
from idl.cli import predict as predict_cli
from idl.export.convert import convert_to_onnx
from idl.infer.core.errors import ExportError, ModelError
from idl.infer.core.normalize import normalize
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model

# the tests of the session's fresh package share a worker, so it is exported once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fresh_package")]


def only(package: Path, keep: str, out: Path) -> Path:
    """``package`` with the ``keep`` weights alone: no ONNX weights, no Monte Carlo graph, no
    TorchScript (or no state dict), as a package made elsewhere may come."""
    folder = out.with_suffix("")
    zipfile.ZipFile(package).extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    entry = {k: v for k, v in rdf["weights"][keep].items() if k != "parent"}
    for fmt, weights in rdf["weights"].items():
        if fmt != keep:
            (folder / weights["source"]).unlink()
    rdf["weights"] = {keep: entry}
    for attachment in rdf.pop("attachments", []):
        (folder / attachment["source"]).unlink()
    rdf["config"]["idl"].pop("mc_dropout")
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with zipfile.ZipFile(out, "w") as archive:
        for file in sorted(folder.iterdir()):
            archive.write(file, file.name)
    return out


def _run(command, args: list[str]):
    return CliRunner().invoke(command.main, args, catch_exceptions=False)


def _torch_probabilities(package: Path, image: np.ndarray, load_without_idl, tmp_path: Path) -> np.ndarray:
    """The package's network in torch (its own architecture file and state dict, idl not imported) on
    the normalized image, sigmoid applied."""
    archive = zipfile.ZipFile(package)
    rdf = yaml.safe_load(archive.read("rdf.yaml"))
    weights = rdf["weights"]["pytorch_state_dict"]
    architecture = weights["architecture"]
    module = load_without_idl(
        archive.read(architecture["source"]).decode(), tmp_path / architecture["source"]
    )
    net = getattr(module, architecture["callable"])(**architecture["kwargs"])
    net.load_state_dict(torch.load(io.BytesIO(archive.read(weights["source"])), weights_only=True))
    x = normalize(image, load_model(package).info.normalization)
    with torch.no_grad():
        logits = net.eval()(torch.from_numpy(np.moveaxis(x, -1, 0)[None].copy()))
    return torch.sigmoid(logits)[0].numpy()


def test_a_state_dict_package_is_converted_and_predicts_like_torch(
    fresh_package, load_without_idl, tmp_path: Path
) -> None:
    source = only(fresh_package.path, "pytorch_state_dict", tmp_path / "state.bioimageio.zip")
    with pytest.raises(ModelError, match=r"no ONNX weights .*idl-export --to-onnx PACKAGE --out DIR"):
        load_model(source)
    converting = _run(export_cli, ["--to-onnx", str(source), "--out", str(tmp_path / "converted")])
    assert converting.exit_code == 0, converting.output
    assert "pytorch_state_dict -> onnx with" in converting.output
    assert "passed bioimageio.core test_model" in converting.output
    (converted,) = (tmp_path / "converted").glob("*.bioimageio.zip")
    rdf = yaml.safe_load(zipfile.ZipFile(converted).read("rdf.yaml"))
    assert set(rdf["weights"]) == {"onnx", "pytorch_state_dict"}
    assert rdf["weights"]["onnx"]["parent"] == "pytorch_state_dict"
    assert "external_data" not in rdf["weights"]["onnx"]  # one file, as idl-predict reads it

    image = synthetic_nuclei(np.random.default_rng(5), NucleiSpec(size=120))[0][:96, :, None]  # 96 x 120
    write_tiff(tmp_path / "cells.tif", image[..., 0])
    out = tmp_path / "predicted"
    args = [str(converted), str(tmp_path / "cells.tif"), "--out", str(out), "--save-probabilities", "--quiet"]
    result = _run(predict_cli, args)
    assert result.exit_code == 0, result.output
    predicted = read_image(out / "probabilities" / "cells.tif")
    expected = _torch_probabilities(converted, image, load_without_idl, tmp_path)
    assert predicted.shape == expected.shape == (1, 96, 120)
    difference = float(np.abs(predicted - expected).max())
    assert difference <= 1e-4, difference
    print(f"{converting.output.strip()}\nidl-predict of the converted package vs torch: {difference:.2g}")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_a_torchscript_package_is_converted_with_a_free_batch(fresh_package, tmp_path: Path) -> None:
    """bioimageio.core's converter fixes a TorchScript program's batch at the test input's (1): the check
    on a batch of two catches it, and idl's export (batch and sizes free) is used instead."""
    source = only(fresh_package.path, "torchscript", tmp_path / "traced.bioimageio.zip")
    conversion = convert_to_onnx(source, tmp_path / "converted")
    assert conversion.source_format == "torchscript"
    assert conversion.test_input_diff <= 1e-4 and conversion.other_size_diff <= 1e-4
    if conversion.method == "idl":  # bioimageio.core 0.11 with torch 2.14
        assert "Got: 2 Expected: 1" in " ".join(conversion.notes)
    model = load_model(conversion.path)
    x = np.random.default_rng(0).random((2, 1, 64, 96)).astype(np.float32)
    traced = torch.jit.load(io.BytesIO(zipfile.ZipFile(source).read("weights_torchscript.pt")))
    with torch.no_grad():
        assert np.abs(model.runner(x) - traced(torch.from_numpy(x)).numpy()).max() <= 1e-4


def test_a_conversion_beyond_the_tolerance_is_refused_with_the_figure(fresh_package, tmp_path: Path) -> None:
    source = only(fresh_package.path, "pytorch_state_dict", tmp_path / "state.bioimageio.zip")
    out = tmp_path / "converted"
    with pytest.raises(
        ExportError, match=r"differ from the source weights by [0-9.e-]+ on the package's test input"
    ):
        convert_to_onnx(source, out, method="idl", tolerance=1e-12)
    assert not list(out.glob("*.zip")) and not list(out.glob(".convert-*"))


def test_what_cannot_be_converted_is_named(fresh_package, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="already has ONNX weights"):
        convert_to_onnx(fresh_package.path, tmp_path)
    result = _run(export_cli, ["--out", str(tmp_path)])
    assert result.exit_code != 0 and "give either a CHECKPOINT or --to-onnx PACKAGE" in result.output
