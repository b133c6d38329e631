"""Shards: the I-th of N deterministic parts of a prediction, for job arrays (Slurm, LSF, a loop).

``--shard I/N`` (1 <= I <= N) takes every N-th item starting at the I-th of the sorted list (round
robin, as nnU-Net's ``-part_id/-num_parts``: neighbouring files often differ in size, so each part
gets a share of the large and the small ones). The parts of one list are disjoint and cover it, and
every process that lists the same inputs computes the same parts, so N processes need no
coordination. ``--shard auto`` reads a Slurm job array's variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from idl.infer.core.errors import IdlError

T = TypeVar("T")

AUTO = "auto"
# Slurm's job-array variables (sbatch --array): the task's id, and the array's size or its bounds
TASK_ID = "SLURM_ARRAY_TASK_ID"
TASK_COUNT = "SLURM_ARRAY_TASK_COUNT"
TASK_MIN = "SLURM_ARRAY_TASK_MIN"
TASK_MAX = "SLURM_ARRAY_TASK_MAX"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1:
            raise IdlError(f"--shard {self.label}: the number of parts must be at least 1; give --shard I/N.")
        if not 1 <= self.index <= self.count:
            raise IdlError(
                f"--shard {self.label}: parts are numbered from 1 to {self.count}; give "
                f"--shard I/{self.count} with 1 <= I <= {self.count}."
            )

    @property
    def label(self) -> str:
        """``I/N`` as the user wrote it."""
        return f"{self.index}/{self.count}"

    @property
    def key(self) -> str:
        """``IofN``: the shard in file names."""
        return f"{self.index}of{self.count}"

    def part(self, items: Sequence[T]) -> list[T]:
        """This shard's items of ``items`` (in their order)."""
        return list(items[self.index - 1 :: self.count])

    def owns(self, position: int) -> bool:
        """Whether the item at ``position`` (0-based) of the list is this shard's."""
        return position % self.count == self.index - 1


def parse_shard(text: str, environ: Mapping[str, str]) -> Shard:
    """``I/N``, or ``auto`` (the Slurm job array's task among its tasks, from ``environ``); raises
    :class:`IdlError` naming the fix for anything else."""
    text = text.strip()
    if text.lower() == AUTO:
        return _from_slurm(environ)
    match = re.fullmatch(r"(-?\d+)\s*/\s*(-?\d+)", text)
    if match is None:
        raise IdlError(f"--shard {text}: give the part and the number of parts as I/N (e.g. 2/8), or auto.")
    return Shard(int(match.group(1)), int(match.group(2)))


def _from_slurm(environ: Mapping[str, str]) -> Shard:
    """The shard of a Slurm array task: its id's rank among the array's ids (``--array=0-7`` and
    ``--array=1-8`` both give 1/8 .. 8/8). Arrays with steps or lists (``--array=1,5,9``) are refused:
    their ids do not say the task's rank."""
    if TASK_ID not in environ:
        raise IdlError(
            f"--shard auto: {TASK_ID} is not set, so this is not a task of a Slurm job array. Submit with "
            "sbatch --array=1-N, or give the part yourself: --shard I/N."
        )
    try:
        task, first = int(environ[TASK_ID]), int(environ[TASK_MIN])
        last = int(environ[TASK_MAX]) if TASK_MAX in environ else first + int(environ[TASK_COUNT]) - 1
        count = int(environ.get(TASK_COUNT, last - first + 1))
    except (KeyError, ValueError) as exc:
        raise IdlError(
            f"--shard auto: Slurm's array variables ({TASK_ID}, {TASK_MIN} and {TASK_MAX} or {TASK_COUNT}) "
            f"are incomplete or not numbers ({exc}); give the part yourself: --shard I/N."
        ) from exc
    if last - first + 1 != count:
        raise IdlError(
            f"--shard auto: the job array's ids are not consecutive ({TASK_MIN}={first}, {TASK_MAX}={last}, "
            f"{TASK_COUNT}={count}); submit with --array=FIRST-LAST, or give --shard I/N."
        )
    return Shard(task - first + 1, count)
