"""Small 3D ONNX networks for the tests of block-by-block prediction (no torch): two 3x3x3
convolutions (receptive field 2 voxels per side, below the declared halo of 4, so any tiling gives
the whole-volume values up to float rounding), with a Monte Carlo twin that drops features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from idl.infer.core.model_info import METADATA_KEY, ModelInfo


def write_volume_model(folder: Path, task: str = "semantic", seed: int = 0) -> Path:
    """``folder/model.onnx`` and ``model_mc.onnx``: a binary semantic model (foreground
    probability) or a regression model (values) of ``(n, 1, z, y, x)`` volumes, halo 4 voxels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((4, 1, 3, 3, 3)) / 5).astype(np.float32)
    w2 = (rng.standard_normal((1, 4, 3, 3, 3)) / 5).astype(np.float32)
    for name, mc in (("model.onnx", False), ("model_mc.onnx", True)):
        nodes = [
            helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1] * 6),
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
        nodes.append(helper.make_node("Conv", ["d" if mc else "r", "w2"], ["z"], pads=[1] * 6))
        nodes.append(helper.make_node("Sigmoid" if task == "semantic" else "Identity", ["z"], ["y"]))
        graph = helper.make_graph(
            nodes,
            "volume",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "z", "y", "x"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "z", "y", "x"])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        info = ModelInfo(
            task=task,
            in_channels=1,
            num_classes=2 if task == "semantic" else 1,
            size_multiple=1,
            halo=4,
            dims=3,
            axes="zyx",
            z_multiple=1,
            z_halo=4,
            dropout=0.3,
            output="probabilities" if task == "semantic" else "values",
        )
        helper.set_model_props(model, {METADATA_KEY: info.to_json()})
        onnx.save(model, folder / name)
    return folder
