"""Packages made by someone else: built here with onnx and bioimageio.spec, run by idl-predict and
compared with bioimageio.core's own prediction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_package")

bio = pytest.importorskip("bioimageio.spec.model.v0_5")


def _conv(name: str, x: str, cin: int, cout: int, dims: int, rng: np.random.Generator) -> tuple[list, list]:
    w = (rng.standard_normal((cout, cin) + (3,) * dims) / (3 * cin**0.5)).astype(np.float32)
    b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
    init = [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    node = helper.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [name], pads=[1] * (2 * dims))
    return [node], init


def _onnx_2d(path: Path, channels: int, seed: int = 0) -> None:
    """A small conv net with pooling, whose input and output are ``(batch, x, y, channel)``."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Transpose", ["raw"], ["nchw"], perm=[0, 3, 2, 1])]
    inits = []
    for args in [("c1", "nchw", channels, 6), ("c2", "p1", 6, 6), ("c3", "u1", 6, 1)]:
        n, i = _conv(*args, dims=2, rng=rng)
        nodes += n
        inits += i
        if args[0] == "c1":
            nodes += [
                helper.make_node("Relu", ["c1"], ["r1"]),
                helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
            ]
        if args[0] == "c2":
            inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
            nodes += [
                helper.make_node("Relu", ["c2"], ["r2"]),
                helper.make_node("Resize", ["r2", "", "scales"], ["u1"], mode="nearest"),
            ]
    nodes.append(helper.make_node("Transpose", ["c3"], ["logits"], perm=[0, 3, 2, 1]))
    graph = helper.make_graph(
        nodes,
        "foreign2d",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", "x", "y", channels])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", "x", "y", 1])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def _two_conv_net(path: Path, dims: int, out_channels: int, seed: int) -> None:
    """Two 3x3(x3) convolutions with a ReLU between, ``(batch, channel, [z,] y, x)`` in and out."""
    rng = np.random.default_rng(seed)
    n1, i1 = _conv("c1", "raw", 1, 4, dims, rng)
    n2, i2 = _conv("c2", "r1", 4, out_channels, dims, rng)
    space = ["z", "y", "x"][-dims:]
    graph = helper.make_graph(
        n1 + [helper.make_node("Relu", ["c1"], ["r1"])] + n2,
        f"two_conv_{dims}d",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", 1, *space])],
        [helper.make_tensor_value_info("c2", TensorProto.FLOAT, ["n", out_channels, *space])],
        i1 + i2,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def _descr(
    folder: Path,
    weights: Path,
    test_in: np.ndarray,
    in_axes: list,
    out_axes: list,
    pre: list,
    post: list,
    input_dtype: str,
) -> object:
    import bioimageio.core
    from bioimageio.spec import ValidationContext

    np.save(folder / "test_in.npy", test_in)
    (folder / "README.md").write_text("# A package from elsewhere\n\n## Validation\n\nNone.\n")
    # the test output is whatever bioimageio.core computes: the package is valid by construction
    draft = dict(
        name="foreign model",
        description="made without idl",
        authors=[bio.Author(name="Someone Else")],
        cite=[bio.CiteEntry(text="none", url="https://example.org")],
        license="MIT",
        documentation=bio.FileDescr(source=folder / "README.md"),
        weights=bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(source=weights, opset_version=18)),
    )
    inputs = [
        bio.InputTensorDescr(
            id=bio.TensorId("raw"),
            axes=in_axes,
            test_tensor=bio.FileDescr(source=folder / "test_in.npy"),
            data=bio.IntervalOrRatioDataDescr(type=input_dtype),
            preprocessing=pre,
        )
    ]

    def outputs() -> list:
        return [
            bio.OutputTensorDescr(
                id=bio.TensorId("out"),
                axes=out_axes,
                test_tensor=bio.FileDescr(source=folder / "test_out.npy"),
                postprocessing=post,
            )
        ]

    np.save(folder / "test_out.npy", np.ones(1, np.float32))
    with ValidationContext(perform_io_checks=False):
        descr = bio.ModelDescr(inputs=inputs, outputs=outputs(), **draft)
    dims = [str(a.id) for a in in_axes]
    result = bioimageio.core.predict(
        model=descr, inputs={"raw": bioimageio.core.Tensor.from_numpy(test_in, dims=dims)}
    )
    np.save(folder / "test_out.npy", result.members["out"].data.values.astype(np.float32))
    return bio.ModelDescr(inputs=inputs, outputs=outputs(), **draft)


