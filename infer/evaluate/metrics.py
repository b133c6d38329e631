"""Segmentation and regression metrics (pure numpy, checked against scikit-learn and scipy in tests).

Summing confusion matrices over images gives the "over all test pixels" scores; per-image scores come
from each image's own matrix. Binary scores are those of the foreground class; multi-class scores are
the mean over foreground classes that occur in the ground truth or the prediction. An image with no
foreground in either scores 1.0: predicting nothing where there is nothing is correct.
"""

from __future__ import annotations

import numpy as np


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> np.ndarray:
    """``(K, K)`` counts, rows = ground truth, columns = prediction."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    index = gt.astype(np.int64).ravel() * num_classes + pred.astype(np.int64).ravel()
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _per_class(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    return tp, fp, fn


def _foreground_mean(numerator: np.ndarray, denominator: np.ndarray) -> float:
    fg = slice(1, None)
    present = denominator[fg] > 0
    if not present.any():
        return 1.0
    return float(np.mean(numerator[fg][present] / denominator[fg][present]))


def jaccard(cm: np.ndarray) -> float:
    """Intersection over union of the foreground class(es)."""
    tp, fp, fn = _per_class(cm)
    return _foreground_mean(tp, tp + fp + fn)


def dice(cm: np.ndarray) -> float:
    """Dice coefficient (F1) of the foreground class(es)."""
    tp, fp, fn = _per_class(cm)
    return _foreground_mean(2 * tp, 2 * tp + fp + fn)


def accuracy(cm: np.ndarray) -> float:
    """Fraction of correctly classified pixels."""
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 1.0


def semantic_scores(cm: np.ndarray) -> dict[str, float]:
    return {"jaccard": jaccard(cm), "dice": dice(cm), "accuracy": accuracy(cm)}


def pearson(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pearson correlation of two images over all pixels (0 when either is constant)."""
    p = pred.astype(np.float64).ravel()
    g = gt.astype(np.float64).ravel()
    p, g = p - p.mean(), g - g.mean()
    denominator = np.sqrt((p * p).sum() * (g * g).sum())
    return float((p * g).sum() / denominator) if denominator > 0 else 0.0


def regression_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Pearson r, mean absolute and squared error, and the mean relative error.

    The mean relative error is the mean absolute error relative to the mean absolute ground truth,
    ``sum |p - t| / sum |t|``: unlike a per-pixel ratio it does not explode where the target is ~0
    (the background of a stain).
    """
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground truth shape {gt.shape}")
    error = pred.astype(np.float64) - gt.astype(np.float64)
    scale = np.abs(gt.astype(np.float64)).sum()
    return {
        "pearson": pearson(pred, gt),
        "mae": float(np.abs(error).mean()),
        "mse": float((error * error).mean()),
        "mean_relative_error": float(np.abs(error).sum() / scale) if scale > 0 else float("nan"),
    }
