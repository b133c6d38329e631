"""Packages and model files as users hand them to idl-predict: a package zipped with its folder (read
from that folder), a deeply nested or package-less zip (a short message), a zip holding a member twice
(refused), ``--test`` on a package without test tensors, and idl's Monte Carlo graph given as the model
(refused, unlike a graph of one's own that is merely named ``x_mc.onnx``). Packages are built with
onnx.helper and bioimageio.spec, without torch."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from onnx import TensorProto, helper

from idl.cli import predict as predict_cli
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model

from .conftest import write_identity_model

bio = pytest.importorskip("bioimageio.spec.model.v0_5")


def _predict(*args: object) -> Result:
    return CliRunner().invoke(predict_cli.main, [str(a) for a in args])


def _negative_onnx(path: Path) -> None:
    """A network that returns minus its ``(batch, channel, y, x)`` input."""
    x = helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", 1, "y", "x"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Neg", ["raw"], ["out"])], "negative", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)


def _package_folder(tmp_path: Path, test_tensors: bool = True) -> Path:
    """A spec-0.5 package folder (``rdf.yaml``, ``weights.onnx``, README, test tensors unless told
    not to) of the negative network; sizes 8 + k*8, no processing."""
    from bioimageio.spec import ValidationContext, save_bioimageio_package_as_folder

    source = tmp_path / "source"
    source.mkdir()
    _negative_onnx(source / "weights.onnx")
    (source / "README.md").write_text("# negative\n")
    test_in = np.arange(16 * 24, dtype=np.float32).reshape(1, 1, 16, 24)
    np.save(source / "test_in.npy", test_in)
    np.save(source / "test_out.npy", -test_in)

    def test(name: str) -> object:
        return bio.FileDescr(source=source / name) if test_tensors else None

    def axes(space: list) -> list:
        return [bio.BatchAxis(), bio.ChannelAxis(channel_names=[bio.Identifier("c")]), *space]

    raw = bio.TensorId("raw")
    with ValidationContext(perform_io_checks=False):
        descr = bio.ModelDescr(
            name="negative",
            description="minus the input",
            authors=[bio.Author(name="Someone Else")],
            cite=[bio.CiteEntry(text="none", url="https://example.org")],
            license="MIT",
            documentation=bio.FileDescr(source=source / "README.md"),
            inputs=[
                bio.InputTensorDescr(
                    id=raw,
                    axes=axes(
                        [
                            bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=8, step=8))
                            for a in "yx"
                        ]
                    ),
                    test_tensor=test("test_in.npy"),
                )
            ],
            outputs=[
                bio.OutputTensorDescr(
                    id=bio.TensorId("out"),
                    axes=axes(
                        [
                            bio.SpaceOutputAxis(
                                id=bio.AxisId(a), size=bio.SizeReference(tensor_id=raw, axis_id=bio.AxisId(a))
                            )
                            for a in "yx"
                        ]
                    ),
                    test_tensor=test("test_out.npy"),
                )
            ],
            weights=bio.WeightsDescr(
                onnx=bio.OnnxWeightsDescr(source=source / "weights.onnx", opset_version=17)
            ),
        )
    return save_bioimageio_package_as_folder(descr, output_path=tmp_path / "package")


def _zip(path: Path, members: list[tuple[str, bytes]]) -> Path:
    """A zip of ``(name, data)`` members in this order; names may repeat."""
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        warnings.simplefilter("ignore")  # zipfile's "Duplicate name" warning
        for name, data in members:
            archive.writestr(name, data)
    return path


def _files(folder: Path, prefix: str = "") -> list[tuple[str, bytes]]:
    return [(prefix + p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


# 12b: a package zipped with its folder


@pytest.mark.parametrize("clutter", [False, True], ids=["folder", "folder-and-macos-clutter"])
def test_a_package_zipped_with_its_folder_runs_from_that_folder(tmp_path: Path, clutter: bool) -> None:
    folder = _package_folder(tmp_path)
    members = [("p0/", b""), *_files(folder, "p0/")]
    if clutter:  # what macOS's 'Compress' adds
        members += [("__MACOSX/p0/._rdf.yaml", b"\x00\x05\x16\x07")]
    package = _zip(tmp_path / "p0.zip", members)
    tested = _predict(package, "--test")
    assert tested.exit_code == 0, tested.output
    assert (
        f"{package}: the package's files lie in the folder p0/ of the archive; read from there (other "
        "bioimage.io tools need a zip of the files themselves, not of their folder)" in tested.output
    )
    assert "test output 'out' (1, 1, 16, 24): max abs diff 0 (tolerance 0.0001): passed" in tested.output
    image = np.random.default_rng(0).random((16, 40)).astype(np.float32)
    write_tiff(tmp_path / "in" / "cells.tif", image)
    done = _predict(package, tmp_path / "in", "--out", tmp_path / "out")
    assert done.exit_code == 0, done.output
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "cells.tif"), -image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out", "p0.zip", "package", "source"]


def test_a_deeply_nested_package_gets_a_short_message(tmp_path: Path) -> None:
    folder = _package_folder(tmp_path)
    junk = [(f"a/b/c/junk/file_{i:04d}.txt", b"x") for i in range(300)]
    package = _zip(tmp_path / "deep.zip", [*_files(folder, "a/b/c/"), *junk])
    result = _predict(package, "--info")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {package}: no rdf.yaml at the top of this zip archive (305 member(s): a/b/c/README.md, "
        "a/b/c/junk/file_0000.txt, a/b/c/junk/file_0001.txt and 302 more). Its description lies at "
        "a/b/c/rdf.yaml: zip the package's files, not the folder that holds them.\n"
    )


def test_a_zip_of_two_folders_is_not_searched(tmp_path: Path) -> None:
    folder = _package_folder(tmp_path)
    package = _zip(tmp_path / "two.zip", [*_files(folder, "p0/"), ("notes/todo.txt", b"x")])
    result = _predict(package, "--info")
    assert result.exit_code == 1
    assert "no rdf.yaml at the top of this zip archive (6 member(s): notes/todo.txt, p0/README.md" in (
        result.output
    )
    assert "Its description lies at p0/rdf.yaml: zip the package's files, not the folder" in result.output


def test_a_zip_without_a_description_is_not_a_package(tmp_path: Path) -> None:
    package = _zip(tmp_path / "images.zip", [(f"img_{i}.tif", b"II*\x00") for i in range(5)])
    result = _predict(package, "--info")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {package}: no rdf.yaml at the top of this zip archive (5 member(s): img_0.tif, img_1.tif, "
        "img_2.tif and 2 more). It is not a bioimage.io package (on bioimage.io: 'Download' -> zip).\n"
    )


def test_long_validation_errors_are_cut_per_line(tmp_path: Path) -> None:
    """bioimageio.spec answers an unknown license with every license it knows, in one line of about
    10 kB: each line of the message is cut at 300 characters."""
    folder = _package_folder(tmp_path)
    rdf = folder / "rdf.yaml"
    rdf.write_text(rdf.read_text().replace("license: MIT", "license: Not-A-License"))
    result = _predict(folder, "--info")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[:2] == [
        f"Error: {folder}: not a valid bioimage.io model package:",
        "Invalid model description:",
    ]
    assert lines[2].startswith("license") and "Input should be '0BSD'" in lines[2]
    assert lines[2].endswith(" ...") and max(len(line) for line in lines) == 304
    assert len(result.output) < 1500


# 12k: duplicate members


@pytest.mark.parametrize("twice", ["rdf.yaml", "weights.onnx"])
def test_a_zip_holding_a_member_twice_is_refused(tmp_path: Path, twice: str) -> None:
    members = _files(_package_folder(tmp_path))
    original = dict(members)[twice]
    package = _zip(tmp_path / "twice.zip", [*members, (twice, original + b"\n# another\n")])
    result = _predict(package, "--info")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {package}: the zip archive holds several members of the same name ({twice}); which of "
        "them a tool reads is undefined, so the package is refused. Zip the package's files again, each "
        "once.\n"
    )


def test_every_duplicate_is_named_briefly(tmp_path: Path) -> None:
    members = _files(_package_folder(tmp_path))
    package = _zip(tmp_path / "all_twice.zip", members + members)
    result = _predict(package, "--info")
    assert result.exit_code == 1
    assert "several members of the same name (README.md, rdf.yaml, test_in.npy and 2 more)" in result.output


# 12c: --test without test tensors


def test_test_on_a_package_without_test_tensors_says_so(tmp_path: Path) -> None:
    folder = _package_folder(tmp_path, test_tensors=False)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "rdf.yaml", "weights.onnx"]
    result = _predict(folder, "--test")
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: {folder}: the package declares no test tensor for input 'raw' and output 'out', so "
        "--test has nothing to check: it runs the model on the test input its authors stored and "
        "compares the result with their test output. Check the model on your own images instead "
        f"(idl-predict {folder} IMAGES --out DIR), or ask its authors for a package with test tensors.\n"
    )
    assert "NoneType" not in result.output
    image = np.full((8, 16), 3.0, np.float32)  # the package itself still predicts
    write_tiff(tmp_path / "in" / "flat.tif", image)
    assert _predict(folder, tmp_path / "in", "--out", tmp_path / "out").exit_code == 0
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "flat.tif"), -image)


# 12d: the Monte Carlo graph given as MODEL


def _write_graph(path: Path, info: ModelInfo, sample_input: bool) -> Path:
    """An idl graph carrying ``info`` that passes its input through; with ``sample_input`` it also
    takes idl's Monte Carlo sample count (``samples``) as a second input."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])]
    if sample_input:
        inputs.append(helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["s"]))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "graph", inputs, [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, path)
    return path


