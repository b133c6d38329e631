"""Reading and writing images.

TIFF goes through tifffile (keeps dtype and all axes), PNG/JPEG through scikit-image, ``.npy`` through
numpy. Writes are atomic: data goes to a temporary file in the target folder that is renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from idl.infer.core.axes import resolve_axes, to_channels_last
from idl.infer.core.errors import DataError
from idl.infer.core.project import IMAGE_SUFFIXES, is_image_file

log = logging.getLogger("idl")


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read one image file into a numpy array, raising :class:`DataError` naming the file on failure."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_dir() and suffix != ".zarr":
        return read_mask_folder(path)
    if suffix == ".zarr" and path.is_dir():
        from idl.infer.io.omezarr import open_ome_zarr

        array, _ = open_ome_zarr(path)
        return np.asarray(array[...])
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type '{suffix}'. Convert it to one of {', '.join(IMAGE_SUFFIXES)}."
        )
    if not path.is_file():
        raise DataError(f"{path}: file not found.")
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            from skimage.io import imread

            array = imread(path)
    except Exception as exc:  # every reader has its own exception types
        raise DataError(
            f"{path}: cannot read the image ({type(exc).__name__}: {exc}). "
            "Check that the file is complete and opens in an image viewer, or remove it from the folder."
        ) from exc
    array = np.asarray(array)
    if array.size == 0:
        raise DataError(f"{path}: the image is empty (shape {array.shape}). Remove or replace the file.")
    if suffix == ".png" and without_alpha(array) is not None:
        array = without_alpha(array)
    return array


def without_alpha(array: np.ndarray) -> np.ndarray | None:
    """The colour channels of an RGBA image ``(Y, X, 4)`` whose alpha is the same everywhere (fully
    opaque PNGs, as the Kaggle DSB2018 and InstantDL's examples store them), else ``None``: such an
    alpha channel holds no image content."""
    if array.ndim != 3 or array.shape[-1] != 4:
        return None
    alpha = array[..., 3]
    return array[..., :3] if alpha.min() == alpha.max() else None


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_tiff(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as a (zlib-compressed) TIFF atomically and return the path.

    Arrays are stored as they are (grayscale planes), never reinterpreted as RGB.
    """
    import tifffile

    path = Path(path)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, np.asarray(array), compression="zlib", photometric="minisblack")
    return path


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def voxel_size(path: str | os.PathLike[str]) -> tuple[float, float, float] | None:
    """``(z, y, x)`` voxel size from a TIFF's ImageJ or OME metadata, or ``None`` when not recorded."""
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            ij = tif.imagej_metadata or {}
            z = ij.get("spacing")
            tag = page.tags.get("XResolution")
            if z is None or tag is None:
                return None
            numerator, denominator = tag.value
            xy = denominator / numerator if numerator else None
    except Exception:  # unreadable metadata is not an error: the size is simply unknown
        return None
    return (float(z), float(xy), float(xy)) if xy else None


def read_channels_last(path: Path, axes: str | None, spatial: str = "yx") -> tuple[np.ndarray, str, bool]:
    """Read an image as channels-last; returns ``(image, axes, guessed)``."""
    raw = read_image(path)
    resolved, guessed = resolve_axes(raw.shape, axes, str(path), spatial)
    return to_channels_last(raw, resolved, spatial), resolved, guessed
