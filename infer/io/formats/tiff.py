"""TIFF (``.tif``, ``.tiff``) through tifffile: dtype and all axes kept, read lazily, written tile by tile.

Lazy reading: an uncompressed TIFF is memory-mapped; a compressed one, one page or a stack of pages
(ImageJ, OME, Fiji), goes through zarr, which decodes only the strips or tiles a window covers, with a
page-by-page reader as a fallback; anything else is read whole. Whole arrays are written zlib-compressed
as grey planes (never reinterpreted as RGB); outputs written tile by tile are uncompressed
(:class:`~idl.infer.io.sinks.TiffSink`).
"""

from __future__ import annotations

import itertools
import logging
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.io.disk import DiskFull, atomic_path
from idl.infer.io.formats.registry import ImageFormat
from idl.infer.io.sinks import TiffSink

log = logging.getLogger("idl")


def read_tiff(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


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


def open_tiff(path: Path) -> tuple[Any, None] | None:
    """A memory map, a zarr array or a :class:`PagedTiff`, whichever the file allows; ``None`` when
    it must be read whole (a compressed single page that zarr cannot chunk, or a broken file: reading
    it whole names the fault)."""
    import tifffile

    try:
        return tifffile.memmap(path, mode="r"), None
    except Exception:  # compressed, not contiguous, or broken: the readers below say which
        pass
    try:  # strips or tiles decoded on demand, one page or many
        import zarr

        opened = zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")  # full resolution
        if isinstance(opened, zarr.Array):
            return opened, None
    except Exception as exc:  # an unusual layout: fall back to pages, or to reading it whole
        log.debug("%s: no chunked reading (%s)", path, exc)
    try:
        with tifffile.TiffFile(path) as tif:
            many = len(tif.series[0].pages) > 1
        if many:
            return PagedTiff(path), None
    except Exception:  # broken files are read whole, which names the file and the fault
        pass
    return None


def ome_metadata(axes: str, scale: Mapping[str, float] | None) -> dict[str, Any]:
    """tifffile's keywords for an OME-TIFF recording ``axes`` and the pixel sizes ``scale``
    ({axis: micrometres}); none without sizes (a plain TIFF, as before)."""
    if not scale or not axes:
        return {}
    metadata: dict[str, Any] = {"axes": axes.upper()}
    for axis, size in scale.items():
        if axis in axes:
            metadata[f"PhysicalSize{axis.upper()}"] = float(size)
            metadata[f"PhysicalSize{axis.upper()}Unit"] = "µm"
    return {"ome": True, "metadata": metadata}


def write_tiff(
    path: str | Path, array: np.ndarray, axes: str = "", scale: Mapping[str, float] | None = None
) -> Path:
    """Write ``array`` as a (zlib-compressed) TIFF atomically and return the path.

    Arrays are stored as they are (grayscale planes), never reinterpreted as RGB. With pixel sizes
    (``scale``, micrometres per axis) the file is an OME-TIFF recording ``axes`` and the sizes;
    otherwise ``axes`` is not recorded.
    """
    import tifffile

    path, array = Path(path), np.asarray(array)
    try:
        with atomic_path(path) as tmp:
            tifffile.imwrite(
                tmp, array, compression="zlib", photometric="minisblack", **ome_metadata(axes, scale)
            )
    except DiskFull as exc:
        raise DiskFull(path, _compressed_size(array)) from exc
    return path


def _compressed_size(array: np.ndarray) -> int:
    """About the bytes a zlib-compressed TIFF of ``array`` takes (for a disk-full message only:
    compressing costs as much as writing)."""
    return len(zlib.compress(np.ascontiguousarray(array).tobytes(), 6)) + 4096


def tiff_sink(
    path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str, scale: Mapping[str, float] | None = None
) -> TiffSink:
    return TiffSink(path, shape, dtype, ome_metadata(axes, scale))


TIFF = ImageFormat(
    name="tif",
    suffixes=(".tif", ".tiff"),
    description="TIFF files",
    read=read_tiff,
    open=open_tiff,
    write=write_tiff,
    sink=tiff_sink,
    records_scale=True,
)
