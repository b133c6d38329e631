"""``idl-predict --status DIR``: what a prediction into ``DIR`` has done and what is left, read from
the record of every run and shard (:mod:`idl.infer.io.record`), the plan of a sharded run and the
stores of volumes predicted block by block (:mod:`idl.infer.io.blocks`). Nothing is changed."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from idl.infer.core.errors import DataError
from idl.infer.core.shard import Shard
from idl.infer.io.blocks import SUFFIX, BlockStore, block_stores
from idl.infer.io.record import RECORD_NAME, OutputRecord, read_plan, record_files


@dataclass
class Status:
    """The state of an output folder: each item done, started and not finished, or not started
    (known only from a sharded run's plan); per shard, its items done and left; each volume in
    progress with its blocks done (by whom) and in all."""

    items: list[str]
    done: list[str]
    started: list[str]
    shards: int = 0
    by_blocks: bool = False  # the shards share the blocks of one volume, not the files
    volumes: list[tuple[str, dict[int, str], int]] = field(default_factory=list)  # name, done: by, count

    @property
    def left(self) -> list[str]:
        finished = set(self.done)
        return [name for name in self.items if name not in finished]


def folder_status(folder: Path) -> Status:
    """The :class:`Status` of ``folder``; raises :class:`DataError` where idl predicted nothing."""
    folder = Path(folder)
    stores = block_stores(folder)
    if not record_files(folder) and not stores:
        raise DataError(
            f"{folder}: idl-predict has written nothing here (no {RECORD_NAME}); give the --out folder of "
            "a prediction."
        )
    record = OutputRecord.read(folder)
    plan = read_plan(folder)
    names = [str(n) for n in plan["items"]] if plan else list(record.entries)
    done = [n for n in names if n in record.entries and record.entries[n].complete]
    started = [n for n in names if n in record.entries and not record.entries[n].complete]
    shards = int(plan["shards"]) if plan else 0
    status = Status(names, done, started, shards, bool(plan) and plan.get("by") == "blocks")
    for path in stores:
        store = BlockStore(path)
        finished = {index: str(entry.get("by", "?")) for index, entry in store.done().items()}
        status.volumes.append((path.name[1 : -len(SUFFIX)], finished, store.count))
    return status


def describe(folder: Path, status: Status, shown: int = 10) -> str:
    """The report ``--status`` prints: counts, each shard's share, the first items left, volumes."""
    total = len(status.items)
    waiting = [name for name in status.left if name not in status.started]
    of = f"{total} input(s)" if status.shards else f"{total} input(s) recorded"
    lines = [
        f"{folder}: {len(status.done)} of {of} done, {len(status.started)} started and not finished "
        "(running now, or stopped: a re-run predicts them again)"
        + (f", {len(waiting)} not started" if status.shards else "")
    ]
    if status.shards and not status.by_blocks:
        finished = set(status.done)
        for index in range(1, status.shards + 1):
            part = Shard(index, status.shards).part(status.items)
            left = sum(name not in finished for name in part)
            lines.append(
                f"  shard {index}/{status.shards}: {len(part) - left} of {len(part)} done, {left} left"
            )
    for label, names in (("started, not finished", status.started), ("not started", waiting)):
        if names:
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            lines.append(f"  {label}: {', '.join(names[:shown])}{more}")
    for name, finished, count in status.volumes:
        by = Counter(finished.values())
        who = ", ".join(f"{n} by {b}" for b, n in sorted(by.items()))
        lines.append(
            f"  volume {name}: {len(finished)} of {count} block(s) done{f' ({who})' if who else ''}; "
            + (
                "the last step (mask, metadata) is left"
                if len(finished) == count
                else f"{count - len(finished)} left"
            )
        )
        if status.by_blocks:
            for index in range(1, status.shards + 1):
                shard = Shard(index, status.shards)
                mine = [i for i in range(count) if shard.owns(i)]
                left = sum(i not in finished for i in mine)
                lines.append(
                    f"    shard {shard.label}: {len(mine) - left} of {len(mine)} block(s) done, {left} left"
                )
    if status.left or status.volumes:
        lines.append("Run the same command (or submit the same job array) again to predict what is left.")
    else:
        lines.append("Nothing is left.")
    return "\n".join(lines)
