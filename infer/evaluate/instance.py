"""Evaluation of instance segmentation (label images) against label-image ground truth.

Per image (``metrics.csv``): ap50, ap50_95 (the DSB2018 score), precision, recall, pixel Jaccard and
the object counts. ``summary.json``: the same scores from the match counts of all images added up
(every object weighs the same), plus the median per-image ap50 and ap50_95 (the DSB2018 leaderboard
averaged per image). Figures show every object's outline in its own colour over the image, for the
ground truth and the prediction side by side.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from idl.infer.core.errors import DataError
from idl.infer.core.project import OBJECTS_DIR
from idl.infer.evaluate.baseline import OtsuBaseline
from idl.infer.evaluate.calibration import (
    UncertaintySample,
    area_under_risk_coverage,
    auroc,
    errors_caught,
    expected_calibration_error,
)
from idl.infer.evaluate.checks import UNSCORED, check_prediction_values
from idl.infer.evaluate.figures import Figure, reliability_figure, risk_coverage_figure
from idl.infer.evaluate.instance_metrics import (
    MatchCounts,
    best_iou,
    counts_per_threshold,
    iou_matrix,
    scores_from_counts,
)
from idl.infer.evaluate.plots import display_image
from idl.infer.evaluate.semantic import (
    EvalItem,
    check_same_shape,
    each_item,
    load_display_image,
    read_groundtruth_mask,
    record_uncertainty,
    write_evaluation,
)
from idl.infer.evaluate.semantic import (
    counts as summary_counts,
)
from idl.infer.io.images import read_image
from idl.infer.post.labels import PREDICTION, finite_pixels, fractional, mask_plane

log = logging.getLogger("idl")


def outlines(labels: np.ndarray, image: np.ndarray | None) -> np.ndarray:
    """RGB: each object's outline in its own colour over the (grey) image."""
    from skimage.color import label2rgb
    from skimage.segmentation import find_boundaries

    grey = display_image(image) if image is not None else np.zeros(labels.shape, np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=-1)
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    edges = find_boundaries(labels, mode="inner")
    colours = label2rgb(labels, bg_label=0)
    rgb[edges] = colours[edges]
    return rgb