def _core_predict(package: Path, array: np.ndarray, dims: list[str]) -> np.ndarray:
    import bioimageio.core
    from bioimageio.spec import load_model_description

    descr = load_model_description(package, perform_io_checks=False)
    sample = bioimageio.core.predict(
        model=descr, inputs={"raw": bioimageio.core.Tensor.from_numpy(array, dims=dims)}
    )
    return sample.members["out"].data.values


@pytest.fixture(scope="module")
def foreign_2d(tmp_path_factory) -> Path:
    """uint8 input with axes (batch, x, y, channel), two channels, scale_range, sizes 32 + k*16, halo 8."""
    from bioimageio.spec import save_bioimageio_package

    folder = tmp_path_factory.mktemp("foreign2d")
    _onnx_2d(folder / "net.onnx", channels=2)
    rng = np.random.default_rng(0)
    test_in = rng.integers(0, 256, (1, 64, 48, 2), dtype=np.uint8)
    space = [bio.AxisId("x"), bio.AxisId("y")]
    descr = _descr(
        folder,
        folder / "net.onnx",
        test_in,
        in_axes=[
            bio.BatchAxis(),
            *[bio.SpaceInputAxis(id=a, size=bio.ParameterizedSize(min=32, step=16)) for a in space],
            bio.ChannelAxis(channel_names=[bio.Identifier("dapi"), bio.Identifier("actin")]),
        ],
        out_axes=[
            bio.BatchAxis(),
            *[
                bio.SpaceOutputAxisWithHalo(
                    id=a, size=bio.SizeReference(tensor_id=bio.TensorId("raw"), axis_id=a), halo=8
                )
                for a in space
            ],
            bio.ChannelAxis(channel_names=[bio.Identifier("foreground")]),
        ],
        pre=[
            bio.ScaleRangeDescr(
                kwargs=bio.ScaleRangeKwargs(axes=space, min_percentile=1.0, max_percentile=99.8)
            ),
            bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")),
        ],
        post=[bio.SigmoidDescr()],
        input_dtype="uint8",
    )
    return save_bioimageio_package(descr, output_path=folder / "foreign2d.zip")


