"""Microscope vendors' formats through bioio and its reader plugins: Zeiss CZI (``bioio-czi``), Nikon
ND2 (``bioio-nd2``) and Leica LIF (``bioio-lif``), installed with idl's ``[formats]`` extra.

bioio gives every file as ``TCZYX`` with its physical pixel sizes and its scenes (a LIF or CZI often
holds several positions or series). idl reads one scene at a time (the first unless told), time
point 0 of a time series refused, and drops the axes of size 1 the model does not need (z of a 2D
image). Without the extra, reading such a file fails with the command that installs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.core.units import micrometres
from idl.infer.io.formats.registry import ImageFormat

BIOIO_SUFFIXES = (".czi", ".nd2", ".lif")
EXTRA = "pip install 'idl-toolkit[formats]'"
PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif"}


def bioimage(path: Path, scene: int = 0) -> Any:
    """bioio's ``BioImage`` of ``path`` at ``scene``; a missing bioio or plugin is a
    :class:`DataError` naming the extra."""
    try:
        from bioio import BioImage
    except ImportError as exc:
        raise DataError(
            f"{path}: {path.suffix} files are read through bioio, which is not installed. Install idl's "
            f"formats extra: {EXTRA} (or convert the file to OME-TIFF)."
        ) from exc
    try:
        image = BioImage(path)
    except Exception as exc:
        plugin = PLUGINS.get(path.suffix.lower(), "a bioio reader plugin")
        if "reader" in str(exc).lower() or "plugin" in str(exc).lower():
            raise DataError(
                f"{path}: bioio has no reader for {path.suffix} files ({plugin} is missing). Install idl's "
                f"formats extra: {EXTRA}."
            ) from exc
        raise
    if scene:
        image.set_scene(scene)
    return image


def scene_names(path: Path) -> list[str]:
    """The names of the file's scenes (series, positions), in order."""
    return [str(s) for s in bioimage(path).scenes]


def _squeezed(image: Any, path: Path) -> tuple[Any, str]:
    """The scene's lazy (dask) array as ``[c][z]yx`` and its axes: time point 0 of one (a series of
    several is refused), z and c dropped where they have size 1."""
    dims = image.dims
    if dims.T > 1:
        raise DataError(
            f"{path}: a time series of {dims.T} time points; idl predicts single time points. Export one "
            "time point (e.g. in Fiji) and predict that."
        )
    axes = "".join(a for a, n in (("c", dims.C), ("z", dims.Z)) if n > 1) + "yx"
    return image.get_image_dask_data(axes.upper(), T=0), axes


def read_bioio_scene(path: Path, scene: int = 0) -> tuple[np.ndarray, str]:
    """One scene read whole, as ``[c][z]yx``, and its axes."""
    data, axes = _squeezed(bioimage(path, scene), path)
    return np.asarray(data.compute()), axes


def read_bioio(path: Path) -> np.ndarray:
    """The first scene read whole, as ``[c][z]yx``."""
    return read_bioio_scene(path)[0]


def open_bioio(path: Path) -> tuple[Any, str]:
    """The first scene, read block by block (dask), with its axes."""
    return _squeezed(bioimage(path), path)


def bioio_pixel_sizes(path: Path, scene: int = 0) -> dict[str, float]:
    """``{axis: micrometres}`` bioio reports for a scene (bioio's sizes are in micrometres)."""
    sizes = bioimage(path, scene).physical_pixel_sizes
    found = {a: micrometres(getattr(sizes, a.upper())) for a in "zyx"}
    return {a: s for a, s in found.items() if s is not None}


BIOIO = ImageFormat(
    "bioio",
    BIOIO_SUFFIXES,
    "CZI, ND2 and LIF through bioio (the [formats] extra)",
    read=read_bioio,
    open=open_bioio,
    records_axes=True,
)
