"""The record of what idl wrote into an output folder, so that a re-run skips only its own work.

A file with the right name is not proof of a prediction: it may be the user's input, their ground
truth, or the output of another model or of another image of the same name. Every batch driver
therefore appends to ``OUT/.idl-outputs.jsonl`` one line when it starts writing an item's outputs
and one when they are complete, with the input it read, the model that predicted it and each
output's size. "Already predicted" means: recorded complete, from the same input and model, and
every output still there with its recorded size. A file that the record does not name is not
idl's, and is replaced only with ``--overwrite``.

Lines are appended (a folder of 200 000 predictions costs no rewrite per image) and flushed; a line
cut off by a killed run is ignored when the record is read.

The shards of a job array (``--shard I/N``, :mod:`idl.infer.core.shard`) write into one folder at
once: each appends to a record of its own (``.idl-outputs.IofN.jsonl``, its lines naming the shard),
so no two processes append to one file, and the record read is all of them, line by line in time
order. Each shard also writes the plan (``.idl-shards.json``: every item of the whole array), from
which ``idl-predict --status`` says what is left.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from idl.infer.core.errors import DataError
from idl.infer.core.shard import Shard
from idl.infer.io.disk import write_text

log = logging.getLogger("idl")

RECORD_NAME = ".idl-outputs.jsonl"
PLAN_NAME = ".idl-shards.json"


def record_name(shard: Shard | None) -> str:
    """The record file a run appends to: the folder's, or its shard's own."""
    return RECORD_NAME if shard is None else f".idl-outputs.{shard.key}.jsonl"


def record_files(folder: Path) -> list[Path]:
    """Every record file in ``folder``: the unsharded run's and each shard's."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob(".idl-outputs*.jsonl") if p.is_file())


def is_prediction_folder(folder: Path) -> bool:
    """True when idl has written predictions into ``folder`` (it holds a record)."""
    return bool(record_files(folder))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def write_plan(folder: Path, items: Sequence[str], shard: Shard, model: str, by: str = "files") -> None:
    """Record every item of a sharded run (all shards', in order), the number of shards and what they
    share (``files``, or the ``blocks`` of one volume), for ``--status``; each shard writes the same
    plan (atomically), so whichever starts first leaves it."""
    plan = {"items": list(items), "shards": shard.count, "model": model, "by": by}
    path = Path(folder) / PLAN_NAME
    if path.is_file():
        try:
            if json.loads(path.read_text(encoding="utf-8")) == plan:
                return
        except ValueError:
            pass
    write_text(path, json.dumps(plan))


def read_plan(folder: Path) -> dict[str, Any] | None:
    """The plan of a sharded run in ``folder`` (:func:`write_plan`), or ``None``."""
    path = Path(folder) / PLAN_NAME
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _input_key(path: Path) -> dict[str, object]:
    """What identifies an input: its resolved path and size (a changed or other image differs)."""
    path = Path(path)
    size = path.stat().st_size if path.is_file() else None
    return {"path": str(path.resolve()), "size": size}


@dataclass
class Entry:
    """The last recorded state of one item's outputs."""

    outputs: dict[str, int | None]  # path relative to the folder -> size when complete
    source: dict[str, object]
    model: str
    complete: bool
    shard: str = ""  # the shard (I/N) that wrote it; empty: an unsharded run
    time: str = ""