def _blobs(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(rng.random(shape), sigma=[3] * (len(shape) - 1) + [0])
    return np.clip((smooth - smooth.min()) / np.ptp(smooth) * 255, 0, 255).astype(np.uint8)


def test_foreign_package_matches_bioimageio_core(foreign_2d: Path, tmp_path: Path) -> None:
    image = _blobs(np.random.default_rng(3), (144, 208, 2))  # (y, x, c); 144 and 208 are 32 + k*16
    write_tiff(tmp_path / "cells.tif", image)
    expected = _core_predict(foreign_2d, np.transpose(image, (1, 0, 2))[None], ["batch", "x", "y", "channel"])
    expected = expected[0, ..., 0].T  # (x, y) -> (y, x)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        predict_cli.main,
        [
            str(foreign_2d),
            str(tmp_path / "cells.tif"),
            "--out",
            str(out),
            "--axes",
            "yxc",
            "--tile-size",
            "64",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    got = read_image(out / "cells.tif")
    diff = np.abs(got - expected).max()
    print(f"foreign 2D package, 64-px tiles vs bioimageio.core whole image: max abs diff {diff:.2e}")
    assert got.shape == (144, 208) and got.dtype == np.float32
    assert diff <= 1e-4
    assert expected.std() > 0.01  # a real output, not a constant


def test_foreign_package_tiles_with_its_halo_and_size_rules(foreign_2d: Path) -> None:
    model = load_model(foreign_2d)
    assert model.info is None and model.io.input_axes == "bxyc" and model.io.in_channels == 2
    assert model.io.sizes["y"].minimum == 32 and model.io.sizes["y"].step == 16
    assert model.io.halo == {"x": 8, "y": 8}
    from idl.infer.tiling.predict import PredictOptions, predict_image

    image = _blobs(np.random.default_rng(4), (150, 101, 2))  # not an accepted size: padded, cropped back
    whole = predict_image(model, image, PredictOptions(tile_size=1024, progress=False)).probabilities
    tiled = predict_image(model, image, PredictOptions(tile_size=48, progress=False)).probabilities
    assert whole.shape == (1, 150, 101)
    interior = (slice(None), slice(0, 140), slice(0, 90))  # away from the padded far border
    assert np.abs(tiled - whole)[interior].max() <= 1e-5


def test_foreign_package_without_mc_and_with_wrong_channels(foreign_2d: Path, tmp_path: Path) -> None:
    write_tiff(tmp_path / "gray.tif", np.zeros((64, 64), np.uint8))
    result = CliRunner().invoke(
        predict_cli.main,
        [str(foreign_2d), str(tmp_path / "gray.tif"), "--out", str(tmp_path / "o"), "--axes", "yx"],
    )
    assert "has 1 channel(s) (axes 'yx') but the model expects 2" in result.output
    write_tiff(tmp_path / "two.tif", np.zeros((64, 64, 2), np.uint8))
    result = CliRunner().invoke(
        predict_cli.main,
        [str(foreign_2d), str(tmp_path / "two.tif"), "--out", str(tmp_path / "o"), "--mc-samples", "4"],
    )
    assert result.exit_code != 0
    assert "has no Monte Carlo dropout graph" in result.output and "config.idl.mc_dropout" in result.output
    info = CliRunner().invoke(predict_cli.main, ["--info", str(foreign_2d)])
    assert "input: axes bxyc" in info.output and "halo x: 8, y: 8" in info.output
    assert "scale_range(over='xy'" in info.output and "Monte Carlo dropout: not available" in info.output


@pytest.fixture(scope="module")
def foreign_3d(tmp_path_factory) -> Path:
    """float32 volumes, (batch, channel, z, y, x), zero_mean_unit_variance, softmax over 2 channels."""
    from bioimageio.spec import save_bioimageio_package

    tmp_path = tmp_path_factory.mktemp("foreign3d")
    _two_conv_net(tmp_path / "net3d.onnx", dims=3, out_channels=2, seed=1)
    rng = np.random.default_rng(5)
    space = [bio.AxisId("z"), bio.AxisId("y"), bio.AxisId("x")]
    test_in = rng.random((1, 1, 16, 32, 32)).astype(np.float32)
    descr = _descr(
        tmp_path,
        tmp_path / "net3d.onnx",
        test_in,
        in_axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier("raw")]),
            *[bio.SpaceInputAxis(id=a, size=bio.ParameterizedSize(min=12, step=1)) for a in space],
        ],
        out_axes=[
            bio.BatchAxis(),
            bio.ChannelAxis(channel_names=[bio.Identifier("a"), bio.Identifier("b")]),
            *[
                bio.SpaceOutputAxisWithHalo(
                    id=a, size=bio.SizeReference(tensor_id=bio.TensorId("raw"), axis_id=a), halo=4
                )
                for a in space
            ],
        ],
        pre=[bio.ZeroMeanUnitVarianceDescr(kwargs=bio.ZeroMeanUnitVarianceKwargs(axes=space))],
        post=[bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))],
        input_dtype="float32",
    )
    return save_bioimageio_package(descr, output_path=tmp_path / "foreign3d.zip")


def test_foreign_3d_package_matches_bioimageio_core(foreign_3d: Path, tmp_path: Path) -> None:
    package, rng = foreign_3d, np.random.default_rng(5)
    volume = (_blobs(rng, (40, 70, 60, 1))[..., 0]).astype(np.float32)
    write_tiff(tmp_path / "volume.tif", volume)
    expected = _core_predict(package, volume[None, None], ["batch", "channel", "z", "y", "x"])[0]
    result = CliRunner().invoke(
        predict_cli.main,
        [str(package), str(tmp_path / "volume.tif"), "--out", str(tmp_path / "o"), "--tile-size", "24"],
    )
    assert result.exit_code == 0, result.output
    got = read_image(tmp_path / "o" / "volume.tif")
    diff = np.abs(got - expected).max()
    print(f"foreign 3D package, 24-voxel tiles vs bioimageio.core: max abs diff {diff:.2e}")
    assert got.shape == (2, 40, 70, 60)
    assert diff <= 1e-4
    np.testing.assert_allclose(got.sum(axis=0), 1.0, atol=1e-5)  # softmax over the channel axis


