"""OME-Zarr images: the format lives in :mod:`idl.infer.io.formats.ome_zarr`; these names stay here for
the modules that import them from this place."""

from __future__ import annotations

from pathlib import Path

from idl.infer.core.project import image_stem, is_image_folder
from idl.infer.io.formats.ome_zarr import (
    AXIS_TYPES,
    SUFFIX,
    ZarrSink,
    open_ome_zarr,
    write_ome_zarr,
)

__all__ = ["AXIS_TYPES", "SUFFIX", "ZarrSink", "image_stem", "is_zarr", "open_ome_zarr", "write_ome_zarr"]


def is_zarr(path: Path) -> bool:
    """True for a folder holding an image of a folder format (OME-Zarr, ``*.zarr``)."""
    return is_image_folder(path)
