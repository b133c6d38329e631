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


def normalize(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """Normalize a whole channels-last image (2D or 3D) with its own per-channel percentiles
    (float32 out). This is the ``scale_range`` operation the inference side applies tile by tile;
    non-finite pixels are ignored by the percentiles and become 0 (:mod:`idl.infer.core.nonfinite`)."""
    from idl.infer.core.processing import ScaleRange, apply_ops, fit_ops

    axes = "zyx"[-(image.ndim - 1) :] + "c"
    ops = fit_ops([ScaleRange(axes[:-1], norm.low, norm.high, norm.eps)], image, axes)
    out = apply_ops(ops, image, axes)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out
