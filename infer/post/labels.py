"""Ground truth and predictions for semantic segmentation: binary or integer class masks, or a
prediction's class probabilities, -> class maps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.post.postprocess import otsu_threshold, to_mask

GROUNDTRUTH = "ground-truth mask"  # the roles an array plays, as the messages name it
PREDICTION = "prediction"

_SAVE_AS = {
    GROUNDTRUTH: "Save masks as single-channel images with one integer class per pixel.",
    PREDICTION: "Give predictions as single-channel masks with one integer class per pixel, or as "
    "probabilities 0..1 with the class axis first (as idl-predict --save-probabilities writes them).",
}


def mask_plane(gt: np.ndarray, source: str, dims: int = 2, role: str = GROUNDTRUTH) -> np.ndarray:
    """A 2D (or 3D) mask from a ground-truth (or, as ``role``, a prediction's) array; 2D masks saved
    as RGB(A) with equal channels are accepted."""
    if gt.ndim == dims:
        return gt
    if dims == 2 and gt.ndim == 3 and gt.shape[-1] in (3, 4) and np.array_equal(gt[..., 0], gt[..., 1]):
        return gt[..., 0]
    kind = "a 2D image (Y, X)" if dims == 2 else "a 3D volume (Z, Y, X)"
    raise DataError(
        f"{source}: a {role} must be {kind}; this one has shape {gt.shape}. "
        + _SAVE_AS.get(role, _SAVE_AS[GROUNDTRUTH])
    )


def semantic_target(
    gt: np.ndarray, num_classes: int, source: str, dims: int = 2, role: str = GROUNDTRUTH
) -> np.ndarray:
    """Class map (uint8) from a mask: binary masks (any non-zero = foreground) or classes 0..K-1;
    ``role`` names the array in the messages (a ground-truth mask or a prediction)."""
    plane = mask_plane(gt, source, dims, role)
    if num_classes == 2:
        return (plane > 0).astype(np.uint8)
    if np.issubdtype(plane.dtype, np.floating) and not np.all(np.mod(plane, 1) == 0):
        raise DataError(f"{source}: the {role}'s classes must be integers, found fractional values.")
    values = np.unique(plane)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size and role == PREDICTION:
        raise DataError(
            f"{source}: the prediction holds class value(s) {bad[:5].tolist()} outside 0..{num_classes - 1}, "
            "the classes of the ground truth. Check that it was predicted by a model of these classes, or "
            f"set --num-classes to at least {int(values.max()) + 1}."
        )
    if bad.size:
        raise DataError(
            f"{source}: holds class value(s) {bad[:5].tolist()} outside 0..{num_classes - 1}. "
            f"Fix the mask or set --num-classes to at least {int(values.max()) + 1}."
        )
    return plane.astype(np.uint8)


def fractional(array: np.ndarray) -> bool:
    """Whether a floating-point array holds finite values that are not whole numbers: probabilities
    or measurements, not classes or labels."""
    if not np.issubdtype(array.dtype, np.floating):
        return False
    values = array[np.isfinite(array)]
    return bool(values.size) and not np.all(np.mod(values, 1) == 0)


def finite_pixels(array: np.ndarray, channel: int | None = None) -> np.ndarray | None:
    """The pixels (spatial) whose every value is finite, or None when all are (always for integers);
    ``channel`` is the array's channel axis, if it has one."""
    if not np.issubdtype(array.dtype, np.floating):
        return None
    finite = np.isfinite(array)
    if channel is not None:
        finite = finite.all(axis=channel)
    return None if finite.all() else finite


def channel_axis(shape: tuple[int, ...], dims: int, channels: Sequence[int]) -> int | None:
    """The class axis of a prediction of ``shape``: None for a plain ``dims``-D image, 0 when the
    first axis has one of the accepted numbers of ``channels`` (idl-predict writes it first), else -1
    when the last one has; a :class:`ValueError` when neither."""
    if len(shape) == dims:
        return None
    if len(shape) == dims + 1 and shape[0] in channels:
        return 0
    if len(shape) == dims + 1 and shape[-1] in channels:
        return -1
    raise ValueError(shape)


@dataclass(frozen=True)
class PredictedClasses:
    """A prediction as a class map, which of its pixels can be scored, and how it was made from what
    the file held."""

    classes: np.ndarray  # uint8 class map over the spatial axes (0 where a value was not finite)
    valid: np.ndarray | None  # the pixels whose values are all finite (None: every pixel)
    probabilities: bool  # the file held class probabilities (thresholded or arg-max), not a mask
    threshold: float | None = None  # the threshold of a binary probability map


def predicted_classes(
    pred: np.ndarray, num_classes: int, source: str, dims: int = 2, threshold: str | float = "otsu"
) -> PredictedClasses:
    """The class map of a semantic prediction: a mask as :func:`semantic_target` reads one, or
    probabilities (fractional values in 0..1) turned into classes as idl-predict does, by Otsu's (or
    a fixed) ``threshold`` of one foreground channel, else the arg-max over one channel per class.
    Non-finite values are left out (their pixels are not ``valid``, and Otsu's threshold is that of
    the valid ones). Fractional values outside 0..1 are refused: they are neither classes nor
    probabilities."""
    if not fractional(pred):
        plane = mask_plane(pred, source, dims, PREDICTION)
        valid = finite_pixels(plane)
        if valid is not None:
            plane = np.where(valid, plane, 0)
        return PredictedClasses(semantic_target(plane, num_classes, source, dims, PREDICTION), valid, False)
    values = pred[np.isfinite(pred)]
    low, high = float(values.min()), float(values.max())
    if low < 0 or high > 1:
        raise DataError(
            f"{source}: the prediction holds fractional values from {low:.4g} to {high:.4g}, so it is "
            "neither a class mask (integers) nor probabilities (0..1). Give masks or probabilities "
            "(idl-predict --save-probabilities), or evaluate values such as a stain's with --task regression."
        )
    probabilities = class_probabilities(pred, num_classes, source, dims)
    valid = finite_pixels(probabilities, 0)
    probabilities = np.nan_to_num(probabilities, nan=0.0, posinf=0.0, neginf=0.0)
    if probabilities.shape[0] > 1:
        return PredictedClasses(to_mask(probabilities, threshold)[0], valid, True)
    if threshold == "otsu":
        threshold = otsu_threshold(probabilities[0] if valid is None else probabilities[0][valid])
    mask, used = to_mask(probabilities, threshold)
    return PredictedClasses(mask, valid, True, used)


def class_probabilities(pred: np.ndarray, num_classes: int, source: str, dims: int = 2) -> np.ndarray:
    """A probability map as ``(K, *spatial)``: one foreground channel (binary) or one per class,
    the class axis first or last."""
    accepted = (1, 2) if num_classes == 2 else (num_classes,)
    try:
        axis = channel_axis(pred.shape, dims, accepted)
    except ValueError:
        kind = "Y, X" if dims == 2 else "Z, Y, X"
        raise DataError(
            f"{source}: the prediction holds probabilities of shape {pred.shape}, but a {num_classes}-class "
            f"evaluation needs {' or '.join(map(str, accepted))} channel(s) besides the {kind} axes. Check "
            "that it was predicted by a model of these classes, or set --num-classes."
        ) from None
    if axis is None and num_classes > 2:
        raise DataError(
            f"{source}: the prediction holds probabilities of one channel, but the ground truth has "
            f"{num_classes} classes: give one probability channel per class (class axis first), or masks."
        )
    channels = pred[np.newaxis] if axis is None else np.moveaxis(pred, axis, 0)
    return channels.astype(np.float32, copy=False)


BINARY_ENCODINGS = {0, 1, 255}  # 0/1 and 0/255 masks, even mixed across files, are binary
MAX_GUESSED_CLASSES = 20


def infer_num_classes(
    masks: list[np.ndarray], sources: Sequence[str] | None = None, strict: bool = False
) -> int:
    """Number of classes (incl. background) from the values of all masks together.

    Binary when the values fit 0/1 or 0/255 encodings (or are only two values); otherwise classes
    0..max. Looking at the union matters: masks holding {0, 1} and {0, 2} are three classes. Many
    distinct values usually mean instance labels or intensity images, which is an error here. With
    ``strict`` (training), classes 0..max that no mask holds are an error naming the masks that hold
    the values above the gap (``sources``, one per mask): a stray value would otherwise make a binary
    project an 8-class one with empty classes. ``--num-classes`` accepts them as they are.
    """
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    if values.size <= 2 or set(values.tolist()) <= BINARY_ENCODINGS:
        return 2
    if values.size > MAX_GUESSED_CLASSES or values.min() < 0:
        raise DataError(
            f"the ground truth holds {values.size} distinct values ({values.min()}..{values.max()}): that "
            "looks like instance labels or intensity images, not class masks. Use masks with classes "
            "0..K-1, or pass --num-classes (2 treats every non-zero pixel as foreground)."
        )
    k = int(values.max()) + 1
    missing = sorted(set(range(k)) - set(int(v) for v in values))
    if strict and missing:
        odd = [int(v) for v in values if v > missing[0]]
        names = list(sources) if sources is not None else [f"mask {i}" for i in range(len(masks))]
        holders = [n for n, m in zip(names, masks, strict=True) if np.isin(m, odd).any()]
        shown = ", ".join(holders[:5]) + (f" and {len(holders) - 5} more" if len(holders) > 5 else "")
        raise DataError(
            f"the masks hold the class values {', '.join(map(str, values.tolist()))}, so classes "
            f"{', '.join(map(str, missing))} appear in no mask; value(s) {', '.join(map(str, odd))} are in "
            f"{shown}. Fix those masks (classes must be 0..K-1), or pass --num-classes {k} to train "
            f"{k} classes as they are."
        )
    return k
