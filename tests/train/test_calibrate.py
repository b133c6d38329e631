"""Temperature scaling: the fit recovers a known temperature of over-confident logits, keeps every
decision, and folding it into a network's last layer divides its logits by it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from idl.models import ResNetClassifier, ResNetSpec, SegNet, SegNetSpec, UNet, UNetSpec
from idl.train.calibrate import fit_sigma_scale, fit_temperature


@pytest.mark.parametrize("classes", [1, 4])  # a sigmoid channel, a softmax of four
def test_the_fitted_temperature_recovers_the_true_one(classes: int, rng) -> None:
    true = rng.normal(0, 1.5, (200_000, classes))
    if classes == 1:
        targets = (rng.random(len(true)) < 1 / (1 + np.exp(-true[:, 0]))).astype(int)
    else:
        p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
        targets = (rng.random(len(true))[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    overconfident = 2.5 * true  # a network 2.5 times too sure
    found = fit_temperature(overconfident, targets)
    assert found.temperature == pytest.approx(2.5, rel=0.05)
    assert found.nll_after < found.nll_before and found.ece_after < found.ece_before / 2
    calibrated = fit_temperature(true, targets)
    assert calibrated.temperature == pytest.approx(1.0, rel=0.05)


@pytest.mark.parametrize("true_scale", [0.4, 1.0, 3.0])
def test_the_sigma_factor_recovers_a_known_gaussian(true_scale: float, rng) -> None:
    """Residuals drawn from N(0, (true_scale sigma)^2) with sigma varying by pixel: the factor is
    true_scale (within 2 %) and the calibrated intervals cover 68.3 % and 95.4 %."""
    sigma = rng.uniform(0.1, 5.0, 400_000)
    residual = rng.normal(0.0, true_scale * sigma)
    found = fit_sigma_scale(residual, np.concatenate([sigma[:-10], np.zeros(10)]))  # sigma 0: left out
    assert found is not None
    assert found.sigma_scale == pytest.approx(true_scale, rel=0.02)
    assert found.coverage_1sigma_after == pytest.approx(0.683, abs=0.005)
    assert found.coverage_2sigma_after == pytest.approx(0.954, abs=0.005)
    expected_before = float(np.mean(np.abs(residual[:-10]) <= sigma[:-10]))
    assert found.coverage_1sigma_before == pytest.approx(expected_before, abs=1e-9)
    assert fit_sigma_scale(residual, np.zeros_like(sigma)) is None  # samples that never differ


@pytest.mark.parametrize(
    "net",
    [
        UNet(UNetSpec(depth=2, base_filters=4, out_channels=3)),
        SegNet(SegNetSpec(depth=2, base_filters=4)),
        ResNetClassifier(ResNetSpec(1, 3, "resnet18", 0.2, True)),
    ],
)
def test_folding_the_temperature_divides_the_logits(net) -> None:
    torch.manual_seed(0)
    net.eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        before = net(x)
        net.scale_output(1 / 1.7)
        after = net(x)
    torch.testing.assert_close(after, before / 1.7, rtol=1e-5, atol=1e-6)


def test_a_run_calibrates_its_network_and_records_it(tmp_path) -> None:
    """A short semantic run: the temperature is fitted on the validation images, recorded in the
    model description, and folded into the exported graph and the best checkpoint alike."""
    import json

    from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
    from idl.infer.service.load import load_model
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint
    from idl.train.pipeline import train_project
    from tests.train.conftest import tiny

    project = write_semantic_project(tmp_path / "p", 6, 0, 0, NucleiSpec(size=64))
    config = tiny(device="cpu", package=False, val_fraction=0.34, epochs=3)
    train_project(project, config, progress=False)
    model = load_model(project / "model")
    calibration = model.info.training["calibration"]
    assert model.info.temperature == pytest.approx(calibration["temperature"], abs=1e-6)
    assert model.info.temperature != 1.0
    assert calibration["nll_after"] <= calibration["nll_before"]
    net, info = model_from_checkpoint(load_checkpoint(project / "model" / "best.pt"))
    assert info.temperature == model.info.temperature
    x = np.random.default_rng(0).random((1, 1, 64, 64)).astype(np.float32)
    with torch.no_grad():
        expected = net.forward_aligned(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.runner(x), expected, atol=1e-4)
    assert json.loads((project / "model" / "config.json").read_text())["calibrate"] is True
