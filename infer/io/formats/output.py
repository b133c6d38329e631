"""Outputs written in a registered format: a whole array, or tile by tile.

A format without a sink of its own is written tile by tile into a temporary uncompressed file next to
the output (``.<name>.part``, removed as a leftover like every partial file), then read back and written
whole by its writer when closed: memory then holds the whole output once, at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.io.formats.registry import ImageFormat, Sink, output_format
from idl.infer.io.sinks import NpySink


def _scaled(fmt: ImageFormat, scale: Mapping[str, float] | None) -> dict[str, Any]:
    """The ``scale`` keyword for a format that records pixel sizes (others never see it)."""
    return {"scale": dict(scale)} if scale and fmt.records_scale else {}


def write_image(
    path: Path, array: np.ndarray, format_name: str, axes: str, scale: Mapping[str, float] | None = None
) -> Path:
    """Write ``array`` (dimensions named by ``axes``, e.g. ``"cyx"``) atomically as ``format_name``,
    with the physical pixel sizes ``scale`` ({axis: micrometres}) where the format records them."""
    fmt = output_format(format_name)
    assert fmt.write is not None  # output_format returns writing formats only
    return fmt.write(Path(path), np.asarray(array), axes, **_scaled(fmt, scale))


def open_sink(
    path: Path,
    shape: tuple[int, ...],
    dtype: Any,
    format_name: str,
    axes: str,
    scale: Mapping[str, float] | None = None,
) -> Sink:
    """An output of ``shape`` and ``dtype`` written tile by tile as ``format_name`` (with ``scale``
    as :func:`write_image`); it appears under ``path`` when closed."""
    fmt = output_format(format_name)
    if fmt.sink is not None:
        return fmt.sink(Path(path), tuple(shape), np.dtype(dtype), axes, **_scaled(fmt, scale))
    return WrittenWhole(fmt, Path(path), tuple(shape), np.dtype(dtype), axes)


class WrittenWhole:
    """The sink of a format that has none: tiles go to a temporary ``.npy`` file (``.<name>.part``),
    written whole with the format's writer when closed."""

    def __init__(self, fmt: ImageFormat, path: Path, shape: tuple[int, ...], dtype: np.dtype, axes: str):
        self.format, self.path, self.axes = fmt, path, axes
        self.buffer = NpySink(path, shape, dtype)  # never closed: its partial file is read, then removed
        self.shape, self.dtype, self.ndim = self.buffer.shape, self.buffer.dtype, self.buffer.ndim

    def __setitem__(self, index: Any, value: np.ndarray) -> None:
        self.buffer[index] = value

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.buffer[index]

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        return self.buffer.blocks()

    def close(self) -> Path:
        whole = np.empty(self.shape, self.dtype)
        for window, block in self.buffer.blocks():
            whole[window] = block
        assert self.format.write is not None
        try:
            return self.format.write(self.path, whole, self.axes)
        finally:
            self.buffer.discard()

    def discard(self) -> None:
        self.buffer.discard()
