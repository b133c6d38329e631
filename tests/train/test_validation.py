"""Whole-image validation: tiled as at inference, scored as the evaluation scores."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import pearsonr
from sklearn.metrics import jaccard_score

from idl.infer.evaluate.instance_metrics import instance_scores
from idl.infer.post.instance_labels import instance_target, labels_from_probabilities
from idl.infer.post.postprocess import otsu_threshold
from idl.models import UNet, UNetSpec
from idl.train.data import Sample
from idl.train.losses import make_loss, regression_loss
from idl.train.tasks.registry import trainer_for
from idl.train.validation import WholeImageValidation, predict_logits


def _score(task: str, num_classes: int):
    """The task's own validation score, as its trainer makes it."""
    return lambda: trainer_for(task).image_score(num_classes)


def _net(out: int, seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    net = UNet(UNetSpec(out_channels=out, depth=2, base_filters=4, dropout=0.0)).eval()
    for m in net.modules():  # running statistics away from the identity, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    return net


def test_tiled_logits_equal_the_whole_image(rng) -> None:
    net, spec = _net(1), UNetSpec(depth=2)
    image = rng.random((150, 230, 1)).astype(np.float32)
    tiled = predict_logits(net, image, (64, 64), (spec.halo, spec.halo), (4, 4), torch.device("cpu"))
    with torch.no_grad():
        whole = net(torch.from_numpy(np.moveaxis(image, -1, 0))[None])[0].numpy()
    assert tiled.shape == (1, 150, 230)
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_semantic_score_is_the_jaccard_of_the_otsu_mask(rng) -> None:
    net = _net(1)
    samples = [
        Sample(
            f"{i}", rng.random((64, 80, 1)).astype(np.float32), (rng.random((64, 80)) > 0.6).astype(np.uint8)
        )
        for i in range(2)
    ]
    validate = WholeImageValidation(
        samples, _score("semantic", 2), make_loss("bce", 2), (512, 512), (24, 24), (4, 4)
    )
    loss, score = validate(net, torch.device("cpu"))
    masks, losses = [], []
    for s in samples:
        with torch.no_grad():
            logits = net(torch.from_numpy(np.moveaxis(s.image, -1, 0))[None])
        p = torch.sigmoid(logits)[0, 0].numpy()
        masks.append(p > otsu_threshold(p))
        losses.append(float(make_loss("bce", 2)(logits, torch.from_numpy(s.target.astype(np.int64))[None])))
    truth = np.concatenate([s.target.ravel() for s in samples])
    assert score == np.float64(jaccard_score(truth, np.concatenate([m.ravel() for m in masks])))
    assert loss == np.mean(losses)


def test_regression_score_is_the_mean_pearson_r(rng) -> None:
    net = _net(1)
    samples = [
        Sample(f"{i}", rng.random((48, 48, 1)).astype(np.float32), rng.random((48, 48, 1)).astype(np.float32))
        for i in range(3)
    ]
    validate = WholeImageValidation(
        samples, _score("regression", 2), regression_loss("mse"), (512, 512), (24, 24), (4, 4)
    )
    _, score = validate(net, torch.device("cpu"))
    expected = []
    for s in samples:
        with torch.no_grad():
            out = net(torch.from_numpy(np.moveaxis(s.image, -1, 0))[None])[0, 0].numpy()
        expected.append(pearsonr(out.ravel(), s.target.ravel())[0])
    assert abs(score - np.mean(expected)) < 1e-9


class _Scaled(torch.nn.Module):
    """A stand-in network whose logits are its input scaled: the input is a one-hot class map."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * x - 4.0


def test_instance_score_is_the_ap50_95_of_the_watershed_labels() -> None:
    labels = np.zeros((64, 64), np.int32)
    labels[5:20, 5:20], labels[30:50, 10:25], labels[40:60, 40:60], labels[2:8, 50:58] = 1, 2, 3, 4
    seen = labels.copy()
    seen[40:60, 40:48] = 0  # the third object is found only in part, the fourth not at all
    seen[seen == 4] = 0
    one_hot = np.eye(3, dtype=np.float32)[instance_target(seen)]  # (64, 64, 3) as the "image"
    sample = Sample("a", one_hot, instance_target(labels), labels)
    validate = WholeImageValidation(
        [sample], _score("instance", 3), make_loss("ce", 3), (512, 512), (24, 24), (4, 4)
    )
    _, score = validate(_Scaled(), torch.device("cpu"))
    predicted = labels_from_probabilities(
        torch.softmax(torch.from_numpy(8 * one_hot - 4), -1).numpy().transpose(2, 0, 1)
    )
    assert predicted.max() == 3
    expected = instance_scores(labels, predicted)["ap50_95"]
    assert 0.3 < expected < 0.75 and abs(score - expected) < 1e-12


def _spilled_logits(labels: np.ndarray) -> np.ndarray:
    """Logits of an instance U-Net whose boundary probability spills over its objects' edges: each
    object's own edge pixels read background 0.65, boundary 0.3 (the truth: boundary), the interior
    0.9 interior, the rest 0.95 background."""
    target = instance_target(labels)
    values = np.empty((3, *labels.shape), np.float32)
    values[:, target == 0] = np.array([0.95, 0.025, 0.025])[:, None]
    values[:, target == 1] = np.array([0.05, 0.9, 0.05])[:, None]
    values[:, target == 2] = np.array([0.65, 0.05, 0.3])[:, None]
    return np.log(values)


def test_the_watershed_thresholds_are_fitted_where_the_boundary_spills_into_the_background() -> None:
    """At the default foreground threshold (1 - p_background > 0.5) every object loses its edge: 15 x
    15 px squares become 13 x 13 (IoU 0.751), so AP50:95 counts them at 6 of 10 thresholds; the fit
    chooses 0.3, which keeps the edges (1 - 0.65 = 0.35), scores 1.0 and records every setting tried."""
    from idl.infer.evaluate.instance_metrics import instance_scores
    from idl.train.tasks.instance import FOREGROUND_GRID, SEED_DYNAMIC_GRID, SEED_GRID, fit_watershed

    labels = np.zeros((64, 64), np.int32)
    labels[5:20, 5:20], labels[5:20, 20:35], labels[30:45, 30:45] = 1, 2, 3  # 1 and 2 touch
    logits = _spilled_logits(labels)
    fit = fit_watershed([(logits, labels)])
    assert fit.scores[0][0] == {"foreground_threshold": 0.5, "seed_threshold": 0.5, "seed_dynamic": 0.0}
    default = labels_from_probabilities(np.exp(logits))
    assert np.bincount(default.ravel())[1:].tolist() == [169, 169, 169]
    assert fit.scores[0][1] == instance_scores(labels, default)["ap50_95"] == 0.6
    assert len(fit.scores) == len(FOREGROUND_GRID) * len(SEED_GRID) * len(SEED_DYNAMIC_GRID) == 24
    chosen = {"foreground_threshold": 0.3, "seed_threshold": 0.5, "seed_dynamic": 0.0}
    assert fit.thresholds == chosen and fit.best == 1.0
    fitted = labels_from_probabilities(np.exp(logits), **fit.thresholds)
    assert instance_scores(labels, fitted)["ap50_95"] == 1.0 and fitted.max() == 3
    said = "foreground_threshold 0.3, seed_threshold 0.5, seed_dynamic 0 fitted on the validation images"
    assert said in fit.describe()


def test_the_fit_chooses_maxima_seeds_where_touching_interiors_meet() -> None:
    """Two touching discs whose interiors meet at 0.605, above every seed threshold of the grid:
    connected interiors merge them at every setting (AP50:95 at most 0.05), the interior's maxima
    (the lower peak 0.365 over the saddle) split them (1.0), and the fit says so."""
    from idl.train.tasks.instance import fit_watershed
    from tests.infer.test_instance_labels import _two_bumps

    probabilities, truth = _two_bumps(peaks=(0.975, 0.97), saddle=0.605, flat=2)
    fit = fit_watershed([(np.log(probabilities), truth)])
    assert max(score for setting, score in fit.scores if setting["seed_dynamic"] == 0) <= 0.05 + 1e-9
    assert fit.thresholds["seed_dynamic"] == 0.3 and fit.best == 1.0
    assert "seed_dynamic 0.3 fitted on the validation images: ap50_95 1.0000" in fit.describe()
