"""Calibration and risk-coverage measures against values computed by hand on small arrays, and the
coverage of Gaussian intervals."""

from __future__ import annotations

import numpy as np
import pytest

from idl.infer.evaluate.calibration import (
    area_under_risk_coverage,
    errors_caught,
    expected_calibration_error,
    interval_coverage,
    reliability,
    risk_coverage,
)


def test_reliability_bins_and_ece_by_hand() -> None:
    confidence = np.array([0.55, 0.6, 0.65, 0.95, 0.9, 1.0])
    correct = np.array([True, False, False, True, True, True])
    found = reliability(confidence, correct, bins=2)  # bins [0, 0.5] and (0.5, 1]
    np.testing.assert_array_equal(found.count, [0, 6])
    assert found.confidence[1] == pytest.approx(4.65 / 6) and found.accuracy[1] == pytest.approx(4 / 6)
    assert expected_calibration_error(confidence, correct, bins=2) == pytest.approx(abs(4 / 6 - 4.65 / 6))
    four = reliability(confidence, correct, bins=4)  # (0.5, 0.75]: 0.55, 0.6, 0.65; (0.75, 1]: the rest
    np.testing.assert_array_equal(four.count, [0, 0, 3, 3])
    # gaps: |1/3 - 0.6| and |1 - 0.95|, weighted 3 and 3
    assert expected_calibration_error(confidence, correct, bins=4) == pytest.approx((0.6 - 1 / 3 + 0.05) / 2)
    assert reliability([0.0, 1.0], [True, True], bins=4).count.tolist() == [1, 0, 0, 1]  # the ends belong


