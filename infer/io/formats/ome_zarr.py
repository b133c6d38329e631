"""OME-Zarr (NGFF 0.4) images, ``*.ome.zarr`` or ``*.zarr`` folders: read lazily with their axes,
written whole or tile by tile.

Reading takes the first (full-resolution) dataset of the first multiscale and its axis names
(``t`` of size 1 is dropped). Writing creates a zarr v2 group with one dataset ``0`` and
``multiscales`` metadata naming the axes, readable by napari, Fiji (n5-viewer / MoBIE) and any OME-Zarr
tool.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.core.project import image_stem
from idl.infer.io.formats.registry import ImageFormat

SUFFIX = ".ome.zarr"
AXIS_TYPES = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}


def open_ome_zarr(path: Path) -> tuple[Any, str]:
    """``(lazy array, axis letters)`` of the full-resolution image of an OME-Zarr folder."""
    import zarr

    try:
        group = zarr.open_group(store=str(path), mode="r")
        attrs = dict(group.attrs)
        meta = attrs.get("ome", attrs)  # NGFF 0.5 nests the metadata under "ome"
        multiscale = meta["multiscales"][0]
        axes = "".join(str(a["name"] if isinstance(a, dict) else a)[0].lower() for a in multiscale["axes"])
        array = group[multiscale["datasets"][0]["path"]]
    except Exception as exc:
        raise DataError(f"{path}: not a readable OME-Zarr image ({exc}).") from exc
    if set(axes) - set(AXIS_TYPES):
        raise DataError(f"{path}: axes '{axes}' are not supported; use t, c, z, y and x.")
    return array, axes


def read_ome_zarr(path: Path) -> np.ndarray:
    array, _ = open_ome_zarr(path)
    return np.asarray(array[...])


def default_chunks(shape: tuple[int, ...], axes: str) -> tuple[int, ...]:
    """Chunks of an output: one channel, 64 voxels per side in volumes and 512 px in images."""
    return tuple(
        1 if a == "c" else min(n, 64 if "z" in axes else 512) for a, n in zip(axes, shape, strict=True)
    )


class ZarrSink:
    """An output written tile by tile into an OME-Zarr folder (zarr v2, NGFF 0.4), created at the
    hidden ``partial`` path (default ``.<name>.part`` beside ``path``) and moved to ``path`` by
    :meth:`close`; ``chunks`` default to :func:`default_chunks`. :meth:`attach` opens one created
    earlier (by another process: the blocks of :mod:`idl.infer.io.blocks`)."""

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        dtype: Any,
        axes: str,
        scale: Mapping[str, float] | None = None,
        chunks: tuple[int, ...] | None = None,
        partial: Path | None = None,
    ) -> None:
        import zarr

        self.scale = dict(scale or {})
        self.path = Path(path)
        self.partial = (
            Path(partial) if partial is not None else self.path.with_name(f".{self.path.name}.part")
        )
        shutil.rmtree(self.partial, ignore_errors=True)
        self.shape, self.dtype, self.ndim, self.axes = tuple(shape), np.dtype(dtype), len(shape), axes
        chunks = chunks or default_chunks(self.shape, axes)
        self.group = zarr.open_group(store=str(self.partial), mode="w", zarr_format=2)
        self.array = self.group.create_array("0", shape=shape, chunks=chunks, dtype=self.dtype, fill_value=0)

    @classmethod
    def attach(
        cls, partial: Path, path: Path, axes: str, scale: Mapping[str, float] | None = None
    ) -> ZarrSink:
        """The sink created earlier at ``partial``, to be written on (and closed into ``path``)."""
        import zarr

        sink = cls.__new__(cls)
        sink.scale, sink.path, sink.partial, sink.axes = dict(scale or {}), Path(path), Path(partial), axes
        sink.group = zarr.open_group(store=str(sink.partial), mode="r+", zarr_format=2)
        sink.array = sink.group["0"]
        sink.shape, sink.dtype = tuple(sink.array.shape), np.dtype(sink.array.dtype)
        sink.ndim = len(sink.shape)
        return sink

    def __setitem__(self, index: Any, value: np.ndarray) -> None:
        self.array[index] = value

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.asarray(self.array[index])

    def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
        per = int(np.prod(self.shape[1:])) or 1
        step = max(1, (1 << 22) // per)
        for start in range(0, self.shape[0], step):
            window = slice(start, min(self.shape[0], start + step))
            yield window, np.asarray(self.array[window])

    def close(self) -> Path:
        """Write the OME-Zarr metadata and move the image to its final name."""
        self.group.attrs["multiscales"] = [
            {
                "version": "0.4",
                "name": image_stem(self.path),
                "axes": [
                    {"name": a, "type": AXIS_TYPES[a], **({"unit": "micrometer"} if a in self.scale else {})}
                    for a in self.axes
                ],
                "datasets": [
                    {
                        "path": "0",
                        "coordinateTransformations": [
                            {"type": "scale", "scale": [float(self.scale.get(a, 1.0)) for a in self.axes]}
                        ],
                    }
                ],
            }
        ]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(self.partial, self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


def write_ome_zarr(
    path: Path, array: np.ndarray, axes: str, scale: Mapping[str, float] | None = None
) -> Path:
    """Write a whole in-memory array as an OME-Zarr image (with its pixel sizes, micrometres)."""
    sink = ZarrSink(path, array.shape, array.dtype, axes, scale)
    sink[tuple(slice(None) for _ in array.shape)] = array
    return sink.close()


OME_ZARR = ImageFormat(
    name="zarr",
    suffixes=(SUFFIX, ".zarr"),
    description="OME-Zarr folders",
    read=read_ome_zarr,
    open=open_ome_zarr,
    write=write_ome_zarr,
    sink=ZarrSink,
    folder=True,
    records_axes=True,
    records_scale=True,
)
