"""Reading images, whatever their format, and the helpers every writer shares.

:func:`read_image` asks the format registry (:mod:`idl.infer.io.formats`) which format a file is and
reads it whole; a folder that no format claims is read as one mask per object. Writing safely (atomic
replacement, a full disk named) lives in :mod:`idl.infer.io.disk` and TIFF writing in
:mod:`idl.infer.io.formats.tiff`; their names stay importable from here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from idl.infer.core import project
from idl.infer.core.axes import resolve_axes, to_channels_last
from idl.infer.core.errors import DataError
from idl.infer.core.project import is_image_file
from idl.infer.io.disk import (  # noqa: F401  (imported from here by the rest of idl)
    NO_SPACE_ERRNOS,
    NO_SPACE_TEXTS,
    DiskFull,
    atomic_path,
    disk_full,
    free_space,
    is_disk_full,
    megabytes,
    write_text,
)
from idl.infer.io.formats import format_of
from idl.infer.io.formats.skimage import without_alpha  # noqa: F401
from idl.infer.io.formats.tiff import write_tiff  # noqa: F401
from idl.infer.io.physical import voxel_size  # noqa: F401  (imported from here by the rest of idl)

log = logging.getLogger("idl")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file into a numpy array, raising :class:`DataError` naming the file on failure."""
    path = Path(path)
    fmt = format_of(path)
    if path.is_dir() and (fmt is None or not fmt.folder):
        return read_mask_folder(path)
    if fmt is None or fmt.read is None:
        suffix, known = path.suffix.lower(), ", ".join(project.IMAGE_SUFFIXES)
        raise DataError(f"{path}: unsupported file type '{suffix}'. Convert it to one of {known}.")
    if not path.exists():
        raise DataError(f"{path}: file not found.")
    try:
        array = np.asarray(fmt.read(path))
    except DataError:
        raise
    except Exception as exc:  # every reader has its own exception types
        raise DataError(
            f"{path}: cannot read the image ({type(exc).__name__}: {exc}). "
            "Check that the file is complete and opens in an image viewer, or remove it from the folder."
        ) from exc
    if array.size == 0:
        raise DataError(f"{path}: the image is empty (shape {array.shape}). Remove or replace the file.")
    return array


def read_mask_folder(folder: Path) -> np.ndarray:
    """A label image from a folder holding one binary mask per object (InstantDL's and the Kaggle
    DSB2018's instance layout, ``<id>/mask/*.png``): object i gets label i, in file-name order."""
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        raise DataError(f"{folder}: a mask folder must hold one mask image per object; it holds none.")
    masks = []
    for file in files:
        mask = read_image(file)
        masks.append(mask if mask.ndim == 2 else mask[..., 0])
    return masks_to_labels(masks, str(folder))


def masks_to_labels(masks: list[np.ndarray], source: str) -> np.ndarray:
    """One label image from one binary mask per object (object i gets label i)."""
    if not masks:
        raise DataError(f"{source}: no masks.")
    shape = masks[0].shape
    labels = np.zeros(shape, np.uint16)
    overlaps = 0
    for i, mask in enumerate(masks, start=1):
        if mask.shape != shape:
            raise DataError(f"{source}: the masks differ in size ({mask.shape} vs {shape}).")
        on = mask > 0
        overlaps += int(np.count_nonzero(on & (labels > 0)))
        labels[on] = i
    if overlaps:
        log.warning("%s: %d pixel(s) belong to two masks; the later mask keeps them", source, overlaps)
    return labels


def read_channels_last(path: Path, axes: str | None, spatial: str = "yx") -> tuple[np.ndarray, str, bool]:
    """Read an image as channels-last; returns ``(image, axes, guessed)``."""
    raw = read_image(path)
    resolved, guessed = resolve_axes(raw.shape, axes, str(path), spatial)
    return to_channels_last(raw, resolved, spatial), resolved, guessed
