from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, jaccard_score

from idl.infer.evaluate.metrics import accuracy, confusion_matrix, dice, jaccard


def test_binary_scores_match_scikit_learn(rng) -> None:
    gt = (rng.random((64, 80)) > 0.7).astype(np.uint8)
    pred = gt.copy()
    flip = rng.random(gt.shape) < 0.15
    pred[flip] = 1 - pred[flip]
    cm = confusion_matrix(pred, gt, 2)
    assert jaccard(cm) == pytest.approx(jaccard_score(gt.ravel(), pred.ravel()), abs=1e-12)
    assert dice(cm) == pytest.approx(f1_score(gt.ravel(), pred.ravel()), abs=1e-12)
    assert accuracy(cm) == pytest.approx(accuracy_score(gt.ravel(), pred.ravel()), abs=1e-12)
    assert 0.3 < jaccard(cm) < 0.9


def test_multiclass_scores_are_macro_over_foreground_classes(rng) -> None:
    gt = rng.integers(0, 4, (50, 50))
    pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, 4, gt.shape), gt)
    cm = confusion_matrix(pred, gt, 4)
    labels = [1, 2, 3]
    assert jaccard(cm) == pytest.approx(
        jaccard_score(gt.ravel(), pred.ravel(), labels=labels, average="macro")
    )
    assert dice(cm) == pytest.approx(f1_score(gt.ravel(), pred.ravel(), labels=labels, average="macro"))


def test_pooled_jaccard_is_not_the_mean_of_images() -> None:
    gt1, pred1 = np.ones((10, 10), np.uint8), np.ones((10, 10), np.uint8)  # perfect, 100 px
    gt2, pred2 = np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)
    gt2[0, 0] = 1  # a single missed pixel: per-image Jaccard 0
    total = confusion_matrix(pred1, gt1, 2) + confusion_matrix(pred2, gt2, 2)
    assert jaccard(confusion_matrix(pred2, gt2, 2)) == 0.0
    assert jaccard(total) == pytest.approx(100 / 101)


def test_empty_prediction_of_empty_image_is_perfect() -> None:
    empty = np.zeros((8, 8), np.uint8)
    cm = confusion_matrix(empty, empty, 2)
    assert (jaccard(cm), dice(cm), accuracy(cm)) == (1.0, 1.0, 1.0)


def test_regression_scores_match_scipy_and_scikit_learn(rng) -> None:
    from scipy.stats import pearsonr
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    from idl.infer.evaluate.metrics import regression_scores

    gt = rng.gamma(2.0, 100.0, (40, 30))  # float64: the references then compute in full precision too
    pred = 0.8 * gt + rng.normal(0, 30, gt.shape)
    scores = regression_scores(pred, gt)
    assert scores["pearson"] == pytest.approx(pearsonr(pred.ravel(), gt.ravel())[0], abs=1e-12)
    assert scores["mae"] == pytest.approx(mean_absolute_error(gt.ravel(), pred.ravel()), rel=1e-9)
    assert scores["mse"] == pytest.approx(mean_squared_error(gt.ravel(), pred.ravel()), rel=1e-9)
    expected = np.abs(pred.astype(np.float64) - gt).sum() / np.abs(gt.astype(np.float64)).sum()
    assert scores["mean_relative_error"] == pytest.approx(expected, rel=1e-12)
    assert regression_scores(np.full_like(gt, 5.0), gt)["pearson"] == 0.0  # constant prediction
