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


def _entropy(p: np.ndarray, axis: int) -> np.ndarray:
    from scipy.stats import entropy

    return entropy(p, base=2, axis=axis)


def test_mutual_information_matches_scipy_entropies(rng) -> None:
    """Softmax samples: H(mean) - mean H, with scipy's entropy as the reference; chunked accumulation."""
    logits = rng.standard_normal((12, 3, 8, 8))
    samples = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    moments = SampleMoments.zeros((3, 8, 8), entropy=True)
    for chunk in np.array_split(samples, [5, 6]):
        moments.add(chunk.astype(np.float32))
    expected = _entropy(samples.mean(axis=0), axis=0) - _entropy(samples, axis=1).mean(axis=0)
    np.testing.assert_allclose(moments.mutual_information(), expected, atol=1e-5)
    assert moments.map("mutual-information").shape == (8, 8) and expected.min() >= 0


def test_mutual_information_tells_disagreement_from_a_low_confidence_mean() -> None:
    """Samples that all say 0.5 are unsure but agree: InstantDL's map is at its maximum (0.25), the
    mutual information 0; samples split between 0 and 1 have the same mean and 1 bit."""
    agree = SampleMoments.zeros((1, 1), entropy=True)
    agree.add(np.full((10, 1, 1), 0.5, np.float32))
    split = SampleMoments.zeros((1, 1), entropy=True)
    split.add(np.array([0.0, 1.0] * 5, np.float32).reshape(10, 1, 1))
    assert agree.map("instantdl")[0] == split.map("instantdl")[0] == 0.25
    assert abs(agree.map("mutual-information")[0]) < 1e-9
    assert abs(split.map("mutual-information")[0] - 1.0) < 1e-6
    binary = np.array([0.2, 0.6, 0.9], np.float64)
    p = np.stack([binary, 1 - binary], axis=0)  # one sigmoid channel = two classes
    single = SampleMoments.zeros((1, 1), entropy=True)
    single.add(binary.reshape(3, 1, 1).astype(np.float32))
    reference = _entropy(p.mean(axis=1), axis=0) - _entropy(p, axis=0).mean()
    assert abs(single.map("mutual-information")[0] - reference) < 1e-6
