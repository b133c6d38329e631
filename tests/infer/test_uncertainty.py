from __future__ import annotations

import numpy as np

from idl.infer.post.uncertainty import MAPS, MIN_SAMPLES, SampleMoments, SplitHalves


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


def test_split_halves_combine_to_the_moments_of_all_samples(rng) -> None:
    samples = rng.random((9, 2, 8, 8)).astype(np.float32)
    halves = SplitHalves.zeros((2, 8, 8), entropy=True)
    halves.add(samples[:4])
    halves.add(samples[4:])
    assert [h.count for h in halves.halves] == [5, 4] and halves.count == 9
    whole = SampleMoments.zeros((2, 8, 8), entropy=True)
    whole.add(samples)
    for name in MAPS:
        np.testing.assert_allclose(halves.combined().map(name), whole.map(name), atol=1e-6)
    first = SampleMoments.zeros((2, 8, 8))
    first.add(samples[0::2])  # samples are dealt alternately
    np.testing.assert_allclose(halves.halves[0].mean(), first.mean(), atol=1e-6)


def test_split_half_error_estimates_the_maps_real_error(rng) -> None:
    """Samples with a known spread per pixel: the estimated relative error of the standard deviation
    map of n samples is within 30 % of its real relative L1 error (averaged over 40 repetitions), and
    it shrinks as a standard deviation's does: like 1 / sqrt(2 (k - 1)) for halves of k samples."""
    true_std = rng.uniform(0.05, 0.3, (1, 32, 32))
    estimated, real = {}, {}
    for n in (6, 24):
        est, err = [], []
        for _ in range(40):
            halves = SplitHalves.zeros((1, 32, 32))
            halves.add(0.5 + true_std * rng.standard_normal((n, 1, 32, 32)))
            est.append(halves.relative_error("std"))
            got = halves.combined().map("std")
            err.append(np.abs(got - true_std[0]).sum() / true_std.sum())
        estimated[n], real[n] = float(np.mean(est)), float(np.mean(err))
        assert 0.7 < estimated[n] / real[n] < 1.3, (n, estimated[n], real[n])
    expected = np.sqrt(2 * (12 - 1)) / np.sqrt(2 * (3 - 1))  # 2.35: halves of 3 and of 12 samples
    assert 0.85 < estimated[6] / estimated[24] / expected < 1.15


def test_agreeing_samples_settle_at_the_minimum_and_unsure_ones_do_not() -> None:
    sure = SplitHalves.zeros((1, 4, 4), entropy=True)
    sure.add(np.full((MIN_SAMPLES - 1, 1, 4, 4), 0.9, np.float32))
    assert not sure.settled("mutual-information", 0.1)  # too few samples
    sure.add(np.full((1, 1, 4, 4), 0.9, np.float32))
    assert sure.relative_error("mutual-information") == 0.0 and sure.settled("mutual-information", 0.1)
    unsure = SplitHalves.zeros((1, 4, 4))
    unsure.add(np.random.default_rng(0).random((MIN_SAMPLES, 1, 4, 4)).astype(np.float32))
    assert unsure.relative_error("std") > 0.1 and not unsure.settled("std", 0.1)
