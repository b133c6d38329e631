"""Tiles sized by a memory budget: the largest tile whose network activations fit.

A tile of side ``t`` with a halo ``h`` on each side owns ``t - 2h`` px per axis, so small tiles spend
most of their work on halos that their neighbours compute again (a 512-px tile with a 96-px halo
owns 320 px: 2.6x the pixels go through the network). The largest tile the memory allows recomputes
least. Per axis, the owned volume of a tile of fixed size is largest when every axis owns the same
share of its extent, that is with sides proportional to the halos: a 3D U-Net with a z halo of a
quarter of its in-plane halo gets tiles a quarter as deep. An axis the image spans in one tile takes
its whole extent (it needs no halo), and the other axes share what is left.

What a tile costs comes from the network's graph (:mod:`idl.infer.runtime.footprint`); the budget is
what ``--max-memory`` leaves after the process's own memory and the image's output arrays.
"""

from __future__ import annotations

import math
import os
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from idl.infer.core.grid import AxisSize, axis_tiles
from idl.infer.runtime.footprint import Footprint

# --max-memory's default: this share of the memory available when idl-predict starts, at most the cap
MEMORY_SHARE = 0.25
MEMORY_CAP = 1536 * 2**20  # 1.5 GB: larger tiles than this allows gained < 5 % (docs/benchmarks.md)
# ... in 2D. Where the cap's tiles would send more than MAX_RECOMPUTE times the image's pixels through
# the network (a 3D U-Net's 96-voxel halo on every axis: within 1.5 GB a 64 x 1024 x 1024 volume gets
# 64 x 256 x 256 tiles, 13 per axis, 10.6x), the default grows to the smallest budget whose tiles
# recompute at most that much, up to MEMORY_CEILING of the available memory (docs/benchmarks.md:
# 1.12x of whole-volume ONNX Runtime there, against over 5.7x before)
MAX_RECOMPUTE = 1.5
MEMORY_CEILING = 0.5
UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def parse_memory(text: str) -> int:
    """Bytes of a memory size as users write it: ``1.5G``, ``800M``, ``800MB``, ``2gb`` or bytes.
    Raises ``ValueError`` with what was wrong."""
    value = text.strip().lower().replace(" ", "")
    number = value.rstrip("kmgb")
    unit = value[len(number) :]
    try:
        amount = float(number)
    except ValueError:
        amount = math.nan
    if unit not in UNITS or not amount > 0 or not math.isfinite(amount):
        raise ValueError(f"'{text}' is not a memory size; write it as 1.5G, 800M or a number of bytes")
    return int(amount * UNITS[unit])


def default_budget(available: int | None) -> int:
    """``--max-memory``'s default: :data:`MEMORY_SHARE` of the ``available`` bytes, at most
    :data:`MEMORY_CAP` (the cap where the system does not say what is available)."""
    if available is None:
        return MEMORY_CAP
    return int(min(MEMORY_SHARE * available, MEMORY_CAP))


