"""Files that hold several images (scenes, series, positions): a multi-series OME-TIFF, or a CZI, LIF
or ND2 with several scenes (through bioio, the ``[formats]`` extra).

``idl-predict`` predicts each scene as an image of its own, named ``<file stem>_<scene name>``
(:func:`scene_stems`); a file of one image is predicted as before. Each scene comes with the axes and
pixel sizes its metadata records.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from idl.infer.io.formats.bioio import BIOIO_SUFFIXES, bioimage, bioio_pixel_sizes, read_bioio_scene
from idl.infer.io.physical import ome_pixel_sizes


def _tiff_series(path: Path) -> list[str]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.is_ome or len(tif.series) < 2:
            return []
        return [s.name or f"series{i}" for i, s in enumerate(tif.series)]


def scene_names(path: Path) -> list[str]:
    """The names of the file's scenes when it holds more than one, else ``[]``."""
    name = path.name.lower()
    if name.endswith(BIOIO_SUFFIXES):
        scenes = [str(s) for s in bioimage(path).scenes]
        return scenes if len(scenes) > 1 else []
    if name.endswith((".tif", ".tiff")):
        try:
            return _tiff_series(path)
        except Exception:  # a broken file is named when it is read
            return []
    return []


def scene_stems(stem: str, names: list[str]) -> list[str]:
    """Output names of the scenes: ``<stem>_<scene name>`` (characters other than letters, digits,
    ``.``, ``-`` and ``_`` replaced), numbered where two names would be the same."""
    stems: list[str] = []
    for index, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or f"scene{index}"
        candidate = f"{stem}_{safe}"
        stems.append(candidate if candidate not in stems else f"{candidate}_{index}")
    return stems


def read_scene(path: Path, index: int) -> tuple[np.ndarray, str]:
    """Scene ``index`` of a file, read whole, and its axes (lower case; axes of size 1 other than y
    and x dropped)."""
    if path.name.lower().endswith(BIOIO_SUFFIXES):
        return read_bioio_scene(path, index)
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[index]
        array, axes = series.asarray(), series.axes.lower().replace("s", "c")
    keep = [i for i, a in enumerate(axes) if array.shape[i] > 1 or a in "yx"]
    return array.reshape([array.shape[i] for i in keep]), "".join(axes[i] for i in keep)


def scene_pixel_sizes(path: Path, index: int) -> dict[str, float]:
    """``{axis: micrometres}`` of scene ``index``."""
    try:
        if path.name.lower().endswith(BIOIO_SUFFIXES):
            return bioio_pixel_sizes(path, index)
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return ome_pixel_sizes(tif.ome_metadata or "", index)
    except Exception:  # unknown sizes are not an error
        return {}
