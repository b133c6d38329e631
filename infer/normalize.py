"""Per-image intensity normalization, defined once and used by training and inference alike.

Each channel of each image is scaled so that its ``low`` and ``high`` percentiles map to 0 and 1:
``(x - p_low) / (p_high - p_low + eps)``. This is robust to hot pixels and to the varying exposure of
microscopy images, and it is exactly bioimage.io's ``scale_range`` preprocessing (per sample, per
channel), so exported packages describe it without custom code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Normalization:
    """Percentile range normalization settings (stored with every model)."""

    low: float = 1.0
    high: float = 99.8
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(
                f"normalization percentiles need 0 <= low < high <= 100, got {self.low}, {self.high}"
            )


def percentile_range(image: np.ndarray, norm: Normalization) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(p_low, p_high)`` of a channels-last image, as float32 arrays of shape ``(C,)``."""
    flat = image.reshape(-1, image.shape[-1])
    lo, hi = np.percentile(flat, [norm.low, norm.high], axis=0)
    return lo.astype(np.float32), hi.astype(np.float32)


def apply_range(image: np.ndarray, lo: np.ndarray, hi: np.ndarray, eps: float) -> np.ndarray:
    """Scale a channels-last image (or any crop of it) with precomputed per-channel percentiles.

    Works on crops so large images can be normalized tile by tile with whole-image statistics.
    """
    scale = (hi - lo + np.float32(eps)).astype(np.float32)
    return (image.astype(np.float32) - lo) / scale


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """Normalize a whole channels-last image with its own percentiles (float32 out)."""
    lo, hi = percentile_range(image, norm)
    return apply_range(image, lo, hi, norm.eps)
