from __future__ import annotations

import numpy as np
import pytest

from idl.infer.core.normalize import Normalization, normalize
from idl.infer.core.processing import ScaleRange, fit_ops


def test_percentiles_map_to_zero_and_one_per_channel(rng) -> None:
    image = np.stack([rng.normal(100, 10, (50, 60)), rng.normal(5000, 800, (50, 60))], axis=-1)
    norm = Normalization(low=2.0, high=98.0)
    out = normalize(image.astype(np.uint16), norm)
    assert out.dtype == np.float32
    for c in range(2):
        lo, hi = np.percentile(out[..., c], [2, 98])
        assert lo == pytest.approx(0.0, abs=1e-5)
        assert hi == pytest.approx(1.0, abs=1e-4)


def test_crops_normalized_with_whole_image_statistics_match(rng) -> None:
    image = rng.integers(0, 4000, (40, 50, 1)).astype(np.uint16)
    norm = Normalization()
    (fitted,) = fit_ops([ScaleRange("yx", norm.low, norm.high, norm.eps)], image, "yxc")
    crop = fitted(image[10:30, 5:25], "yxc")
    np.testing.assert_array_equal(crop, normalize(image, norm)[10:30, 5:25])


def test_invalid_percentiles_are_rejected() -> None:
    with pytest.raises(ValueError, match="low < high"):
        Normalization(low=50, high=10)
