"""Reading and writing images.

TIFF goes through tifffile (keeps dtype and all axes), PNG/JPEG through scikit-image, ``.npy`` through
numpy. Writes are atomic: data goes to a temporary file in the target folder that is renamed into place,
so an interrupted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# what libraries say when they report a full disk in their own exception types (SQLite through MLflow)
NO_SPACE_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def megabytes(size: float) -> str:
    """``size`` bytes in MB (2^20 bytes) for messages: two decimals below 1 MB, one below 10 MB."""
    value = size / 2**20
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 10 else f"{value:.0f}"


def free_space(path: str | os.PathLike[str]) -> int:
    """Bytes free on the file system that holds ``path`` (or its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


class DiskFull(OSError):
    """No space left where an output is written: the file, how much it needs and how much is free.

    An :class:`OSError` (``ENOSPC``), not an :class:`~idl.infer.core.errors.IdlError`: a batch must not
    go on to the next image, which would fail alike, but stop at once; the commands print the message
    and how to continue (:mod:`idl.cli.common`)."""

    def __init__(
        self, path: str | os.PathLike[str] | None, needed: int | None, at_least: bool = False
    ) -> None:
        self.needed = needed
        self.free = free_space(path) if path is not None else None
        figures = []
        if needed is not None:
            figures.append(f"needs {'more than' if at_least else 'about'} {megabytes(needed)} MB")
        if self.free is not None:
            figures.append(f"{megabytes(self.free)} MB free")
        where = path if path is not None else "the disk"
        text = f"No space left on {where}" + (f" ({', '.join(figures)})." if figures else ".")
        super().__init__(errno.ENOSPC, text, None if path is None else str(path))

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its message and figures (the free space is not measured again)."""
        return _restored, (str(self), self.filename, self.needed, self.free)


def _restored(text: str, path: str | None, needed: int | None, free: int | None) -> DiskFull:
    """A :class:`DiskFull` unpickled."""
    full = DiskFull.__new__(DiskFull)
    OSError.__init__(full, errno.ENOSPC, text, path)
    full.needed, full.free = needed, free
    return full


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a full disk (or quota): an ``ENOSPC`` or ``EDQUOT`` anywhere in its
    chain, or a library's own words for it (PyTorch's zip writer raises a ``RuntimeError`` whose
    context holds the ``OSError``; SQLite says "database or disk is full")."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(item).lower() for text in NO_SPACE_TEXTS):
            return True
    return False


def disk_full(exc: BaseException, path: str | os.PathLike[str] | None = None) -> DiskFull | None:
    """``exc`` as a :class:`DiskFull` naming ``path`` (else the file the error names), or None when
    the disk is not full."""
    for item in _chain(exc):
        if isinstance(item, DiskFull):
            return item
    if not is_disk_full(exc):
        return None
    named = [i.filename for i in _chain(exc) if isinstance(i, OSError) and i.filename]
    return DiskFull(path if path is not None else (named[0] if named else None), None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    A full disk becomes :class:`DiskFull` naming ``path`` and ``size`` (the bytes it needs, when the
    caller knows them; else more than what was written when the disk filled up)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    except Exception as exc:
        if not is_disk_full(exc) or isinstance(exc, DiskFull):
            raise
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)  # before the free space is measured
        raise DiskFull(path, size or written, at_least=size is None) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def write_tiff(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as a (zlib-compressed) TIFF atomically and return the path.

    Arrays are stored as they are (grayscale planes), never reinterpreted as RGB.
    """
    import tifffile

    path, array = Path(path), np.asarray(array)
    try:
        with atomic_path(path) as tmp:
            tifffile.imwrite(tmp, array, compression="zlib", photometric="minisblack")
    except DiskFull as exc:
        raise DiskFull(path, _compressed_size(array)) from exc
    return path


def _compressed_size(array: np.ndarray) -> int:
    """About the bytes a zlib-compressed TIFF of ``array`` takes (for a disk-full message only:
    compressing costs as much as writing)."""
    import zlib

    return len(zlib.compress(np.ascontiguousarray(array).tobytes(), 6)) + 4096


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return the path."""
    path = Path(path)
    with atomic_path(path, len(text.encode("utf-8"))) as tmp:
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
