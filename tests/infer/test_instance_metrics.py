"""Instance scores: IoU against scikit-image's contingency table and per-object masks, matching and
the DSB2018 score on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import label
from skimage.metrics import contingency_table

from idl.infer.evaluate.instance_metrics import (
    THRESHOLDS,
    MatchCounts,
    instance_scores,
    iou_matrix,
    match_counts,
    scores_from_counts,
)


def _random_labels(rng: np.random.Generator, shape=(64, 64), n=12) -> np.ndarray:
    image = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 10), rng.integers(0, shape[1] - 10)
        h, w = rng.integers(4, 12, size=2)
        image[y : y + h, x : x + w] = i
    return image


def test_iou_matches_per_object_masks_and_scikit_image(rng: np.random.Generator) -> None:
    truth, pred = _random_labels(rng), _random_labels(rng) * 7  # labels need not be consecutive
    iou = iou_matrix(truth, pred)
    t_ids, p_ids = [i for i in np.unique(truth) if i], [i for i in np.unique(pred) if i]
    for r, ti in enumerate(t_ids):
        for c, pi in enumerate(p_ids):
            inter = np.sum((truth == ti) & (pred == pi))
            assert iou[r, c] == pytest.approx(inter / np.sum((truth == ti) | (pred == pi)))
    table = contingency_table(truth, pred).toarray()  # scikit-image's overlap counts
    inter = table[np.ix_(t_ids, p_ids)]
    union = table.sum(1)[t_ids][:, None] + table.sum(0)[p_ids][None, :] - inter
    np.testing.assert_allclose(iou, inter / union)


def test_hand_worked_cases() -> None:
    truth = np.zeros((20, 40), np.int32)
    truth[2:8, 2:8] = 1  # found exactly
    truth[2:8, 12:22] = 2  # found as two halves: IoU 0.5 each, not above 0.5
    truth[12:18, 2:8] = 3  # missed
    pred = np.zeros_like(truth)
    pred[2:8, 2:8] = 5
    pred[2:8, 12:17] = 6
    pred[2:8, 17:22] = 7
    pred[12:18, 30:36] = 8  # a false positive
    counts = match_counts(iou_matrix(truth, pred), 0.5)
    assert counts == MatchCounts(tp=1, fp=3, fn=2)
    scores = instance_scores(truth, pred)
    assert scores["ap50"] == pytest.approx(1 / 6)
    assert scores["precision"] == pytest.approx(1 / 4) and scores["recall"] == pytest.approx(1 / 3)
    assert scores["ap50_95"] == pytest.approx(1 / 6)  # the one match is perfect at every threshold
    inter, union = 36 + 60, 36 + 60 + 36 + 36
    assert scores["jaccard"] == pytest.approx(inter / union)


def test_dsb_score_averages_the_thresholds() -> None:
    truth = np.zeros((10, 10), np.int32)
    truth[0:10, 0:10] = 1
    pred = np.zeros_like(truth)
    pred[0:10, 0:7] = 1  # IoU 0.7: a match up to the 0.65 threshold
    scores = instance_scores(truth, pred)
    passing = sum(t < 0.7 for t in THRESHOLDS)
    assert scores["ap50"] == 1.0 and scores["ap50_95"] == pytest.approx(passing / len(THRESHOLDS))
    assert instance_scores(np.zeros((5, 5), int), np.zeros((5, 5), int))["ap50"] == 1.0
    assert scores_from_counts([MatchCounts(0, 2, 0)] * 10)["ap50_95"] == 0.0


def test_touching_objects_merged_by_connected_components_lose_both() -> None:
    truth = np.zeros((10, 20), np.int32)
    truth[2:8, 2:10], truth[2:8, 10:18] = 1, 2
    merged = label(truth > 0)
    assert instance_scores(truth, merged)["ap50"] == pytest.approx(0 / 3)  # IoU 0.5 each: no match


def test_evaluation_adds_up_the_counts_of_all_images(tmp_path) -> None:
    import json

    from idl.infer.evaluate.instance import evaluate_instance
    from idl.infer.evaluate.semantic import EvalItem
    from idl.infer.io.images import write_tiff

    truth = np.zeros((20, 20), np.uint16)
    truth[2:8, 2:8], truth[10:16, 10:16] = 1, 2
    perfect, half = truth.copy(), truth.copy()
    half[10:16, 10:16] = 0  # one of two objects missed
    items = []
    for name, pred in (("a", perfect), ("b", half)):
        write_tiff(tmp_path / "gt" / f"{name}.tif", truth)
        write_tiff(tmp_path / "pred" / f"{name}.tif", pred)
        items.append(EvalItem(name, tmp_path / "pred" / f"{name}.tif", tmp_path / "gt" / f"{name}.tif"))
    summary = evaluate_instance(items, tmp_path / "ev", progress=False)
    assert summary["ap50"] == pytest.approx(3 / 4)  # 3 TP, 0 FP, 1 FN over both images
    assert summary["ap50_median"] == pytest.approx((1 + 0.5) / 2)
    assert summary["jaccard"] == pytest.approx(108 / 144) and summary["n_objects"] == 4
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["ap50_95"] == pytest.approx(3 / 4)
    assert (tmp_path / "ev" / "a.png").stat().st_size > 1000 and (tmp_path / "ev" / "report.html").is_file()


def test_object_uncertainty_flags_false_detections(tmp_path) -> None:
    from idl.infer.evaluate.instance import evaluate_instance, object_uncertainty
    from idl.infer.evaluate.semantic import EvalItem
    from idl.infer.io.images import write_tiff

    truth = np.zeros((30, 30), np.uint16)
    truth[2:8, 2:8], truth[10:16, 10:16] = 1, 2
    pred = truth.copy()
    pred[20:26, 20:26] = 7  # a false detection
    pred[10:16, 13:16] = 0  # object 2 only half found: IoU 0.5, not a match
    uncertainty = np.full((30, 30), 0.1, np.float32)
    uncertainty[20:26, 20:26] = 0.6
    uncertainty[10:16, 10:13] = 0.3
    expected = [0.1, 0.3, 0.6]  # objects 1, 2 and 7
    np.testing.assert_allclose(object_uncertainty(pred, uncertainty), expected, rtol=1e-6)
    write_tiff(tmp_path / "gt" / "a.tif", truth)
    write_tiff(tmp_path / "pred" / "a.tif", pred)
    write_tiff(tmp_path / "unc" / "a.tif", uncertainty)
    item = EvalItem(
        "a", tmp_path / "pred" / "a.tif", tmp_path / "gt" / "a.tif", None, tmp_path / "unc" / "a.tif"
    )
    summary = evaluate_instance([item], tmp_path / "ev", progress=False)
    assert summary["object_uncertainty_auroc"] == pytest.approx(1.0)  # both false ones above the match
    # sorted most certain first: the match (right), then the two false ones: risks 0, 1/2, 2/3
    assert summary["object_uncertainty_aurc"] == pytest.approx((0 + 1 / 2 + 2 / 3) / 3)
    assert summary["object_errors_caught_10"] == pytest.approx(1 / 2)  # the most uncertain of 3: one of 2
    assert (tmp_path / "ev" / "object_uncertainty.png").stat().st_size > 1000
    pred[20:26, 20:26] = 0
    uncertainty[10:16, 10:13] = 0.05  # now the false one is the least uncertain
    write_tiff(tmp_path / "pred" / "a.tif", pred)
    write_tiff(tmp_path / "unc" / "a.tif", uncertainty)
    summary = evaluate_instance([item], tmp_path / "ev2", progress=False)
    assert summary["object_uncertainty_auroc"] == pytest.approx(0.0)
