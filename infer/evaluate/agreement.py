"""How far two graphs of one model give the same answers: the measures an int8 graph is held to
against its float32 graph (:mod:`idl.export.quantize`). Each task names its own
(:meth:`idl.infer.tasks.base.Task.agreement`):

- semantic segmentation: at most 0.1 % of the mask pixels differ (:func:`mask_disagreement`);
- instance segmentation: at most 0.1 % of the pixels lie in another object, objects matched one to
  one by their overlap, so that a label's number does not matter (:func:`label_disagreement`);
- regression: the mean absolute difference is at most 2 % of the float32 values' standard deviation,
  the worst output channel (:func:`relative_error`). 8-bit activations resolve about 1/256 of each
  layer's range: a depth-4 U-Net trained on the synthetic regression demo measured 1.7 % (1.1 % with
  three more layers left in float32, which gave back about a third of the time saved), far below its
  error against the ground truth;
- classification: at least 99.5 % of the images get the same class (:func:`class_disagreement`).

Monte Carlo uncertainty maps are compared by their relative difference (:func:`spread_difference`).
Every measure takes the reference's answers and the other graph's, one array per image.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

MASK_LIMIT = 0.001
LABEL_LIMIT = 0.001
REGRESSION_LIMIT = 0.02
CLASS_LIMIT = 0.005

Compare = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float]


@dataclass(frozen=True)
class Agreement:
    """How a task's answers of two graphs are compared: ``compare(reference, other)`` over all
    validation images must be at most ``limit``; ``measure`` names it for the model description
    and ``--info``."""

    measure: str
    limit: float
    compare: Compare


def mask_disagreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """The fraction of all pixels whose class differs between two lists of masks."""
    differing = sum(int(np.count_nonzero(a != b)) for a, b in zip(reference, other, strict=True))
    return differing / max(1, sum(a.size for a in reference))


def matched_pixels(a: np.ndarray, b: np.ndarray) -> int:
    """Pixels on which two label images agree once their objects are matched one to one, the pairs
    that share most pixels first (background, 0, only with background): the same objects under
    other numbers agree everywhere, an object split in two agrees on its larger part."""
    a64, b64 = a.astype(np.int64).ravel(), b.astype(np.int64).ravel()
    base = int(b64.max(initial=0)) + 1
    pairs, counts = np.unique(a64 * base + b64, return_counts=True)
    first, second = np.divmod(pairs, base)
    used_a: set[int] = set()
    used_b: set[int] = set()
    agree = 0
    for i in np.argsort(-counts, kind="stable"):
        x, y = int(first[i]), int(second[i])
        if (x == 0) != (y == 0) or x in used_a or y in used_b:
            continue
        used_a.add(x)
        used_b.add(y)
        agree += int(counts[i])
    return agree


def label_disagreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """The fraction of all pixels in another object (:func:`matched_pixels`)."""
    total = sum(a.size for a in reference)
    agree = sum(matched_pixels(a, b) for a, b in zip(reference, other, strict=True))
    return 1.0 - agree / max(1, total)


def relative_error(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """The mean absolute difference of ``(K, *spatial)`` values divided by the standard deviation of
    the reference's, channel by channel over all images; the worst channel. Non-finite pixels (where
    the input was not finite) are left out."""
    a = np.concatenate([x.reshape(x.shape[0], -1) for x in reference], axis=1).astype(np.float64)
    b = np.concatenate([x.reshape(x.shape[0], -1) for x in other], axis=1).astype(np.float64)
    worst = 0.0
    for ref, got in zip(a, b, strict=True):
        worst = max(worst, _relative(np.abs(ref - got), ref, np.std))
    return worst


def class_disagreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """The fraction of images given another class."""
    differing = sum(int(np.any(a != b)) for a, b in zip(reference, other, strict=True))
    return differing / max(1, len(reference))


def spread_difference(reference: Sequence[np.ndarray], other: Sequence[np.ndarray]) -> float:
    """The mean absolute difference of two lists of uncertainty maps relative to the reference's mean
    magnitude."""
    a = np.concatenate([np.ravel(x) for x in reference]).astype(np.float64)
    b = np.concatenate([np.ravel(x) for x in other]).astype(np.float64)
    return _relative(np.abs(a - b), a, lambda x: np.mean(np.abs(x)))


def _relative(difference: np.ndarray, reference: np.ndarray, scale: Callable[[np.ndarray], float]) -> float:
    """The mean of ``difference`` over the finite pixels divided by ``scale`` of the reference's
    (0 for no difference, infinite for a difference from a constant reference)."""
    finite = np.isfinite(difference) & np.isfinite(reference)
    if not finite.any():
        return 0.0
    mean, spread = float(np.mean(difference[finite])), float(scale(reference[finite]))
    if spread > 0:
        return mean / spread
    return 0.0 if mean == 0 else float("inf")
