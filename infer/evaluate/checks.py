"""What an evaluation checks before it scores, so that it never gives a silent wrong answer.

- Non-finite values (NaN, inf) in a prediction follow the rule of the input side
  (:mod:`idl.infer.core.nonfinite`, docs/robustness.md): with ``replace`` (the default) they are
  named with their count and first position in a warning and their pixels are left out of the
  scores; ``error`` refuses the prediction. A prediction with no finite value is always refused:
  nothing of it can be scored. idl-predict writes NaN into a regression's values where the input
  pixel was not finite, so its own predictions are scored by the same rule.
- Non-finite values in the ground truth are refused: a target must be a number everywhere.
- Ground truth without a prediction is named in a warning and counted in the summary
  (``n_missing_predictions``), or refused with ``strict``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.core.nonfinite import POLICIES, find_nonfinite

log = logging.getLogger("idl")

MISSING = "n_missing_predictions"  # summary keys: ground truth without a prediction
UNSCORED = "n_unscored_pixels"  # pixels left out of the scores for a non-finite prediction value
THRESHOLDED = "n_probability_maps"  # predictions that held probabilities and were made classes
SHOWN = 5  # names listed in a message


def axes_of(shape: tuple[int, ...], spatial: tuple[int, ...]) -> str:
    """Axis names (``yx``, ``cyx``, ``zyxc``...) of an array of ``shape`` whose space axes have the
    sizes ``spatial``, for messages: a channel axis is first when the rest is the space."""
    names = "zyx"[-len(spatial) :]
    if len(shape) == len(spatial):
        return names
    return "c" + names if tuple(shape[1:]) == tuple(spatial) else names + "c"


def check_prediction_values(
    prediction: np.ndarray, valid: np.ndarray | None, source: str, axes: str, policy: str = "replace"
) -> int:
    """Apply the non-finite rule to a prediction read from ``source`` (``valid``: its pixels whose
    values are all finite, None when all are): returns how many pixels are left out of the scores,
    after a warning naming the values' count and first position (``replace``), or raises a
    :class:`DataError` (``error``, or no valid pixel at all)."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    found = find_nonfinite(prediction)
    if found is None or valid is None:
        return 0
    if not valid.any():
        raise DataError(
            f"{source}: the prediction has no pixel with finite values ({found.describe(axes)}), so nothing "
            "of it can be scored. Predict the image again from a readable input, or remove the prediction."
        )
    if policy == "error":
        raise DataError(
            f"{source}: the prediction holds {found.describe(axes)}. Predict the image again, or leave out "
            "--on-nonfinite error to leave those pixels out of the scores (see docs/robustness.md)."
        )
    unscored = int(valid.size - np.count_nonzero(valid))
    log.warning(
        "%s: the prediction holds %s; those pixels (%d of %d) are left out of the scores. Pass "
        "--on-nonfinite error to refuse such predictions.",
        source,
        found.describe(axes),
        unscored,
        valid.size,
    )
    return unscored


def check_groundtruth_values(groundtruth: np.ndarray, source: str, axes: str) -> None:
    """Refuse ground truth with a non-finite value, naming its count and first position."""
    found = find_nonfinite(groundtruth)
    if found is not None:
        raise DataError(
            f"{source}: the ground truth holds {found.describe(axes)}; a ground truth must be a number "
            "everywhere. Fix those pixels, or leave this image out of the evaluation."
        )


def missing_predictions(
    predictions: Sequence[str], groundtruth: Mapping[str, object], source: str, strict: bool = False
) -> list[str]:
    """The ground truth (names) without a prediction, in order; each is named in a warning (the
    first few), or, with ``strict``, a :class:`DataError` refuses the evaluation."""
    have = set(predictions)
    missing = [name for name in groundtruth if name not in have]
    if not missing:
        return []
    shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
    what = f"{len(missing)} of {len(groundtruth)} ground truth(s) in {source} have no prediction: {shown}"
    if strict:
        raise DataError(f"{what}. Predict those images too, or leave out --strict to score the others.")
    log.warning("%s; they are not scored (pass --strict to make this an error).", what)
    return missing


def coverage_note(summary: Mapping[str, float | int]) -> str:
    """What the printed headline adds about what was not scored or was converted (empty: nothing)."""
    notes = []
    if summary.get(MISSING):
        total = int(summary.get("n_images", 0)) + int(summary[MISSING])
        notes.append(f"{summary[MISSING]} of {total} ground truth(s) without a prediction, not scored")
    if summary.get(UNSCORED):
        notes.append(f"{summary[UNSCORED]} non-finite prediction pixel(s) left out")
    if summary.get(THRESHOLDED):
        notes.append(f"{summary[THRESHOLDED]} probability map(s) turned into classes")
    return "".join(f"; {note}" for note in notes)


def looks_like_labels(truth: np.ndarray) -> int:
    """The number of objects when ``truth`` looks like a label image (integers, at least three
    non-zero values, each of the first twenty one connected region), else 0: evaluated as semantic
    classes, its objects would be scored as that many classes."""
    from scipy import ndimage

    if not np.issubdtype(truth.dtype, np.integer):
        return 0
    values = np.unique(truth)
    values = values[values != 0]
    if values.size < 3:
        return 0
    for value in values[:20]:
        if ndimage.label(truth == value)[1] != 1:
            return 0
    return int(values.size)