def _semantic() -> ModelInfo:
    return ModelInfo(task="semantic", in_channels=1, num_classes=2, size_multiple=1, halo=0)


def _image(tmp_path: Path) -> Path:
    write_tiff(tmp_path / "in" / "cells.tif", np.random.default_rng(1).random((24, 32)).astype(np.float32))
    return tmp_path / "in"


@pytest.mark.parametrize("mc_samples", [[], ["--mc-samples", "4"]], ids=["plain", "mc-samples"])
def test_the_monte_carlo_graph_beside_its_model_is_refused(tmp_path: Path, mc_samples: list[str]) -> None:
    folder = write_identity_model(tmp_path / "model")
    info = ModelInfo.from_json(onnx.load(folder / "model.onnx").metadata_props[0].value)
    mc = _write_graph(folder / "model_mc.onnx", info, sample_input=True)
    result = _predict(mc, _image(tmp_path), "--out", tmp_path / "out", *mc_samples)
    assert result.exit_code == 1
    assert result.output.endswith(
        f"Error: {mc}: this is the Monte Carlo dropout graph of an idl model, not a model of its own: pass "
        f"{folder / 'model.onnx'} or the folder {folder}. idl-predict finds the Monte Carlo graph beside "
        "it; add --mc-samples N for uncertainty maps.\n"
    )
    assert "model_mc_mc.onnx" not in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert load_model(folder).has_mc  # the folder, as advised, has both graphs
    assert _predict(folder / "model.onnx", tmp_path / "in", "--out", tmp_path / "ok").exit_code == 0