RDF_04 = """
format_version: 0.4.10
type: model
name: an older package
description: written in the model spec 0.4, as many zoo models are
authors: [{name: Someone Else}]
cite: [{text: none, url: "https://example.org"}]
license: MIT
documentation: README.md
timestamp: "2023-01-01T00:00:00"
test_inputs: [test_in.npy]
test_outputs: [test_out.npy]
inputs:
  - name: raw
    axes: bcyx
    data_type: float32
    shape: {min: [1, 1, 16, 16], step: [0, 0, 8, 8]}
    preprocessing:
      - name: zero_mean_unit_variance
        kwargs: {mode: per_sample, axes: xy}
outputs:
  - name: out
    axes: bcyx
    data_type: float32
    shape: {reference_tensor: raw, scale: [1, 1, 1, 1], offset: [0, 0, 0, 0]}
    halo: [0, 0, 4, 4]
    postprocessing:
      - name: sigmoid
weights:
  onnx:
    source: net.onnx
    opset_version: 18
"""


def _old_package(folder: Path, rdf: str = RDF_04) -> Path:
    _two_conv_net(folder / "net.onnx", dims=2, out_channels=1, seed=2)
    rng = np.random.default_rng(6)
    np.save(folder / "test_in.npy", rng.random((1, 1, 32, 32)).astype(np.float32))
    np.save(folder / "test_out.npy", np.zeros((1, 1, 32, 32), np.float32))
    (folder / "README.md").write_text("# old\n")
    (folder / "rdf.yaml").write_text(rdf)
    return folder / "rdf.yaml"


@pytest.mark.filterwarnings("ignore:Conversion of channel size:UserWarning")
def test_spec_04_package_as_rdf_yaml(tmp_path: Path) -> None:
    """Most zoo models use spec 0.4: read through bioimageio.spec's conversion, from a bare rdf.yaml."""
    _old_package(tmp_path)
    rng = np.random.default_rng(6)
    model = load_model(tmp_path / "rdf.yaml")
    assert model.io.input_axes == "bcyx" and model.io.halo == {"y": 4, "x": 4}
    assert model.io.sizes["x"].minimum == 16 and model.io.sizes["x"].step == 8
    image = _blobs(rng, (72, 88, 1))[..., 0].astype(np.float32)
    write_tiff(tmp_path / "img.tif", image)
    expected = _core_predict(tmp_path / "rdf.yaml", image[None, None], ["batch", "channel", "y", "x"])[0, 0]
    result = CliRunner().invoke(
        predict_cli.main,
        [
            str(tmp_path / "rdf.yaml"),
            str(tmp_path / "img.tif"),
            "--out",
            str(tmp_path / "o"),
            "--tile-size",
            "32",
        ],
    )
    assert result.exit_code == 0, result.output
    got = read_image(tmp_path / "o" / "img.tif")
    print(
        f"spec 0.4 package, 32-px tiles vs bioimageio.core: max abs diff {np.abs(got - expected).max():.2e}"
    )
    assert np.abs(got - expected).max() <= 1e-4 and expected.std() > 0.01


@pytest.mark.filterwarnings("ignore:Conversion of channel size:UserWarning")
def test_package_without_halo_still_overlaps_its_tiles(tmp_path: Path) -> None:
    """Zoo packages often declare no halo; seams would appear at every tile border without overlap."""
    rdf = _old_package(tmp_path, RDF_04.replace("halo: [0, 0, 4, 4]", "halo: [0, 0, 0, 0]"))
    image = _blobs(np.random.default_rng(8), (96, 120, 1))[..., 0].astype(np.float32)
    expected = _core_predict(rdf, image[None, None], ["batch", "channel", "y", "x"])[0, 0]
    from idl.infer.tiling.predict import PredictOptions, predict_image

    model = load_model(rdf)
    assert model.io.halo == {"y": 0, "x": 0}
    got = predict_image(model, image[..., None], PredictOptions(tile_size=48, progress=False)).probabilities[
        0
    ]
    assert np.abs(got - expected).max() <= 1e-5  # 6 px of overlap cover the two 3x3 convolutions
    seams = predict_image(model, image[..., None], PredictOptions(tile_size=48, overlap=0, progress=False))
    assert np.abs(seams.probabilities[0] - expected).max() > 1e-3  # what --overlap 0 would give


@pytest.mark.filterwarnings("ignore:Conversion of channel size:UserWarning")
def test_package_files_named_by_url_are_not_downloaded(tmp_path: Path) -> None:
    from idl.infer.core.errors import ModelError

    rdf = _old_package(tmp_path, RDF_04.replace("source: net.onnx", "source: https://example.org/net.onnx"))
    with pytest.raises(ModelError, match="idl never downloads"):
        load_model(rdf)


