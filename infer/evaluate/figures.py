"""The evaluation's overview figures that say how far to trust the results, each with the one
sentence that reads it for the user: the reliability diagram (are the confidences the accuracies?),
the risk-coverage curve (what does setting the most uncertain results aside remove?) and, for
regression, the error against the predicted standard deviation.

Every function writes one PNG and returns a :class:`Figure` (its file, a title and the reading), which
the evaluation lists in ``figures.json`` for the report (:mod:`idl.infer.evaluate.report`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from idl.infer.evaluate.calibration import (
    BINS,
    area_under_risk_coverage,
    errors_caught,
    expected_calibration_error,
    reliability,
    risk_coverage,
)
from idl.infer.evaluate.plots import _pyplot, save_figure

CURVE_POINTS = 400  # points drawn of a risk-coverage curve (it may have millions of pixels)


@dataclass(frozen=True)
class Figure:
    """A figure of the evaluation folder: its file name there, a title and what it says."""

    file: str
    title: str
    reading: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %" if value < 0.1 else f"{100 * value:.0f} %"


def reliability_figure(path: Path, confidence: np.ndarray, correct: np.ndarray, unit: str) -> Figure:
    """Accuracy against confidence in :data:`~idl.infer.evaluate.calibration.BINS` bins (bars) with
    the diagonal of perfect calibration and the bins' counts; ``unit``: what was predicted
    ("pixels", "images", "objects")."""
    found = reliability(confidence, correct)
    ece = expected_calibration_error(confidence, correct)
    plt = _pyplot()
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(4.5, 5), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    filled = found.count > 0
    centres = (found.edges[:-1] + found.edges[1:]) / 2
    width = 1.0 / BINS
    ax.bar(centres[filled], found.accuracy[filled], width=width * 0.9, alpha=0.75, label="accuracy")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"reliability of the {unit} (ECE {ece:.4f})", fontsize=10)
    counts.bar(centres[filled], found.count[filled], width=width * 0.9, color="tab:grey")
    counts.set_yscale("log")
    counts.set_ylabel(unit)
    counts.set_xlabel("confidence (probability of the class chosen)")
    save_figure(fig, path)
    top = int(np.flatnonzero(filled)[-1]) if filled.any() else 0
    reading = (
        f"The expected calibration error is {ece:.4f} (0: every confidence is the accuracy): "
        f"{unit} predicted with confidence {found.edges[top]:.2f} to {found.edges[top + 1]:.2f} "
        f"(mean {found.confidence[top]:.3f}) were right {_percent(float(found.accuracy[top]))} of the time."
        if filled.any()
        else "No predictions to show."
    )
    return Figure(path.name, f"Reliability of the {unit}", reading)


def risk_coverage_figure(path: Path, uncertainty: np.ndarray, error: np.ndarray, unit: str) -> Figure:
    """The error rate of the results kept against the share kept, most certain first, beside what
    an uncertainty that tells nothing would give (the overall error rate) and the best possible
    order (every error set aside first)."""
    uncertainty = np.asarray(uncertainty, np.float64).ravel()
    error = np.asarray(error, bool).ravel()
    coverage, risk = risk_coverage(uncertainty, error)
    rate = float(error.mean()) if error.size else float("nan")
    ideal = np.maximum(0.0, 1.0 - (1.0 - rate) / np.maximum(coverage, 1e-12))
    step = max(1, coverage.size // CURVE_POINTS)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    ax.plot(
        coverage[::step],
        risk[::step],
        label=f"by uncertainty (area {area_under_risk_coverage(uncertainty, error):.4f})",
    )
    ax.plot(coverage[::step], ideal[::step], "--", color="tab:green", label="best possible order")
    ax.axhline(rate, ls=":", color="grey", label="uncertainty telling nothing")
    ax.set_xlabel(f"share of {unit} kept (most certain first)")
    ax.set_ylabel(f"error rate of the {unit} kept")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(rate * 2.2, float(risk.max()) * 1.05, 1e-6))
    ax.legend(fontsize=8)
    ax.set_title(f"risk-coverage of the {unit}", fontsize=10)
    save_figure(fig, path)
    if not error.any():
        reading = f"None of the {unit} is wrong: there is nothing for the uncertainty to find."
    else:
        caught = errors_caught(uncertainty, error, 0.1)
        kept = int(np.floor(0.9 * error.size))
        left = float(risk[kept - 1]) if kept else float("nan")
        reading = (
            f"Checking the 10 % most uncertain {unit} by hand would catch {_percent(caught)} of the wrong "
            f"ones: the error rate of the other 90 % is {_percent(left)}, against {_percent(rate)} over all."
        )
    return Figure(path.name, f"Risk-coverage of the {unit}", reading)


def sigma_figure(path: Path, residual: np.ndarray, sigma: np.ndarray) -> Figure:
    """Regression: the mean absolute error in bins of the predicted standard deviation (equal
    counts), beside the line a right sigma gives (|error| = sigma * sqrt(2/pi) for a normal error)."""
    residual = np.abs(np.asarray(residual, np.float64).ravel())
    sigma = np.asarray(sigma, np.float64).ravel()
    order = np.argsort(sigma, kind="stable")
    groups = np.array_split(order, min(20, max(1, sigma.size)))
    mean_sigma = np.array([sigma[g].mean() for g in groups if g.size])
    mean_error = np.array([residual[g].mean() for g in groups if g.size])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.8))
    ax.plot(mean_sigma, mean_error, "o-", label="mean |error| (20 equal bins)")
    top = float(max(mean_sigma.max(initial=0), 1e-12))
    ax.plot([0, top], [0, top * np.sqrt(2 / np.pi)], ":", color="grey", label="a right sigma")
    ax.set_xlabel("predicted standard deviation")
    ax.set_ylabel("mean absolute error")
    ax.legend(fontsize=8)
    ax.set_title("error against the predicted sigma", fontsize=10)
    save_figure(fig, path)
    within = [float(np.mean(residual <= k * sigma)) for k in (1, 2)]
    correlation = float(np.corrcoef(mean_sigma, mean_error)[0, 1]) if mean_sigma.size > 2 else float("nan")
    reading = (
        f"{_percent(within[0])} of the values lie within one predicted sigma of the truth and "
        f"{_percent(within[1])} within two (68 % and 95 % when the sigma is right); the error grows with "
        f"sigma at a correlation of {correlation:.2f} over the bins."
    )
    return Figure(path.name, "Error against the predicted sigma", reading)
