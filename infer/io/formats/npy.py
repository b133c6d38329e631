"""NumPy arrays (``.npy``): any dtype and shape, memory-mapped for lazy reading, written whole or tile
by tile (:class:`~idl.infer.io.sinks.NpySink`). Pickled objects are refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.io.disk import atomic_path
from idl.infer.io.formats.registry import ImageFormat
from idl.infer.io.sinks import NpySink


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def open_npy(path: Path) -> tuple[Any, None]:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False), None
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read this .npy file ({exc}).") from exc


def write_npy(path: Path, array: np.ndarray, axes: str = "") -> Path:
    """Write ``array`` as a ``.npy`` file atomically (``axes`` is not recorded)."""
    array = np.asarray(array)
    with atomic_path(path, array.nbytes + 128) as tmp, open(tmp, "wb") as file:
        np.save(file, array, allow_pickle=False)
    return Path(path)


def npy_sink(path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str) -> NpySink:
    return NpySink(path, shape, dtype)


NPY = ImageFormat(
    name="npy",
    suffixes=(".npy",),
    description="NumPy arrays",
    read=read_npy,
    open=open_npy,
    write=write_npy,
    sink=npy_sink,
)