def test_risk_coverage_area_and_errors_caught_by_hand() -> None:
    uncertainty = np.array([0.1, 0.4, 0.2, 0.9, 0.3])
    error = np.array([0, 1, 0, 1, 0])
    coverage, risk = risk_coverage(uncertainty, error)
    # sorted: 0.1 (ok), 0.2 (ok), 0.3 (ok), 0.4 (wrong), 0.9 (wrong)
    np.testing.assert_allclose(coverage, [0.2, 0.4, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(risk, [0, 0, 0, 1 / 4, 2 / 5])
    assert area_under_risk_coverage(uncertainty, error) == pytest.approx((0.25 + 0.4) / 5)
    assert errors_caught(uncertainty, error, 0.2) == 0.5  # the most uncertain is one of the two errors
    assert errors_caught(uncertainty, error, 0.4) == 1.0
    blind = area_under_risk_coverage(-uncertainty, error)  # the worst order: errors first
    assert blind == pytest.approx((1 + 1 + 2 / 3 + 0.5 + 0.4) / 5)
    assert blind > area_under_risk_coverage(uncertainty, error)
    assert np.isnan(errors_caught(uncertainty, np.zeros(5)))


def test_gaussian_intervals_cover_what_they_should(rng) -> None:
    sigma = rng.uniform(0.5, 2.0, 200_000)
    residual = rng.normal(0, sigma)
    assert interval_coverage(residual, sigma, 1) == pytest.approx(0.6827, abs=0.005)
    assert interval_coverage(residual, sigma, 2) == pytest.approx(0.9545, abs=0.003)
    assert interval_coverage(residual, sigma / 2, 1) == pytest.approx(0.3829, abs=0.005)  # overconfident


def test_semantic_evaluation_reports_how_well_the_uncertainty_flags_errors(tmp_path, rng) -> None:
    """Uncertainty maps high exactly where the mask is wrong: AUROC 1, and the 10 % most uncertain
    pixels hold every error (there are fewer than 10 % errors)."""
    from idl.infer.evaluate.semantic import EvalItem, evaluate_semantic
    from idl.infer.io.formats.tiff import write_tiff

    items = []
    for i in range(2):
        truth = (rng.random((40, 50)) > 0.5).astype(np.uint8)
        pred = truth.copy()
        wrong = rng.random((40, 50)) < 0.05
        pred[wrong] = 1 - pred[wrong]
        uncertainty = np.where(wrong, 0.2 + 0.05 * rng.random((40, 50)), 0.1 * rng.random((40, 50)))
        paths = [tmp_path / d / f"{i}.tif" for d in ("pred", "gt", "unc")]
        for path, array in zip(paths, (pred, truth, uncertainty.astype(np.float32)), strict=True):
            write_tiff(path, array)
        items.append(EvalItem(str(i), paths[0], paths[1], uncertainty=paths[2]))
    summary = evaluate_semantic(items, tmp_path / "eval", figures=False, progress=False)
    assert summary["uncertainty_auroc"] == 1.0 and summary["errors_caught_10"] == 1.0
    assert 0.03 < summary["uncertainty_error_rate"] < 0.07
    assert summary["uncertainty_aurc"] < summary["uncertainty_error_rate"] / 2


def test_regression_evaluation_reports_interval_coverage(tmp_path, rng) -> None:
    """Predictions off by Gaussian errors of the standard deviation their maps say: about 68 % and
    95 % of the values lie within one and two of it."""
    from idl.infer.evaluate.regression import evaluate_regression
    from idl.infer.evaluate.semantic import EvalItem
    from idl.infer.io.formats.tiff import write_tiff

    items = []
    for i in range(2):
        truth = rng.normal(5, 2, (200, 200)).astype(np.float32)
        sigma = rng.uniform(0.2, 1.0, (200, 200)).astype(np.float32)
        pred = (truth + rng.normal(0, sigma)).astype(np.float32)
        paths = [tmp_path / d / f"{i}.tif" for d in ("pred", "gt", "unc")]
        for path, array in zip(paths, (pred, truth, sigma), strict=True):
            write_tiff(path, array)
        items.append(EvalItem(str(i), paths[0], paths[1], uncertainty=paths[2]))
    summary = evaluate_regression(items, tmp_path / "eval", figures=False, progress=False)
    assert summary["coverage_1sigma"] == pytest.approx(0.683, abs=0.01)
    assert summary["coverage_2sigma"] == pytest.approx(0.954, abs=0.01)


def test_calibration_changes_no_otsu_mask(rng) -> None:
    """Otsu's threshold moves when the probabilities are rescaled; taken on the probabilities as they
    were before the temperature, the mask is the uncalibrated network's, pixel for pixel."""
    from idl.infer.post.postprocess import to_mask, uncalibrated

    def calibrated_back(threshold: float, temperature: float) -> float:  # in the uncalibrated scale
        return float(uncalibrated(np.array([threshold]), temperature)[0])

    logits = np.concatenate([rng.normal(-3, 1.5, 6000), rng.normal(2, 2.5, 4000)]).reshape(1, 100, 100)
    plain = 1 / (1 + np.exp(-logits))
    for temperature in (0.5, 2.2):
        scaled = 1 / (1 + np.exp(-logits / temperature))
        naive = to_mask(scaled, "otsu")[1]
        assert abs(calibrated_back(naive, temperature) - to_mask(plain, "otsu")[1]) > 0.005  # it moves
        mask, _ = to_mask(scaled.astype(np.float32), "otsu", temperature)
        np.testing.assert_array_equal(mask, to_mask(plain.astype(np.float32), "otsu")[0])


def test_instance_evaluation_reports_the_reliability_of_the_objects_scores(tmp_path) -> None:
    """Ten predicted squares, six of them on a true object (IoU 1) and four false; their scores in the
    objects table idl-predict writes: the objects' ECE is the hand-computed one, and a table listing
    other objects than the label image is not used."""
    import pandas as pd

    from idl.infer.evaluate.calibration import expected_calibration_error
    from idl.infer.evaluate.instance import evaluate_instance
    from idl.infer.evaluate.semantic import EvalItem
    from idl.infer.io.formats.tiff import write_tiff

    truth = np.zeros((60, 120), np.uint16)
    pred = np.zeros_like(truth)
    for k in range(10):
        y, x = 5 + 30 * (k // 5), 5 + 22 * (k % 5)
        pred[y : y + 12, x : x + 12] = k + 1
        if k < 6:
            truth[y : y + 12, x : x + 12] = k + 1
    scores = np.array([0.95, 0.91, 0.93, 0.86, 0.97, 0.65, 0.92, 0.82, 0.35, 0.25])  # none on a bin edge
    write_tiff(tmp_path / "pred" / "a.tif", pred)
    write_tiff(tmp_path / "gt" / "a.tif", truth)
    table = pd.DataFrame({"label": np.arange(1, 11), "area": 144, "score": scores})
    (tmp_path / "pred" / "objects").mkdir()
    table.to_csv(tmp_path / "pred" / "objects" / "a.csv", index=False)
    item = EvalItem("a", tmp_path / "pred" / "a.tif", tmp_path / "gt" / "a.tif")
    summary = evaluate_instance([item], tmp_path / "eval", figures=True, progress=False)
    correct = np.arange(10) < 6
    expected = expected_calibration_error(scores, correct)
    # by hand, 15 bins of 1/15 (wrong: 0.92, 0.82, 0.35, 0.25): 0.25 right 0 of 1, 0.35 0 of 1,
    # 0.65 1 of 1, 0.82 0.86 1 of 2 (mean 0.84), 0.91 0.92 0.93 2 of 3 (mean 0.92), 0.95 0.97 2 of 2
    by_hand = (0.25 + 0.35 + 0.35 + 2 * 0.34 + 3 * (0.92 - 2 / 3) + 2 * 0.04) / 10
    assert summary["object_ece"] == pytest.approx(expected, abs=1e-6)  # the scores gathered as float32
    assert summary["object_ece"] == pytest.approx(by_hand, abs=1e-6)
    assert (tmp_path / "eval" / "reliability.png").is_file()
    table.iloc[:9].to_csv(tmp_path / "pred" / "objects" / "a.csv", index=False)  # one object missing
    again = evaluate_instance([item], tmp_path / "eval2", figures=False, progress=False)
    assert "object_ece" not in again


def test_a_volume_of_objects_is_shown_by_its_central_slice(tmp_path) -> None:
    """3D instance evaluation: the objects are scored in 3D, and the gallery has a figure of the
    central z slice, with the false object that crosses it marked."""
    import json

    from idl.infer.evaluate.instance import evaluate_instance
    from idl.infer.evaluate.semantic import EvalItem
    from idl.infer.io.formats.tiff import write_tiff

    truth = np.zeros((9, 40, 40), np.uint16)
    truth[2:7, 5:15, 5:15] = 1
    truth[2:7, 25:35, 25:35] = 2
    pred = truth.copy()
    pred[2:7, 25:35, 25:35] = 0
    pred[3:6, 25:28, 5:9] = 2  # a false object, missing the second true one
    for folder, array in (("pred", pred), ("gt", truth), ("img", (truth > 0).astype(np.float32))):
        write_tiff(tmp_path / folder / "v.tif", array)
    item = EvalItem(
        "v", tmp_path / "pred" / "v.tif", tmp_path / "gt" / "v.tif", image=tmp_path / "img" / "v.tif"
    )
    summary = evaluate_instance([item], tmp_path / "eval", progress=False, dims=3, axes="zyx")
    assert summary["precision"] == 0.5 and summary["recall"] == 0.5
    listed = json.loads((tmp_path / "eval" / "figures.json").read_text())
    assert listed["gallery"] == [{"name": "v", "file": "v.png"}]
    from PIL import Image

    shown = np.asarray(Image.open(tmp_path / "eval" / "v.png").convert("RGB"))
    near = lambda rgb: (np.abs(shown.astype(int) - np.array(rgb)) < 40).all(axis=-1)  # noqa: E731
    # the false object (magenta) and the missed one (green) cross the central slice (z 4), marked
    assert near((230, 25, 153)).sum() > 20 and near((25, 204, 51)).sum() > 20
