"""Small bioimage.io packages made in the test run (no torch): ONNX graphs written with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from idl.infer.core.model_info import METADATA_KEY, ModelInfo


def smoothing_net(path: Path, seed: int = 0) -> None:
    """One 3x3 convolution (1 -> 2 channels), ``(batch, channel, y, x)`` in and out."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32) / 3
    graph = helper.make_graph(
        [helper.make_node("Conv", ["raw", "w"], ["out"], pads=[1, 1, 1, 1])],
        "smoothing",
        [helper.make_tensor_value_info("raw", TensorProto.FLOAT, ["n", 1, "y", "x"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 2, "y", "x"])],
        [numpy_helper.from_array(w, "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)


def someone_elses(folder: Path, name: str, description: str) -> dict:
    """What every test package made here says of itself (a package made elsewhere: no idl config),
    its README written into ``folder``: the fields of ``ModelDescr`` but its tensors and weights."""
    bio = pytest.importorskip("bioimageio.spec.model.v0_5")
    (folder / "README.md").write_text(f"# {name}\n")
    return {
        "name": name,
        "description": description,
        "authors": [bio.Author(name="Someone Else")],
        "cite": [bio.CiteEntry(text="none", url="https://example.org")],
        "license": "MIT",
        "documentation": bio.FileDescr(source=folder / "README.md"),
    }


@pytest.fixture(scope="session")
def small_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid spec-0.5 package (one 3x3 convolution, sizes 16 + k*8, halo 1) as a zip."""
    bio = pytest.importorskip("bioimageio.spec.model.v0_5")
    from bioimageio.spec import save_bioimageio_package

    folder = tmp_path_factory.mktemp("small_package")
    smoothing_net(folder / "net.onnx")
    test_in = np.random.default_rng(1).random((1, 1, 32, 24)).astype(np.float32)
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "net.onnx"), providers=["CPUExecutionProvider"])
    np.save(folder / "test_in.npy", test_in)
    np.save(folder / "test_out.npy", session.run(None, {"raw": test_in})[0])
    space = [bio.AxisId("y"), bio.AxisId("x")]
    descr = bio.ModelDescr(
        **someone_elses(folder, "small package", "one convolution"),
        inputs=[
            bio.InputTensorDescr(
                id=bio.TensorId("raw"),
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier("c0")]),
                    *[bio.SpaceInputAxis(id=a, size=bio.ParameterizedSize(min=16, step=8)) for a in space],
                ],
                test_tensor=bio.FileDescr(source=folder / "test_in.npy"),
            )
        ],
        outputs=[
            bio.OutputTensorDescr(
                id=bio.TensorId("out"),
                axes=[
                    bio.BatchAxis(),
                    bio.ChannelAxis(channel_names=[bio.Identifier("a"), bio.Identifier("b")]),
                    *[
                        bio.SpaceOutputAxisWithHalo(
                            id=a, size=bio.SizeReference(tensor_id=bio.TensorId("raw"), axis_id=a), halo=1
                        )
                        for a in space
                    ],
                ],
                test_tensor=bio.FileDescr(source=folder / "test_out.npy"),
            )
        ],
        weights=bio.WeightsDescr(onnx=bio.OnnxWeightsDescr(source=folder / "net.onnx", opset_version=18)),
    )
    return save_bioimageio_package(descr, output_path=folder / "small.zip")


# Small ONNX networks for the tests of block-by-block prediction: Small 3D ONNX networks for the tests of
# block-by-block prediction (no torch): two 3x3x3 convolutions (receptive field 2 voxels per side, below
# the declared halo of 4, so any tiling gives the whole-volume values up to float rounding), with a Monte
# Carlo twin that drops features.


def write_volume_model(folder: Path, task: str = "semantic", seed: int = 0, dims: int = 3) -> Path:
    """``folder/model.onnx`` and ``model_mc.onnx``: a binary semantic model (foreground
    probability), a regression model (values) or an instance U-Net (background, interior and boundary
    probabilities of bright blobs) of ``(n, 1, z, y, x)`` volumes (``(n, 1, y, x)`` images with
    ``dims`` 2), halo 4 voxels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((4, 1, *(3,) * dims)) / 5).astype(np.float32)
    w2 = (rng.standard_normal((1, 4, *(3,) * dims)) / 5).astype(np.float32)
    out = 1
    if task == "instance":  # logits of background, interior, boundary from the local mean m of the input
        out, mean = 3, np.full((3,) * dims, 1 / 3**dims, np.float32)
        w1 = np.stack([mean, -mean, 0 * mean, 0 * mean])[:, None]  # relu(m), relu(-m)
        w2 = np.zeros((3, 4, *(3,) * dims), np.float32)
        centre = (slice(None), slice(None), *(1,) * dims)
        w2[centre] = [[-10, 10, 0, 0], [10, -10, 0, 0], [0, 0, 0, 0]]
        b2 = np.array([5, -7, 0], np.float32)  # background below m ~ 0.25, interior above m ~ 0.6
    axes = "zyx"[-dims:]
    for name, mc in (("model.onnx", False), ("model_mc.onnx", True)):
        nodes = [
            helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1] * 2 * dims),
            helper.make_node("Relu", ["h"], ["r"]),
        ]
        inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
        if mc:  # dropout as idl exports it: an explicit random mask (RandomUniformLike)
            inits += [
                numpy_helper.from_array(np.array(0.3, np.float32), "ratio"),
                numpy_helper.from_array(np.array(1 / 0.7, np.float32), "rescale"),
            ]
            nodes += [
                helper.make_node("RandomUniformLike", ["r"], ["u"]),
                helper.make_node("Less", ["ratio", "u"], ["kept"]),
                helper.make_node("Cast", ["kept"], ["keep"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["r", "keep"], ["dropped"]),
                helper.make_node("Mul", ["dropped", "rescale"], ["d"]),
            ]
        if task == "instance":
            inits.append(numpy_helper.from_array(b2, "b2"))
            nodes.append(
                helper.make_node("Conv", ["d" if mc else "r", "w2", "b2"], ["z"], pads=[1] * 2 * dims)
            )
            nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
        else:
            nodes.append(helper.make_node("Conv", ["d" if mc else "r", "w2"], ["z"], pads=[1] * 2 * dims))
            nodes.append(helper.make_node("Sigmoid" if task == "semantic" else "Identity", ["z"], ["y"]))
        graph = helper.make_graph(
            nodes,
            "volume",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, *axes])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", out, *axes])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        info = ModelInfo(
            task=task,
            in_channels=1,
            num_classes={"semantic": 2, "instance": 3}.get(task, 1),
            size_multiple=1,
            halo=4,
            dims=dims,
            axes=axes,
            z_multiple=1 if dims == 3 else 0,
            z_halo=4 if dims == 3 else 0,
            dropout=0.3,
            output="values" if task == "regression" else "probabilities",
        )
        helper.set_model_props(model, {METADATA_KEY: info.to_json()})
        onnx.save(model, folder / name)
    return folder


@pytest.fixture
def volume_model(tmp_path: Path):
    """Makes :func:`write_volume_model` networks under the test's folder."""
    return lambda task="semantic", dims=3: write_volume_model(
        tmp_path / f"model-{task}-{dims}d", task, 0, dims
    )


@pytest.fixture
def tile_objects():
    """A function labelling a network output ``(C, Y, X)`` tile by tile, as idl-predict does for
    networks whose objects are made in numpy (``make``: output -> labels and scores): 128 px tiles
    with a 32 px halo, each object kept by the tile that owns its centre. Returns the labels, the
    scores and the tiles."""
    from idl.infer.core.grid import tile_grid
    from idl.infer.tiling.mergers import MadeObjects

    def run(out: np.ndarray, make) -> tuple[np.ndarray, np.ndarray, list]:
        merger = MadeObjects(out.shape[1:], make=make)
        tiles = tile_grid(out.shape[1:], (128, 128), (32, 32), 16)
        for tile in tiles:
            merger.add(tile, out[(slice(None), *tile.window)][None])
        return (*merger.finalize(), tiles)

    return run
