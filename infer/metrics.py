"""Segmentation metrics from confusion matrices (pure numpy, checked against scikit-learn in tests).

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
