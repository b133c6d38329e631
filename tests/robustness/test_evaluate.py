"""idl-evaluate never gives a silent wrong answer: probability maps are made classes as idl-predict
makes them (or refused where that is not the task's way), non-finite prediction values follow the
input side's rule, ground truth without a prediction is named and counted, swapped arguments are
refused before anything is written, and a bad prediction is called a prediction. Every score is
checked against one computed here with scikit-learn, scipy or numpy. No torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from scipy.stats import pearsonr
from skimage.draw import disk
from skimage.filters import threshold_otsu
from sklearn.metrics import jaccard_score

from idl.cli import evaluate as evaluate_cli
from idl.cli import predict as predict_cli
from idl.infer.io.images import read_image, write_tiff
from idl.infer.io.record import RECORD_NAME

SHAPE = (48, 64)
NAMES = ("a", "b", "c", "d")


def _evaluate(*args: object) -> Result:
    return CliRunner().invoke(evaluate_cli.main, [str(a) for a in args])


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _truth(rng: np.random.Generator, classes: int = 2) -> np.ndarray:
    """A mask with four disks (classes 1.. alternating)."""
    mask = np.zeros(SHAPE, np.uint8)
    for i in range(4):
        centre = (int(rng.integers(10, SHAPE[0] - 10)), int(rng.integers(10, SHAPE[1] - 10)))
        mask[disk(centre, int(rng.integers(5, 9)), shape=SHAPE)] = 1 + i % (classes - 1)
    return mask


def _truths(folder: Path, rng: np.random.Generator, names=NAMES, classes: int = 2) -> dict[str, np.ndarray]:
    truths = {name: _truth(rng, classes) for name in names}
    for name, mask in truths.items():
        write_tiff(folder / f"{name}.tif", mask)
    return truths


def _probabilities(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """A foreground probability map: 0.65, 0.8 or 0.95 on the objects, 0.02 to 0.25 elsewhere, and a
    false detection of 0.8 in a corner. Few distinct values, each in the lower half of its bin of
    idl-predict's 256-bin Otsu histogram (whose threshold is a bin's centre), so that every Otsu
    threshold, of any precision, splits them between 0.25 and 0.65 and gives the same mask."""
    p = np.where(truth > 0, rng.choice([0.65, 0.8, 0.95], SHAPE), rng.choice([0.02, 0.1, 0.2, 0.25], SHAPE))
    p[1:6, 1:13] = 0.8
    return p.astype(np.float32)


def _pooled_jaccard(truths: list[np.ndarray], preds: list[np.ndarray], **kwargs: object) -> float:
    """scikit-learn's Jaccard over the pixels of all images together (as summary.json's)."""
    t = np.concatenate([x.ravel() for x in truths])
    p = np.concatenate([x.ravel() for x in preds])
    return float(jaccard_score(t, p, **kwargs))


# item 3: probability maps as predictions


def test_probability_maps_are_thresholded_as_idl_predict_does_and_it_says_so(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng)
    maps = {name: _probabilities(rng, mask) for name, mask in truths.items()}
    for name, p in maps.items():  # as idl-predict --save-probabilities writes them: (1, Y, X) float32
        write_tiff(tmp_path / "prob" / f"{name}.tif", p[np.newaxis])
        write_tiff(tmp_path / "masks" / f"{name}.tif", (p > 0.5).astype(np.uint8))

    result = _evaluate(tmp_path / "prob", tmp_path / "gt", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    otsu = [p > threshold_otsu(p) for p in maps.values()]  # scikit-image's own Otsu, full precision
    reference = _pooled_jaccard(list(truths.values()), otsu)
    naive = _pooled_jaccard(list(truths.values()), [p > 0 for p in maps.values()])
    assert naive < 0.4 < reference  # what counting every non-zero pixel as foreground scored
    summary = _summary(tmp_path / "ev")
    assert summary["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert summary["n_probability_maps"] == 4
    assert "prob/a.tif: the prediction holds probabilities (0..1), not a class mask: thresholded as " in (
        result.output
    )
    assert "by Otsu's threshold of each map (0." in result.output
    assert "here; --threshold 0.5 sets a fixed one)" in result.output
    assert f"Jaccard {reference:.4f}" in result.output
    assert "; 4 probability map(s) turned into classes; report: " in result.output
    thresholds = pd.read_csv(tmp_path / "ev" / "metrics.csv")["threshold"]
    assert ((thresholds > 0.25) & (thresholds < 0.65)).all()  # Otsu's, in the gap of each map

    masks = _evaluate(tmp_path / "masks", tmp_path / "gt", "--out", tmp_path / "ev-masks", "--quiet")
    assert masks.exit_code == 0, masks.output
    assert _summary(tmp_path / "ev-masks")["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert "holds probabilities" not in masks.output and "probability map(s)" not in masks.output

    fixed = _evaluate(tmp_path / "prob", tmp_path / "gt", "--threshold", "0.9", "--out", tmp_path / "ev9")
    assert fixed.exit_code == 0, fixed.output
    high = _pooled_jaccard(list(truths.values()), [p > 0.9 for p in maps.values()])
    assert high < reference - 0.1
    assert _summary(tmp_path / "ev9")["jaccard"] == pytest.approx(high, abs=1e-12)
    assert "not a class mask: thresholded at --threshold 0.9." in fixed.output


def test_class_probabilities_get_the_arg_max(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng, classes=3)
    argmax = []
    for name, mask in truths.items():
        logits = 3.0 * np.eye(3)[mask].transpose(2, 0, 1) + rng.normal(0, 1.2, (3, *SHAPE))
        p = np.exp(logits) / np.exp(logits).sum(axis=0)  # softmax, class axis first as idl-predict writes
        write_tiff(tmp_path / "prob" / f"{name}.tif", p.astype(np.float32))
        argmax.append(p.argmax(axis=0))
    result = _evaluate(tmp_path / "prob", tmp_path / "gt", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    reference = _pooled_jaccard(list(truths.values()), argmax, labels=[1, 2], average="macro")
    assert 0.3 < reference < 0.95
    assert _summary(tmp_path / "ev")["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert "not a class mask: each pixel gets its most probable class (arg-max)" in result.output


def test_fractional_values_beyond_probabilities_are_refused(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng, names=("a",))
    write_tiff(tmp_path / "pred" / "a.tif", truths["a"] * 3.5 - 0.25)  # e.g. a regression's values
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert (
        "pred/a.tif: the prediction holds fractional values from -0.25 to 3.25, so it is neither a class "
        "mask (integers) nor probabilities (0..1)." in result.output
    )
    assert "--task regression" in result.output
    assert not (tmp_path / "ev").exists()  # a refused evaluation leaves no folder behind


def test_probabilities_given_as_instance_predictions_are_refused_with_advice(rng, tmp_path: Path) -> None:
    labels = _truth(rng, classes=5)  # four objects, labels 1..4
    write_tiff(tmp_path / "gt" / "a.tif", labels)
    write_tiff(tmp_path / "pred" / "a.tif", _probabilities(rng, labels))
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--task", "instance", "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert "pred/a.tif: the prediction holds fractional values (0.02 to 0.95), " in result.output
    assert "probabilities or measurements, not a label image" in result.output
    assert "idl-labels from-masks" in result.output and "--task semantic" in result.output
    assert not (tmp_path / "ev").exists()  # a refused evaluation leaves no folder behind


# item 4: non-finite prediction values


def _masks_with_nan(folder: Path, truths: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Float masks that agree with the truth but for a shifted object, with a NaN block (and an
    inf) in the first one."""
    preds = {}
    for name, mask in truths.items():
        pred = np.roll(mask, 3, axis=1).astype(np.float32)
        if name == "a":
            pred[4:12, 8:16] = np.nan
            pred[30, 40] = np.inf
        preds[name] = pred
        write_tiff(folder / f"{name}.tif", pred)
    return preds


