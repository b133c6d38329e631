"""A budget that reaches the plateau: a planned run whose validation score is still rising extends
itself, in steps, up to a cap; one that has not left the trivial answer starts again.

The plan's budget is a guess from the data's size and the device's speed; some projects are still
learning when it ends (their best epoch the last one, the score still climbing). So the loop looks
at the validation scores where the trapezoid schedule would start to lower the learning rate (after
:data:`CHECK_AT` of the epochs): when the best score of the latest third of the epochs beats the
best before it by at least :data:`MIN_GAIN`, the budget grows by :data:`STEP` of the planned epochs,
and the decay moves with the end. Checked again at the new decay start, up to :data:`CAP` times
the planned epochs. On a plateau the latest third rarely beats the two thirds before it (their
maximum is drawn from twice as many noisy scores), so a finished run is left alone.

At the same check, a run whose best validation score since the burn-in is no better than the
answer without training (:mod:`idl.train.reference`: Otsu's threshold, the most common class, the
input itself) by :data:`STUCK_MARGIN` starts again from a new initialisation with :data:`RESTART_LR`
times the learning rate, with the planned epochs ahead of it as long as the cap allows: on
InstantDL's lung example half the seeds of the default stayed at "dark is lung" for the whole budget
(docs/benchmarks.md). The best epoch so far stays the best until the new attempt beats it.

Pure functions of the scores: the loop (:func:`idl.train.loop.fit`) applies them and keeps the
extensions in its state, so ``--resume`` continues with the extended budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from idl.train.plan import DECAY_FRACTION

CHECK_AT = 1.0 - DECAY_FRACTION  # of the current budget's epochs: where the trapezoid starts its decay
STEP = 0.5  # each extension adds this share of the planned epochs
CAP = 3.0  # the budget grows to at most this many times the planned epochs
MIN_GAIN = 0.01  # the latest third's best score must beat the earlier best by this much (scores 0..1)
MIN_HISTORY = 3  # epochs of scores needed to see a trend
STUCK_MARGIN = 0.02  # a run must beat the answer without training by this much (scores 0..1)
RESTART_LR = 0.5  # a restart trains with this share of the learning rate before it


@dataclass(frozen=True)
class Trend:
    """The best validation score of the latest ``recent`` epochs and of the epochs before them."""

    latest: float
    before: float
    recent: int

    @property
    def rising(self) -> bool:
        return self.latest >= self.before + MIN_GAIN


def check_epoch(epochs: int) -> int:
    """The epoch after which a budget of ``epochs`` is checked (its decay start, at least the first)."""
    return max(1, math.floor(CHECK_AT * epochs))


def trend(scores: Sequence[float]) -> Trend | None:
    """The trend of ``scores`` (one per epoch so far), or None with too few finite ones to tell."""
    if len(scores) < MIN_HISTORY or not all(math.isfinite(s) for s in scores):
        return None
    recent = max(1, math.ceil(len(scores) / 3))
    return Trend(max(scores[-recent:]), max(scores[:-recent]), recent)


def max_epochs(planned: int, cap: float) -> int:
    """The most epochs a budget of ``planned`` epochs may grow to (``cap`` 1: never extended)."""
    return max(planned, math.floor(cap * planned))


def extended(epochs: int, planned: int, most: int) -> int:
    """The budget after one extension: :data:`STEP` of the planned epochs more, at most ``most``."""
    return min(most, epochs + max(1, math.ceil(STEP * planned)))


def describe(trend: Trend, metric: str, epoch: int, epochs: int, steps_per_epoch: int) -> str:
    """The log and plan line of one extension."""
    return (
        f"after epoch {epoch}: validation {metric} {trend.latest:.4f} in the last {trend.recent} epoch(s), "
        f"{trend.before:.4f} before, still rising: extended to {epochs} epochs "
        f"({epochs * steps_per_epoch} steps)"
    )


def stuck(best: float, reference: float | None) -> bool:
    """Whether a run's best validation score (since its burn-in) is no better than the ``reference``."""
    return reference is not None and math.isfinite(best) and best <= reference + STUCK_MARGIN


def describe_restart(
    best: float, reference: float, name: str, metric: str, epoch: int, epochs: int, rate: float
) -> str:
    """The log and plan line of one restart."""
    return (
        f"after epoch {epoch}: best validation {metric} since the burn-in {best:.4f}, no better than {name} "
        f"({reference:.4f}) + {STUCK_MARGIN}: started again from a new initialisation at learning rate "
        f"{rate:g}, to epoch {epochs}"
    )