def resident_bytes() -> int:
    """The process's resident memory now (Linux: ``/proc/self/statm``; elsewhere its peak so far)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


# a cgroup v1 "limit" at or above this is none (the kernel writes the largest page-aligned int64)
NO_LIMIT = 2**60


def cgroup_available(root: Path = Path("/")) -> int | None:
    """Bytes this process's control group still allows, or None where it sets no memory limit: a
    Slurm job's ``--mem``, a container's ``--memory``. A machine's free memory says nothing about
    them, and a job that takes a share of a 256-GB node's memory under a 4-GB limit is killed.
    The limit less the group's usage, plus its inactive page cache (reclaimable: reading a large
    volume fills it). cgroup v2 (``memory.max``) and v1 (``memory.limit_in_bytes``), at the group
    ``/proc/self/cgroup`` names and at the mount's root (a container's own group); the tightest.
    ``root``: where ``/proc`` and ``/sys`` are (tests)."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mount = root / "sys/fs/cgroup"
    places: list[tuple[Path, str, str, str]] = []  # folder, limit file, usage file, cache field
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        relative = path.lstrip("/")
        if controllers == "":  # v2
            for base in (mount, mount / "unified"):
                for folder in (base / relative, base):
                    places.append((folder, "memory.max", "memory.current", "inactive_file"))
        elif "memory" in controllers.split(","):
            for folder in (mount / "memory" / relative, mount / "memory"):
                places.append(
                    (folder, "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
                )
    found = []
    for folder, limit_name, usage_name, cache_name in places:
        try:
            limit_text = (folder / limit_name).read_text().strip()
            if limit_text == "max" or int(limit_text) >= NO_LIMIT:
                continue
            usage = int((folder / usage_name).read_text())
            cache = _stat(folder / "memory.stat", cache_name)
        except (OSError, ValueError):
            continue
        found.append(max(0, int(limit_text) - usage + cache))
    return min(found) if found else None


def _stat(path: Path, name: str) -> int:
    """A field of a cgroup's ``memory.stat`` (0 where it is missing)."""
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class TileChoice:
    """The tile a budget allows and what it is expected to cost."""

    tile: tuple[int, ...]  # per spatial axis, halo included
    expected: float  # bytes of the network's activations for the batch of tiles
    fits: bool  # False: even the smallest tile exceeds the budget (it is returned anyway)


def _aligned(n: float, align: int) -> int:
    return max(align, int(n) // align * align)


def choose_tile(
    cost: Footprint,
    budget: float,
    extents: Sequence[int],
    halos: Sequence[int],
    aligns: Sequence[int],
    smallest: Sequence[int],
    batch: int = 1,
) -> TileChoice:
    """The largest tile (per axis; sides proportional to ``halos``, each a multiple of its ``aligns``
    and at least ``smallest``, no axis beyond its image ``extents`` rounded up to the alignment) whose
    ``batch`` tiles cost at most ``budget`` bytes by ``cost``. Pure arithmetic: a search over the
    tile's scale."""
    full = [-(-n // a) * a for n, a in zip(extents, aligns, strict=True)]
    weights = [max(h, a) for h, a in zip(halos, aligns, strict=True)]
    top = max(weights)
    weights = [w / top for w in weights]

    def tile_at(scale: float) -> tuple[int, ...]:
        return tuple(
            min(f, max(s, _aligned(scale * w, a)))
            for f, s, w, a in zip(full, smallest, weights, aligns, strict=True)
        )

    lowest = tile_at(0)
    if cost.bytes_for(lowest, batch) > budget:
        return TileChoice(lowest, cost.bytes_for(lowest, batch), False)
    low, high = 0.0, float(max(f / w for f, w in zip(full, weights, strict=True)))
    if cost.bytes_for(tile_at(high), batch) <= budget:
        low = high
    for _ in range(60):  # the scale to within a pixel on any image
        if high - low < 0.5:
            break
        middle = (low + high) / 2
        low, high = (middle, high) if cost.bytes_for(tile_at(middle), batch) <= budget else (low, middle)
    tile = tile_at(low)
    return TileChoice(tile, cost.bytes_for(tile, batch), True)


def recomputed(
    extents: Sequence[int], tile: Sequence[int], halos: Sequence[int], rules: Sequence[AxisSize]
) -> float:
    """Pixels the tiles of ``tile`` send through the network over the image's own (1.0: one tile):
    the grid's tiles (:func:`idl.infer.core.grid.axis_tiles`, shortened to balance, overlapping by
    twice the halo) along each axis, multiplied."""
    ratio = 1.0
    for n, t, h, rule in zip(extents, tile, halos, rules, strict=True):
        ratio *= sum(a.size for a in axis_tiles(n, t, h, rule)) / n
    return ratio


def grown_budget(
    choose: Callable[[float], TileChoice],
    waste: Callable[[tuple[int, ...]], float],
    budget: float,
    ceiling: float,
) -> tuple[TileChoice, float]:
    """The default budget's tile and the budget: ``budget``'s tile where it recomputes at most
    :data:`MAX_RECOMPUTE` (``waste``, e.g. :func:`recomputed`), else the tile of the smallest budget up
    to ``ceiling`` that does (the ceiling's where none does). ``choose`` is :func:`choose_tile` for a
    budget. The smallest such budget: beyond it larger tiles save little and only take memory."""
    choice = choose(budget)
    if ceiling <= budget or waste(choice.tile) <= MAX_RECOMPUTE:
        return choice, budget
    top = choose(ceiling)
    if waste(top.tile) > MAX_RECOMPUTE:
        return top, ceiling
    low, high = budget, ceiling
    while high - low > 2**24:  # to within 16 MB
        middle = (low + high) / 2
        low, high = (low, middle) if waste(choose(middle).tile) <= MAX_RECOMPUTE else (middle, high)
    return choose(high), high


def output_bytes(pixels: int, channels: int, sampled: bool) -> int:
    """Bytes of a whole image's in-memory outputs: float32 values of every channel, an uncertainty
    map when sampled, and a mask or labels (int32 at most)."""
    return pixels * (4 * channels + (4 if sampled else 0) + 4)
