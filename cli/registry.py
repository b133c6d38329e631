"""Packages from an MLflow model registry for ``idl-predict models:/NAME/VERSION``: MLflow's download,
handed to the inference side's model cache (:func:`idl.infer.runtime.zoo.fetch`), which itself never
imports mlflow (the lab-PC install may not have it)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from idl.infer.core.errors import ModelError
from idl.infer.runtime.zoo import RegistryDownload


def registry_download() -> RegistryDownload | None:
    """:func:`download_registered` when mlflow is installed (the ``[registry]`` extra), else ``None``
    (the model cache then says what to install)."""
    return download_registered if importlib.util.find_spec("mlflow") is not None else None


def download_registered(uri: str, partial: Path) -> None:
    """The package zip of the registry version ``uri`` (``idl-train`` registers a folder holding
    exactly one ``.bioimageio.zip``) moved to ``partial``."""
    # an unreachable server fails after two retries (MLflow's default of seven waits about 4 minutes)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    from mlflow.artifacts import download_artifacts

    with tempfile.TemporaryDirectory(dir=partial.parent, prefix=".registry-") as tmp:
        folder = Path(download_artifacts(artifact_uri=uri, dst_path=tmp))
        zips = sorted(folder.rglob("*.zip")) if folder.is_dir() else [folder]
        if len(zips) != 1 or not zipfile.is_zipfile(zips[0]):
            raise ModelError(
                f"{uri}: the registered files are not one bioimage.io package zip "
                f"({', '.join(p.name for p in zips) or 'none'}); register the package idl-train wrote."
            )
        shutil.move(zips[0], partial)
