"""Non-finite pixels (NaN, +inf, -inf) in images: found when an image is read, and one rule for them.

A single NaN would otherwise spread through everything: percentile normalization of an image with a
NaN is NaN, so every tile, every probability and the mask would be NaN or empty, silently. The rule,
on both sides (docs/robustness.md): the statistics of the normalization ignore non-finite pixels, the
network sees 0 in their place (after normalization: the low percentile), and the outputs hold NaN
there (probabilities, values, uncertainty; 0 in masks and label images). ``--on-nonfinite error``
refuses such images instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from idl.infer.core.errors import DataError

log = logging.getLogger("idl")

POLICIES = ("replace", "error")
BLOCK_VALUES = 1 << 22  # values per block when a lazily read image is scanned


@dataclass(frozen=True)
class NonFinite:
    """How many pixels of an image are not finite, and where the first one is."""

    count: int
    first: tuple[int, ...]  # index of the first one (the image's axes)
    nan: int  # of them NaN (the rest infinite)

    def describe(self, axes: str = "") -> str:
        """``3 non-finite pixel value(s) (2 NaN, 1 inf), the first at y=4, x=7``."""
        names = list(axes) if len(axes) == len(self.first) else [f"axis{i}" for i in range(len(self.first))]
        where = ", ".join(f"{a}={i}" for a, i in zip(names, self.first, strict=True))
        return (
            f"{self.count} non-finite pixel value(s) ({self.nan} NaN, {self.count - self.nan} inf), "
            f"the first at {where}"
        )


def has_floats(image: Any) -> bool:
    """Only floating-point images can hold non-finite values."""
    return bool(np.issubdtype(image.dtype, np.inexact))  # floating point or complex


def _blocks(image: Any) -> Iterator[tuple[int, np.ndarray]]:
    """(offset along the first axis, block) over an array or a lazily read one."""
    if isinstance(image, np.ndarray) and not isinstance(image, np.memmap):
        yield 0, image
        return
    per = int(np.prod(image.shape[1:])) or 1
    step = max(1, BLOCK_VALUES // per)
    for start in range(0, image.shape[0], step):
        yield start, np.asarray(image[(slice(start, start + step),)])


def find_nonfinite(image: Any) -> NonFinite | None:
    """Count the non-finite values of ``image`` (read block by block when it is lazy); ``None`` when
    every value is finite (always for integer images)."""
    if not has_floats(image):
        return None
    count = nan = 0
    first: tuple[int, ...] | None = None
    for start, block in _blocks(image):
        bad = ~np.isfinite(block)
        n = int(np.count_nonzero(bad))
        if not n:
            continue
        count += n
        nan += int(np.count_nonzero(np.isnan(block)))
        if first is None:
            index = np.unravel_index(int(np.argmax(bad)), block.shape)
            first = (start + int(index[0]), *(int(i) for i in index[1:]))
    if not count:
        return None
    assert first is not None
    return NonFinite(count, first, nan)


def check_nonfinite(image: Any, source: str, axes: str, policy: str = "replace") -> NonFinite | None:
    """Find the non-finite values of an image read from ``source``: with ``policy`` ``replace`` say
    so in a warning and how they are handled, with ``error`` refuse them (:class:`DataError` naming
    the file, the count and the first position)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    found = find_nonfinite(image)
    if found is not None and policy == "error":
        raise DataError(
            f"{source}: {found.describe(axes)}. Fix or mask them in the image, or leave out "
            "--on-nonfinite error to have them ignored (see docs/robustness.md)."
        )
    if found is not None:
        log.warning(
            "%s: %s; they are ignored by the normalization, given to the network as 0 and written as NaN "
            "(0 in masks and labels). Pass --on-nonfinite error to refuse such images.",
            source,
            found.describe(axes),
        )
    return found
