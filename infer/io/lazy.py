"""Images read lazily: only the windows a tile needs are loaded, so inputs can exceed memory.

:func:`open_channels_last` returns an array-like with ``shape``, ``dtype``, ``ndim`` and basic slicing
over its channels-last axes (``"yxc"``, ``"zyxc"``); each slice reads just that block from disk, as the
file's format opens it (:mod:`idl.infer.io.formats`):

- uncompressed TIFF and ``.npy``: memory maps;
- compressed TIFF, one page or a stack of pages (ImageJ, OME, Fiji): through zarr, which decodes only
  the strips or tiles a window covers (page by page as a fallback);
- OME-Zarr: its full-resolution array, with the axes it records;
- anything else (PNG/JPEG, single-page compressed TIFF) is read whole.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.axes import reorder, resolve_axes
from idl.infer.core.errors import DataError
from idl.infer.io.formats import format_of
from idl.infer.io.formats.tiff import PagedTiff  # noqa: F401  (imported from here)
from idl.infer.io.images import read_image

log = logging.getLogger("idl")


def _open_raw(path: Path) -> tuple[Any, str | None]:
    """The file as a lazily sliced array (memory map, zarr, paged TIFF: whatever its format's ``open``
    gives), or fully read where the format cannot open it lazily, with the axis letters its metadata
    records (OME-Zarr) or ``None``."""
    fmt = format_of(path)
    if fmt is not None and fmt.open is not None and (path.is_dir() if fmt.folder else path.is_file()):
        opened = fmt.open(path)
        if opened is not None:
            return opened
    return read_image(path), None


class ChannelsLastView:
    """A lazy array seen with idl's channels-last axes; slicing reads and reorders one block."""

    def __init__(self, source: Any, axes: str, spatial: str, path: Path | None = None) -> None:
        self.source = source
        self.path = path  # named in the error when a block cannot be read (a truncated file)
        self.axes = axes
        self.target = spatial + "c"
        sizes = dict(zip(axes, source.shape, strict=True))
        self.shape = tuple(sizes.get(a, 1) for a in self.target)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        wanted = dict(zip(self.target, index, strict=True))
        try:
            block = np.asarray(self.source[tuple(wanted.get(a, slice(None)) for a in self.axes)])  # t: size 1
        except Exception as exc:  # every reader has its own exception types
            raise DataError(
                f"{self.path or 'image'}: cannot read the image ({type(exc).__name__}: {exc}). Check that "
                "the file is complete and opens in an image viewer, or remove it from the folder."
            ) from exc
        return reorder(block, self.axes, self.target)


def open_channels_last(path: Path, axes: str | None, spatial: str) -> tuple[Any, str, bool]:
    """Open an image lazily as channels-last; returns ``(array, axes, guessed)``.

    The result is a numpy array when the file had to be read whole (or is small), else a
    :class:`ChannelsLastView`.
    """
    raw, recorded = _open_raw(Path(path))
    if recorded is not None and axes is None:  # OME-Zarr says which axis is which
        sizes = dict(zip(recorded, raw.shape, strict=True))
        if (
            sizes.get("t", 1) != 1
            or any(a not in recorded for a in spatial)
            or set(recorded) - set(spatial + "ct")
        ):
            raise DataError(
                f"{path}: its axes '{recorded}' (shape {tuple(raw.shape)}) do not fit a "
                f"{len(spatial)}D model ({spatial}, optional c, t of size 1)."
            )
        return ChannelsLastView(raw, recorded, spatial, Path(path)), recorded, False
    resolved, guessed = resolve_axes(tuple(raw.shape), axes, str(path), spatial)
    if isinstance(raw, np.ndarray) and not isinstance(raw, np.memmap):
        return reorder(raw, resolved, spatial + "c"), resolved, guessed
    if any(a not in resolved for a in spatial):
        raise DataError(f"{path}: axes '{resolved}' lack one of {spatial}.")
    return ChannelsLastView(raw, resolved, spatial, Path(path)), resolved, guessed


def is_lazy(image: Any) -> bool:
    """True for images that are not (fully) in memory."""
    return not isinstance(image, np.ndarray) or isinstance(image, np.memmap)


class ChannelsMatched:
    """A lazy channels-last image seen with the channels a model needs, as
    :func:`idl.infer.core.axes.match_channels` does in memory: a grey image repeated into three
    channels, or a colour image whose channels are all equal taken as one. Slicing reads one block."""

    def __init__(self, source: Any, channels: int) -> None:
        self.source = source
        self.path = getattr(source, "path", None)
        self.shape = (*source.shape[:-1], channels)
        self.dtype = np.dtype(source.dtype)
        self.ndim = len(self.shape)
        self.nbytes = int(np.prod(self.shape)) * self.dtype.itemsize

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        block = np.asarray(self.source[(*index[:-1], slice(None))])
        block = np.repeat(block, 3, axis=-1) if self.shape[-1] == 3 else block[..., :1]
        return block[..., index[-1]]


def equal_channels(image: Any, block_bytes: int = 64 * 2**20) -> bool:
    """Whether every channel of a lazy channels-last image equals the first, read in slabs along
    its first axis of at most about ``block_bytes``."""
    row_bytes = max(1, image.nbytes // max(1, image.shape[0]))
    step = max(1, block_bytes // row_bytes)
    for start in range(0, image.shape[0], step):
        slab = np.asarray(image[(slice(start, start + step),)])
        if not all(np.array_equal(slab[..., 0], slab[..., i]) for i in range(1, slab.shape[-1])):
            return False
    return True


def match_channels_lazily(image: Any, channels: int) -> Any:
    """``image`` (lazy) with ``channels`` channels where that loses nothing, else unchanged: the
    same rule for a large TIFF read window by window as for a PNG read whole."""
    have = image.shape[-1]
    if (have == 1 and channels == 3) or (have == 3 and channels == 1 and equal_channels(image)):
        return ChannelsMatched(image, channels)
    return image