def test_2d_image_for_a_3d_package_says_so(foreign_3d: Path, tmp_path: Path) -> None:
    write_tiff(tmp_path / "plane.tif", np.zeros((64, 64), np.float32))
    result = CliRunner().invoke(
        predict_cli.main, [str(foreign_3d), str(tmp_path / "plane.tif"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert (
        "the model is 3D (zyx) and needs a volume, but this is a 2D image (shape (64, 64))" in result.output
    )


def test_padded_package_on_a_large_lazy_image_runs_out_of_core_like_in_memory(
    foreign_2d: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The halo padding a package asks for is read window by window (a padded view of the lazy
    image, the padding cropped off the outputs): above the out-of-core limit the image is predicted
    tile by tile, with the in-memory result."""
    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

    image = _blobs(np.random.default_rng(9), (96, 112, 2))
    np.save(tmp_path / "cells.npy", image)  # memory-mapped when read
    model = load_model(foreign_2d)
    assert model.io.input_pad is not None and any(model.io.halo.values())
    for name, limit in (("memory", 2**40), ("over_limit", 0)):
        options = PredictOptions(tile_size=64, progress=False, out_of_core_bytes=limit)
        with caplog.at_level("INFO", logger="idl"):
            caplog.clear()
            predict_files(model, [tmp_path / "cells.npy"], tmp_path / name, options, axes="yxc")
        assert ("written tile by tile" in caplog.text) == (name == "over_limit")
    np.testing.assert_allclose(
        read_image(tmp_path / "over_limit" / "cells.tif"),
        read_image(tmp_path / "memory" / "cells.tif"),
        atol=1e-6,
    )


@pytest.mark.filterwarnings("ignore:Conversion of channel size:UserWarning")
def test_package_weights_outside_the_package_are_refused(tmp_path: Path) -> None:
    from idl.infer.core.errors import ModelError

    outside = tmp_path / "elsewhere" / "net.onnx"
    outside.parent.mkdir()
    _two_conv_net(outside, 2, 1, seed=2)
    (tmp_path / "pkg").mkdir()
    rdf = _old_package(tmp_path / "pkg", RDF_04.replace("source: net.onnx", f"source: {outside}"))
    with pytest.raises(ModelError, match=r"names .*elsewhere/net\.onnx, a file outside the package"):
        load_model(rdf)


def test_idl_predict_test_reproduces_authors_output_made_without_padding(
    foreign_2d: Path, tmp_path: Path
) -> None:
    """A spec-0.5 package whose test input is a valid size is run whole, unpadded, as its authors ran
    it (bioimage.io tools pad it by the halo and differ at the borders)."""
    import zipfile

    import onnxruntime as ort
    from bioimageio.spec import load_model_description, save_bioimageio_package

    folder = tmp_path / "unpadded"
    with zipfile.ZipFile(foreign_2d) as archive:
        archive.extractall(folder)
    test_in = np.load(folder / "test_in.npy")  # (b, x, y, c) uint8, 64 x 48: a valid size
    lo, hi = np.percentile(test_in, [1.0, 99.8], axis=(1, 2), keepdims=True)
    x = ((test_in - lo) / (hi - lo + 1e-6)).astype(np.float32)
    session = ort.InferenceSession(str(folder / "net.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"raw": x})[0]
    np.save(folder / "test_out.npy", (1 / (1 + np.exp(-logits))).astype(np.float32))
    rdf = folder / "rdf.yaml"  # the new test output has another checksum
    rdf.write_text("\n".join(line for line in rdf.read_text().splitlines() if "sha256" not in line))
    descr = load_model_description(folder / "rdf.yaml", perform_io_checks=False)
    package = save_bioimageio_package(descr, output_path=tmp_path / "unpadded.zip")

    result = CliRunner().invoke(predict_cli.main, [str(package), "--test"])
    assert result.exit_code == 0, result.output
    diff = float(result.output.split("max abs diff ")[1].split(" ")[0])
    print(f"--test, authors' output made without padding: max abs diff {diff:.2e}")
    assert diff <= 1e-5 and "passed" in result.output
    padded = CliRunner().invoke(predict_cli.main, [str(foreign_2d), "--test"])  # made by a padding tool
    assert padded.exit_code == 1 and "FAILED" in padded.output
    assert float(padded.output.split("max abs diff ")[1].split(" ")[0]) > 1e-3
