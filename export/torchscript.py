"""TorchScript weights for a package: the deterministic computation the ONNX graph exports, traced.

deepImageJ, Fiji, QuPath and ilastik run TorchScript. The trace is taken of the network's
:meth:`~idl.models.network.Network.exported` module (a U-Net's padding-free forward, in evaluation
mode without Monte Carlo dropout) with its example input, so it computes what ``weights.onnx``
computes; tracing keeps the sizes the ONNX graph keeps dynamic free. The trace is checked against
torch on the network's other example inputs (other values, another batch or size), as the network
measures agreement; the package's validation then checks it against the ONNX weights.
"""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path

import torch

from idl.export.onnx import TOLERANCE
from idl.infer.core.errors import ExportError
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.images import atomic_path
from idl.models.network import Agreement, Network
from idl.models.registry import describe

log = logging.getLogger("idl")


def _distance(check: tuple[Agreement, torch.Tensor]) -> float:
    """How far the trace is from torch on a check input (NaN: furthest of all)."""
    difference = check[0].difference
    return math.inf if math.isnan(difference) else difference


def export_torchscript(net: Network, info: ModelInfo, path: Path, tolerance: float = TOLERANCE) -> float:
    """Trace ``net``'s exported computation into ``path``; return the largest difference from torch on
    its check inputs (as the network measures it: Mask R-CNN counts differing labels), and raise
    :class:`ExportError` when it exceeds ``tolerance``."""
    network = describe(net)
    module = network.exported()
    examples = network.example_inputs(info)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notes, torchvision's tracer warnings
        with torch.no_grad():
            traced = torch.jit.trace(module, examples.trace, check_trace=False)
        buffer = io.BytesIO()  # saved to a path, a full disk aborts the process (PyTorch's writer)
        torch.jit.save(traced, buffer)
        tmp.write_bytes(buffer.getbuffer())
        loaded = torch.jit.load(str(tmp))
        with torch.no_grad():
            checked = [(network.agreement(module(x), loaded(x)), x) for x in examples.check]
    agreement, where = max(checked, key=_distance)
    if not agreement.difference <= tolerance:
        path.unlink(missing_ok=True)
        raise ExportError(
            f"{path}: the TorchScript trace differs from torch ({agreement.text}; tolerance {tolerance:g}) "
            f"on an input of shape {tuple(where.shape)}; it is not trustworthy. Please report this."
        )
    log.info("traced %s (TorchScript vs torch on other inputs: %s)", path.name, agreement.text)
    return agreement.difference
