"""TorchScript weights for a package: the deterministic computation the ONNX graph exports, traced.

deepImageJ, Fiji, QuPath and ilastik run TorchScript. The trace is taken of
:func:`~idl.export.onnx.exported_module` (a U-Net's padding-free forward, in evaluation mode without
Monte Carlo dropout), so it computes what ``weights.onnx`` computes; tracing keeps a U-Net's spatial
sizes and the batch free, as the ONNX export does. The trace is checked against torch on an input of
another size; the package's validation then checks it against the ONNX weights.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from idl.export.onnx import DETECTOR_SIZES, TOLERANCE, example_input, exported_module
from idl.infer.core.errors import ExportError
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.images import atomic_path
from idl.models import ResNetClassifier, UNet
from idl.models.maskrcnn import InstanceMaskRCNN

log = logging.getLogger("idl")


def _examples(net: UNet | ResNetClassifier | InstanceMaskRCNN, info: ModelInfo) -> list[torch.Tensor]:
    """The input to trace with, and one of another size (and batch) to check the trace on."""
    if isinstance(net, InstanceMaskRCNN):
        generator = torch.Generator().manual_seed(0)
        return [torch.rand(1, info.in_channels, *size, generator=generator) for size in DETECTOR_SIZES]
    first = example_input(info, batch=1, seed=0)
    if info.input_size:  # one fixed input size (classifiers): a batch of two to check
        return [first, example_input(info, batch=2, seed=1)]
    # y and x swapped: another spatial shape (the in-plane axes share their size multiple), batch 2
    return [first, example_input(info, batch=2, seed=1).transpose(-1, -2).contiguous()]


def export_torchscript(
    net: UNet | ResNetClassifier | InstanceMaskRCNN, info: ModelInfo, path: Path, tolerance: float = TOLERANCE
) -> float:
    """Trace ``net``'s exported computation into ``path``; return the largest difference from torch on
    an input of another size (Mask R-CNN: the share of differing labels), and raise
    :class:`ExportError` when it exceeds ``tolerance``."""
    module = exported_module(net)
    trace_with, check_with = _examples(net, info)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notes, torchvision's tracer warnings
        with torch.no_grad():
            traced = torch.jit.trace(module, trace_with, check_trace=False)
        buffer = io.BytesIO()  # saved to a path, a full disk aborts the process (PyTorch's writer)
        torch.jit.save(traced, buffer)
        tmp.write_bytes(buffer.getbuffer())
        loaded = torch.jit.load(str(tmp))
        with torch.no_grad():
            want, got = module(check_with).numpy(), loaded(check_with).numpy()
    if isinstance(net, InstanceMaskRCNN):
        diff = float(np.mean(want[:, 0] != got[:, 0])) if want.shape == got.shape else 1.0
    else:
        diff = float(np.max(np.abs(want - got))) if want.shape == got.shape else float("inf")
    if not diff <= tolerance:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"{path}: the TorchScript trace differs from torch by {diff:.3g} (> {tolerance}) on an input "
            f"of shape {tuple(check_with.shape)}; it is not trustworthy. Please report this."
        )
    log.info("traced %s (TorchScript vs torch on another input size: %.2e)", path.name, diff)
    return diff
