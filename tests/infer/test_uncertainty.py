from __future__ import annotations

import numpy as np

from idl.infer.post.uncertainty import SampleMoments


def test_moments_match_direct_formula_in_chunks(rng) -> None:
    samples = rng.random((20, 2, 16, 16)).astype(np.float32)
    moments = SampleMoments.zeros((2, 16, 16))
    for chunk in np.array_split(samples, [3, 10, 11]):
        moments.add(chunk)
    p = samples.astype(np.float64)
    expected = (np.mean(p * (1 - p), axis=0) + np.var(p, axis=0)).sum(axis=0)
    np.testing.assert_allclose(moments.mean(), p.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(moments.uncertainty(), expected, atol=1e-6)
    mean = p.mean(axis=0)
    np.testing.assert_allclose(moments.uncertainty(), (mean * (1 - mean)).sum(axis=0), atol=1e-6)


def test_confident_agreeing_samples_have_low_uncertainty() -> None:
    sure = SampleMoments.zeros((1, 1))
    sure.add(np.full((10, 1, 1), 0.99, np.float32))
    unsure = SampleMoments.zeros((1, 1))
    unsure.add(np.array([0.0, 1.0] * 5, np.float32).reshape(10, 1, 1))
    assert sure.uncertainty()[0] < 0.011
    assert unsure.uncertainty()[0] == 0.25