def central_plane(volume: np.ndarray | None) -> np.ndarray | None:
    """The central z slice of a volume (z first), as the gallery shows a 3D image."""
    return None if volume is None else volume[volume.shape[0] // 2]


def object_errors(truth: np.ndarray, pred: np.ndarray, iou: np.ndarray) -> np.ndarray:
    """RGB: predicted objects that match no true object (best IoU at most 0.5) in magenta, true
    objects that no prediction matches in green, matched objects in grey."""
    from idl.infer.evaluate.plots import ERROR_COLOURS

    false = np.flatnonzero(best_iou(iou) <= 0.5) + 1  # positions in label order, as iou_matrix's
    missed = np.flatnonzero((iou.max(axis=1) if iou.shape[1] else np.zeros(iou.shape[0])) <= 0.5) + 1
    pred_ids, truth_ids = np.unique(pred[pred > 0]), np.unique(truth[truth > 0])
    code = np.zeros(pred.shape, np.uint8)
    code[(pred > 0) | (truth > 0)] = 1
    code[np.isin(truth, truth_ids[missed - 1])] = 3
    code[np.isin(pred, pred_ids[false - 1])] = 2
    return ERROR_COLOURS[code]


def match_tally(mask: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """The match counts of a mask's connected components against true objects, as a ``(10, 3)``
    array (tp, fp, fn per IoU threshold) that adds up over images."""
    from idl.infer.post.instance_labels import binary_to_labels

    return np.array([[c.tp, c.fp, c.fn] for c in counts_per_threshold(truth, binary_to_labels(mask))])


def counts_scores(tally: np.ndarray) -> dict[str, float]:
    """:func:`scores_from_counts` of a :func:`match_tally`."""
    return scores_from_counts([MatchCounts(*map(int, r)) for r in tally])


def object_uncertainty(labels: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    """Mean Monte Carlo uncertainty inside every object of a label image (in label order)."""
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids > 0]
    return np.asarray(ndimage.mean(uncertainty, labels, ids), dtype=float).reshape(-1)


def object_scores(item: EvalItem, labels: np.ndarray) -> np.ndarray | None:
    """Every predicted object's ``score`` (in label order) from the objects table idl-predict writes
    beside the prediction (``objects/<name>.csv``: the detection score, object probability or mean
    foreground probability), or None when there is none, it lists other objects than the label
    image holds, or its scores are not probabilities."""
    table_path = item.prediction.parent / OBJECTS_DIR / f"{item.name}.csv"
    if not table_path.is_file():
        return None
    table = pd.read_csv(table_path)
    if not {"label", "score"} <= set(table.columns):
        return None
    ids = np.unique(labels)
    ids = ids[ids > 0]
    by_label = dict(zip(table["label"].astype(np.int64), table["score"].astype(float), strict=True))
    if set(by_label) != {int(i) for i in ids}:
        log.warning(
            "%s lists other objects than %s holds: its scores are not used", table_path, item.prediction
        )
        return None
    scores = np.array([by_label[int(i)] for i in ids], dtype=float)
    return scores if np.all((scores >= 0) & (scores <= 1)) else None


def save_object_uncertainty(
    path: Path, uncertainty: np.ndarray, iou: np.ndarray, area_under: float
) -> Figure:
    """Scatter of every predicted object's mean uncertainty against its best IoU with the truth."""
    from idl.infer.evaluate.plots import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    wrong = iou <= 0.5
    ax.scatter(iou[~wrong], uncertainty[~wrong], s=8, alpha=0.5, color="tab:blue", label="matched")
    ax.scatter(iou[wrong], uncertainty[wrong], s=8, alpha=0.7, color="tab:red", label="false detection")
    ax.axvline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("best IoU with a true object")
    ax.set_ylabel("mean uncertainty in the object")
    ax.set_title(f"per-object uncertainty (AUROC false vs matched {area_under:.3f})", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    reading = (
        f"An object's mean uncertainty tells a false detection from a matched object with an AUROC of "
        f"{area_under:.3f} (0.5: not at all, 1: every false one is more uncertain than every matched one)."
    )
    return Figure(path.name, "Uncertainty of the objects", reading)


def read_label_pair(
    item: EvalItem, dims: int, on_nonfinite: str = "replace"
) -> tuple[np.ndarray, np.ndarray, int]:
    """An item's true and predicted label images, checked to match, and how many pixels are left
    out. Probabilities (fractional values) are refused: objects are not what a threshold of them
    would give. Pixels with a non-finite prediction value are left out by the rule ``on_nonfinite``
    (:mod:`idl.infer.evaluate.checks`): 0 in both label images, so the objects are scored where the
    prediction is defined."""
    truth = read_groundtruth_mask(item.groundtruth, dims)
    raw = read_image(item.prediction)
    if fractional(raw):
        values = raw[np.isfinite(raw)]
        raise DataError(
            f"{item.prediction}: the prediction holds fractional values ({values.min():.4g} to "
            f"{values.max():.4g}), probabilities or measurements, not a label image. Instance evaluation "
            "needs label images (0 background, one integer per object), as idl-predict writes them: make "
            "masks of the probabilities and label their objects (idl-labels from-masks MASKS --out DIR), or "
            "evaluate the probabilities as such with --task semantic."
        )
    pred = mask_plane(raw, str(item.prediction), dims, PREDICTION)
    check_same_shape(item, truth.shape, pred.shape)
    valid = finite_pixels(pred)
    left_out = check_prediction_values(pred, valid, str(item.prediction), "zyx"[-dims:], on_nonfinite)
    if valid is not None:
        truth, pred = np.where(valid, truth, 0), np.where(valid, pred, 0)
    if np.issubdtype(pred.dtype, np.floating):
        pred = pred.astype(np.int64)
    return truth, pred, left_out


def evaluate_instance(
    items: list[EvalItem],
    out_dir: Path,
    figures: bool = True,
    axes: str | None = None,
    progress: bool = True,
    dims: int = 2,
    on_nonfinite: str = "replace",
    notes: Mapping[str, int] | None = None,
) -> dict[str, float | int]:
    """Score predicted label images, write metrics.csv, summary.json, figures and report.html.
    ``notes`` and the count of pixels left out (:func:`read_label_pair`) go into the summary."""
    from idl.infer.evaluate.plots import save_panels

    totals = [MatchCounts(0, 0, 0)] * 10
    inter = union = unscored = 0
    rows, sample_figures = [], []
    per_object: list[tuple[np.ndarray, np.ndarray]] = []  # (mean uncertainty, best IoU) per object
    confidences = UncertaintySample()  # each object's score against whether it matches a true one
    baseline = OtsuBaseline(match_tally)
    for item in each_item(items, out_dir, progress):
        truth, pred, left_out = read_label_pair(item, dims, on_nonfinite)
        unscored += left_out
        iou = iou_matrix(truth, pred)
        counts = counts_per_threshold(truth, pred, iou)
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
        inter += int(np.count_nonzero((truth > 0) & (pred > 0)))
        union += int(np.count_nonzero((truth > 0) | (pred > 0)))
        t, p = truth > 0, pred > 0
        row: dict[str, float | str] = {
            "filename": item.name,
            **scores_from_counts(counts),
            "jaccard": float((t & p).sum() / max((t | p).sum(), 1)),
            "n_true": counts[0].tp + counts[0].fn,
            "n_predicted": counts[0].tp + counts[0].fp,
        }
        if left_out:
            row["unscored_pixels"] = left_out
        best = best_iou(iou)  # each predicted object's best IoU, in label order
        uncertainty = record_uncertainty(item, row)
        if uncertainty is not None:
            per_object.append((object_uncertainty(pred, uncertainty), best))
        scores = object_scores(item, pred)
        if scores is not None:
            confidences.add(scores, best > 0.5)
        rows.append(row)
        image = load_display_image(item.image, axes, dims)
        baseline.add(image, truth)
        if figures:
            # a volume is shown by its central z slice (its objects scored in 3D)
            plane = central_plane if dims == 3 else (lambda a: a)
            shown_image, shown_truth, shown_pred = plane(image), plane(truth), plane(pred)
            panels = [
                ("image", display_image(shown_image), {"cmap": "gray"}) if shown_image is not None else None,
                ("ground truth", outlines(shown_truth, shown_image), {}),
                ("prediction", outlines(shown_pred, shown_image), {}),
                ("errors: false objects magenta, missed green", plane(object_errors(truth, pred, iou)), {}),
            ]
            if uncertainty is not None:
                panels.append(("uncertainty", plane(uncertainty), {"cmap": "magma"}))
            title = f"{item.name}  ap50 {row['ap50']:.3f}, ap50_95 {row['ap50_95']:.3f}" + (
                "  (central z slice)" if dims == 3 else ""
            )
            shown = [panel for panel in panels if panel is not None]
            sample_figures.append(save_panels(out_dir / f"{item.name}.png", title, [shown], ("uncertainty",)))
    overall = scores_from_counts(totals)
    measured = []
    if per_object:  # does an object's uncertainty tell false detections from matched ones?
        spread = np.concatenate([u for u, _ in per_object])
        quality = np.concatenate([q for _, q in per_object])
        overall["object_uncertainty_auroc"] = auroc(spread, quality <= 0.5)
        if (quality <= 0.5).any():  # reviewing the most uncertain objects: what it would catch
            overall["object_uncertainty_aurc"] = area_under_risk_coverage(spread, quality <= 0.5)
            overall["object_errors_caught_10"] = errors_caught(spread, quality <= 0.5, 0.1)
        if figures and spread.size:
            measured = [
                save_object_uncertainty(
                    out_dir / "object_uncertainty.png", spread, quality, overall["object_uncertainty_auroc"]
                ),
                risk_coverage_figure(out_dir / "risk_coverage.png", spread, quality <= 0.5, "objects"),
            ]
    confidence, matched = confidences.arrays()
    if confidence.size:  # are the objects' scores the share of them that are right?
        overall["object_ece"] = expected_calibration_error(confidence, matched)
        if figures:
            measured.append(reliability_figure(out_dir / "reliability.png", confidence, matched, "objects"))
    compared = baseline.finish(rows, "ap50_95", counts_scores)

    def summarize(metrics: pd.DataFrame) -> dict[str, float | int]:
        return {
            **overall,
            "jaccard": inter / union if union else 1.0,
            "ap50_median": float(metrics["ap50"].median()),
            "ap50_95_median": float(metrics["ap50_95"].median()),
            "n_images": len(items),
            "n_objects": int(metrics["n_true"].sum()),
            **summary_counts({UNSCORED: unscored, **(notes or {})}),
            **{k: v for k, v in compared.items() if k in ("baseline_ap50", "baseline_ap50_95")},
        }

    summary = write_evaluation(
        out_dir,
        rows,
        summarize,
        sample_figures,
        "ap50_95",
        "idl evaluation: instance segmentation",
        uncertainty=measured,
        baseline=f"{baseline.name}, connected components" if compared else "",
    )
    log.info(
        "evaluation: ap50 %.4f, ap50_95 %.4f, Jaccard %.4f over %d image(s)",
        summary["ap50"],
        summary["ap50_95"],
        summary["jaccard"],
        len(items),
    )
    return summary
