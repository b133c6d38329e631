"""Classification scores: uncertainty definitions, input preparation, metrics against scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import accuracy_score, jaccard_score, roc_auc_score

from idl.infer.evaluate.classification import (
    classification_scores,
    evaluate_classification,
    expected_calibration_error,
)
from idl.infer.post.classify import ClassScores, results_table
from idl.infer.post.uncertainty import SampleMoments, normalized_entropy


def _distributions(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    p = rng.gamma(0.5, size=shape)
    return p / p.sum(axis=-1, keepdims=True)


def test_normalized_entropy_matches_scipy_and_spans_zero_to_one(rng: np.random.Generator) -> None:
    p = _distributions(rng, (50, 4))
    np.testing.assert_allclose(normalized_entropy(p, axis=1), entropy(p, axis=1) / np.log(4), atol=1e-9)
    assert normalized_entropy(np.array([[1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]]), axis=1) == pytest.approx(
        [0, 1], abs=1e-9
    )


def _moments(samples: np.ndarray) -> SampleMoments:
    """Classifier samples ``(S, N, K)`` as the Monte Carlo statistics of every task take them."""
    moments = SampleMoments.zeros((samples.shape[2], samples.shape[1]), entropy=True)
    moments.add(samples.transpose(0, 2, 1))
    return moments


def test_entropy_of_the_mean_is_never_below_instantdls_mean_entropy(rng: np.random.Generator) -> None:
    samples = _distributions(rng, (20, 30, 3))
    moments = _moments(samples)
    np.testing.assert_allclose(moments.mean().T, samples.mean(axis=0), rtol=1e-6)
    of_mean, mean_of = moments.map("entropy"), moments.mean_entropy()
    np.testing.assert_allclose(of_mean, entropy(samples.mean(axis=0), axis=1) / np.log(3), atol=1e-6)
    np.testing.assert_allclose(mean_of, (entropy(samples, axis=2) / np.log(3)).mean(axis=0), atol=1e-6)
    assert (of_mean >= mean_of - 1e-6).all()  # concavity: the gap is the mutual information
    gap = (entropy(samples.mean(axis=0), axis=1) - entropy(samples, axis=2).mean(axis=0)) / np.log(2)
    np.testing.assert_allclose(moments.map("mutual-information"), gap, atol=1e-6)  # in bits
    # samples that agree but are flat vs confident samples that disagree: only the entropy of the mean
    # sees the disagreement as doubt
    disagree = _moments(np.array([[[1.0, 0, 0]], [[0, 1.0, 0]]]))
    assert disagree.map("entropy")[0] > 0.6 and disagree.mean_entropy()[0] == pytest.approx(0, abs=1e-6)


def test_scores_match_scikit_learn(rng: np.random.Generator) -> None:
    truth = rng.integers(0, 4, 80)
    p = _distributions(rng, (80, 4))
    p[np.arange(80), truth] += 0.5  # informative, not perfect
    p /= p.sum(axis=1, keepdims=True)
    scores = classification_scores(truth, p)
    assert scores["accuracy"] == pytest.approx(accuracy_score(truth, p.argmax(1)))
    assert scores["auc"] == pytest.approx(roc_auc_score(truth, p, multi_class="ovr", average="macro"))
    assert scores["jaccard"] == pytest.approx(jaccard_score(truth, p.argmax(1), average="macro"))
    one_hot = np.eye(4)[truth]
    assert scores["mse"] == pytest.approx(np.mean(np.sum((one_hot - p) ** 2, axis=1)) / 4)  # Brier / K
    assert scores["mae"] == pytest.approx(np.mean(np.abs(one_hot - p)))
    # a class absent from labels and predictions is left out of the macro Jaccard, as of the AUC
    right = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.7, 0.1]])
    only_two = classification_scores(np.array([0, 0, 1, 1]), right)
    assert only_two["jaccard"] == pytest.approx(1.0) and only_two["auc"] == pytest.approx(1.0)
    binary = classification_scores(truth % 2, np.stack([1 - p[:, 0], p[:, 0]], axis=1))
    assert binary["auc"] == pytest.approx(roc_auc_score(truth % 2, p[:, 0]))


def test_expected_calibration_error_by_hand() -> None:
    # two bins: confidence 0.95 (2 of 2 right) and 0.6 (1 of 2 right)
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    truth = np.array([0, 0, 0, 1])
    assert expected_calibration_error(p, truth) == pytest.approx(0.5 * 0.05 + 0.5 * 0.1)


def test_evaluation_files_and_uncertainty_auroc(tmp_path: Path) -> None:
    names = [f"im{i}.tif" for i in range(6)]
    det = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    mc = det.copy()
    mc[1] = [0.4, 0.6]  # the MC mean gets image 1 wrong, which the deterministic graph gets right
    unc = np.array([0.1, 0.7, 0.15, 0.1, 0.9, 0.8])
    table = results_table(names, ClassScores(det, mc, unc, unc * 0.9), ("neg", "pos"))
    table.to_csv(tmp_path / "results.csv", index=False)
    labels = {"im0": "neg", "im1": "neg", "im2": "pos", "im3": "pos", "im4": "pos", "im5": "neg"}
    summary = evaluate_classification(tmp_path / "results.csv", labels, ("neg", "pos"), tmp_path / "ev")
    assert summary["accuracy"] == pytest.approx(4 / 6)
    # the MC prediction's three mistakes are its three most uncertain images
    assert summary["uncertainty_auroc"] == pytest.approx(1.0)
    assert summary["accuracy_mc"] == pytest.approx(3 / 6)
    assert summary["uncertainty_mean"] == pytest.approx(unc.mean())
    metrics = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert metrics["correct"].tolist() == [1, 1, 1, 1, 0, 0]
    for name in ("confusion_matrix.png", "roc.png", "reliability.png", "uncertainty.png", "report.html"):
        assert (tmp_path / "ev" / name).stat().st_size > 1000


def test_foreign_logits_become_probabilities_and_batches_respect_the_network() -> None:
    from types import SimpleNamespace

    from idl.infer.core.grid import AxisSize
    from idl.infer.runtime.iospec import IOSpec
    from idl.infer.tiling.classify import _probabilities
    from idl.infer.tiling.classify import batch_size as _batch_size

    io = IOSpec("bcyx", "bc", 1, 3, {"y": AxisSize(32, 0), "x": AxisSize(32, 0)})
    model = SimpleNamespace(io=io, details={}, label="package")
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0]])
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(_probabilities(model, logits), expected)  # no softmax declared: applied
    np.testing.assert_allclose(_probabilities(model, expected), expected)  # already probabilities: kept
    assert _batch_size(io, 1) == 256  # small images: many per call
    no_batch_axis = IOSpec("cyx", "c", 1, 3, io.sizes, max_batch=1)
    assert _batch_size(no_batch_axis, 1) == 1
