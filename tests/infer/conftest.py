"""Small bioimage.io packages made in the test run (no torch): ONNX graphs written with onnx.helper."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


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
