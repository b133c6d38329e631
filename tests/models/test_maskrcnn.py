"""Mask R-CNN: sizes from the data, label composition, training targets, and the ONNX export
(ONNX Runtime equals torch on two image sizes and on an image without detections)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.measure import regionprops

from idl.export.onnx import export_onnx
from idl.infer.core.model_info import ModelInfo
from idl.infer.runtime.session import OnnxRunner
from idl.models.maskrcnn import (
    InstanceMaskRCNN,
    MaskRCNNSpec,
    anchor_sizes_for,
    compare_labels,
    compose_labels,
    targets_from_labels,
)

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_maskrcnn")


def test_anchor_sizes_start_at_the_small_objects() -> None:
    sides = np.r_[np.full(10, 13.0), np.full(90, 30.0)]  # 5th percentile 13 -> 16
    assert anchor_sizes_for(sides) == (16, 32, 64, 128, 256)
    assert anchor_sizes_for(np.full(10, 3.0)) == (8, 16, 32, 64, 128)  # at least 8 px
    assert anchor_sizes_for(np.full(10, 100.0)) == (128, 256, 512, 1024, 2048)


def test_overlapping_masks_go_to_the_higher_score() -> None:
    masks = torch.zeros(3, 4, 5)
    masks[0, 0:2, 0:3] = 0.9  # best object
    masks[1, 1:3, 2:5] = 0.8  # overlaps the first at (1, 2)
    masks[2, 3, 0] = 0.4  # below the mask threshold: no pixel
    out = compose_labels(masks, torch.tensor([0.95, 0.7, 0.6]), torch.zeros(1, 4, 5))
    expected = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 2, 2], [0, 0, 2, 2, 2], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out[0].numpy(), expected)
    np.testing.assert_allclose(out[1].numpy(), np.choose(expected, [0.0, 0.95, 0.7]), rtol=1e-6)
    masks = torch.cat([masks, torch.zeros(1, 4, 5)])
    masks[3, 0:2, 1:4] = 0.7  # 6 pixels, 4 of them object 1's: a second detection of it, dropped
    again = compose_labels(masks, torch.tensor([0.95, 0.7, 0.6, 0.55]), torch.zeros(1, 4, 5))
    np.testing.assert_array_equal(again[0].numpy(), expected)
    masks[3, 0:2, 1:4], masks[3, 3, 0:4] = 0.0, 0.7  # now 4 free pixels: kept as object 4
    kept = compose_labels(masks, torch.tensor([0.95, 0.7, 0.6, 0.55]), torch.zeros(1, 4, 5))
    assert kept[0, 3].tolist() == [4.0, 4.0, 4.0, 4.0, 0.0]
    empty = compose_labels(torch.zeros(0, 4, 5), torch.zeros(0), torch.zeros(1, 4, 5))
    assert empty.shape == (2, 4, 5) and float(empty.abs().sum()) == 0.0


def test_targets_have_one_tight_box_and_mask_per_object() -> None:
    labels = np.zeros((20, 30), np.int64)
    labels[2:7, 3:12] = 4
    labels[10:19, 20:25] = 9
    labels[0, 29] = 2  # a one-pixel sliver: left out
    target = targets_from_labels(labels)
    boxes = [(r.bbox[1], r.bbox[0], r.bbox[3], r.bbox[2]) for r in regionprops(labels) if r.area >= 4]
    np.testing.assert_array_equal(target["boxes"].numpy(), np.array(boxes, np.float32))
    assert target["labels"].tolist() == [1, 1]
    assert target["masks"].shape == (2, 20, 30) and target["masks"].sum().item() == 45 + 45
    none = targets_from_labels(np.zeros((8, 8), np.int64))
    assert none["boxes"].shape == (0, 4) and none["masks"].shape == (0, 8, 8)


def _info() -> ModelInfo:
    return ModelInfo(task="instance", in_channels=1, num_classes=2, size_multiple=1, halo=32, output="labels")


@pytest.fixture(scope="module")
def detector_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[InstanceMaskRCNN, Path]:
    torch.manual_seed(0)  # untrained: with a low score threshold it still detects plenty
    net = InstanceMaskRCNN(MaskRCNNSpec(1, (16, 32, 64, 128, 256), 50, score_threshold=0.05)).eval()
    path, mc = export_onnx(net, _info(), tmp_path_factory.mktemp("detector"))
    assert mc is None
    return net, path


@pytest.mark.parametrize("size", [(96, 320), (200, 136)])
def test_onnx_runtime_equals_torch_on_two_image_sizes(detector_onnx, size: tuple[int, int]) -> None:
    net, path = detector_onnx
    x = torch.rand(1, 1, *size, generator=torch.Generator().manual_seed(sum(size)))
    with torch.no_grad():
        found = len(np.unique(net(x)[0, 0].numpy())) - 1
    assert found >= 5  # the comparison covers real detections
    with torch.no_grad():
        expected = net(x)
    got = torch.from_numpy(OnnxRunner(path, "cpu")(x.numpy()))
    label_share, score_diff = compare_labels(expected, got)
    assert label_share <= 1e-3 and score_diff <= 1e-4
    agreement = net.agreement(expected, got)  # how export_onnx checked it, on its own two sizes
    assert agreement.difference == max(label_share, score_diff) <= net.tolerance == 1e-3


@pytest.mark.slow  # trains for more than ten seconds
def test_an_image_without_detections_gives_empty_labels_in_both(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = InstanceMaskRCNN(MaskRCNNSpec(1, (16, 32, 64, 128, 256), 50, score_threshold=0.999)).eval()
    path, _ = export_onnx(net, _info(), tmp_path)
    x = torch.zeros(1, 1, 128, 96)
    with torch.no_grad():
        expected = net(x).numpy()
    got = OnnxRunner(path, "cpu")(x.numpy())
    assert got.shape == expected.shape == (1, 2, 128, 96)
    assert float(np.abs(got).sum()) == 0.0 and float(np.abs(expected).sum()) == 0.0


def test_package_passes_test_model_and_predicts_like_the_model_folder(detector_onnx, tmp_path: Path) -> None:
    from idl.export.bioimageio import PackageRequest, export_package
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    net, path = detector_onnx
    sample = np.random.default_rng(3).random((150, 170, 1)).astype(np.float32)
    package = export_package(net, _info(), path, None, PackageRequest(sample=sample), tmp_path / "m.zip")
    image = np.random.default_rng(4).random((300, 260, 1)).astype(np.float32)
    options = PredictOptions(tile_size=160, progress=False)
    ours = predict_image(load_model(path.parent), image, options)
    theirs = predict_image(load_model(package), image, options)
    assert ours.mask.max() >= 5 and ours.mask.dtype == np.uint16
    assert np.mean(ours.mask != theirs.mask) <= 1e-3
    from bioimageio.spec import load_model_description

    descr = load_model_description(package)
    assert [str(a.id) for a in descr.outputs[0].axes] == ["batch", "channel", "y", "x"]
    assert descr.weights.pytorch_state_dict.architecture.callable == "build_maskrcnn"
    assert "monte-carlo-dropout" not in descr.tags and "maskrcnn" in descr.tags


@pytest.mark.slow  # trains for more than ten seconds
def test_no_package_from_a_detector_that_finds_nothing(tmp_path: Path) -> None:
    from idl.export.bioimageio import PackageRequest, export_package
    from idl.export.onnx import NothingToShow

    net = InstanceMaskRCNN(MaskRCNNSpec(1, (16, 32, 64, 128, 256), 50, score_threshold=0.999)).eval()
    path, _ = export_onnx(net, _info(), tmp_path)
    sample = np.zeros((100, 100, 1), np.float32)
    with pytest.raises(NothingToShow, match="finds no object in the package's test image"):
        export_package(net, _info(), path, None, PackageRequest(sample=sample), tmp_path / "m.zip")
    assert not (tmp_path / "m.zip").exists()
