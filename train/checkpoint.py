"""Checkpoints: everything needed to rebuild, export, fine-tune or resume a model.

Stored with ``torch.save`` as plain containers and tensors only, so ``torch.load(weights_only=True)``
reads them safely. Writes are atomic (temporary file + rename): an interrupted save never corrupts the
previous checkpoint.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.images import atomic_path
from idl.models import ResNetClassifier, ResNetSpec, UNet, UNetSpec
from idl.models.maskrcnn import InstanceMaskRCNN, MaskRCNNSpec

FORMAT = "idl-checkpoint/1"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Atomically write a checkpoint dictionary (adds the format tag)."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **payload}, tmp)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read this checkpoint ({exc}).") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not an idl checkpoint (expected a best.pt or last.pt from idl-train).")
    return payload


# architecture name -> (network, spec); "unet2d": checkpoints written before the 3D U-Net
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "unet": (UNet, UNetSpec),
    "unet2d": (UNet, UNetSpec),
    "resnet": (ResNetClassifier, ResNetSpec),
    "maskrcnn": (InstanceMaskRCNN, MaskRCNNSpec),
}


def architecture_name(model: nn.Module) -> str:
    """The checkpoint's architecture tag of a network (its class name for networks idl.models does
    not define, which :func:`model_from_checkpoint` cannot rebuild)."""
    for name, (network, _) in ARCHITECTURES.items():
        if type(model) is network:
            return name
    return type(model).__name__


def model_payload(model: nn.Module, info: ModelInfo) -> dict[str, Any]:
    """The part of a checkpoint that describes and holds the network."""
    return {
        "architecture": architecture_name(model),
        "spec": asdict(model.spec),  # type: ignore[call-overload]
        "info": info.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[Any, ModelInfo]:
    """Rebuild the network (eval mode, CPU) and its :class:`ModelInfo` from a checkpoint."""
    if payload.get("architecture") not in ARCHITECTURES:
        raise ModelError(f"unsupported architecture '{payload.get('architecture')}' in checkpoint")
    network, spec = ARCHITECTURES[payload["architecture"]]
    model = network(spec(**payload["spec"]))
    model.load_state_dict(payload["state_dict"])
    return model.eval(), ModelInfo.from_json(payload["info"])
