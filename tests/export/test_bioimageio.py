"""bioimage.io packages of trained models: validation, contents, and equality with the model folder."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from idl.export.bioimageio import (
    PackageRequest,
    _check_test_output,
    compare_weight_formats,
    export_package,
    validate_package,
)
from idl.export.onnx import ExportError
from idl.infer.core.grid import smallest_tile
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import PredictOptions, predict_image

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_bioimageio")


@pytest.fixture(scope="module")
def package(model_dir: Path) -> Path:
    found = sorted(model_dir.glob("*.bioimageio.zip"))
    assert len(found) == 1, found
    return found[0]


def test_exported_package_passes_bioimageio_core_test_model(package: Path) -> None:
    validation = validate_package(package)
    assert validation.status == "passed"
    tested = {d.name for d in validation.summary.details}
    for fmt in ("onnx", "pytorch_state_dict", "torchscript"):
        assert f"Reproduce test outputs from test inputs ({fmt})" in tested
        assert f"Run {fmt} inference for inputs with batch_size: 2 and size parameter n: 2" in tested
    assert set(validation.differences) == {"pytorch_state_dict", "torchscript"}
    assert max(validation.differences.values()) <= 1e-4, validation.figures()


def test_onnx_alone_at_every_size_still_checks_the_pytorch_weights(package: Path, tmp_path: Path) -> None:
    """3D packages run only ONNX at every tile size; their PyTorch weights must still reproduce the
    test output, and weights that do not are refused."""
    import torch

    validation = validate_package(package, ("onnx",))
    tested = {d.name for d in validation.summary.details}
    assert any("onnx" in n for n in tested) and not any("pytorch_state_dict" in n for n in tested)
    folder = tmp_path / "package"
    zipfile.ZipFile(package).extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    weights = folder / rdf["weights"]["pytorch_state_dict"]["source"]
    state = torch.load(weights, weights_only=True)
    head = next(k for k in state if k.startswith("head.") and k.endswith("bias"))
    state[head] = state[head] + 3.0  # every output pixel moves
    torch.save(state, weights)
    rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    with pytest.raises(ExportError, match="pytorch_state_dict weights do not reproduce the test output"):
        _check_test_output(folder / "rdf.yaml", "pytorch_state_dict")


def test_weights_further_than_1e_4_from_onnx_are_refused(package: Path, tmp_path: Path) -> None:
    """A state dict 1e-3 off still reproduces the test output within bioimage.io's default tolerance
    (1e-3), but not the ONNX weights within 1e-4: refused, with the figure."""
    import torch

    folder = tmp_path / "package"
    zipfile.ZipFile(package).extractall(folder)
    rdf = yaml.safe_load((folder / "rdf.yaml").read_text())
    weights = folder / rdf["weights"]["pytorch_state_dict"]["source"]
    state = torch.load(weights, weights_only=True)
    head = next(k for k in state if k.startswith("head.") and k.endswith("bias"))
    state[head] = state[head] + 1e-3
    torch.save(state, weights)
    rdf["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf))
    _check_test_output(folder / "rdf.yaml", "pytorch_state_dict")  # within the package's tolerance
    assert compare_weight_formats(folder / "rdf.yaml", ("onnx", "torchscript"))["torchscript"] <= 1e-4
    with pytest.raises(
        ExportError, match=r"pytorch_state_dict weights differ from the ONNX weights by up to 0\.001"
    ):
        compare_weight_formats(folder / "rdf.yaml", ("onnx", "pytorch_state_dict", "torchscript"))


def test_package_describes_the_network(package: Path, model_dir: Path) -> None:
    rdf = yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))
    info = load_model(model_dir).info
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    y = inp["axes"][2]
    assert y["size"] == {"min": smallest_tile(info.halo, info.size_multiple), "step": info.size_multiple}
    assert [a.get("halo") for a in out["axes"][2:]] == [info.halo, info.halo]
    assert [p["id"] for p in inp["preprocessing"]][-2:] == ["scale_range", "ensure_dtype"]
    scale = inp["preprocessing"][-2]["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"], scale["axes"]) == (1.0, 99.8, ["y", "x"])
    assert inp["data"]["type"] == "uint16"  # the raw dtype of the synthetic images
    assert [p["id"] for p in out["postprocessing"]][0] == "sigmoid"
    assert set(rdf["weights"]) == {"onnx", "pytorch_state_dict", "torchscript"}
    assert rdf["weights"]["onnx"]["parent"] == rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    assert "parent" not in rdf["weights"]["pytorch_state_dict"]  # the original weights
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert (arch["callable"], arch["source"], arch["kwargs"]["depth"]) == ("build_unet2d", "unet.py", 3)
    assert "import_from" not in arch
    environment = rdf["weights"]["pytorch_state_dict"]["dependencies"]["source"]
    environment = zipfile.ZipFile(package).read(environment).decode()
    assert "idl" not in environment.replace("idl-model", "") and "  - pytorch>=" in environment
    assert "torchvision" not in environment  # the U-Net needs torch alone
    assert "torchscript" in rdf["tags"]
    mc = rdf["config"]["idl"]["mc_dropout"]
    assert mc == {"file": "model_mc.onnx", "p": 0.2, "n_samples": 4}
    assert "model_mc.onnx" in zipfile.ZipFile(package).namelist()
    assert {c["doi"] for c in rdf["cite"]} == {"10.1186/s12859-021-04037-3", "10.1007/978-3-319-24574-4_28"}
    assert rdf.get("authors", []) == []  # none named: no guess from the login name
    readme = zipfile.ZipFile(package).read("README.md").decode()
    assert "## Validation" in readme and "| jaccard |" in readme and "training images: " in readme
    assert "every weight format (onnx, pytorch_state_dict, torchscript) reproduces the test output" in readme
    assert "`weights_torchscript.pt` (TorchScript; deepImageJ, Fiji, QuPath, ilastik)" in readme


def test_package_predicts_like_the_model_folder(package: Path, model_dir: Path) -> None:
    image = synthetic_nuclei(np.random.default_rng(21), NucleiSpec(size=150))[0][..., None]
    options = PredictOptions(tile_size=128, progress=False)
    from_package = predict_image(load_model(package), image, options)
    from_folder = predict_image(load_model(model_dir), image, options)
    assert np.abs(from_package.probabilities - from_folder.probabilities).max() <= 1e-6
    np.testing.assert_array_equal(from_package.mask, from_folder.mask)
    assert load_model(package).has_mc
    mc = predict_image(
        load_model(package), image, PredictOptions(tile_size=128, mc_samples=3, progress=False)
    )
    assert mc.uncertainty is not None and mc.uncertainty.max() > 0


def test_package_equals_model_folder_on_images_below_its_minimum_size(package: Path, model_dir: Path) -> None:
    """The package declares a minimum of 104 px (room for the halo); idl still runs it like the folder."""
    image = synthetic_nuclei(np.random.default_rng(23), NucleiSpec(size=40, objects=(2, 3)))[0][..., None]
    options = PredictOptions(progress=False)
    from_package = predict_image(load_model(package), image, options).probabilities
    from_folder = predict_image(load_model(model_dir), image, options).probabilities
    assert from_package.shape == (1, 40, 40)
    np.testing.assert_array_equal(from_package, from_folder)


def test_package_that_fails_validation_is_not_written(model_dir: Path, tmp_path: Path) -> None:
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    other, _ = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    for p in other.parameters():  # the state dict no longer matches the ONNX graph
        p.data.mul_(-1.0)
    sample = synthetic_nuclei(np.random.default_rng(2), NucleiSpec(size=96))[0][..., None]
    out = tmp_path / "bad.bioimageio.zip"
    with pytest.raises(ExportError, match="failed validation") as excinfo:
        export_package(other, info, model_dir / "model.onnx", None, PackageRequest(sample=sample), out)
    assert "pytorch_state_dict" in str(excinfo.value)
    assert not out.exists() and not list(tmp_path.glob(".package-*"))


def test_unpacked_package_loads_from_folder_and_rdf(package: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(package).extractall(tmp_path / "unpacked")
    image = synthetic_nuclei(np.random.default_rng(22), NucleiSpec(size=120))[0][..., None]
    options = PredictOptions(tile_size=256, progress=False)
    expected = predict_image(load_model(package), image, options).probabilities
    for source in (tmp_path / "unpacked", tmp_path / "unpacked" / "rdf.yaml"):
        model = load_model(source)
        assert model.has_mc and model.info is not None
        np.testing.assert_array_equal(predict_image(model, image, options).probabilities, expected)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_package_architecture_file_rebuilds_the_trained_network(
    package: Path, model_dir: Path, load_without_idl, tmp_path: Path
) -> None:
    """The package's own architecture file (imported where idl cannot be) and state dict give the
    trained network's output exactly."""
    import io

    import torch

    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    archive = zipfile.ZipFile(package)
    rdf = yaml.safe_load(archive.read("rdf.yaml"))
    weights = rdf["weights"]["pytorch_state_dict"]
    architecture = weights["architecture"]
    source = archive.read(architecture["source"]).decode()
    module = load_without_idl(source, tmp_path / architecture["source"])
    rebuilt = getattr(module, architecture["callable"])(**architecture["kwargs"])
    rebuilt.load_state_dict(torch.load(io.BytesIO(archive.read(weights["source"])), weights_only=True))
    net, _ = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    x = torch.rand(2, 1, 64, 80)
    with torch.no_grad():
        assert torch.equal(net.eval()(x), rebuilt.eval()(x))
        traced = torch.jit.load(io.BytesIO(archive.read(rdf["weights"]["torchscript"]["source"])))
        assert float((traced(x) - net.forward_aligned(x)).abs().max()) <= 1e-5
