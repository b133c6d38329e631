"""Packages with two inputs and two outputs (one of them down-sampled): tiled together, each output
written under its tensor's name, and the same numbers as bioimageio.core."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image, write_tiff

from .conftest import someone_elses

bio = pytest.importorskip("bioimageio.spec.model.v0_5")


def _two_by_two_net(path: Path) -> None:
    """Inputs ``a`` and ``b`` ``(n, 1, y, x)``; outputs ``mix`` = conv3x3([a, b]) with 2 channels, and
    ``coarse`` = 2x2 average pooling of conv3x3(a) ``(n, 1, y/2, x/2)``."""
    rng = np.random.default_rng(7)
    w1 = (rng.standard_normal((2, 2, 3, 3)) / 3).astype(np.float32)
    w2 = (rng.standard_normal((1, 1, 3, 3)) / 3).astype(np.float32)
    nodes = [
        helper.make_node("Concat", ["a", "b"], ["ab"], axis=1),
        helper.make_node("Conv", ["ab", "w1"], ["mix"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w2"], ["ca"], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["ca"], ["coarse"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(
        nodes,
        "two_by_two",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 1, "y", "x"]) for n in ("a", "b")],
        [
            helper.make_tensor_value_info("mix", TensorProto.FLOAT, ["n", 2, "y", "x"]),
            helper.make_tensor_value_info("coarse", TensorProto.FLOAT, ["n", 1, "y2", "x2"]),
        ],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def _space_in(tensor: str | None) -> list:
    if tensor is None:
        return [
            bio.SpaceInputAxis(id=bio.AxisId(a), size=bio.ParameterizedSize(min=16, step=8)) for a in "yx"
        ]
    return [
        bio.SpaceInputAxis(
            id=bio.AxisId(a), size=bio.SizeReference(tensor_id=bio.TensorId(tensor), axis_id=bio.AxisId(a))
        )
        for a in "yx"
    ]


def _space_out(tensor: str, halo: int, scale: float) -> list:
    return [
        bio.SpaceOutputAxisWithHalo(
            id=bio.AxisId(a),
            size=bio.SizeReference(tensor_id=bio.TensorId(tensor), axis_id=bio.AxisId(a)),
            halo=halo,
            scale=scale,
        )
        for a in "yx"
    ]


def _core(descr: object, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import bioimageio.core

    sample = bioimageio.core.predict(
        model=descr,
        inputs={
            k: bioimageio.core.Tensor.from_numpy(v, dims=["batch", "channel", "y", "x"])
            for k, v in inputs.items()
        },
    )
    return {str(k): v.data.values for k, v in sample.members.items()}


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package (zip); its test outputs are bioimageio.core's."""
    from bioimageio.spec import save_bioimageio_package

    folder = tmp_path_factory.mktemp("two_by_two")
    _two_by_two_net(folder / "net.onnx")
    rng = np.random.default_rng(0)
    test = {
        "a": rng.random((1, 1, 32, 48)).astype(np.float32),
        "b": rng.random((1, 1, 32, 48)).astype(np.float32),
    }
    for name, array in test.items():
        np.save(folder / f"test_{name}.npy", array)

    def channel(*names: str) -> object:
        return bio.ChannelAxis(channel_names=[bio.Identifier(n) for n in names])

    def describe() -> object:
        return bio.ModelDescr(
            **someone_elses(folder, "two by two", "two inputs, two outputs, one down-sampled"),
            inputs=[
                bio.InputTensorDescr(
                    id=bio.TensorId("a"),
                    axes=[bio.BatchAxis(), channel("a0"), *_space_in(None)],
                    test_tensor=bio.FileDescr(source=folder / "test_a.npy"),
                    preprocessing=[
                        bio.ScaleRangeDescr(
                            kwargs=bio.ScaleRangeKwargs(
                                axes=[bio.AxisId("y"), bio.AxisId("x")],
                                min_percentile=1.0,
                                max_percentile=99.0,
                            )
                        )
                    ],
                ),
                bio.InputTensorDescr(
                    id=bio.TensorId("b"),
                    axes=[bio.BatchAxis(), channel("b0"), *_space_in(None)],
                    test_tensor=bio.FileDescr(source=folder / "test_b.npy"),
                    preprocessing=[
                        bio.ZeroMeanUnitVarianceDescr(
                            kwargs=bio.ZeroMeanUnitVarianceKwargs(axes=[bio.AxisId("y"), bio.AxisId("x")])
                        )
                    ],
                ),
            ],
            outputs=[
                bio.OutputTensorDescr(
                    id=bio.TensorId("mix"),
                    axes=[bio.BatchAxis(), channel("m0", "m1"), *_space_out("b", 2, 1.0)],
                    test_tensor=bio.FileDescr(source=folder / "test_mix.npy"),
                    postprocessing=[bio.SigmoidDescr()],
                ),
                bio.OutputTensorDescr(
                    id=bio.TensorId("coarse"),
                    axes=[bio.BatchAxis(), channel("c0"), *_space_out("a", 1, 2.0)],
                    test_tensor=bio.FileDescr(source=folder / "test_coarse.npy"),
                ),
            ],
            weights=bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(source=folder / "net.onnx", opset_version=18)),
        )

    for name, value in _unpadded(folder / "net.onnx", test).items():  # as the authors ran it
        np.save(folder / f"test_{name}.npy", value)
    return save_bioimageio_package(describe(), output_path=folder / "two_by_two.zip")


