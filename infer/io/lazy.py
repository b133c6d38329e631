"""Images read lazily: only the windows a tile needs are loaded, so inputs can exceed memory.

:func:`open_channels_last` returns an array-like with ``shape``, ``dtype``, ``ndim`` and basic slicing
over its channels-last axes (``"yxc"``, ``"zyxc"``); each slice reads just that block from disk:

- uncompressed TIFF and ``.npy``: memory maps;
- compressed TIFF, one page or a stack of pages (ImageJ, OME, Fiji): through zarr, which decodes only
  the strips or tiles a window covers (page by page as a fallback);
- anything else (PNG/JPEG, single-page compressed TIFF) is read whole.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.axes import reorder, resolve_axes
from idl.infer.core.errors import DataError
from idl.infer.io.images import read_image

log = logging.getLogger("idl")


class PagedTiff:
    """A TIFF series stored page by page (the leading axes index the pages, e.g. z, or c and z);
    slicing decodes only the pages needed.

    Decoded pages are cached for the pages of the latest request: tiles are visited row by row, so
    every tile of a z-slab reuses them, and memory stays one slab of pages, whatever the depth.
    """

    def __init__(self, path: Path) -> None:
        import tifffile

        self._tif = tifffile.TiffFile(path)
        series = self._tif.series[0]
        self.shape = tuple(series.shape)
        self.dtype = np.dtype(series.dtype)
        self.ndim = len(self.shape)
        self._pages = series.pages
        page_shape = tuple(self._pages[0].shape)
        self._lead = self.ndim - len(page_shape)
        if self._lead < 1 or self.shape[self._lead :] != page_shape:
            raise ValueError("not a stack of equal pages")
        if len(self._pages) != int(np.prod(self.shape[: self._lead])):
            raise ValueError("pages do not match the series shape")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def _page(self, k: int, keep: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
        else:
            self._cache[k] = self._pages[k].asarray()
            while len(self._cache) > keep:
                self._cache.popitem(last=False)
        return self._cache[k]

    def __getitem__(self, index: tuple[slice, ...]) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        lead, rest = self.shape[: self._lead], index[self._lead :]
        ranges = [range(*s.indices(n)) for s, n in zip(index[: self._lead], lead, strict=True)]
        count = int(np.prod([len(r) for r in ranges]))
        crop_shape = np.empty(self.shape[self._lead :], np.bool_)[rest].shape
        out = np.empty((*(len(r) for r in ranges), *crop_shape), self.dtype)
        for position, combo in zip(
            np.ndindex(*out.shape[: self._lead]), itertools.product(*ranges), strict=True
        ):
            out[position] = self._page(int(np.ravel_multi_index(combo, lead)), count)[rest]
        return out


def _open_raw(path: Path) -> tuple[Any, str | None]:
    """The file as a lazily sliced array (memory map, zarr, paged TIFF), or fully read as a fallback,
    with the axis letters its metadata records (OME-Zarr) or ``None``."""
    from idl.infer.io.omezarr import is_zarr, open_ome_zarr

    if is_zarr(path):
        return open_ome_zarr(path)
    return _open_file(path), None


def _open_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise DataError(f"{path}: cannot read this .npy file ({exc}).") from exc
    if suffix in (".tif", ".tiff"):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")
        except Exception:  # compressed, not contiguous, or broken: the readers below say which
            pass
        try:  # strips or tiles decoded on demand, one page or many
            import zarr

            opened = zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")  # full resolution
            if isinstance(opened, zarr.Array):
                return opened
        except Exception as exc:  # an unusual layout: fall back to pages, or to reading it whole
            log.debug("%s: no chunked reading (%s)", path, exc)
        try:
            with tifffile.TiffFile(path) as tif:
                many = len(tif.series[0].pages) > 1
            if many:
                return PagedTiff(path)
        except Exception:  # broken files end in read_image, which names the file and the fault
            pass
    return read_image(path)


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
