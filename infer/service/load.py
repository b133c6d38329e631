"""Opening any model idl can run: an idl model folder or ``.onnx`` file, a bioimage.io package, or a
bioimage.io id, DOI or URL (fetched into the model cache once, then run from there)."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from idl.infer.core.errors import ModelError
from idl.infer.runtime.model import LoadedModel, is_package, load_onnx_model
from idl.infer.runtime.package import load_package
from idl.infer.runtime.precision import PRECISIONS
from idl.infer.runtime.session import choose_providers
from idl.infer.runtime.zoo import RegistryDownload, cache_folder, fetch, remote_source
from idl.infer.tasks.registry import kind_of


def locate(
    model: str | Path,
    cache: Path | None = None,
    refresh: bool = False,
    registry: RegistryDownload | None = None,
) -> Path:
    """The local file or folder of ``model``: itself when it exists, else the cached package of a
    bioimage.io id, DOI or URL (downloaded first when not cached, or always with ``refresh``), or of a
    models:/NAME/VERSION URI, which ``registry`` downloads (see :mod:`idl.infer.runtime.zoo`)."""
    path = Path(model)
    remote = None if path.exists() else remote_source(str(model))
    if remote is None:
        return path
    return fetch(remote, cache_folder(cache), refresh=refresh, registry=registry)


def load_model(
    model: str | Path, device: str = "auto", cache: Path | None = None, precision: str = "fp32"
) -> LoadedModel:
    """Open a model for prediction: an idl model folder or ``.onnx`` file, a bioimage.io package, or a
    bioimage.io id, DOI or URL (see :mod:`idl.infer.runtime.zoo`). ``precision``: ``fp32``, ``int8``
    (an idl model's int8 graph) or ``auto`` (int8 where the model has it and the CPU runs it fast; see
    :mod:`idl.infer.runtime.precision`); packages carry float32 graphs only."""
    choose_providers(device, ort.get_available_providers())  # fail early on an unavailable --device
    if precision not in PRECISIONS:
        raise ModelError(f"unknown precision '{precision}'; use one of {', '.join(PRECISIONS)}")
    path = locate(model, cache)
    if path.exists() and is_package(path):
        if precision == "int8":
            raise ModelError(
                f"{path}: a bioimage.io package has no int8 graph (idl leaves its int8 graphs out of "
                "packages, and other makers' packages have none). Predict with --precision fp32 (or auto), "
                "or run idl's model folder (PROJECT/model), which holds model_int8.onnx."
            )
        return load_package(path, kind_of, device)
    return load_onnx_model(path, kind_of, device, precision)
