"""The image formats idl reads and writes, found by file-name suffix.

A format is one :class:`ImageFormat` registered with :func:`register`: its name (the value of
``idl-predict --out-format``), its suffixes, and what it can do: read a file whole, open it lazily
(window by window), write a whole array, open an output written tile by tile. Every reader and writer
of idl asks this registry, so a registered format is an input of every command and, when it writes,
an ``--out-format`` at once. The suffixes of the readable formats are handed to
:mod:`idl.infer.core.project`, which decides what a project folder's images are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from idl.infer.core import project
from idl.infer.core.project import matched_suffix


class Sink(Protocol):
    """An output written tile by tile: an array-like on disk that appears under ``path`` only when
    closed (:meth:`close`), or is removed (:meth:`discard`)."""

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    ndim: int

    def __setitem__(self, index: Any, value: np.ndarray) -> None: ...

    def __getitem__(self, index: Any) -> np.ndarray: ...

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        """The written data in blocks along the first axis: ``(slice, block)``."""
        ...

    def close(self) -> Path:
        """Finish the output and move it to ``path``."""
        ...

    def discard(self) -> None:
        """Remove an unfinished output (a finished one stays)."""
        ...


# read a file whole
Reader = Callable[[Path], np.ndarray]
# open a file lazily: (array-like with shape, dtype and basic slicing, axis letters recorded in the file
# or None), or None when the file must be read whole after all (a compressed single-page TIFF)
Opener = Callable[[Path], "tuple[Any, str | None] | None"]
# write a whole array atomically, with the axis letters of its dimensions (e.g. "cyx"); returns the path
Writer = Callable[[Path, np.ndarray, str], Path]
# create an output of (shape, dtype, axes) written tile by tile
SinkOpener = Callable[[Path, tuple[int, ...], np.dtype, str], Sink]


@dataclass(frozen=True)
class ImageFormat:
    """One image format: what it is called, which names are its files, and what it can do."""

    name: str  # the --out-format value, e.g. "tif"
    suffixes: tuple[str, ...]  # lower case, the first is the one written, e.g. (".ome.zarr", ".zarr")
    description: str = ""  # for help texts and messages, e.g. "OME-Zarr folders"
    read: Reader | None = None
    open: Opener | None = None  # None: read whole
    write: Writer | None = None  # None: an input format only
    sink: SinkOpener | None = None  # None: written through a temporary file, then with write
    folder: bool = False  # stored as a folder (OME-Zarr), not a file
    records_axes: bool = False  # open() returns the axis letters the file records, write() stores them
    # write() and sink() take ``scale`` ({axis: micrometres per pixel}) and store it (OME metadata)
    records_scale: bool = False

    def __post_init__(self) -> None:
        if not self.name or not self.suffixes:
            raise ValueError("an image format needs a name and at least one suffix")
        bad = [s for s in self.suffixes if not s.startswith(".") or s != s.lower()]
        if bad:
            raise ValueError(
                f"image format {self.name}: suffixes are lower case and start with '.', got {bad}"
            )
        if self.read is None and self.write is None:
            raise ValueError(f"image format {self.name} can neither read nor write")
        if self.sink is not None and self.write is None:
            raise ValueError(f"image format {self.name}: a format with a sink also writes whole arrays")

    @property
    def suffix(self) -> str:
        """The suffix of the files (or folders) it writes."""
        return self.suffixes[0]


_FORMATS: dict[str, ImageFormat] = {}


def _publish() -> None:
    """Hand the readable formats' suffixes to :mod:`idl.infer.core.project` (files and folders)."""
    readable = [f for f in _FORMATS.values() if f.read is not None]
    project.set_image_suffixes(
        tuple(s for f in readable if not f.folder for s in f.suffixes),
        tuple(s for f in readable if f.folder for s in f.suffixes),
    )


def register(fmt: ImageFormat) -> ImageFormat:
    """Add ``fmt``: its files are images from now on (inputs of every command), and a format that
    writes is an ``--out-format``. A name or suffix that another format has is refused."""
    if fmt.name in _FORMATS:
        raise ValueError(f"an image format named {fmt.name} is registered already")
    for other in _FORMATS.values():
        shared = set(fmt.suffixes) & set(other.suffixes)
        if shared:
            raise ValueError(f"image format {fmt.name}: {', '.join(sorted(shared))} belongs to {other.name}")
    _FORMATS[fmt.name] = fmt
    _publish()
    return fmt


def unregister(name: str) -> None:
    """Remove the format ``name`` (tests that register formats of their own clean up with this)."""
    _FORMATS.pop(name, None)
    _publish()


def formats() -> tuple[ImageFormat, ...]:
    """Every registered format, in the order registered."""
    return tuple(_FORMATS.values())


def output_formats() -> tuple[str, ...]:
    """The names of the formats that write (the choices of ``--out-format``)."""
    return tuple(f.name for f in _FORMATS.values() if f.write is not None)


def output_format(name: str) -> ImageFormat:
    """The writing format ``name``; :class:`ValueError` naming the choices for any other name."""
    fmt = _FORMATS.get(name)
    if fmt is None or fmt.write is None:
        raise ValueError(f"output format must be one of {', '.join(output_formats())}, got {name}")
    return fmt


def format_of(path: Path) -> ImageFormat | None:
    """The format whose suffix ``path``'s name ends with (the longest that fits, case-insensitive),
    or ``None``."""
    suffix = matched_suffix(Path(path), tuple(s for f in _FORMATS.values() for s in f.suffixes))
    return next((f for f in _FORMATS.values() if suffix in f.suffixes), None) if suffix else None
