from __future__ import annotations

import numpy as np
import pytest
from skimage.filters import threshold_otsu

from idl.infer.post.postprocess import otsu_of_histogram, otsu_threshold, parse_threshold, to_mask


def test_otsu_matches_scikit_image_on_a_bimodal_map(rng) -> None:
    p = np.concatenate([rng.normal(0.2, 0.05, 5000), rng.normal(0.7, 0.05, 3000)]).clip(0, 1)
    assert otsu_threshold(p) == pytest.approx(threshold_otsu(p), abs=1 / 256)
    assert 0.35 < otsu_threshold(p) < 0.55


@pytest.mark.parametrize("seed", range(5))
def test_otsu_of_a_histogram_is_scikit_image_s_exactly(seed: int) -> None:
    """The written-out Otsu gives scikit-image's bin on histograms of one, two and three modes, and
    with empty bins at either end."""
    rng = np.random.default_rng(seed)
    centers = (np.arange(256) + 0.5) / 256
    for modes in (1, 2, 3):
        values = np.concatenate(
            [rng.normal(rng.uniform(0.1, 0.9), 0.06, rng.integers(100, 5000)) for _ in range(modes)]
        )
        counts = np.histogram(values.clip(0.02, 0.97), bins=256, range=(0.0, 1.0))[0]
        assert otsu_of_histogram(counts, centers) == threshold_otsu(hist=(counts, centers))


def test_otsu_on_a_map_without_foreground_gives_an_empty_mask(rng) -> None:
    p = rng.uniform(0.0, 0.03, (1, 64, 64)).astype(np.float32)
    mask, t = to_mask(p, "otsu")
    assert t == pytest.approx(0.1)
    assert mask.sum() == 0


def test_fixed_threshold_and_argmax() -> None:
    p = np.array([[[0.2, 0.6]]], np.float32)
    assert to_mask(p, 0.5)[0].tolist() == [[0, 1]]
    multi = np.array([[[0.1, 0.7]], [[0.8, 0.1]], [[0.1, 0.2]]], np.float32)
    mask, t = to_mask(multi, "otsu")
    assert mask.tolist() == [[1, 0]] and t is None


@pytest.mark.parametrize("bad", ["0", "1.5", "high"])
def test_parse_threshold_rejects_bad_values(bad: str) -> None:
    with pytest.raises(ValueError, match="threshold"):
        parse_threshold(bad)
    assert parse_threshold("OTSU") == "otsu" and parse_threshold("0.3") == 0.3
