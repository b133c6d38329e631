"""Ground truth for semantic segmentation: binary or integer class masks -> class maps."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idl.infer.core.errors import DataError


def mask_plane(gt: np.ndarray, source: str, dims: int = 2) -> np.ndarray:
    """A 2D (or 3D) mask from a ground-truth array; 2D masks saved as RGB(A) with equal channels are
    accepted."""
    if gt.ndim == dims:
        return gt
    if dims == 2 and gt.ndim == 3 and gt.shape[-1] in (3, 4) and np.array_equal(gt[..., 0], gt[..., 1]):
        return gt[..., 0]
    kind = "a 2D image (Y, X)" if dims == 2 else "a 3D volume (Z, Y, X)"
    raise DataError(
        f"{source}: a ground-truth mask must be {kind}; this one has shape {gt.shape}. "
        "Save masks as single-channel images with one integer class per pixel."
    )


def semantic_target(gt: np.ndarray, num_classes: int, source: str, dims: int = 2) -> np.ndarray:
    """Class map (uint8) from a mask: binary masks (any non-zero = foreground) or classes 0..K-1."""
    plane = mask_plane(gt, source, dims)
    if num_classes == 2:
        return (plane > 0).astype(np.uint8)
    if np.issubdtype(plane.dtype, np.floating) and not np.all(np.mod(plane, 1) == 0):
        raise DataError(f"{source}: class masks must hold integers, found fractional values.")
    values = np.unique(plane)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise DataError(
            f"{source}: holds class value(s) {bad[:5].tolist()} outside 0..{num_classes - 1}. "
            f"Fix the mask or set --num-classes to at least {int(values.max()) + 1}."
        )
    return plane.astype(np.uint8)


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
