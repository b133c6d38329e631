"""Monte Carlo dropout statistics accumulated sample by sample (pure numpy).

InstantDL's pixel uncertainty for sigmoid/softmax outputs is the mean over samples of ``p (1 - p)``
plus the variance of ``p`` over samples, summed over output channels. Algebraically that equals
``p_mean (1 - p_mean)``: the variance of a Bernoulli variable with the mean predicted probability, so
it is high both where the model is unsure (p near 0.5) and where samples disagree.

Two maps that separate the two: the standard deviation of the samples (disagreement only, in output
units; what regression uses) and the mutual information between the prediction and the network's
weights, ``H(p_mean) - mean_s H(p_s)`` in bits (the entropy of the mean minus the mean entropy of the
samples: zero when all samples agree, however unsure each is). The entropy of the mean prediction
(normalized to [0, 1]) counts both kinds of doubt; it is classification's default. :data:`MAPS` names
them, for every task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# the uncertainty maps of Monte Carlo samples (--uncertainty), for every task; "std" is regression's
# only one, "entropy" (of the mean prediction, normalized to [0, 1]) classification's default
MC_ANSWERS = ("deterministic", "mean")  # where a Monte Carlo prediction's answer comes from
MAPS = ("instantdl", "std", "mutual-information", "entropy")
TINY = 1e-12


def entropy_bits(p: np.ndarray, axis: int) -> np.ndarray:
    """Entropy in bits of class probabilities along ``axis``: a single channel is a sigmoid's
    foreground probability (binary entropy), several are a softmax's classes."""
    p = np.clip(p.astype(np.float64), TINY, 1.0)
    if p.shape[axis] == 1:
        q = np.clip(1.0 - p, TINY, 1.0)
        return -(p * np.log2(p) + q * np.log2(q)).sum(axis=axis)
    return -(p * np.log2(p)).sum(axis=axis)


def normalized_entropy(p: np.ndarray, axis: int) -> np.ndarray:
    """:func:`entropy_bits` divided by its largest value (1 bit for one sigmoid channel, log2 K for K
    classes): 0 when all mass is on one class, 1 when it is spread evenly."""
    k = p.shape[axis]
    return (entropy_bits(p, axis) / (np.log2(k) if k > 1 else 1.0)).clip(0.0, 1.0)


@dataclass
class SampleMoments:
    """Running first and second moments of MC samples of shape ``(K, ...)``."""

    total: np.ndarray
    total_sq: np.ndarray
    count: int = 0
    entropy: np.ndarray | None = None  # sum over samples of each sample's entropy (mutual information)

    @classmethod
    def zeros(cls, shape: tuple[int, ...], entropy: bool = False) -> SampleMoments:
        """Empty moments of samples of ``shape`` ``(K, ...)``; with ``entropy`` also what the mutual
        information needs."""
        extra = np.zeros(shape[1:], np.float64) if entropy else None
        return cls(np.zeros(shape, np.float64), np.zeros(shape, np.float64), 0, extra)

    def add(self, samples: np.ndarray) -> None:
        """Add a stack of samples, shape ``(S, K, ...)``."""
        s = samples.astype(np.float64)
        self.total += s.sum(axis=0)
        self.total_sq += (s * s).sum(axis=0)
        self.count += s.shape[0]
        if self.entropy is not None:
            self.entropy += entropy_bits(s, axis=1).sum(axis=0)

    def mutual_information(self) -> np.ndarray:
        """``H(mean p) - mean H(p)`` in bits: how much the samples disagree (BALD)."""
        if self.entropy is None:
            raise ValueError("these moments were accumulated without entropy")
        mean = self.total / self.count
        return np.maximum(entropy_bits(mean, axis=0) - self.entropy / self.count, 0.0).astype(np.float32)

    def mean_entropy(self) -> np.ndarray:
        """The samples' mean entropy, normalized like :func:`normalized_entropy` (InstantDL's
        classification uncertainty: how flat each sample is, not whether the samples agree)."""
        if self.entropy is None:
            raise ValueError("these moments were accumulated without entropy")
        k = self.total.shape[0]
        return (self.entropy / self.count / (np.log2(k) if k > 1 else 1.0)).clip(0.0, 1.0).astype(np.float32)

    def map(self, name: str) -> np.ndarray:
        """The uncertainty map called ``name`` (one of :data:`MAPS`)."""
        if name == "std":
            return self.std()
        if name == "mutual-information":
            return self.mutual_information()
        if name == "instantdl":
            return self.uncertainty()
        if name == "entropy":
            return normalized_entropy(self.total / self.count, axis=0).astype(np.float32)
        raise ValueError(f"unknown uncertainty map '{name}'; known: {', '.join(MAPS)}")

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


# Fewest samples before a tile may stop early: three per half, so each half's standard deviation and
# mutual information are estimates of something, not of one or two samples.
MIN_SAMPLES = 6


@dataclass
class SplitHalves:
    """Monte Carlo samples of one tile dealt alternately into two halves, so that the Monte Carlo
    error of the uncertainty map can be estimated from the samples themselves.

    The two halves' maps are independent estimates of the same map; their relative L1 distance
    ``sum |a - b| / sum (a + b)`` estimates the relative error of the map of all the samples (the
    difference of two half-size estimates has twice the variance of one, the map of both halves half
    of it, so the full map's error is about half the halves' distance measured against their mean).
    A tile stops drawing samples once that error is below a tolerance: tiles whose samples agree
    (background, confident objects) stop after :data:`MIN_SAMPLES`, unsure tiles draw all of theirs.
    """

    halves: tuple[SampleMoments, SampleMoments]

    @classmethod
    def zeros(cls, shape: tuple[int, ...], entropy: bool = False) -> SplitHalves:
        return cls((SampleMoments.zeros(shape, entropy), SampleMoments.zeros(shape, entropy)))

    @property
    def count(self) -> int:
        return self.halves[0].count + self.halves[1].count

    def add(self, samples: np.ndarray) -> None:
        """Add a stack of samples ``(S, K, ...)``, alternating between the halves."""
        for sample in samples:
            self.halves[self.count % 2].add(sample[np.newaxis])

    def combined(self) -> SampleMoments:
        """The moments of all samples."""
        a, b = self.halves
        entropy = None if a.entropy is None or b.entropy is None else a.entropy + b.entropy
        return SampleMoments(a.total + b.total, a.total_sq + b.total_sq, a.count + b.count, entropy)

    def relative_error(self, name: str) -> float:
        """Estimated relative L1 error of the map ``name`` of all samples so far (0 when every
        sample agreed everywhere)."""
        a, b = (half.map(name).astype(np.float64) for half in self.halves)
        scale = float((a + b).sum())
        return float(np.abs(a - b).sum()) / scale if scale > 0 else 0.0

    def settled(self, name: str, tolerance: float) -> bool:
        """Whether the map needs no more samples: at least :data:`MIN_SAMPLES`, an even count (both
        halves the same size) and an estimated error within ``tolerance``."""
        n = self.count
        return n >= MIN_SAMPLES and n % 2 == 0 and self.relative_error(name) <= tolerance
