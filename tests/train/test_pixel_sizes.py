"""Pixel sizes from the training images' files reach the plan (anisotropy), the model description
and the bioimage.io package's axes; images of another pixel size are named in a warning."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

from idl.train.pipeline import prepare, resolve
from tests.train.conftest import tiny

OME = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.0}


def _volumes(project: Path, style: str, names=("a", "b", "c")) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        image = rng.integers(0, 200, (8, 64, 64)).astype(np.uint16)
        image[2:6, 20:40, 20:40] += 500
        mask = (image > 400).astype(np.uint8)
        path = project / "train" / "image" / f"{name}.tif"
        path.parent.mkdir(parents=True, exist_ok=True)
        if style == "ome":
            tifffile.imwrite(path, image, ome=True, metadata=OME)
        else:  # an ImageJ hyperstack
            meta = {"axes": "ZYX", "spacing": 1.0, "unit": "micron"}
            tifffile.imwrite(path, image, imagej=True, resolution=(5.0, 5.0), metadata=meta)
        (project / "train" / "groundtruth").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(project / "train" / "groundtruth" / f"{name}.tif", mask)
    return project


@pytest.mark.parametrize("style", ["ome", "imagej"])
def test_sizes_reach_the_plan_and_the_model_description(tmp_path: Path, style: str) -> None:
    project = _volumes(tmp_path / "p", style)
    config = tiny(device="cpu", dims=3, image_size=32, patch_z=8, depth=2, val_fraction=0.34)
    run = prepare(resolve(project, config, resume=False, overwrite=False), progress=False)
    assert run.plan.anisotropic is True
    assert run.plan.sources["anisotropic"] == "voxels 5x longer in z"
    assert run.setup.info.pixel_size == pytest.approx((1.0, 0.2, 0.2))


def test_images_of_another_pixel_size_are_named(tmp_path: Path, caplog) -> None:
    project = _volumes(tmp_path / "p", "ome")
    odd = project / "train" / "image" / "b.tif"
    tifffile.imwrite(odd, tifffile.imread(odd), ome=True, metadata={**OME, "PhysicalSizeX": 0.3})
    config = tiny(device="cpu", dims=3, image_size=32, patch_z=8, depth=2, val_fraction=0.34)
    with caplog.at_level(logging.WARNING, logger="idl"):
        prepare(resolve(project, config, resume=False, overwrite=False), progress=False)
    said = "the training images' pixel sizes disagree by more than 10 %: b.tif: x 0.3 µm against the median"
    assert f"{said} 0.2 µm" in caplog.text


def test_the_package_axes_carry_the_sizes(tmp_path: Path, rng) -> None:
    import torch

    from idl.export.bioimageio import PackageRequest, build_description
    from idl.export.onnx import export_onnx
    from idl.models import UNet, UNetSpec
    from tests.export.conftest import unet_info

    torch.manual_seed(0)
    spec = UNetSpec(depth=1, base_filters=4, dims=3, dropout=0.0)
    info = unet_info(spec, pixel_size=(1.0, 0.2, 0.2))
    net = UNet(spec).eval()
    det, _ = export_onnx(net, info, tmp_path / "m")
    sample = rng.integers(0, 255, (16, 32, 32, 1)).astype(np.uint8)
    (tmp_path / "w").mkdir()
    descr = build_description(net, info, det, None, PackageRequest(sample), tmp_path / "w")
    for tensor in (descr.inputs[0], descr.outputs[0]):
        space = {str(a.id): (a.scale, a.unit) for a in tensor.axes if str(a.id) in "zyx"}
        assert space == {"z": (1000.0, "nanometer"), "y": (200.0, "nanometer"), "x": (200.0, "nanometer")}
