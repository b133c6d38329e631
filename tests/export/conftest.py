"""A package of a freshly initialised small U-Net: exported in seconds, no training."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from idl.infer.core.model_info import ModelInfo
from idl.models import UNet, UNetSpec


@dataclass(frozen=True)
class FreshPackage:
    net: UNet
    info: ModelInfo
    path: Path  # the validated .bioimageio.zip


def unet_info(spec: UNetSpec, **fields: object) -> ModelInfo:
    """A semantic model's description of a U-Net of ``spec`` (2D or 3D), with ``fields`` set."""
    volume = spec.dims == 3
    return ModelInfo(
        task="semantic",
        in_channels=spec.in_channels,
        num_classes=2,
        size_multiple=spec.size_multiple,
        halo=spec.halo,
        z_multiple=spec.z_multiple if volume else 0,
        z_halo=spec.z_halo if volume else 0,
        dims=spec.dims,
        dropout=spec.dropout,
        **fields,  # type: ignore[arg-type]
    )


def fresh_unet(seed: int = 0, spec: UNetSpec | None = None) -> tuple[UNet, ModelInfo]:
    """A small U-Net with random weights and random batch-norm statistics (so a state dict that is not
    loaded shows), in evaluation mode, and its ModelInfo."""
    spec = spec or UNetSpec(depth=2, base_filters=4, dropout=0.2)
    torch.manual_seed(seed)
    net = UNet(spec)
    for module in net.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    info = ModelInfo(
        task="semantic",
        in_channels=spec.in_channels,
        num_classes=2 if spec.out_channels == 1 else spec.out_channels,
        size_multiple=spec.size_multiple,
        halo=spec.halo,
        dims=spec.dims,
        axes="yx" if spec.dims == 2 else "zyx",
        dropout=spec.dropout,
        name="fresh-unet",
    )
    return net.eval(), info


def export_fresh_package(folder: Path, seed: int = 0) -> FreshPackage:
    """ONNX graphs and the validated package (all three weight formats) of :func:`fresh_unet`."""
    from idl.export.bioimageio import PackageRequest, export_package
    from idl.export.onnx import export_onnx
    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei

    net, info = fresh_unet(seed)
    det, mc = export_onnx(net, info, folder)
    sample = synthetic_nuclei(np.random.default_rng(seed), NucleiSpec(size=96))[0][..., None]
    package = export_package(
        net, info, det, mc, PackageRequest(sample=sample), folder / "fresh.bioimageio.zip"
    )
    return FreshPackage(net, info, package)


@pytest.fixture(scope="session")
def fresh_package(tmp_path_factory: pytest.TempPathFactory) -> FreshPackage:
    return export_fresh_package(tmp_path_factory.mktemp("fresh"))


@pytest.fixture(scope="session")
def make_unet():
    """:func:`fresh_unet`, for tests that need U-Nets of other shapes."""
    return fresh_unet


def _no_idl_import(name, globals=None, locals=None, fromlist=(), level=0):
    if name == "idl" or name.startswith("idl."):
        raise ImportError(f"the architecture file imports {name}")
    return builtins.__import__(name, globals, locals, fromlist, level)


def import_without_idl(source: str, path: Path) -> ModuleType:
    """Import ``source`` as a module whose every import of idl, at import or call time, fails (idl is
    installed here; the module sees a Python without it)."""
    path.write_text(source, encoding="utf-8")
    name = f"standalone_{path.stem}_{abs(hash(source))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__dict__["__builtins__"] = {**vars(builtins), "__import__": _no_idl_import}
    sys.modules[name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
    return module


@pytest.fixture(scope="session")
def load_without_idl():
    """:func:`import_without_idl`."""
    return import_without_idl
