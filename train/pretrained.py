"""Transfer learning: start a network from an idl checkpoint or a bioimage.io package.

Tensors are copied where name and shape both match; everything else keeps its fresh initialization
(e.g. a first layer for a different number of channels, or a head for other classes). The table of
loaded and skipped tensors is logged so a user sees what was transferred.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from idl.infer.core.errors import ModelError
from idl.infer.runtime.model import is_package
from idl.train.checkpoint import load_checkpoint

log = logging.getLogger("idl")


@dataclass
class Pretrained:
    """Weights to start from, and the U-Net settings (depth, filters) they were trained with."""

    state_dict: dict[str, torch.Tensor]
    architecture: dict[str, Any]
    source: str


@dataclass
class TransferReport:
    """Which tensors were loaded, and which were skipped and why."""

    loaded: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def table(self) -> str:
        """A plain-text table, one tensor per line."""
        width = max((len(n) for n, _ in self.loaded + self.skipped), default=10)
        lines = [f"{'tensor':<{width}}  status"]
        lines += [f"{n:<{width}}  loaded {tuple(s)}" for n, s in self.loaded]
        lines += [f"{n:<{width}}  skipped: {why}" for n, why in self.skipped]
        return "\n".join(lines)


def _from_package(path: Path) -> Pretrained:
    from idl.infer.runtime.package import read_description

    descr, _ = read_description(path)
    weights = descr.weights.pytorch_state_dict
    if weights is None:
        raise ModelError(
            f"{path}: this package has no pytorch_state_dict weights, which fine-tuning needs (ONNX "
            "weights cannot be trained). Use a package exported by idl, or an idl checkpoint (best.pt)."
        )
    data = weights.get_reader().read()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read the package's state dict ({exc}).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    kwargs = dict(getattr(weights.architecture, "kwargs", {}) or {})
    return Pretrained(state, kwargs, str(path))


def read_pretrained(source: str | Path) -> Pretrained:
    """Weights from an idl checkpoint (``.pt``) or a bioimage.io package (zip, folder or rdf.yaml, or a
    bioimage.io id, DOI or URL, fetched into the model cache as ``idl-predict`` does)."""
    from idl.infer.service.load import locate

    path = locate(source)
    if not path.exists():
        raise ModelError(f"--pretrained {source}: no such file or folder.")
    if path.suffix.lower() == ".onnx":
        raise ModelError(
            f"{path}: ONNX graphs cannot be fine-tuned. Use the checkpoint (PROJECT/model/best.pt) or the "
            "bioimage.io package (PROJECT/model/*.bioimageio.zip)."
        )
    if path.is_dir() and (path / "best.pt").is_file():
        path = path / "best.pt"  # a PROJECT/model folder
    if is_package(path):
        return _from_package(path)
    payload = load_checkpoint(path)
    return Pretrained(payload["state_dict"], dict(payload.get("spec", {})), str(path))


def transfer(model: nn.Module, state: dict[str, torch.Tensor]) -> TransferReport:
    """Copy tensors of ``state`` into ``model`` where name and shape match."""
    own = model.state_dict()
    report = TransferReport()
    matched = {}
    for name, tensor in own.items():
        if name not in state:
            report.skipped.append((name, "not in the pretrained weights"))
        elif tuple(state[name].shape) != tuple(tensor.shape):
            report.skipped.append(
                (
                    name,
                    f"shape {tuple(state[name].shape)} in the pretrained weights, {tuple(tensor.shape)} here",
                )
            )
        else:
            matched[name] = state[name]
            report.loaded.append((name, tuple(tensor.shape)))
    model.load_state_dict(matched, strict=False)
    return report
