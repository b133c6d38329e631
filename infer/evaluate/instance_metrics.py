"""Instance segmentation scores on label images (0 background, 1..N objects), pure numpy/scipy.

Objects are matched one-to-one by intersection over union (IoU): a predicted and a true object match
when their IoU exceeds the threshold (above 0.5 a match is unique; the optimal assignment is used
for any threshold). At one threshold, with TP matched pairs, FP unmatched predictions and FN unmatched
true objects:

- ``ap`` = TP / (TP + FP + FN), the "average precision" of the 2018 Data Science Bowl (also what
  StarDist calls accuracy); ``ap50`` is it at IoU 0.5;
- ``ap50_95`` = the mean of ``ap`` over IoU 0.5, 0.55, ..., 0.95 — the DSB2018 score;
- ``precision`` = TP / (TP + FP), ``recall`` = TP / (TP + FN), at IoU 0.5.

Scores over several images add up the counts first (every object counts the same), as the DSB2018
leaderboard averaged per image instead; both are reported by the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

THRESHOLDS = tuple(np.round(np.arange(0.5, 0.951, 0.05), 2))


def iou_matrix(truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows, labels 1..) with every predicted object (columns), computed
    from the contingency table of the two label images (labels need not be consecutive)."""
    if truth.shape != prediction.shape:
        raise ValueError(f"label images differ in shape: {truth.shape} vs {prediction.shape}")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(prediction, return_inverse=True)
    t, p = t.reshape(-1), p.reshape(-1)
    t_ids, p_ids = np.unique(truth), np.unique(prediction)
    overlap = np.zeros((len(t_ids), len(p_ids)), np.int64)
    np.add.at(overlap, (t, p), 1)
    # drop the background row/column (label 0) when present
    overlap = overlap[int(t_ids[0] == 0) :, int(p_ids[0] == 0) :]
    t_area = np.bincount(t, minlength=len(t_ids))[int(t_ids[0] == 0) :]
    p_area = np.bincount(p, minlength=len(p_ids))[int(p_ids[0] == 0) :]
    union = t_area[:, None] + p_area[None, :] - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1), 0.0)


@dataclass(frozen=True)
class MatchCounts:
    """True positives, false positives and false negatives at one IoU threshold."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: MatchCounts) -> MatchCounts:
        return MatchCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def ap(self) -> float:
        total = self.tp + self.fp + self.fn
        return self.tp / total if total else 1.0  # nothing to find and nothing found: perfect


def match_counts(iou: np.ndarray, threshold: float) -> MatchCounts:
    """One-to-one matching of true (rows) and predicted (columns) objects with IoU > ``threshold``."""
    n_true, n_pred = iou.shape
    if n_true == 0 or n_pred == 0:
        return MatchCounts(0, n_pred, n_true)
    rows, cols = linear_sum_assignment(-(iou * (iou > threshold)))
    tp = int(np.sum(iou[rows, cols] > threshold))
    return MatchCounts(tp, n_pred - tp, n_true - tp)


def counts_per_threshold(
    truth: np.ndarray, prediction: np.ndarray, iou: np.ndarray | None = None
) -> list[MatchCounts]:
    """Match counts of one image at every threshold of :data:`THRESHOLDS` (``iou``: the image's
    :func:`iou_matrix`, when already computed)."""
    iou = iou_matrix(truth, prediction) if iou is None else iou
    return [match_counts(iou, t) for t in THRESHOLDS]


def best_iou(iou: np.ndarray) -> np.ndarray:
    """For every predicted object (columns of :func:`iou_matrix`, in label order) its best IoU with
    any true object: above 0.5 it is a true positive at that threshold, else a false detection."""
    return iou.max(axis=0) if iou.shape[0] else np.zeros(iou.shape[1])


def scores_from_counts(counts: list[MatchCounts]) -> dict[str, float]:
    """ap50, ap50_95, precision and recall (at 0.5) from counts per threshold."""
    at50 = counts[0]
    return {
        "ap50": at50.ap,
        "ap50_95": float(np.mean([c.ap for c in counts])),
        "precision": at50.tp / (at50.tp + at50.fp) if at50.tp + at50.fp else 1.0,
        "recall": at50.tp / (at50.tp + at50.fn) if at50.tp + at50.fn else 1.0,
    }


def instance_scores(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """ap50, ap50_95, precision, recall of one label image, and the pixel Jaccard of the foreground."""
    scores = scores_from_counts(counts_per_threshold(truth, prediction))
    t, p = truth > 0, prediction > 0
    union = np.logical_or(t, p).sum()
    scores["jaccard"] = float(np.logical_and(t, p).sum() / union) if union else 1.0
    return scores
