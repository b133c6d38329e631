"""The one batch driver: every run of a model over many inputs goes through it, whatever the task.

Its policy, once for all tasks: the inputs are listed as :class:`Item` s (a name, the files of each
input tensor, the files it writes); the leftovers of a killed run are removed; files that idl did not
write, and idl's outputs of another input or model, are refused before any work (the record of
:mod:`idl.infer.io.record`); items whose outputs are recorded complete are skipped unless
``overwrite``; every other item is predicted or fails with its reason, and the batch keeps going
(:class:`idl.infer.core.errors.BatchError` lists the failures at the end; a problem of the model
itself stops at once); one summary at the end. A task that writes one table for all its items (the
classifier's ``results.csv``) hands the driver a :class:`Table`: the rows of the items of earlier runs
are kept beside the new ones.

With a :class:`~idl.infer.core.shard.Shard` (``--shard I/N``, job arrays) the driver predicts its part
of the items alone, appends to a record of its own, removes only its own items' leftovers (the other
shards may be writing theirs in the same folder) and writes the plan of the whole array, so
``idl-predict --status`` says what is left.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from idl.infer.core.errors import BatchError, IdlError, ModelError
from idl.infer.core.shard import Shard
from idl.infer.io.places import remove_leftovers
from idl.infer.io.record import OutputRecord, claim, write_plan
from idl.infer.tiling.engine import batched

log = logging.getLogger("idl")


@dataclass(frozen=True)
class Item:
    """One unit of a batch: its ``name`` (the outputs' stem and the record's key), the file of each
    input tensor, and every file it writes (the first is the prediction)."""

    name: str
    inputs: Mapping[str, Path]
    outputs: tuple[Path, ...]

    @property
    def source(self) -> Path:
        """The file of the first input, which names the item in messages."""
        return next(iter(self.inputs.values()))


class Table(Protocol):
    """One file that holds a row for every item (a classifier's ``results.csv``)."""

    path: Path

    def read(self) -> dict[str, dict[str, Any]]:
        """The rows written earlier, by item name."""

    def write(self, rows: Sequence[dict[str, Any]]) -> Path:
        """Write ``rows`` (atomically) and return the path."""


# the work of a group of items: for each item its result (a table row, a path...) or the IdlError
# that kept it from being predicted; a ModelError raised stops the batch
Work = Callable[[Sequence[Item]], Sequence[Any]]


@dataclass(frozen=True)
class Batch:
    """How a batch runs: where its outputs go, the model (for the record), the policy switches, the
    items per call of its work, the folders to clean of a killed run's leftovers, its table, and the
    shard of the items it predicts (None: all)."""

    out_dir: Path
    model: str
    overwrite: bool = False
    progress: bool = True
    unit: str = "image"
    group: int = 1
    leftovers: tuple[Path, ...] = ()
    table: Table | None = None
    shard: Shard | None = None
    # whether the shard takes its part of the items (else every shard works on every item: the blocks
    # of one volume, shared inside the item's work)
    split: bool = True


@dataclass(frozen=True)
class Pending:
    """The result of an item whose share of the work is done here but not all of it (the blocks of a
    volume, other shards still at theirs): neither finished nor failed."""

    reason: str


@dataclass
class Outcome:
    """What a batch did: each predicted item's result, the items skipped as finished."""

    results: list[tuple[Item, Any]] = field(default_factory=list)
    skipped: list[Item] = field(default_factory=list)


def run_batch(items: Sequence[Item], batch: Batch, work: Work) -> Outcome:
    """Predict ``items`` with ``work`` under the batch policy (module docstring); raises
    :class:`BatchError` after the others are done when some failed."""
    shard = batch.shard
    mine: set[str] | None = None
    if shard is not None:
        if batch.table is not None:
            raise IdlError(
                f"--shard: this model writes one {batch.table.path.name} for all images, which the shards "
                "of a job array cannot share; predict without --shard, or in separate --out folders."
            )
        by = "files" if batch.split else "blocks"
        write_plan(batch.out_dir, [item.name for item in items], shard, batch.model, by)
        if batch.split:
            total = len(items)
            items = shard.part(items)
            log.info("shard %s: %d of %d %s(s)", shard.label, len(items), total, batch.unit)
        mine = {path.name for item in items for path in item.outputs}
    for folder in (batch.out_dir, *batch.leftovers):
        remove_leftovers(folder, mine)  # what a killed run left
    record = OutputRecord.read(batch.out_dir, shard)
    planned = {item.name: (item.source, list(item.outputs)) for item in items}
    claim(record, planned, batch.model, batch.overwrite)
    outcome = Outcome()
    todo = []
    for item in items:
        if not batch.overwrite and record.finished(item.name, list(item.outputs), item.source, batch.model):
            outcome.skipped.append(item)
        else:
            todo.append(item)
    earlier = batch.table.read() if batch.table is not None and not batch.overwrite else {}
    if batch.table is not None and not todo and earlier:
        log.info(
            "%s lists every image already; skipped (pass --overwrite to predict them again)", batch.table.path
        )
        return outcome
    for item in outcome.skipped:
        log.info(
            "%s: already predicted (%s), skipped; pass --overwrite to predict it again",
            item.source.name,
            item.outputs[0],
        )
    failures: list[tuple[Path, str]] = []
    progress = tqdm(
        total=len(todo), unit=batch.unit, disable=None if batch.progress and len(items) >= 2 else True
    )
    for group in batched(todo, batch.group):
        for item in group:
            record.start(item.name, list(item.outputs), item.source, batch.model)
        try:
            results = list(work(group))
        except ModelError:
            raise
        except IdlError as exc:  # the group as a whole (one item, as a rule)
            results = [exc] * len(group)
        for item, result in zip(group, results, strict=True):
            if isinstance(result, IdlError):
                log.error("not predicted: %s", result)
                failures.append((item.source, str(result)))
                continue
            if isinstance(result, Pending):
                log.info("%s: %s", item.source.name, result.reason)
                continue
            outcome.results.append((item, result))
            if batch.table is None:
                record.finish(item.name, list(item.outputs), item.source, batch.model)
        progress.update(len(group))
    progress.close()
    if batch.table is not None and outcome.results:
        _write_table(batch.table, outcome, earlier, record, batch.model)
    if outcome.skipped:
        log.info(
            "%d of %d %s(s) were predicted by an earlier run and skipped",
            len(outcome.skipped),
            len(items),
            batch.unit,
        )
    if failures:
        raise BatchError(failures, len(items))
    return outcome


def _write_table(
    table: Table, outcome: Outcome, earlier: dict[str, dict[str, Any]], record: OutputRecord, model: str
) -> None:
    """The table of the new rows and the earlier rows of other items; every item in it recorded."""
    new = {item.name: row for item, row in outcome.results}
    kept = {name: row for name, row in earlier.items() if name not in new}
    table.write([*new.values(), *kept.values()])
    for item, _ in outcome.results:
        record.finish(item.name, list(item.outputs), item.source, model)
    for name in kept:
        record.rewritten(name, [table.path])