def test_nan_in_predictions_is_named_and_left_out_of_the_scores(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng)
    preds = _masks_with_nan(tmp_path / "pred", truths)
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    assert (
        "pred/a.tif: the prediction holds 65 non-finite pixel value(s) (64 NaN, 1 inf), the first at y=4, "
        "x=8; those pixels (65 of 3072) are left out of the scores. Pass --on-nonfinite error to refuse such "
        "predictions." in result.output
    )
    finite = [np.isfinite(p) for p in preds.values()]
    reference = _pooled_jaccard(
        [t[f] for t, f in zip(truths.values(), finite, strict=True)],
        [p[f] > 0 for p, f in zip(preds.values(), finite, strict=True)],
    )
    accuracy = np.mean(
        np.concatenate(
            [(t == (p > 0))[f] for t, p, f in zip(truths.values(), preds.values(), finite, strict=True)]
        )
    )
    summary = _summary(tmp_path / "ev")
    assert summary["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert summary["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert summary["n_unscored_pixels"] == 65
    assert "; 65 non-finite prediction pixel(s) left out; report: " in result.output
    metrics = pd.read_csv(tmp_path / "ev" / "metrics.csv").set_index("filename")
    assert metrics.loc["a", "unscored_pixels"] == 65 and np.isnan(metrics.loc["b", "unscored_pixels"])


def test_on_nonfinite_error_refuses_the_prediction(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng)
    _masks_with_nan(tmp_path / "pred", truths)
    args = ("--on-nonfinite", "error", "--out", tmp_path / "ev")
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", *args)
    assert result.exit_code == 1
    assert (
        "pred/a.tif: the prediction holds 65 non-finite pixel value(s) (64 NaN, 1 inf), the first at y=4, "
        "x=8. Predict the image again, or leave out --on-nonfinite error" in result.output
    )
    assert not (tmp_path / "ev").exists()  # a refused evaluation leaves no folder behind


@pytest.mark.parametrize("policy", ["replace", "error"])
def test_an_all_nan_prediction_is_refused(rng, tmp_path: Path, policy: str) -> None:
    _truths(tmp_path / "gt", rng, names=("a", "b"))
    write_tiff(tmp_path / "pred" / "a.tif", np.zeros(SHAPE, np.uint8))
    write_tiff(tmp_path / "pred" / "b.tif", np.full(SHAPE, np.nan, np.float32))
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--on-nonfinite", policy, "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert (
        "pred/b.tif: the prediction has no pixel with finite values (3072 non-finite pixel value(s) "
        "(3072 NaN, 0 inf), the first at y=0, x=0), so nothing of it can be scored." in result.output
    )
    assert not (tmp_path / "ev").exists()  # a refused evaluation leaves no folder behind


def test_nan_in_probabilities_is_left_out_and_otsu_sees_only_the_rest(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng, names=("a",))
    p = _probabilities(rng, truths["a"])
    p[20:30, 0:20] = np.nan  # idl-predict writes NaN where the input pixel was not finite
    write_tiff(tmp_path / "prob" / "a.tif", p[np.newaxis])
    result = _evaluate(tmp_path / "prob", tmp_path / "gt", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    finite = np.isfinite(p)
    reference = jaccard_score(truths["a"][finite], p[finite] > threshold_otsu(p[finite]))
    summary = _summary(tmp_path / "ev")
    assert summary["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert summary["n_unscored_pixels"] == 200 and summary["n_probability_maps"] == 1
    assert "the first at c=0, y=20, x=0; those pixels (200 of 3072) are left out" in result.output


def test_nan_that_idl_predict_writes_into_a_regression_is_left_out_by_both_commands(
    identity_model, rng, tmp_path: Path
) -> None:
    image = rng.normal(100, 5, SHAPE).astype(np.float32)
    image[16:40, 20:50] += 60
    image[5, 7] = np.nan
    truth = (image > 130).astype(np.float32) * 2.0 + rng.normal(0, 0.3, SHAPE).astype(np.float32)
    write_tiff(tmp_path / "in" / "cells.tif", image)
    write_tiff(tmp_path / "gt" / "cells.tif", truth)
    out = tmp_path / "out"
    model = identity_model("regression")  # its values are the normalized input
    args = [model, tmp_path / "in", "--out", out, "--gt", tmp_path / "gt"]
    predicted = CliRunner().invoke(predict_cli.main, [str(a) for a in [*args, "--quiet"]])
    assert predicted.exit_code == 0, predicted.output
    values = read_image(out / "cells.tif")
    assert np.isnan(values[5, 7]) and np.isfinite(np.delete(values.ravel(), 5 * SHAPE[1] + 7)).all()
    finite = np.isfinite(values)
    r = pearsonr(values[finite], truth[finite]).statistic
    mae = np.mean(np.abs(values[finite].astype(np.float64) - truth[finite]))
    warning = (
        "out/cells.tif: the prediction holds 1 non-finite pixel value(s) (1 NaN, 0 inf), the first at y=5, "
        "x=7; those pixels (1 of 3072) are left out of the scores."
    )
    assert warning in predicted.output
    summary = _summary(out / "evaluation")  # idl-predict --gt
    assert summary["pearson_median"] == pytest.approx(r, abs=1e-6)
    assert summary["mae"] == pytest.approx(mae, rel=1e-6)
    assert summary["n_unscored_pixels"] == 1

    again = _evaluate(out, tmp_path / "gt", "--task", "regression", "--out", tmp_path / "ev", "--quiet")
    assert again.exit_code == 0, again.output
    assert warning in again.output
    summary = _summary(tmp_path / "ev")
    assert summary["pearson_median"] == pytest.approx(r, abs=1e-6)
    assert summary["mae"] == pytest.approx(mae, rel=1e-6)
    assert f"Pearson median {r:.4f}" in again.output

    refused = _evaluate(out, tmp_path / "gt", "--task", "regression", "--on-nonfinite", "error")
    assert refused.exit_code == 1
    assert "out/cells.tif: the prediction holds 1 non-finite pixel value(s) (1 NaN, 0 inf)" in refused.output


def test_nonfinite_ground_truth_is_refused(rng, tmp_path: Path) -> None:
    truth = rng.normal(1, 0.2, SHAPE).astype(np.float32)
    write_tiff(tmp_path / "pred" / "a.tif", truth + 0.1)
    truth[10, 3] = np.inf
    write_tiff(tmp_path / "gt" / "a.tif", truth)
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--task", "regression", "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert (
        "gt/a.tif: the ground truth holds 1 non-finite pixel value(s) (0 NaN, 1 inf), the first at y=10, "
        "x=3; a ground truth must be a number everywhere." in result.output
    )


# item 5: ground truth without a prediction, swapped arguments


def test_ground_truth_without_a_prediction_is_named_and_counted(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng)
    preds = {name: np.roll(truths[name], 2, axis=0) for name in ("a", "b")}
    for name, pred in preds.items():
        write_tiff(tmp_path / "pred" / f"{name}.tif", pred)
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    assert (
        f"2 of 4 ground truth(s) in {tmp_path / 'gt'} have no prediction: c, d; they are not scored (pass "
        "--strict to make this an error)." in result.output
    )
    reference = _pooled_jaccard([truths["a"], truths["b"]], list(preds.values()))
    summary = _summary(tmp_path / "ev")
    assert summary["jaccard"] == pytest.approx(reference, abs=1e-12)
    assert (summary["n_images"], summary["n_missing_predictions"]) == (2, 2)
    assert f"Jaccard {reference:.4f}" in result.output
    assert "; 2 of 4 ground truth(s) without a prediction, not scored; report: " in result.output

    strict = _evaluate(tmp_path / "pred", tmp_path / "gt", "--strict", "--out", tmp_path / "ev-strict")
    assert strict.exit_code == 1
    assert (
        f"2 of 4 ground truth(s) in {tmp_path / 'gt'} have no prediction: c, d. Predict those images too, or "
        "leave out --strict to score the others." in strict.output
    )
    assert not (tmp_path / "ev-strict").exists()


def test_every_ground_truth_predicted_adds_no_count(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng, names=("a", "b"))
    for name, mask in truths.items():
        write_tiff(tmp_path / "pred" / f"{name}.tif", mask)
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--strict", "--out", tmp_path / "ev", "--quiet")
    assert result.exit_code == 0, result.output
    summary = _summary(tmp_path / "ev")
    assert summary["jaccard"] == 1.0 and "n_missing_predictions" not in summary
    assert "without a prediction" not in result.output


def test_classification_rows_missing_from_results_are_counted(tmp_path: Path) -> None:
    labels = {"a": "dark", "b": "bright", "c": "bright", "d": "dark"}
    (tmp_path / "gt").mkdir()
    (tmp_path / "gt" / "groundtruth.csv").write_text(
        "filename,groundtruth\n" + "".join(f"{n}.tif,{c}\n" for n, c in labels.items())
    )
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "results.csv").write_text(
        "filename,prediction,probability_dark,probability_bright\na.tif,dark,0.8,0.2\nb.tif,dark,0.6,0.4\n"
    )
    args = ("--task", "classification", "--out", tmp_path / "ev", "--quiet")
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", *args)
    assert result.exit_code == 0, result.output
    assert (
        f"2 of 4 ground truth(s) in {tmp_path / 'gt' / 'groundtruth.csv'} have no prediction: c, d"
        in result.output
    )
    summary = _summary(tmp_path / "ev")
    assert (summary["accuracy"], summary["n_images"], summary["n_missing_predictions"]) == (0.5, 2, 2)
    assert "; 2 of 4 ground truth(s) without a prediction, not scored; report: " in result.output
    strict = _evaluate(tmp_path / "pred", tmp_path / "gt", "--task", "classification", "--strict")
    assert strict.exit_code == 1 and "Predict those images too" in strict.output


def _predicted_folder(identity_model, rng, tmp_path: Path) -> tuple[Path, Path]:
    """idl-predict's output folder (with its record) and the ground truth of its two images."""
    truths = _truths(tmp_path / "gt", rng, names=("a", "b"))
    for name, mask in truths.items():
        write_tiff(tmp_path / "in" / f"{name}.tif", mask.astype(np.float32) * 50 + rng.normal(100, 5, SHAPE))
    out = tmp_path / "out"
    args = [identity_model(), tmp_path / "in", "--out", out, "--quiet"]
    result = CliRunner().invoke(predict_cli.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert (out / RECORD_NAME).is_file()
    return out, tmp_path / "gt"


def test_swapped_arguments_are_refused_and_nothing_is_written(identity_model, rng, tmp_path: Path) -> None:
    out, gt = _predicted_folder(identity_model, rng, tmp_path)
    before = sorted(p.name for p in gt.iterdir())
    result = _evaluate(gt, out)
    assert result.exit_code == 1
    assert (
        f"{out} (GT_DIR) holds idl-predict's predictions (its record {RECORD_NAME}) and {gt} (PRED_DIR) does "
        "not: the arguments look swapped. The order is idl-evaluate PRED_DIR GT_DIR; nothing was written."
        in result.output
    )
    assert sorted(p.name for p in gt.iterdir()) == before and not (out / "evaluation").exists()

    (out / RECORD_NAME).unlink()  # predictions of another tool: the names tell the order
    (out / "b.tif").unlink()
    unrecorded = _evaluate(gt, out)
    assert unrecorded.exit_code == 1
    assert (
        f"{out}: no ground truth for 1 prediction(s), e.g. 'b'. Ground-truth files must have the same name "
        "as the images they belong to. Are the folders swapped? The order is PRED_DIR GT_DIR."
        in unrecorded.output
    )
    assert sorted(p.name for p in gt.iterdir()) == before

    right = _evaluate(out, gt, "--quiet")
    assert right.exit_code == 0, right.output
    assert _summary(out / "evaluation")["n_images"] == 1


def test_the_evaluation_is_never_written_into_the_ground_truth(identity_model, rng, tmp_path: Path) -> None:
    out, gt = _predicted_folder(identity_model, rng, tmp_path)
    inside = _evaluate(out, gt, "--out", gt / "evaluation")
    assert inside.exit_code == 1
    assert (
        f"--out {gt / 'evaluation'} lies inside the ground-truth folder {gt}: outputs written there could "
        "replace the files given to be read" in inside.output
    )
    assert not (gt / "evaluation").exists()

    same = _evaluate(gt, gt)
    assert same.exit_code == 1
    assert f"{gt} is given as both PRED_DIR and GT_DIR: every prediction would be scored against itself." in (
        same.output
    )
    assert not (gt / "evaluation").exists()


def test_a_project_ground_truth_given_as_predictions_is_refused(rng, tmp_path: Path) -> None:
    test = tmp_path / "project" / "test"
    truths = _truths(test / "groundtruth", rng, names=("a",))
    write_tiff(test / "image" / "a.tif", truths["a"].astype(np.float32))
    write_tiff(tmp_path / "pred" / "a.tif", truths["a"])  # predictions of another tool: no record
    result = _evaluate(test / "groundtruth", tmp_path / "pred")
    assert result.exit_code == 1
    assert (
        f"{test / 'groundtruth'} (PRED_DIR) is a project's ground-truth folder (next to {test / 'image'}): "
        "the arguments look swapped." in result.output
    )
    assert not (test / "groundtruth" / "evaluation").exists()


# item 12l: a bad prediction is called a prediction


def test_a_bad_prediction_is_named_as_the_prediction(rng, tmp_path: Path) -> None:
    truths = _truths(tmp_path / "gt", rng, names=("a",), classes=3)
    write_tiff(tmp_path / "pred" / "a.tif", np.stack([truths["a"]] * 5))  # a stack, not a mask
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert (
        "pred/a.tif: a prediction must be a 2D image (Y, X); this one has shape (5, 48, 64)." in result.output
    )
    assert "ground-truth" not in result.output

    wrong = truths["a"].copy()
    wrong[0, 0] = 7
    write_tiff(tmp_path / "pred" / "a.tif", wrong)
    result = _evaluate(tmp_path / "pred", tmp_path / "gt", "--out", tmp_path / "ev")
    assert result.exit_code == 1
    assert (
        "pred/a.tif: the prediction holds class value(s) [7] outside 0..2, the classes of the ground truth."
        in (result.output)
    )
    assert "ground-truth mask" not in result.output
