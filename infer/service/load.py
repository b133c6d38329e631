"""Opening any model idl can run: an idl model folder or ``.onnx`` file, or a bioimage.io package."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from idl.infer.core.errors import ModelError
from idl.infer.runtime.model import LoadedModel, is_package, load_onnx_model, remote_hint
from idl.infer.runtime.package import load_package
from idl.infer.runtime.session import choose_providers
from idl.infer.tasks.registry import kind_of


def load_model(path: str | Path, device: str = "auto") -> LoadedModel:
    """Open a model for prediction: an idl model folder or ``.onnx`` file, or a bioimage.io package."""
    text = str(path)
    path = Path(path)
    if not path.exists() and (hint := remote_hint(text)) is not None:
        raise ModelError(hint)
    choose_providers(device, ort.get_available_providers())  # fail early on an unavailable --device
    if path.exists() and is_package(path):
        return load_package(path, kind_of, device)
    return load_onnx_model(path, kind_of, device)
