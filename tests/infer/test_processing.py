"""bioimage.io processing in numpy, checked against scipy and the spec's formulas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit, softmax

from idl.infer.core.errors import ModelError
from idl.infer.core.processing import (
    Binarize,
    Clip,
    EnsureDtype,
    FixedZeroMeanUnitVariance,
    ScaleLinear,
    ScaleRange,
    Sigmoid,
    Softmax,
    ZeroMeanUnitVariance,
    apply_ops,
    fit_ops,
    split_pointwise,
)


@pytest.fixture
def image(rng) -> np.ndarray:
    """(y, x, c) with very different channel ranges."""
    return np.stack([rng.normal(100, 10, (40, 30)), rng.normal(-5, 0.5, (40, 30))], axis=-1)


def test_statistics_per_channel_and_per_image(image: np.ndarray) -> None:
    (zmuv,) = fit_ops([ZeroMeanUnitVariance("yx", eps=1e-6)], image, "yxc")
    out = zmuv(image, "yxc")
    expected = (image - image.mean(axis=(0, 1))) / (image.std(axis=(0, 1)) + 1e-6)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    (whole,) = fit_ops([ZeroMeanUnitVariance(None)], image, "yxc")
    assert abs(whole(image, "yxc").mean()) < 1e-4 and abs(whole(image, "yxc").std() - 1) < 1e-4
    (scale,) = fit_ops([ScaleRange("xy", 1.0, 99.8, 1e-6)], image, "yxc")
    lo, hi = np.percentile(image, [1.0, 99.8], axis=(0, 1))
    np.testing.assert_allclose(scale(image, "yxc"), (image - lo) / (hi - lo + 1e-6), rtol=1e-4, atol=1e-5)
    crop = image[5:20, 3:9]  # tiles use the statistics of the whole image
    np.testing.assert_allclose(scale(crop, "yxc"), ((image - lo) / (hi - lo + 1e-6))[5:20, 3:9], atol=1e-5)


def test_statistics_see_the_operations_before_them(image: np.ndarray) -> None:
    ops = fit_ops([Clip(None, 95.0), ScaleRange("yx", 0.0, 100.0, 0.0)], image, "yxc")
    out = apply_ops(ops, image, "yxc")
    assert out[..., 0].max() == pytest.approx(1.0)  # the clipped maximum, 95, maps to 1
    assert out[..., 0].min() == pytest.approx(0.0)


def test_pointwise_operations_along_axes(rng) -> None:
    batch = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(Sigmoid()(batch, "bcyx"), expit(batch), rtol=1e-6)
    extreme = np.array([-1e4, -100, -30, -1e-3, 0, 1e-3, 30, 100, 1e4], np.float32)
    sigmoid = Sigmoid()(extreme, "c")
    np.testing.assert_allclose(sigmoid, expit(extreme), rtol=1e-6, atol=1e-40)  # 9.4e-14 at -30
    assert sigmoid[0] == 0.0 and sigmoid[-1] == 1.0 and sigmoid[4] == 0.5 and sigmoid.dtype == np.float32
    np.testing.assert_allclose(Softmax("c")(batch, "bcyx"), softmax(batch, axis=1), rtol=1e-5)
    gain, offset = (1.0, 2.0, 3.0), (0.0, -1.0, 1.0)
    out = ScaleLinear(gain, offset, "c")(batch, "bcyx")
    np.testing.assert_allclose(out[:, 2], batch[:, 2] * 3 + 1, rtol=1e-6)
    fixed = FixedZeroMeanUnitVariance((0.0, 1.0, 2.0), (1.0, 2.0, 4.0), "c", eps=0.0)(batch, "bcyx")
    np.testing.assert_allclose(fixed[:, 1], (batch[:, 1] - 1) / 2, rtol=1e-6)
    binary = Binarize((0.0, 10.0, -10.0), "c")(batch, "bcyx")
    assert binary[:, 1].sum() == 0 and binary[:, 2].all()
    assert EnsureDtype("uint8")(np.array([3.7]), "x").dtype == np.uint8
    with pytest.raises(ModelError, match="need an axis"):
        ScaleLinear(gain, offset, None)(batch, "bcyx")


def test_postprocessing_splits_at_the_first_statistic() -> None:
    ops = [Sigmoid(), Clip(0.0, 1.0), ZeroMeanUnitVariance(None), Binarize(0.5)]
    head, tail = split_pointwise(ops)
    assert head == (Sigmoid(), Clip(0.0, 1.0)) and tail == (ZeroMeanUnitVariance(None), Binarize(0.5))


def test_per_pixel_statistics_are_refused(image: np.ndarray) -> None:
    with pytest.raises(ModelError, match="leave a spatial axis unreduced"):
        fit_ops([ZeroMeanUnitVariance("c")], image, "yxc")
