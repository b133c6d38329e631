"""Temperature scaling (Guo et al. 2017): one number that makes a trained network's probabilities
mean what they say, fitted on the validation images after training.

A network trained to low loss is often over-confident: of the pixels it calls foreground with 0.95,
fewer than 95 % are. Dividing its logits by a temperature ``T`` (the one that minimizes the negative
log-likelihood of the validation targets) keeps every decision (the arg-max and the sign of a logit do
not change) and corrects the confidences. ``T`` is folded into the network's last layer
(:meth:`~idl.models.unet.PaddedNetwork.scale_output`), so the ONNX graphs, the package's weights in
every format and every tool that runs them give calibrated probabilities; the model description keeps
``T`` and the validation figures before and after.

Regression has no probabilities; its uncertainty is the Monte Carlo samples' standard deviation
``sigma``, which dropout alone does not put on the scale of the errors. One factor ``s`` (the root mean
square of ``residual / sigma`` on the validation pixels, :func:`fit_sigma_scale`) makes the residuals
standard normal in scale: the model description keeps it (``ModelInfo.sigma_scale``) and the inference
side multiplies the standard-deviation map by it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOUNDS = (0.05, 20.0)  # the temperatures searched
PIXELS = 2_000_000  # validation pixels used at most (a seeded random choice beyond)
SIGMA_BOUNDS = (1e-3, 1e3)  # the standard-deviation factors allowed (beyond: the samples say nothing)


class Figures:
    """A calibration's record: its numbers, rounded, for the model description."""

    def to_dict(self) -> dict[str, float]:
        return {k: round(float(v), 6) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class Calibration(Figures):
    """The fitted temperature and the validation negative log-likelihood and ECE before and after."""

    temperature: float
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float

    def describe(self) -> str:
        return (
            f"temperature {self.temperature:.3f} fitted on the validation images: negative log-likelihood "
            f"{self.nll_before:.4f} -> {self.nll_after:.4f}, expected calibration error "
            f"{self.ece_before:.4f} -> {self.ece_after:.4f}"
        )


def _log_probabilities(logits: np.ndarray) -> np.ndarray:
    """``(N, K)`` log-probabilities of ``(N, K)`` logits: the sigmoid's two classes for one channel
    (classes 0 and 1), else the softmax."""
    if logits.shape[1] == 1:
        z = logits[:, 0]
        return np.stack([-np.logaddexp(0, z), -np.logaddexp(0, -z)], axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def negative_log_likelihood(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean ``-log p(target)`` of ``(N, K)`` logits divided by ``temperature``."""
    log_p = _log_probabilities(logits / temperature)
    return float(-np.mean(log_p[np.arange(len(targets)), targets]))


def confidence_and_correct(logits: np.ndarray, targets: np.ndarray, temperature: float = 1.0):
    """The probability of the class chosen and whether it is the target, per row."""
    p = np.exp(_log_probabilities(logits / temperature))
    chosen = p.argmax(axis=1)
    return p.max(axis=1), chosen == targets


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> Calibration:
    """The temperature minimizing the negative log-likelihood of ``targets`` (``(N,)`` class indices)
    under ``logits`` (``(N, K)``, or ``(N, 1)`` for a sigmoid), searched on a log scale."""
    from scipy.optimize import minimize_scalar

    from idl.infer.evaluate.calibration import expected_calibration_error

    logits = np.asarray(logits, np.float64)
    targets = np.asarray(targets, np.int64)
    found = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, targets, float(np.exp(log_t))),
        bounds=tuple(np.log(BOUNDS)),
        method="bounded",
        options={"xatol": 1e-4},
    )
    t = float(np.exp(found.x))
    return Calibration(
        t,
        negative_log_likelihood(logits, targets),
        negative_log_likelihood(logits, targets, t),
        expected_calibration_error(*confidence_and_correct(logits, targets)),
        expected_calibration_error(*confidence_and_correct(logits, targets, t)),
    )


def at_most(limit: int, rng: np.random.Generator, *rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The same random choice of at most ``limit`` rows of every array (all of them when fewer)."""
    if len(rows[0]) <= limit:
        return rows
    chosen = rng.choice(len(rows[0]), limit, replace=False)
    return tuple(r[chosen] for r in rows)


def pixel_rows(logits: np.ndarray, target: np.ndarray, limit: int, rng: np.random.Generator):
    """One image's ``(K, *spatial)`` logits and class map as rows ``(N, K)`` and ``(N,)``, at most
    ``limit`` rows (a random choice)."""
    rows = logits.reshape(logits.shape[0], -1).T
    classes = np.asarray(target).reshape(-1).astype(np.int64)
    return at_most(limit, rng, rows, classes)


@dataclass(frozen=True)
class SigmaCalibration(Figures):
    """Regression: the factor of the Monte Carlo standard deviation and the validation pixels' coverage
    of the ±1 sigma and ±2 sigma intervals before and after (0.683 and 0.954 for a right sigma)."""

    sigma_scale: float
    coverage_1sigma_before: float
    coverage_1sigma_after: float
    coverage_2sigma_before: float
    coverage_2sigma_after: float

    def describe(self) -> str:
        return (
            f"Monte Carlo standard deviation x {self.sigma_scale:.3f}, fitted on the validation images: "
            f"share within ±1 sigma {self.coverage_1sigma_before:.3f} -> {self.coverage_1sigma_after:.3f} "
            f"(0.683 when right), within ±2 sigma {self.coverage_2sigma_before:.3f} -> "
            f"{self.coverage_2sigma_after:.3f} (0.954)"
        )


def fit_sigma_scale(residual: np.ndarray, sigma: np.ndarray) -> SigmaCalibration | None:
    """The factor ``s`` with ``mean((residual / (s sigma))^2) = 1`` over the pixels whose ``sigma`` is
    positive (a standard normal's second moment), kept within :data:`SIGMA_BOUNDS`; None when no pixel
    has a positive sigma (a network without dropout, or samples that never differ)."""
    residual = np.asarray(residual, np.float64).ravel()
    sigma = np.asarray(sigma, np.float64).ravel()
    usable = (sigma > 0) & np.isfinite(sigma) & np.isfinite(residual)
    if not usable.any():
        return None
    r, s = residual[usable], sigma[usable]
    scale = float(np.clip(np.sqrt(np.mean((r / s) ** 2)), *SIGMA_BOUNDS))

    def within(k: float, factor: float) -> float:
        return float(np.mean(np.abs(r) <= k * factor * s))

    return SigmaCalibration(scale, within(1, 1.0), within(1, scale), within(2, 1.0), within(2, scale))
