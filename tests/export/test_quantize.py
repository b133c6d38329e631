"""int8 graphs (export/quantize.py): quantized, checked against the float32 graph on validation
images, kept with the agreement recorded, or refused and removed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from idl.export.quantize import QuantizationData, quantize_model, rule_for
from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.evaluate.agreement import (
    MASK_LIMIT,
    REGRESSION_LIMIT,
    class_disagreement,
    label_disagreement,
    mask_disagreement,
    relative_error,
)
from idl.infer.io.images import read_channels_last
from idl.infer.runtime.model import read_info
from idl.infer.runtime.session import OnnxRunner
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import PredictOptions, predict_image


def ramp_net(folder: Path) -> Path:
    """``folder/model.onnx`` and ``model_mc.onnx``: a four-layer regression network of ``(n, 1, y, x)``
    images (3x3 means at eight thresholds, 1x1 and 3x3 mixing, a 1x1 head; dropout before the head in
    the Monte Carlo twin), whose two middle layers are quantized (the first and the last stay float)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    mean = np.full((8, 1, 3, 3), 4 / 9, np.float32)
    weights = {
        "w1": mean,
        "b1": -np.linspace(0.2, 3.0, 8).astype(np.float32),
        "w2": (np.abs(rng.standard_normal((8, 8, 1, 1))) / 4 + np.eye(8)[:, :, None, None]).astype(
            np.float32
        ),
        "b2": np.zeros(8, np.float32),
        "w3": (np.abs(rng.standard_normal((8, 8, 3, 3))) / 36).astype(np.float32),
        "b3": np.zeros(8, np.float32),
        "w4": np.linspace(0.05, 0.1, 8).astype(np.float32)[None, :, None, None],
        "b4": np.array([-0.1], np.float32),
    }
    info = ModelInfo(
        task="regression", in_channels=1, num_classes=1, size_multiple=1, halo=4, dropout=0.2, output="values"
    )
    for name, mc in (("model.onnx", False), ("model_mc.onnx", True)):
        nodes = [
            helper.make_node("Conv", ["x", "w1", "b1"], ["h1"], pads=[1] * 4),
            helper.make_node("Relu", ["h1"], ["r1"]),
            helper.make_node("Conv", ["r1", "w2", "b2"], ["h2"]),
            helper.make_node("Relu", ["h2"], ["r2"]),
            helper.make_node("Conv", ["r2", "w3", "b3"], ["h3"], pads=[1] * 4),
            helper.make_node("Relu", ["h3"], ["r3"]),
        ]
        inits = [numpy_helper.from_array(array, key) for key, array in weights.items()]
        if mc:  # dropout as idl exports it: an explicit random mask
            inits += [
                numpy_helper.from_array(np.array(0.2, np.float32), "ratio"),
                numpy_helper.from_array(np.array(1 / 0.8, np.float32), "rescale"),
            ]
            nodes += [
                helper.make_node("RandomUniformLike", ["r3"], ["u"]),
                helper.make_node("Less", ["ratio", "u"], ["kept"]),
                helper.make_node("Cast", ["kept"], ["keep"], to=TensorProto.FLOAT),
                helper.make_node("Mul", ["r3", "keep"], ["dropped"]),
                helper.make_node("Mul", ["dropped", "rescale"], ["d"]),
            ]
        nodes.append(helper.make_node("Conv", ["d" if mc else "r3", "w4", "b4"], ["y"]))
        graph = helper.make_graph(
            nodes,
            "ramp",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, "y", "x"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        helper.set_model_props(model, {METADATA_KEY: info.to_json()})
        onnx.save(model, folder / name)
    return folder


def nuclei(count: int, seed: int = 0, size: int = 96) -> list[np.ndarray]:
    """Normalized channels-last synthetic nuclei images."""
    rng = np.random.default_rng(seed)
    return [
        normalize(
            synthetic_nuclei(rng, NucleiSpec(size=size))[0][..., None].astype(np.float32), Normalization()
        )
        for _ in range(count)
    ]


def ramp_data(scale: float = 1.0) -> QuantizationData:
    """Two validation images and eight calibration patches (their inputs times ``scale``)."""
    images = nuclei(6)
    patches = [scale * np.moveaxis(image[:64, :64], -1, 0)[np.newaxis] for image in images[2:]]
    return QuantizationData(patches, images[:2], tile_size=64, mc_samples=4)


def _stored(path: Path) -> ModelInfo:
    info = read_info(OnnxRunner(path, "cpu"))
    assert info is not None
    return info


def test_the_agreement_measures() -> None:
    a = np.zeros((10, 10), np.uint8)
    a[2:5, 2:5] = 1
    b = a.copy()
    b[0, 0] = 1
    assert mask_disagreement([a, a], [a, b]) == pytest.approx(1 / 200)
    labels = np.zeros((10, 10), np.uint16)
    labels[1:4, 1:4], labels[6:9, 6:9] = 1, 2
    renumbered = np.where(labels == 1, 7, np.where(labels == 2, 3, 0)).astype(np.uint16)
    assert label_disagreement([labels], [renumbered]) == 0.0  # the same objects under other numbers
    split = labels.copy()
    split[1:4, 3] = 5  # one column of object 1 becomes an object of its own
    assert label_disagreement([labels], [split]) == pytest.approx(3 / 100)
    merged = np.where(labels > 0, 1, 0).astype(np.uint16)  # two objects become one
    assert label_disagreement([labels], [merged]) == pytest.approx(9 / 100)
    values = np.linspace(0, 1, 100, dtype=np.float32).reshape(1, 10, 10)
    assert relative_error([values], [values + 0.01]) == pytest.approx(0.01 / values.std(), rel=1e-5)
    assert class_disagreement([np.array(1), np.array(2)], [np.array(1), np.array(0)]) == 0.5
    assert rule_for(ModelInfo("instance", 1, 3, 16, 8, kind="detection")) is None  # Mask R-CNN


def test_the_int8_graph_is_checked_kept_and_its_agreement_stored_in_every_graph(tmp_path: Path) -> None:
    folder = ramp_net(tmp_path / "model")
    data = ramp_data()
    info = quantize_model(
        folder / "model.onnx", folder / "model_mc.onnx", _stored(folder / "model.onnx"), data
    )
    record = info.quantized
    deterministic, monte_carlo = record["deterministic"], record["monte_carlo"]
    assert deterministic["kept"] and deterministic["images"] == 2
    assert deterministic["limit"] == REGRESSION_LIMIT
    assert 0 < deterministic["value"] <= REGRESSION_LIMIT  # int8 changes the values, within the rule
    assert monte_carlo["kept"] and monte_carlo["noise"] > 0 and monte_carlo["samples"] == 4
    assert monte_carlo["value"] <= monte_carlo["limit"] == max(REGRESSION_LIMIT, 1.5 * monte_carlo["noise"])
    assert record["calibration"] == "4 training patches of 64 x 64 px" and record["seconds"] >= 0
    for name in ("model.onnx", "model_mc.onnx", "model_int8.onnx", "model_int8_mc.onnx"):
        assert _stored(folder / name) == info, name  # one description, so the graphs belong together
    quantized = onnx.load(str(folder / "model_int8.onnx"))
    assert sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node) >= 2
    # the int8 graph's values of an image it was not checked on: within the rule's relative error
    image = nuclei(1, seed=9, size=128)[0]
    options = PredictOptions(progress=False)
    plain = predict_image(load_model(folder, "cpu", precision="fp32"), image, options).probabilities
    int8 = predict_image(load_model(folder, "cpu", precision="int8"), image, options).probabilities
    assert 0 < relative_error([plain], [int8]) <= REGRESSION_LIMIT


