"""How good an uncertainty is, measured on a test set: calibration of the confidences and what
reviewing the most uncertain results would catch. Pure array functions; the evaluations of the tasks
feed them pixels (semantic), objects (instance), images (classification) or values (regression).

- :func:`reliability` and :func:`expected_calibration_error`: predictions binned by their confidence
  (the probability of the class chosen); a calibrated model is right as often as it is confident in
  every bin, and the ECE is the count-weighted mean gap between the two.
- :func:`risk_coverage` and :func:`errors_caught`: results sorted from the most certain; the risk at
  a coverage is the error rate of the results kept, and its area (AURC) is low when the errors sit
  among the most uncertain. "Reviewing the 10 % most uncertain catches X % of the errors".
- :func:`interval_coverage`: regression; the share of values within k predicted standard deviations
  (0.683 and 0.954 for k = 1 and 2 when the deviations are right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15  # the reliability diagram's equal-width confidence bins (Guo et al. 2017)


@dataclass(frozen=True)
class Reliability:
    """Per confidence bin (``edges``: ``bins + 1`` values from 0 to 1): the mean confidence, the
    accuracy and the count (empty bins: NaN, NaN, 0)."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> Reliability:
    """Bin predictions by ``confidence`` (in [0, 1]; bins closed on the right, the first also on
    the left) and measure each bin's accuracy (``correct``: bool per prediction)."""
    confidence = np.asarray(confidence, np.float64).ravel()
    correct = np.asarray(correct, bool).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, confidence, bins) / count
        accuracy = np.bincount(index, correct.astype(np.float64), bins) / count
    return Reliability(edges, mean_confidence, accuracy, count)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """The count-weighted mean of ``|accuracy - confidence|`` over the bins of :func:`reliability`."""
    found = reliability(confidence, correct, bins)
    filled = found.count > 0
    if not filled.any():
        return float("nan")
    gaps = np.abs(found.accuracy[filled] - found.confidence[filled])
    return float(np.sum(gaps * found.count[filled]) / np.sum(found.count[filled]))


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for the ``positive`` (bool) items; NaN when one of the
    two groups is empty."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(roc_auc_score(positive, scores))


def risk_coverage(uncertainty: np.ndarray, error: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(coverage, risk)``: the results sorted by uncertainty (most certain first, ties kept in
    order), and for each count kept the share kept and their error rate."""
    uncertainty = np.asarray(uncertainty, np.float64).ravel()
    error = np.asarray(error, np.float64).ravel()
    order = np.argsort(uncertainty, kind="stable")
    kept = np.arange(1, error.size + 1)
    return kept / error.size, np.cumsum(error[order]) / kept


def area_under_risk_coverage(uncertainty: np.ndarray, error: np.ndarray) -> float:
    """AURC: the mean risk over all coverages (lower is better; the error rate itself when the
    uncertainty tells nothing, less when the errors are among the most uncertain)."""
    if np.asarray(error).size == 0:
        return float("nan")
    return float(np.mean(risk_coverage(uncertainty, error)[1]))


def errors_caught(uncertainty: np.ndarray, error: np.ndarray, share: float = 0.1) -> float:
    """The share of all errors among the ``share`` most uncertain results (what reviewing them by
    hand would catch); NaN without errors."""
    uncertainty = np.asarray(uncertainty, np.float64).ravel()
    error = np.asarray(error, np.float64).ravel()
    total = error.sum()
    if total == 0:
        return float("nan")
    reviewed = int(np.ceil(share * error.size))
    most = np.argsort(-uncertainty, kind="stable")[:reviewed]
    return float(error[most].sum() / total)


def interval_coverage(residual: np.ndarray, sigma: np.ndarray, k: float) -> float:
    """The share of ``|residual| <= k * sigma`` (regression: prediction minus truth, and the Monte
    Carlo standard deviation)."""
    residual = np.abs(np.asarray(residual, np.float64).ravel())
    sigma = np.asarray(sigma, np.float64).ravel()
    return float(np.mean(residual <= k * sigma)) if residual.size else float("nan")


PIXELS_PER_IMAGE = 1_000_000  # pixels an image adds at most (a seeded random choice beyond)


class UncertaintySample:
    """The (uncertainty, error) pairs of a test set, gathered image by image (at most
    :data:`PIXELS_PER_IMAGE` per image, chosen with a fixed seed, so the figures repeat), and what they
    say (:meth:`summary`)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.uncertainty: list[np.ndarray] = []
        self.error: list[np.ndarray] = []

    def add(self, uncertainty: np.ndarray, error: np.ndarray) -> None:
        """One image's uncertainty and error (wrong: True, or an error size) at its valid results."""
        u = np.asarray(uncertainty, np.float32).ravel()
        e = np.asarray(error).ravel()
        finite = np.isfinite(u)
        u, e = u[finite], e[finite]
        if u.size > PIXELS_PER_IMAGE:
            chosen = self.rng.choice(u.size, PIXELS_PER_IMAGE, replace=False)
            u, e = u[chosen], e[chosen]
        self.uncertainty.append(u)
        self.error.append(e)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Everything gathered: the uncertainties and the errors (as given), concatenated."""
        if not self.uncertainty:
            return np.zeros(0, np.float32), np.zeros(0, bool)
        return np.concatenate(self.uncertainty), np.concatenate(self.error)

    def summary(self, prefix: str = "uncertainty") -> dict[str, float]:
        """``{prefix}_auroc`` (wrong against right), ``{prefix}_aurc`` (the area under the
        risk-coverage curve), ``{prefix}_error_rate`` (the risk at full coverage, for comparison) and
        ``errors_caught_10`` (the share of the errors among the 10 % most uncertain); {} without
        data or errors."""
        u, e = self.arrays()
        e = e.astype(bool)
        if not e.any() or e.all():
            return {}
        return {
            f"{prefix}_auroc": auroc(u, e),
            f"{prefix}_aurc": area_under_risk_coverage(u, e),
            f"{prefix}_error_rate": float(e.mean()),
            "errors_caught_10": errors_caught(u, e, 0.1),
        }


def pixel_confidence(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(confidence, class)`` per pixel of ``(K, *spatial)`` probabilities: for one (sigmoid)
    channel the probability of the side of 0.5 chosen, else the largest probability and its class.
    The class is the probabilities' own decision (0.5 or arg-max), which calibration is about, not
    a mask's threshold (Otsu's) chosen after them."""
    if probabilities.shape[0] == 1:
        p = probabilities[0]
        chosen = p > 0.5
        return np.where(chosen, p, 1.0 - p), chosen.astype(np.int64)
    return probabilities.max(axis=0), probabilities.argmax(axis=0)
