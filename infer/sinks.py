"""Outputs written tile by tile into memory-mapped TIFF files, with bounded memory.

A memory map keeps written pages resident (and counted in the process's memory) until the kernel
writes them back. :class:`TiffSink` flushes them and tells the kernel to drop them every few tiles,
so memory follows the tiles, not the image. Files appear under their final name only when complete.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

RELEASE_EVERY = 1  # tile writes between page releases: a 3D tile touches a page per row it writes
BLOCK_VALUES = 1 << 22  # values per block when a finished output is read back


class TiffSink:
    """An array-like output backed by a memory-mapped, uncompressed TIFF."""

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: Any) -> None:
        import tifffile

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = self.path.with_name(f".{self.path.name}.part")
        self.array = tifffile.memmap(self.partial, shape=shape, dtype=dtype, photometric="minisblack")
        self.shape, self.dtype, self.ndim = tuple(shape), np.dtype(dtype), len(shape)
        self._writes = 0

    def __setitem__(self, index: Any, value: np.ndarray) -> None:
        self.array[index] = value
        self._writes += 1
        if self._writes % RELEASE_EVERY == 0:
            self.release()

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.array[index])

    def release(self) -> None:
        """Write dirty pages back and drop the mapping's resident pages."""
        self.array.flush()
        raw = getattr(self.array, "_mmap", None)
        if raw is not None and hasattr(mmap, "MADV_DONTNEED"):
            raw.madvise(mmap.MADV_DONTNEED)

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """The written data in blocks along the first axis: ``(slice, block)``."""
        per = int(np.prod(self.shape[1:])) or 1
        step = max(1, BLOCK_VALUES // per)
        for start in range(0, self.shape[0], step):
            window = slice(start, min(self.shape[0], start + step))
            yield window, np.array(self.array[window])
            self.release()

    def close(self) -> Path:
        """Finish the file and move it to its final name."""
        self.release()
        del self.array
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        """Remove an unfinished or temporary file."""
        if hasattr(self, "array"):
            del self.array
        self.partial.unlink(missing_ok=True)


class ChannelView:
    """Writes to channel 0 of ``(1, *spatial)`` indices go to a ``(*spatial)`` sink."""

    def __init__(self, sink: TiffSink) -> None:
        self.sink = sink

    def __setitem__(self, index: tuple[Any, ...], value: np.ndarray) -> None:
        self.sink[index[1:]] = value[0]
