"""The store of a volume predicted block by block: by one process, the shards of a job array, or
Dask workers, all at once and across restarts.

A volume written to OME-Zarr is cut into blocks whose owned regions are whole zarr chunks (the block
grid of :mod:`idl.infer.tiling.blocks`), so the processes write disjoint chunks and need no lock. Its
arrays live in ``OUT/.<name>.blocks/`` until every block is done:

- ``plan.json``: the grid, the arrays, and what the prediction is of (input, model, settings); a run
  with other settings is refused instead of mixing two predictions in one volume;
- ``stats.pkl``: the input's normalization, fitted once on the whole volume by whoever created the
  store, so no other process reads the whole volume again;
- one zarr group per array (``values.zarr``, ``uncertainty.zarr``; ``mask.zarr`` at the end);
- ``summaries/<block>.npy``: what the last step needs of each block (the semantic mask's histogram),
  computed where the block was predicted, so the last step reads the values once;
- ``parts/<name>.npz`` and arrays of the last step's own (``keys.zarr``): what the last step made so
  far (the instance labels' first pass, block by block: the objects each block owns, the object keys
  of its region; the ids), kept so a killed last step continues;
- ``done/<host>-<pid>.jsonl``: the blocks each process finished (block, shard or worker, time); one file
  per process, appended and flushed after a block's chunks are written, so nobody appends to another
  process's file and a killed process loses only the block it was writing.

The store is created in a folder of its own and renamed into place, so of several processes starting
at once exactly one creates it. The last step (:meth:`BlockStore.finishing`) is taken by one process
alone (a lock folder; a lock left by a killed process on this host is taken over).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.io.disk import write_text
from idl.infer.io.formats.ome_zarr import ZarrSink

SUFFIX = ".blocks"
PLAN = "plan.json"
STATS = "stats.pkl"
DONE = "done"
SUMMARIES = "summaries"
PARTS = "parts"
LOCK = "finishing.lock"


def store_folder(out_dir: Path, name: str) -> Path:
    """Where the blocks of the output ``name`` (``<stem>.ome.zarr``) are kept until it is complete."""
    return Path(out_dir) / f".{name}{SUFFIX}"


def block_stores(out_dir: Path) -> list[Path]:
    """Every block store in ``out_dir`` (volumes in progress)."""
    folder = Path(out_dir)
    return sorted(p for p in folder.glob(f".*{SUFFIX}") if (p / PLAN).is_file()) if folder.is_dir() else []


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store: its shape, dtype, axis letters and chunks."""

    shape: tuple[int, ...]
    dtype: str
    axes: str
    chunks: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "axes": self.axes,
            "chunks": list(self.chunks),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ArraySpec:
        return cls(tuple(data["shape"]), str(data["dtype"]), str(data["axes"]), tuple(data["chunks"]))