def test_an_int8_graph_that_disagrees_is_refused_removed_and_the_reason_kept(tmp_path: Path) -> None:
    folder = ramp_net(tmp_path / "model")
    # calibrated on inputs 1000 times too bright, the activations' ranges are far too wide: their
    # 256 steps cannot tell the validation images' values apart
    data = ramp_data(scale=1000.0)
    info = quantize_model(
        folder / "model.onnx", folder / "model_mc.onnx", _stored(folder / "model.onnx"), data
    )
    deterministic = info.quantized["deterministic"]
    assert not deterministic["kept"] and deterministic["value"] > 10 * REGRESSION_LIMIT
    assert "monte_carlo" not in info.quantized  # none beside a refused deterministic graph
    assert not (folder / "model_int8.onnx").exists() and not (folder / "model_int8_mc.onnx").exists()
    assert _stored(folder / "model.onnx").quantized == info.quantized
    with pytest.raises(ModelError) as refused:
        load_model(folder, "cpu", precision="int8")
    text = str(refused.value)
    assert str(folder / "model_int8.onnx") in text and "refused at export" in text
    assert (
        f"{deterministic['value']:.3g} (limit {REGRESSION_LIMIT:.3g})" in text and "--precision fp32" in text
    )
    assert load_model(folder, "cpu", precision="auto").precision == "fp32"