def test_a_monte_carlo_graph_copied_alone_is_recognised_by_its_sample_input(tmp_path: Path) -> None:
    (tmp_path / "copied").mkdir()
    mc = _write_graph(tmp_path / "copied" / "unet_mc.onnx", _semantic(), sample_input=True)
    result = _predict(mc, _image(tmp_path), "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert (
        f"{mc}: this is the Monte Carlo dropout graph of an idl model, not a model of its own: pass the "
        "deterministic graph exported with it (model.onnx) or the model folder." in result.output
    )


def test_a_classifier_style_twin_is_recognised_by_its_deterministic_neighbour(tmp_path: Path) -> None:
    """Monte Carlo graphs without a sample input (classifiers) carry the metadata of the graph beside
    them."""
    _write_graph(tmp_path / "net.onnx", _semantic(), sample_input=False)
    mc = _write_graph(tmp_path / "net_mc.onnx", _semantic(), sample_input=False)
    result = _predict(mc, _image(tmp_path), "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert f"not a model of its own: pass {tmp_path / 'net.onnx'} or the folder {tmp_path}." in result.output


@pytest.mark.parametrize("neighbour", [None, "regression"], ids=["alone", "beside-another-model"])
def test_a_deterministic_graph_named_like_a_twin_still_runs(tmp_path: Path, neighbour: str | None) -> None:
    """A graph of one's own called ``x_mc.onnx`` (one input, no twin with its metadata beside it) is a
    model like any other."""
    own = _write_graph(tmp_path / "cells_mc.onnx", _semantic(), sample_input=False)
    if neighbour is not None:
        other = ModelInfo(task=neighbour, in_channels=1, num_classes=1, size_multiple=1, halo=0)
        _write_graph(tmp_path / "cells.onnx", other, sample_input=False)
    images = _image(tmp_path)
    result = _predict(own, images, "--out", tmp_path / "out", "--save-probabilities")
    assert result.exit_code == 0, result.output
    assert "cells.tif -> cells.tif (threshold" in result.output
    probabilities = read_image(tmp_path / "out" / "probabilities" / "cells.tif")
    image = read_image(images / "cells.tif")
    # the graph passes its normalized input through: the probabilities follow the image's order
    assert probabilities.shape == (1, 24, 32)
    assert np.corrcoef(probabilities.ravel(), image.ravel())[0, 1] > 0.99
    mask = read_image(tmp_path / "out" / "cells.tif")
    assert mask.shape == (24, 32) and set(np.unique(mask)) == {0, 1}