class BlockStore:
    """An open block store (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.plan: dict[str, Any] = json.loads((self.folder / PLAN).read_text(encoding="utf-8"))
        self.arrays = {name: ArraySpec.from_json(spec) for name, spec in self.plan["arrays"].items()}

    @classmethod
    def open_or_create(
        cls,
        folder: Path,
        plan: Mapping[str, Any],
        arrays: Mapping[str, ArraySpec],
        stats: Any,
    ) -> BlockStore:
        """The store at ``folder``: created with ``plan``, its ``arrays`` (zeros) and the fitted
        ``stats`` when there is none, else the one there, which must be of the same ``plan``."""
        folder = Path(folder)
        full = {**plan, "arrays": {name: spec.to_json() for name, spec in arrays.items()}}
        if not (folder / PLAN).is_file():
            new = folder.with_name(f"{folder.name}.new-{socket.gethostname()}-{os.getpid()}")
            shutil.rmtree(new, ignore_errors=True)
            new.mkdir(parents=True)
            for name, spec in arrays.items():
                ZarrSink(
                    new / f"{name}.zarr",
                    spec.shape,
                    spec.dtype,
                    spec.axes,
                    None,
                    spec.chunks,
                    new / f"{name}.zarr",
                )
            with (new / STATS).open("wb") as file:
                pickle.dump(stats, file)
            (new / DONE).mkdir()
            (new / SUMMARIES).mkdir()
            (new / PLAN).write_text(json.dumps(full), encoding="utf-8")  # last: the store is complete
            try:
                os.rename(new, folder)  # of several processes, one wins; the others open its store
            except OSError:
                shutil.rmtree(new, ignore_errors=True)
                if not (folder / PLAN).is_file():
                    raise
        store = cls(folder)
        wanted = json.loads(json.dumps(full))  # as read back: tuples become lists
        if store.plan != wanted:
            differ = sorted(k for k in wanted if store.plan.get(k) != wanted[k])
            raise DataError(
                f"{folder}: holds the blocks of another prediction of this volume (it differs in "
                f"{', '.join(differ)}). Finish it with the same command, or pass --overwrite to start again."
            )
        return store

    @property
    def count(self) -> int:
        """The number of blocks."""
        return int(self.plan["blocks"])

    def stats(self) -> Any:
        """The input's fitted normalization (as created)."""
        with (self.folder / STATS).open("rb") as file:
            return pickle.load(file)

    def sink(self, name: str, target: Path, scale: Mapping[str, float] | None = None) -> ZarrSink:
        """The array ``name`` as a sink, to be written and (at the end) moved to ``target``."""
        return ZarrSink.attach(self.folder / f"{name}.zarr", target, self.arrays[name].axes, scale)

    def holds(self, name: str) -> bool:
        """Whether the array ``name`` is still in the store (not yet moved to its place)."""
        return (self.folder / f"{name}.zarr").is_dir()

    def add_array(self, name: str, spec: ArraySpec, target: Path) -> ZarrSink:
        """A new array (the mask made at the end), as a sink to be moved to ``target``."""
        path = self.folder / f"{name}.zarr"
        return ZarrSink(target, spec.shape, spec.dtype, spec.axes, None, spec.chunks, path)

    def save_summary(self, block: int, summary: np.ndarray) -> None:
        """Keep ``block``'s summary (before the block is marked done)."""
        path = self.folder / SUMMARIES / f"{block}.npy"
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        with partial.open("wb") as file:
            np.save(file, summary)
        os.replace(partial, path)

    def summaries(self) -> list[np.ndarray] | None:
        """Every block's summary, or None when any block has none."""
        folder = self.folder / SUMMARIES
        paths = [folder / f"{block}.npy" for block in range(self.count)]
        if not all(path.is_file() for path in paths):
            return None
        return [np.load(path) for path in paths]

    def scratch(self, name: str, spec: ArraySpec) -> ZarrSink:
        """An array of the last step's own (``keys``), created once (atomically) and kept until the
        store is removed, so a last step taken again continues on it."""
        path = self.folder / f"{name}.zarr"
        if not path.is_dir():
            new = path.with_name(f".{path.name}.new-{socket.gethostname()}-{os.getpid()}")
            ZarrSink(new, spec.shape, spec.dtype, spec.axes, None, spec.chunks, new)
            try:
                os.rename(new, path)  # of several workers, one wins; the others use its array
            except OSError:
                shutil.rmtree(new, ignore_errors=True)
                if not path.is_dir():
                    raise
        return ZarrSink.attach(path, path, spec.axes)

    def save_arrays(self, name: str, **arrays: np.ndarray) -> None:
        """Keep arrays the last step made (``parts/<name>.npz``, written atomically)."""
        path = self.folder / PARTS / f"{name}.npz"
        path.parent.mkdir(exist_ok=True)
        partial = path.with_name(f".{name}.{socket.gethostname()}-{os.getpid()}.part.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)

    def arrays_of(self, name: str) -> dict[str, np.ndarray] | None:
        """What :meth:`save_arrays` kept as ``name``, or None."""
        path = self.folder / PARTS / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {key: data[key] for key in data.files}

    def attach(
        self, name: str, target: Path | None = None, scale: Mapping[str, float] | None = None
    ) -> ZarrSink:
        """An array the last step created in the store (``mask``, ``labels``), to write blocks of (and
        close into ``target``)."""
        path = self.folder / f"{name}.zarr"
        axes = self.arrays["values"].axes.lstrip("c")
        return ZarrSink.attach(path, target or path, axes, scale)

    def done(self) -> dict[int, dict[str, Any]]:
        """The finished blocks: index -> the line that says so (who, when)."""
        finished: dict[int, dict[str, Any]] = {}
        for path in sorted((self.folder / DONE).glob("*.jsonl")):
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    try:
                        entry = json.loads(line)
                        finished.setdefault(int(entry["block"]), entry)
                    except (ValueError, KeyError, TypeError):
                        continue  # cut off by a kill
        return finished

    def mark(self, block: int, by: str) -> None:
        """Record that ``block``'s chunks are written (by the shard or worker ``by``)."""
        line = {
            "block": block,
            "by": by,
            "time": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        }
        path = self.folder / DONE / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        with path.open("a", encoding="utf-8") as file:
            file.write(json.dumps(line) + "\n")
            file.flush()
            os.fsync(file.fileno())

    @contextmanager
    def finishing(self) -> Iterator[bool]:
        """Hold the right to take the last step: yields True for the one process that holds it,
        False for the others (they leave it to that one)."""
        lock = self.folder / LOCK
        owner = f"{socket.gethostname()} {os.getpid()}"
        try:
            lock.mkdir()
        except FileExistsError:
            if not _stale(lock):
                yield False
                return
            shutil.rmtree(lock, ignore_errors=True)
            try:
                lock.mkdir()
            except FileExistsError:
                yield False
                return
        write_text(lock / "owner", owner)
        try:
            yield True
        finally:
            shutil.rmtree(lock, ignore_errors=True)

    def remove(self) -> None:
        """Delete the store (its arrays were moved out, or a new prediction starts)."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _stale(lock: Path) -> bool:
    """Whether a finishing lock was left by a process of this host that is gone."""
    try:
        host, pid = (lock / "owner").read_text(encoding="utf-8").split()
    except (OSError, ValueError):
        return False  # being written, or another host's: left alone
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):
        return False
    return False
