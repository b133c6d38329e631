"""Monte Carlo dropout statistics accumulated sample by sample (pure numpy).

InstantDL's pixel uncertainty for sigmoid/softmax outputs is the mean over samples of ``p (1 - p)``
plus the variance of ``p`` over samples, summed over output channels. Algebraically that equals
``p_mean (1 - p_mean)``: the variance of a Bernoulli variable with the mean predicted probability, so
it is high both where the model is unsure (p near 0.5) and where samples disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SampleMoments:
    """Running first and second moments of MC samples of shape ``(K, ...)``."""

    total: np.ndarray
    total_sq: np.ndarray
    count: int = 0

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> SampleMoments:
        return cls(np.zeros(shape, np.float64), np.zeros(shape, np.float64))

    def add(self, samples: np.ndarray) -> None:
        """Add a stack of samples, shape ``(S, K, ...)``."""
        s = samples.astype(np.float64)
        self.total += s.sum(axis=0)
        self.total_sq += (s * s).sum(axis=0)
        self.count += s.shape[0]

    def mean(self) -> np.ndarray:
        return (self.total / self.count).astype(np.float32)

    def uncertainty(self) -> np.ndarray:
        """InstantDL's uncertainty, summed over channels: mean p(1-p) + var p."""
        m1 = self.total / self.count
        m2 = self.total_sq / self.count
        aleatoric = m1 - m2  # mean over samples of p (1 - p)
        epistemic = np.maximum(m2 - m1 * m1, 0.0)  # variance of p over samples
        return (aleatoric + epistemic).sum(axis=0).astype(np.float32)

    def std(self) -> np.ndarray:
        """Standard deviation over samples, averaged over channels (regression, in output units)."""
        m1 = self.total / self.count
        variance = np.maximum(self.total_sq / self.count - m1 * m1, 0.0)
        return np.sqrt(variance).mean(axis=0).astype(np.float32)
