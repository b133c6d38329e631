"""Physical pixel sizes (micrometres per pixel along z, y and x) as microscopy files record them.

- OME-TIFF: the OME-XML ``Pixels`` element (``PhysicalSizeX/Y/Z`` and their units);
- ImageJ hyperstacks: the ``XResolution``/``YResolution`` tags (pixels per unit), the ``spacing`` (z)
  and the ``unit`` of the ImageJ description;
- Zeiss LSM: the ``VoxelSizeX/Y/Z`` of the LSM metadata (metres);
- OME-Zarr: the ``scale`` of the first dataset's coordinate transformations and the axes' units;
- CZI, ND2, LIF (and anything else bioio reads): bioio's ``physical_pixel_sizes`` (the ``[formats]``
  extra, :mod:`idl.infer.io.formats.bioio`).

A size the file does not record is left out, so ``{}`` means "unknown" (a plain TIFF's dots per inch
are a printer's setting, not a microscope's, and are never read as one). :func:`disagreeing` names the
images of a set whose sizes differ from the set's median by more than a tolerance.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from idl.infer.core.units import micrometres
from idl.infer.io.formats.bioio import BIOIO_SUFFIXES, bioio_pixel_sizes

log = logging.getLogger("idl")

TOLERANCE = 0.1  # sizes of one set that differ from its median by more than this share get a warning


def ome_pixel_sizes(xml: str, index: int = 0) -> dict[str, float]:
    """``{axis: micrometres}`` of image ``index`` of an OME-XML document."""
    import tifffile

    images = tifffile.xml2dict(xml).get("OME", {}).get("Image", {})
    images = images if isinstance(images, list) else [images]
    image = images[index] if index < len(images) else {}
    pixels = image.get("Pixels", {})
    sizes = {}
    for axis in "zyx":
        key = f"PhysicalSize{axis.upper()}"
        size = micrometres(pixels.get(key), pixels.get(f"{key}Unit", "µm"))
        if size is not None:
            sizes[axis] = size
    return sizes


def _imagej(tif) -> dict[str, float]:  # tifffile.TiffFile
    meta = tif.imagej_metadata or {}
    unit = meta.get("unit", "µm")
    if str(unit).lower() in ("pixel", "pixels", "inch", ""):
        return {}
    sizes = {}
    page = tif.pages.first
    for axis, tag in (("y", "YResolution"), ("x", "XResolution")):
        found = page.tags.get(tag)
        if found is not None:
            numerator, denominator = found.value
            if numerator:
                size = micrometres(denominator / numerator, unit)
                if size is not None:
                    sizes[axis] = size
    spacing = micrometres(meta.get("spacing"), unit)
    if spacing is not None:  # ImageJ writes it for stacks only
        sizes["z"] = spacing
    return sizes


def _lsm(tif) -> dict[str, float]:
    meta = tif.lsm_metadata or {}
    sizes = {a: micrometres(meta.get(f"VoxelSize{a.upper()}"), "m") for a in "zyx"}
    return {a: s for a, s in sizes.items() if s is not None}


def _tiff(path: Path) -> dict[str, float]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            return ome_pixel_sizes(tif.ome_metadata)
        if tif.is_lsm:
            return _lsm(tif)
        if tif.is_imagej:
            return _imagej(tif)
    return {}


def _zarr(path: Path) -> dict[str, float]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    meta = dict(group.attrs)
    meta = meta.get("ome", meta)  # OME-Zarr 0.5 nests its metadata under "ome"
    multiscale = meta["multiscales"][0]
    axes = multiscale["axes"]
    transforms = multiscale["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t.get("type") == "scale"), None)
    if scale is None:
        return {}
    sizes = {}
    for axis, value in zip(axes, scale, strict=False):
        name = str(axis["name"] if isinstance(axis, dict) else axis).lower()
        if name in ("z", "y", "x"):
            unit = axis.get("unit") if isinstance(axis, dict) else None
            size = micrometres(value, unit) if unit else None  # no unit: pixels, not a physical size
            if size is not None:
                sizes[name] = size
    return sizes


def pixel_sizes(path: str | os.PathLike[str]) -> dict[str, float]:
    """``{axis: micrometres}`` for the spatial axes (``z``, ``y``, ``x``) whose pixel size the file
    records; ``{}`` when it records none or cannot be read (then the sizes are simply unknown)."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith((".tif", ".tiff", ".lsm")):
            return _tiff(path)
        if name.endswith((".ome.zarr", ".zarr")):
            return _zarr(path)
        if name.endswith(BIOIO_SUFFIXES):
            return bioio_pixel_sizes(path)
    except Exception as exc:  # unreadable metadata is not an error: the sizes are unknown
        log.debug("%s: no pixel sizes (%s)", path, exc)
    return {}


def voxel_size(path: str | os.PathLike[str]) -> tuple[float, float, float] | None:
    """``(z, y, x)`` micrometres when the file records all three, else None."""
    sizes = pixel_sizes(path)
    return (sizes["z"], sizes["y"], sizes["x"]) if all(a in sizes for a in "zyx") else None


def disagreeing(sizes: Mapping[Path, Mapping[str, float]], tolerance: float = TOLERANCE) -> list[str]:
    """Lines naming the files whose size along an axis differs from the median of the files by more
    than ``tolerance`` (a share of the median)."""
    lines = []
    for axis in "zyx":
        known = {p: s[axis] for p, s in sizes.items() if axis in s}
        if len(known) < 2:
            continue
        median = float(np.median(list(known.values())))
        for path, size in known.items():
            if abs(size - median) > tolerance * median:
                lines.append(f"{Path(path).name}: {axis} {size:.4g} µm against the median {median:.4g} µm")
    return lines