def test_a_semantic_threshold_nobody_can_meet_refuses_the_graph(tmp_path: Path) -> None:
    folder = ramp_net(tmp_path / "model")
    info = replace(_stored(folder / "model.onnx"), task="semantic", num_classes=2, output="logits", kind="")
    rule = replace(rule_for(info), limit=-1.0)  # a difference is never below -1: always refused
    info = quantize_model(folder / "model.onnx", None, info, ramp_data(), rule)
    assert not info.quantized["deterministic"]["kept"]
    assert 0 <= info.quantized["deterministic"]["value"] <= 1
    assert not (folder / "model_int8.onnx").exists()


def test_export_records_why_no_graph_was_made_and_removes_an_earlier_export_s(tmp_path: Path) -> None:
    from idl.export.onnx import export_onnx
    from idl.train.int8 import quantize_checkpoint
    from tests.export.conftest import fresh_unet

    net, info = fresh_unet()
    (tmp_path / "model_int8.onnx").write_bytes(b"an earlier export's")
    det, mc = export_onnx(net, info, tmp_path)
    assert not (tmp_path / "model_int8.onnx").exists()  # not this network's: removed
    info = quantize_checkpoint(det, mc, info, {}, tmp_path / "best.pt", tmp_path / "elsewhere")
    assert "no training images in" in info.quantized["skipped"] and "--project" in info.quantized["skipped"]
    with pytest.raises(ModelError, match="none was written: idl-export found no training images"):
        load_model(tmp_path, "cpu", precision="int8")
    old = ModelInfo.from_json(info.to_json().replace('"quantized"', '"unknown_key"'))
    assert old.quantized == {}  # descriptions written before int8 graphs existed


def test_training_keeps_an_int8_graph_that_agrees_on_the_validation_images(model_dir: Path) -> None:
    """The trained fixture's run quantized its network: the agreement measured on its validation
    images is stored, and on the test images the int8 graph's masks stay within the same rule."""
    record = _stored(model_dir / "model.onnx").quantized
    deterministic = record["deterministic"]
    assert deterministic["kept"] and (model_dir / "model_int8.onnx").is_file()
    assert deterministic["limit"] == MASK_LIMIT and 0 <= deterministic["value"] <= MASK_LIMIT
    assert deterministic["images"] == _stored(model_dir / "model.onnx").training["n_val"]
    assert "monte_carlo" in record and "training patches of 64 x 64 px" in record["calibration"]
    plain, int8 = (
        load_model(model_dir, "cpu", precision="fp32"),
        load_model(model_dir, "cpu", precision="int8"),
    )
    masks, int8_masks, differences = [], [], []
    for path in sorted((model_dir.parent / "test" / "image").iterdir()):
        image = read_channels_last(path, None, "yx")[0]
        a, b = (
            predict_image(plain, image, PredictOptions(progress=False)),
            predict_image(int8, image, PredictOptions(progress=False)),
        )
        masks.append(a.mask)
        int8_masks.append(b.mask)
        differences.append(np.abs(a.probabilities - b.probabilities).mean())
    assert sum(m.sum() for m in masks) > 0  # there is something to agree on
    assert mask_disagreement(masks, int8_masks) <= MASK_LIMIT
    assert max(differences) <= 0.01  # mean absolute difference of the probabilities
