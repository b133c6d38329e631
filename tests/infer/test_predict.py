from __future__ import annotations

from pathlib import Path

import numpy as np

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import PredictOptions, predict_image, predict_probabilities


def test_tiled_2048_image_equals_whole_image_prediction(model_dir: Path) -> None:
    model = load_model(model_dir)
    info = model.info
    image, _ = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=2048, objects=(300, 400)))
    image = image[..., None]
    whole, _ = predict_probabilities(model.runner, image, model.io, tile_size=2048, halo=0)
    tiled, _ = predict_probabilities(model.runner, image, model.io, tile_size=256, batch_size=4)
    diff = np.abs(tiled - whole)
    print(f"2048x2048, 256-px tiles, halo {info.halo}: max abs diff {diff.max():.2e}")
    assert diff.max() <= 1e-6  # the issue asks for 1e-3; with the default halo tiling is exact
    assert whole.std() > 0.05  # a real prediction, not a constant


def test_mc_prediction_gives_mean_and_uncertainty(model_dir: Path) -> None:
    """With mc_answer="deterministic" the answer is the deterministic prediction's, bit for bit, and
    the samples give the uncertainty; by default (semantic) it is the samples' mean, from which
    InstantDL's uncertainty p (1 - p) is computed, and the samples are drawn under mirrors and turns."""
    model = load_model(model_dir)
    image, _ = synthetic_nuclei(np.random.default_rng(8), NucleiSpec(size=200))
    det = predict_image(model, image[..., None], PredictOptions(tile_size=128, progress=False))
    options = PredictOptions(tile_size=128, mc_samples=8, progress=False, mc_answer="deterministic")
    mc = predict_image(model, image[..., None], options)
    assert det.uncertainty is None and mc.uncertainty is not None
    np.testing.assert_array_equal(mc.probabilities, det.probabilities)
    np.testing.assert_array_equal(mc.mask, det.mask)
    untransformed = PredictOptions(tile_size=128, mc_samples=8, progress=False, tta="off")
    mean = predict_image(model, image[..., None], untransformed)
    assert mean.uncertainty.shape == (200, 200) and mean.uncertainty.dtype == np.float32
    assert 0 <= mean.uncertainty.min() and mean.uncertainty.max() <= 0.25 + 1e-6
    p = mean.probabilities[0]
    np.testing.assert_allclose(mean.uncertainty, p * (1 - p), atol=1e-5)
    assert 0 < np.abs(mean.probabilities - det.probabilities).mean() < 0.05
    np.testing.assert_array_equal(mean.uncertainty, mc.uncertainty)  # the same seed, the same samples
    assert mean.mask.dtype == np.uint8 and set(np.unique(mean.mask)) <= {0, 1}
    # by default (--tta auto) a semantic model's samples are drawn under the 8 mirrors and turns
    auto = predict_image(model, image[..., None], PredictOptions(tile_size=128, mc_samples=8, progress=False))
    d4 = predict_image(
        model, image[..., None], PredictOptions(tile_size=128, mc_samples=8, progress=False, tta="d4")
    )
    np.testing.assert_array_equal(auto.probabilities, d4.probabilities)
    assert np.abs(auto.probabilities - mean.probabilities).max() > 1e-4


def test_mc_uncertainty_maps_are_the_samples_disagreement(model_dir: Path) -> None:
    """--uncertainty std and mutual-information: zero where every sample agrees, correlated with the
    samples' spread; the mutual information never exceeds the entropy of the mean (1 bit)."""
    model = load_model(model_dir)
    image, _ = synthetic_nuclei(np.random.default_rng(8), NucleiSpec(size=160))
    maps = {}
    for name in ("instantdl", "std", "mutual-information"):
        options = PredictOptions(tile_size=160, mc_samples=8, progress=False, uncertainty=name)
        maps[name] = predict_image(model, image[..., None], options).uncertainty
    mi, std, naive = maps["mutual-information"], maps["std"], maps["instantdl"]
    assert mi.shape == std.shape == (160, 160) and 0 <= mi.min() and mi.max() <= 1 + 1e-6
    assert mi.max() > 1e-3 and std.max() > 1e-3  # the samples do differ
    spread, calm = mi[std > np.quantile(std, 0.9)].mean(), mi[std < np.quantile(std, 0.5)].mean()
    assert spread > 3 * calm  # 5.6x measured
    p = np.clip(0.5 - np.sqrt(np.maximum(0.25 - naive, 0)), 1e-12, 1)  # the mean p (or 1 - p) from p(1 - p)
    entropy = -(p * np.log2(p) + (1 - p) * np.log2(np.clip(1 - p, 1e-12, 1)))
    assert np.all(mi <= entropy + 1e-4)
