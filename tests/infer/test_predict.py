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
    model = load_model(model_dir)
    image, _ = synthetic_nuclei(np.random.default_rng(8), NucleiSpec(size=200))
    det = predict_image(model, image[..., None], PredictOptions(tile_size=128, progress=False))
    mc = predict_image(model, image[..., None], PredictOptions(tile_size=128, mc_samples=8, progress=False))
    assert det.uncertainty is None and mc.uncertainty is not None
    assert mc.uncertainty.shape == (200, 200) and mc.uncertainty.dtype == np.float32
    assert 0 <= mc.uncertainty.min() and mc.uncertainty.max() <= 0.25 + 1e-6
    np.testing.assert_allclose(mc.uncertainty, mc.probabilities[0] * (1 - mc.probabilities[0]), atol=1e-5)
    assert np.abs(mc.probabilities - det.probabilities).mean() < 0.05
    assert mc.mask.dtype == np.uint8 and set(np.unique(mc.mask)) <= {0, 1}