@dataclass
class OutputRecord:
    """The record of one output folder (:data:`RECORD_NAME`, and each shard's), appended to the
    file of ``shard``."""

    folder: Path
    entries: dict[str, Entry] = field(default_factory=dict)
    owned: set[str] = field(default_factory=set)  # every output path it ever named
    shard: Shard | None = None

    @classmethod
    def read(cls, folder: Path, shard: Shard | None = None) -> OutputRecord:
        """The folder's record from every record file, in time order (empty when there is none);
        cut-off or foreign lines are skipped."""
        record = cls(Path(folder), shard=shard)
        lines = []
        for number, path in enumerate(record_files(record.folder)):
            with path.open(encoding="utf-8", errors="replace") as file:
                for row, line in enumerate(file):
                    try:
                        item = json.loads(line)
                        entry = Entry(
                            dict(item["outputs"]),
                            dict(item["input"]),
                            str(item["model"]),
                            item["state"] == "done",
                            str(item.get("shard", "")),
                            str(item.get("time", "")),
                        )
                    except (ValueError, KeyError, TypeError, AttributeError):
                        continue  # the last line of a killed run, or not ours
                    lines.append((entry.time, number, row, str(item["item"]), entry))
        for *_, name, entry in sorted(lines, key=lambda line: line[:3]):
            record.entries[name] = entry
            record.owned.update(entry.outputs)
        return record

    def _relative(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.folder)).as_posix()

    def owns(self, path: Path) -> bool:
        """Whether idl wrote (or began to write) ``path``."""
        return self._relative(path) in self.owned

    def finished(self, item: str, outputs: Sequence[Path], source: Path, model: str) -> bool:
        """Whether ``item``'s ``outputs`` are complete from ``source`` predicted by ``model``, each
        still there with its recorded size."""
        entry = self.entries.get(item)
        if entry is None or not entry.complete or entry.model != model:
            return False
        if entry.source != _input_key(source):
            return False
        for path in outputs:
            size = entry.outputs.get(self._relative(path), -1)
            if size == -1 or not path.exists() or (path.is_file() and path.stat().st_size != size):
                return False
        return True

    def conflict(self, item: str, source: Path, model: str) -> str:
        """Why ``item``'s recorded outputs are not those of ``source`` and ``model`` (empty: they
        are, or there are none)."""
        entry = self.entries.get(item)
        if entry is None:
            return ""
        if entry.source.get("path") != str(Path(source).resolve()):
            return f"the input {entry.source.get('path')}"
        if entry.model != model:
            return f"the model {entry.model}"
        return ""

    def _append(
        self, item: str, outputs: Sequence[Path], source: dict[str, object], model: str, state: str
    ) -> None:
        sizes = {
            self._relative(p): (p.stat().st_size if state == "done" and p.is_file() else None)
            for p in outputs
        }
        shard = self.shard.label if self.shard is not None else ""
        line = {
            "item": item,
            "state": state,
            "outputs": sizes,
            "input": source,
            "model": model,
            "time": _now(),
        }
        if shard:
            line["shard"] = shard
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / record_name(self.shard)).open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
            out.flush()
        self.entries[item] = Entry(sizes, source, model, state == "done", shard, str(line["time"]))
        self.owned.update(sizes)

    def start(self, item: str, outputs: Sequence[Path], source: Path, model: str) -> None:
        """Record that ``item``'s outputs are being written (so a killed run's files stay ours)."""
        self._append(item, outputs, _input_key(source), model, "started")

    def finish(self, item: str, outputs: Sequence[Path], source: Path, model: str) -> None:
        """Record that ``item``'s outputs are complete."""
        self._append(item, outputs, _input_key(source), model, "done")

    def rewritten(self, item: str, outputs: Sequence[Path]) -> None:
        """Record that a complete ``item``'s shared outputs were written again with its result kept
        (a classifier's ``results.csv`` holding the rows of an earlier run)."""
        entry = self.entries.get(item)
        if entry is not None and entry.complete:
            self._append(item, outputs, entry.source, entry.model, "done")


def claim(
    record: OutputRecord,
    planned: Mapping[str, tuple[Path, Sequence[Path]]],
    model: str,
    overwrite: bool,
) -> None:
    """Before any work: refuse (unless ``overwrite``) to write over files that idl did not write,
    or over idl's outputs of another input or model. ``planned``: item -> (its input, its outputs)."""
    if overwrite:
        return
    foreign: list[Path] = []
    for item, (source, outputs) in planned.items():
        foreign.extend(p for p in outputs if p.exists() and not record.owns(p))
        other = record.conflict(item, source, model)
        if other:
            raise DataError(
                f"{record.folder}: holds the prediction of {item} from {other}, not from {source} with "
                f"{model}. Choose another --out, or pass --overwrite to replace it."
            )
    if foreign:
        raise DataError(
            f"{foreign[0]} exists, but idl did not write it ({len(foreign)} such file(s) in "
            f"{record.folder}); it is not taken for a prediction nor replaced. Choose another --out, or pass "
            "--overwrite to replace such files."
        )