def _unpadded(weights: Path, test: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The network on the whole test inputs, pre- and post-processed by hand, without padding."""
    import onnxruntime as ort

    a, b = test["a"], test["b"]
    lo, hi = np.percentile(a, [1.0, 99.0], axis=(2, 3), keepdims=True)
    feed = {
        "a": ((a - lo) / (hi - lo + 1e-6)).astype(np.float32),
        "b": ((b - b.mean(axis=(2, 3), keepdims=True)) / (b.std(axis=(2, 3), keepdims=True) + 1e-6)).astype(
            np.float32
        ),
    }
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    mix, coarse = session.run(["mix", "coarse"], feed)
    return {"mix": (1 / (1 + np.exp(-mix))).astype(np.float32), "coarse": coarse}


def test_two_inputs_two_outputs_tiled_match_bioimageio_core(two_by_two: Path, tmp_path: Path) -> None:
    from bioimageio.spec import load_model_description

    rng = np.random.default_rng(3)
    a, b = rng.random((88, 120)).astype(np.float32), rng.random((88, 120)).astype(np.float32)  # 16 + k * 8
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_tiff(tmp_path / "a" / "cells.tif", a)
    write_tiff(tmp_path / "b" / "cells.tif", b)
    expected = _core(
        load_model_description(two_by_two, perform_io_checks=False), {"a": a[None, None], "b": b[None, None]}
    )
    out = tmp_path / "out"
    result = CliRunner().invoke(
        predict_cli.main,
        [
            str(two_by_two),
            "--input",
            f"a={tmp_path / 'a'}",
            "--input",
            f"b={tmp_path / 'b'}",
            "--out",
            str(out),
            "--tile-size",
            "40",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    mix, coarse = read_image(out / "mix" / "cells.tif"), read_image(out / "coarse" / "cells.tif")
    assert mix.shape == (2, 88, 120) and coarse.shape == (44, 60)
    diff_mix = float(np.max(np.abs(mix - expected["mix"][0])))
    diff_coarse = float(np.max(np.abs(coarse - expected["coarse"][0, 0])))
    print(
        f"two inputs, two outputs, tiled (40 px tiles on 88 x 120): max abs diff from bioimageio.core "
        f"mix {diff_mix:.2e}, coarse {diff_coarse:.2e}"
    )
    assert diff_mix <= 1e-4 and diff_coarse <= 1e-4


def test_test_runs_every_tensor_whole(two_by_two: Path) -> None:
    """--test on a package whose test outputs were made without padding: both outputs reproduced."""
    result = CliRunner().invoke(predict_cli.main, [str(two_by_two), "--test"])
    assert result.exit_code == 0, result.output
    diffs = {
        line.split("'")[1]: float(line.split("max abs diff ")[1].split(" ")[0])
        for line in result.output.splitlines()
        if line.startswith("test output")
    }
    print(f"--test, two outputs: {diffs}")
    assert set(diffs) == {"mix", "coarse"} and max(diffs.values()) <= 1e-5


def test_tiles_are_really_several_and_inputs_are_matched_by_name(two_by_two: Path, tmp_path: Path) -> None:
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions
    from idl.infer.tiling.tensors import predict_tensors

    model = load_model(two_by_two)
    info = CliRunner().invoke(predict_cli.main, [str(two_by_two), "--info"])
    assert (
        "output 'coarse': axes bcyx, 1 channel(s), float32; size y: x0.5, x: x0.5; halo y: 1" in info.output
    )
    assert "--input a=PATH --input b=PATH" in info.output
    calls = []
    run_all = model.runner.run_all
    model.runner.run_all = lambda feed: calls.append(feed[0].shape) or run_all(feed)
    rng = np.random.default_rng(5)
    images = {name: rng.random((88, 120, 1)).astype(np.float32) for name in ("a", "b")}
    tiled = predict_tensors(model, images, PredictOptions(tile_size=40, progress=False))
    assert len(calls) > 4 and all(shape[2] <= 40 and shape[3] <= 40 for shape in calls)
    count = len(calls)
    larger = predict_tensors(model, images, PredictOptions(tile_size=72, progress=False))
    assert 1 < len(calls) - count < count
    for name in ("mix", "coarse"):  # seamless: other tiles, the same output
        assert np.max(np.abs(tiled[name] - larger[name])) < 1e-5
    predict_tensors(model, images, PredictOptions(tile_size=512, progress=False))
    assert calls[-1][2:] == (88, 120)  # a valid size in one tile: run whole

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_tiff(tmp_path / "a" / "one.tif", images["a"][..., 0])
    write_tiff(tmp_path / "b" / "two.tif", images["b"][..., 0])
    args = [str(two_by_two), "--input", f"a={tmp_path / 'a'}", "--input", f"b={tmp_path / 'b'}"]
    result = CliRunner().invoke(predict_cli.main, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "one.tif: no image named one for the input(s) b" in result.output
    result = CliRunner().invoke(
        predict_cli.main, [str(two_by_two), str(tmp_path / "a"), "--out", str(tmp_path / "o")]
    )
    assert (
        result.exit_code != 0
        and "this model has the inputs a, b: give each as --input NAME=PATH" in result.output
    )


def test_one_input_with_a_down_sampled_output_takes_its_images_as_input(tmp_path: Path) -> None:
    """A single-input package whose output has half the input's pixels: INPUT as usual, tiled, the
    output written under its name; equal to the network run on the whole (normalized) image."""
    import onnxruntime as ort
    from bioimageio.spec import save_bioimageio_package

    graph = helper.make_graph(
        [helper.make_node("AveragePool", ["a"], ["half"], kernel_shape=[2, 2], strides=[2, 2])],
        "half",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 1, "y", "x"])],
        [helper.make_tensor_value_info("half", TensorProto.FLOAT, ["n", 1, "y2", "x2"])],
    )
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9),
        tmp_path / "net.onnx",
    )
    test_in = np.random.default_rng(0).random((1, 1, 32, 32)).astype(np.float32)
    np.save(tmp_path / "in.npy", test_in)
    np.save(tmp_path / "out.npy", test_in.reshape(1, 1, 16, 2, 16, 2).mean(axis=(3, 5)))
    (tmp_path / "README.md").write_text("# half\n")
    descr = bio.ModelDescr(
        name="half size",
        description="2x2 average",
        authors=[bio.Author(name="Someone Else")],
        cite=[bio.CiteEntry(text="none", url="https://example.org")],
        license="MIT",
        documentation=bio.FileDescr(source=tmp_path / "README.md"),
        inputs=[
            bio.InputTensorDescr(
                id=bio.TensorId("a"),
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier("a0")]),
                    *_space_in(None),
                ],
                test_tensor=bio.FileDescr(source=tmp_path / "in.npy"),
            )
        ],
        outputs=[
            bio.OutputTensorDescr(
                id=bio.TensorId("half"),
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier("h0")]),
                    *_space_out("a", 2, 2.0),
                ],
                test_tensor=bio.FileDescr(source=tmp_path / "out.npy"),
            )
        ],
        weights=bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(source=tmp_path / "net.onnx", opset_version=18)),
    )
    package = save_bioimageio_package(descr, output_path=tmp_path / "half.zip")
    image = np.random.default_rng(1).random((96, 64)).astype(np.float32)
    write_tiff(tmp_path / "cells.tif", image)
    result = CliRunner().invoke(
        predict_cli.main,
        [str(package), str(tmp_path / "cells.tif"), "--out", str(tmp_path / "out"), "--tile-size", "32"],
    )
    assert result.exit_code == 0, result.output
    got = read_image(tmp_path / "out" / "half" / "cells.tif")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(None, {"a": image[None, None]})[0][0, 0]
    assert got.shape == (48, 32) and np.max(np.abs(got - want)) < 1e-6
