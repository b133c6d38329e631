"""Outputs written tile by tile into uncompressed files (TIFF, NumPy), with bounded memory.

The file (a header, then the pixels in C order, so every pixel has a fixed place) is created at its full
size, then each tile's rows are written at their offsets with ``pwrite`` and read back with ``pread``.
Nothing is memory-mapped, so no written page stays resident in the process: memory follows the tiles, not
the image. Files appear under their final name only when complete. The file is sparse until its tiles are
written, so a full disk shows only then: as :class:`~idl.infer.io.disk.DiskFull`, naming the output and
the size of the whole file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.io.disk import DiskFull, is_disk_full

BLOCK_VALUES = 1 << 22  # values per block when a finished output is read back


def _region(index: Any, shape: tuple[int, ...]) -> list[range]:
    """Index ranges per axis for a basic index (non-negative ints and step-1 slices)."""
    index = index if isinstance(index, tuple) else (index,)
    index = index + (slice(None),) * (len(shape) - len(index))
    ranges = []
    for item, n in zip(index, shape, strict=True):
        if isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step != 1:
                raise ValueError("tile sinks take contiguous slices only")
            ranges.append(range(start, stop))
        else:
            if not 0 <= int(item) < n:
                raise IndexError(f"index {item} out of range for an axis of {n}")
            ranges.append(range(int(item), int(item) + 1))
    return ranges


class FileSink:
    """An array-like output backed by an uncompressed file on disk (write, then read back); a subclass
    creates the file's header and says where the pixels start (:meth:`_create`)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.part")
        self._fd = -1
        try:  # a Ctrl-C or SIGTERM while the file is being created leaves no partial file
            self.offset = self._create(self.partial, tuple(shape), np.dtype(dtype))
        except BaseException as exc:
            self.partial.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFull(self.path, 4096 + int(np.prod(shape)) * np.dtype(dtype).itemsize) from exc
            raise
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._strides = (
            np.array([int(np.prod(self.shape[i + 1 :])) for i in range(self.ndim)]) * self.dtype.itemsize
        )
        self._fd = os.open(self.partial, os.O_RDWR)

    def _create(self, partial: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
        """Create ``partial`` at its full size (sparse); returns the byte offset of the first pixel."""
        raise NotImplementedError

    def _rows(self, ranges: list[range]) -> Iterator[tuple[tuple[int, ...], int]]:
        """Each row of a region (its index in the region, its byte offset in the file)."""
        outer = ranges[:-1]
        for position in np.ndindex(*(len(r) for r in outer)):
            start = [r[p] for r, p in zip(outer, position, strict=True)] + [ranges[-1].start]
            yield position, self.offset + int(np.dot(start, self._strides))

    def __setitem__(self, index: Any, value: np.ndarray) -> None:
        ranges = _region(index, self.shape)
        block = np.ascontiguousarray(np.broadcast_to(np.asarray(value, self.dtype), [len(r) for r in ranges]))
        try:
            for position, offset in self._rows(ranges):
                os.pwrite(self._fd, block[position].tobytes(), offset)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.discard()  # first, so that its blocks count as free in the message
            raise DiskFull(self.path, self.offset + int(np.prod(self.shape)) * self.dtype.itemsize) from exc

    def __getitem__(self, index: Any) -> np.ndarray:
        ranges = _region(index, self.shape)
        out = np.empty([len(r) for r in ranges], self.dtype)
        size = len(ranges[-1]) * self.dtype.itemsize
        for position, offset in self._rows(ranges):
            out[position] = np.frombuffer(os.pread(self._fd, size, offset), self.dtype)
        squeeze = tuple(
            i
            for i, item in enumerate(index if isinstance(index, tuple) else (index,))
            if not isinstance(item, slice)
        )
        return out.squeeze(axis=squeeze) if squeeze else out

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """The written data in blocks along the first axis: ``(slice, block)``, each one read."""
        per = int(np.prod(self.shape[1:])) or 1
        step = max(1, BLOCK_VALUES // per)
        for start in range(0, self.shape[0], step):
            window = slice(start, min(self.shape[0], start + step))
            count = (window.stop - window.start) * per
            data = os.pread(
                self._fd, count * self.dtype.itemsize, self.offset + start * int(self._strides[0])
            )
            yield (
                window,
                np.frombuffer(data, self.dtype).reshape((window.stop - window.start, *self.shape[1:])),
            )

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        self._close_fd()
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        """Remove an unfinished or temporary file (a finished one stays)."""
        self._close_fd()
        self.partial.unlink(missing_ok=True)

    def _close_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class TiffSink(FileSink):
    """An output written tile by tile into an uncompressed TIFF (an OME-TIFF with ``ome``, tifffile's
    keywords recording axes and pixel sizes)."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any, ome: dict[str, Any] | None = None):
        self.ome = ome or {}
        super().__init__(path, shape, dtype)

    def _create(self, partial: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
        import tifffile

        created = tifffile.memmap(partial, shape=shape, dtype=dtype, photometric="minisblack", **self.ome)
        offset = int(created.offset)
        del created  # only the layout was needed
        return offset


class NpySink(FileSink):
    """An output written tile by tile into a NumPy ``.npy`` file."""

    def _create(self, partial: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
        with open(partial, "wb") as file:
            np.lib.format.write_array_header_1_0(file, header)
            offset = file.tell()
            file.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
        return offset


class ChannelView:
    """Writes to channel 0 of ``(1, *spatial)`` indices go to a ``(*spatial)`` sink."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.shape = (1, *sink.shape)

    def __setitem__(self, index: tuple[Any, ...], value: np.ndarray) -> None:
        self.sink[index[1:]] = value[0]


class Discarded:
    """An output nobody keeps: writes of a ``shape`` go nowhere (the Monte Carlo mean of a prediction
    whose answer comes from the deterministic pass)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = tuple(shape)
        self.ndim = len(self.shape)

    def __setitem__(self, index: Any, value: np.ndarray) -> None:
        pass
