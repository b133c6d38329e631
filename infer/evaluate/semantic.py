"""Evaluation of semantic segmentation predictions against ground truth.

Writes ``metrics.csv`` (one row per image), ``summary.json`` (aggregates over all test pixels plus the
median per-image Jaccard), one figure per image, a box plot and a self-contained ``report.html``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from idl.infer.core.errors import DataError
from idl.infer.core.project import PROBABILITY_DIR, UNCERTAINTY_DIR, files_by_stem
from idl.infer.evaluate.baseline import OtsuBaseline, confusion_score
from idl.infer.evaluate.calibration import UncertaintySample, expected_calibration_error, pixel_confidence
from idl.infer.evaluate.checks import (
    THRESHOLDED,
    UNSCORED,
    axes_of,
    check_groundtruth_values,
    check_prediction_values,
    looks_like_labels,
)
from idl.infer.evaluate.figures import Figure, reliability_figure, risk_coverage_figure
from idl.infer.evaluate.metrics import confusion_matrix, semantic_scores
from idl.infer.evaluate.plots import save_boxplot, save_sample_figure
from idl.infer.evaluate.report import FIGURES_NAME, write_report
from idl.infer.io.images import atomic_path, read_channels_last, read_image, write_text
from idl.infer.io.omezarr import image_stem
from idl.infer.post.labels import (
    PredictedClasses,
    class_probabilities,
    infer_num_classes,
    mask_plane,
    predicted_classes,
    semantic_target,
)

log = logging.getLogger("idl")

MAX_REPORT_FIGURES = 50


@dataclass(frozen=True)
class EvalItem:
    """One test image's files, matched by file name stem."""

    name: str
    prediction: Path
    groundtruth: Path
    image: Path | None = None
    uncertainty: Path | None = None
    probabilities: Path | None = None  # idl-predict --save-probabilities: what calibration is measured on


def match_items(
    pred_dir: Path, gt_dir: Path, image_dir: Path | None = None, uncertainty_dir: Path | None = None
) -> list[EvalItem]:
    """Pair every prediction with its ground truth (and, when given, its image and uncertainty)."""
    preds = files_by_stem(pred_dir)
    if not preds:
        raise DataError(f"{pred_dir}: no predictions to evaluate.")
    gts = files_by_stem(gt_dir)
    missing = sorted(set(preds) - set(gts))
    if missing:
        swapped = " Are the folders swapped? The order is PRED_DIR GT_DIR." if set(gts) < set(preds) else ""
        raise DataError(
            f"{gt_dir}: no ground truth for {len(missing)} prediction(s), e.g. '{missing[0]}'. "
            f"Ground-truth files must have the same name as the images they belong to.{swapped}"
        )
    images = files_by_stem(image_dir) if image_dir is not None and image_dir.is_dir() else {}
    uncertainties = (
        files_by_stem(uncertainty_dir) if uncertainty_dir is not None and uncertainty_dir.is_dir() else {}
    )
    probability_dir = pred_dir / PROBABILITY_DIR
    probabilities = files_by_stem(probability_dir) if probability_dir.is_dir() else {}
    return [
        EvalItem(
            stem, preds[stem], gts[stem], images.get(stem), uncertainties.get(stem), probabilities.get(stem)
        )
        for stem in preds
    ]


def items_for_predictions(
    out_dir: Path,
    images: Sequence[Path],
    groundtruth: Path | Mapping[str, Path],
    uncertainty: bool,
    suffix: str = ".tif",
) -> list[EvalItem]:
    """Evaluation items for images predicted into ``out_dir`` (as ``<stem>.tif``, uncertainty maps
    under ``uncertainty/``), with ground truth from a folder matched by image name, or already matched
    (image name -> ground-truth file, or folder of object masks)."""
    where = f"{groundtruth}: " if isinstance(groundtruth, Path) else ""
    matched = files_by_stem(groundtruth) if isinstance(groundtruth, Path) else groundtruth
    missing = [image for image in images if image_stem(image) not in matched]
    if missing:
        raise DataError(
            f"{where}no ground truth for {missing[0].name} ({len(missing)} image(s) without one). "
            "Ground-truth files need the image's name."
        )
    saved = out_dir / PROBABILITY_DIR
    return [
        EvalItem(
            image_stem(image),
            out_dir / f"{image_stem(image)}{suffix}",
            Path(matched[image_stem(image)]),
            image,
            out_dir / UNCERTAINTY_DIR / f"{image_stem(image)}{suffix}" if uncertainty else None,
            p if (p := saved / f"{image_stem(image)}{suffix}").is_file() else None,
        )
        for image in images
    ]


def each_item(items: list[EvalItem], out_dir: Path, progress: bool = True) -> Iterable[EvalItem]:
    """The items to evaluate, with a progress bar, once ``out_dir`` exists; an error right away when
    there are none (what every evaluation starts with)."""
    if not items:
        raise DataError("nothing to evaluate: no predictions were matched with ground truth.")
    out_dir.mkdir(parents=True, exist_ok=True)
    return tqdm(items, unit="image", desc="evaluate", disable=None if progress else True, leave=False)


def load_display_image(path: Path | None, axes: str | None, dims: int = 2) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return read_channels_last(path, axes, "zyx"[-dims:])[0]
    except DataError:
        return None  # the figure simply omits the image panel


def evaluate_semantic(
    items: list[EvalItem],
    out_dir: Path,
    num_classes: int | None = None,
    figures: bool = True,
    axes: str | None = None,
    progress: bool = True,
    dims: int = 2,
    threshold: str | float = "otsu",
    on_nonfinite: str = "replace",
    notes: Mapping[str, int] | None = None,
) -> dict[str, float | int]:
    """Score predictions, write metrics.csv, summary.json, figures and report.html; return the summary.

    A prediction may be a class mask or class probabilities, which become classes as idl-predict
    makes them (``threshold``, said in a warning); pixels with a non-finite prediction value are left
    out by the rule ``on_nonfinite`` (:mod:`idl.infer.evaluate.checks`). ``notes`` (e.g. the ground
    truth without a prediction) and the counts of both go into the summary. With the images, binary
    masks are compared with Otsu's threshold of each image (:class:`~idl.infer.evaluate.baseline.
    OtsuBaseline`); with the uncertainty maps, how well they flag the wrong pixels; with the saved
    probabilities, how well calibrated they are."""
    todo = each_item(items, out_dir, progress)
    if num_classes is None:
        num_classes = infer_num_classes([read_groundtruth_mask(i.groundtruth, dims) for i in items])
    total = np.zeros((num_classes, num_classes), np.int64)
    rows, sample_figures = [], []
    unscored = thresholded = 0
    pixels = UncertaintySample()  # uncertainty against error, pixel by pixel
    confidences = UncertaintySample()  # confidence against correctness (saved probabilities)
    baseline = OtsuBaseline(confusion_score(2)) if num_classes == 2 else None
    for index, item in enumerate(todo):
        mask = read_groundtruth_mask(item.groundtruth, dims)
        if index == 0 and (objects := looks_like_labels(mask)):
            log.warning(
                "%s looks like a label image (%d objects, one value each), evaluated here as %d classes: "
                "for instance segmentation give --task instance.",
                item.groundtruth.name,
                objects,
                objects + 1,
            )
        gt = semantic_target(mask, num_classes, str(item.groundtruth), dims)
        raw = read_image(item.prediction)
        pred = predicted_classes(raw, num_classes, str(item.prediction), dims, threshold)
        check_same_shape(item, gt.shape, pred.classes.shape)
        left_out = check_prediction_values(
            raw, pred.valid, str(item.prediction), axes_of(raw.shape, gt.shape), on_nonfinite
        )
        if pred.probabilities and not thresholded:
            say_probabilities(item.prediction, pred, threshold)
        thresholded += pred.probabilities
        unscored += left_out
        valid = pred.valid
        scored = (pred.classes, gt) if valid is None else (pred.classes[valid], gt[valid])
        cm = confusion_matrix(*scored, num_classes)
        total += cm
        row: dict[str, float | str] = {"filename": item.name, **semantic_scores(cm)}
        if pred.threshold is not None:
            row["threshold"] = pred.threshold
        if left_out:
            row["unscored_pixels"] = left_out
        uncertainty = record_uncertainty(item, row)
        if uncertainty is not None and uncertainty.shape == gt.shape:
            pixels.add(*_valid((uncertainty, pred.classes != gt), valid))
        if item.probabilities is not None:
            probabilities = class_probabilities(
                read_image(item.probabilities), num_classes, str(item.probabilities), dims
            )
            if probabilities.shape[1:] == gt.shape:
                confidence, chosen = pixel_confidence(probabilities)
                confidences.add(*_valid((confidence, chosen == gt), valid))
        image = load_display_image(item.image, axes, dims) if figures or baseline else None
        if baseline is not None:
            baseline.add(image, gt, valid)
        rows.append(row)
        if figures:
            title = f"{item.name}  Jaccard {row['jaccard']:.3f}"
            sample_figures.append(
                save_sample_figure(
                    out_dir / f"{item.name}.png", title, image, gt, pred.classes, uncertainty, num_classes
                )
            )
    overall = semantic_scores(total)
    measured = uncertainty_figures(out_dir, pixels, confidences, "pixels") if figures else []
    compared = baseline.finish(rows, "jaccard", semantic_scores) if baseline is not None else {}

    def summarize(metrics: pd.DataFrame) -> dict[str, float | int]:
        return {
            "jaccard": overall["jaccard"],
            "jaccard_median": float(metrics["jaccard"].median()),
            "dice": overall["dice"],
            "accuracy": overall["accuracy"],
            "n_images": len(items),
            "num_classes": num_classes,
            **pixels.summary(),
            **calibration_summary(confidences),
            **counts({THRESHOLDED: thresholded, UNSCORED: unscored, **(notes or {})}),
            **compared,
        }

    summary = write_evaluation(
        out_dir,
        rows,
        summarize,
        sample_figures,
        "jaccard",
        "idl evaluation: semantic segmentation",
        uncertainty=measured,
        baseline=baseline.name if baseline is not None and compared else "",
    )
    log.info(
        "evaluation: Jaccard %.4f (median per image %.4f) over %d image(s)",
        summary["jaccard"],
        summary["jaccard_median"],
        len(items),
    )
    return summary


def _valid(arrays: tuple[np.ndarray, ...], valid: np.ndarray | None) -> tuple[np.ndarray, ...]:
    """The arrays at the scored pixels (all of them without a ``valid`` mask)."""
    return arrays if valid is None else tuple(a[valid] for a in arrays)


def calibration_summary(confidences: UncertaintySample) -> dict[str, float]:
    """``ece`` of the confidences gathered (the probabilities' own decisions), {} without any."""
    confidence, correct = confidences.arrays()
    return {"ece": expected_calibration_error(confidence, correct)} if confidence.size else {}


def uncertainty_figures(
    out_dir: Path, errors: UncertaintySample, confidences: UncertaintySample, unit: str
) -> list[Figure]:
    """The reliability diagram (from the confidences, when gathered) and the risk-coverage curve
    (from the uncertainties and errors, when gathered) of ``unit`` ("pixels", "objects")."""
    made = []
    confidence, correct = confidences.arrays()
    if confidence.size:
        made.append(reliability_figure(out_dir / "reliability.png", confidence, correct, unit))
    uncertainty, error = errors.arrays()
    if uncertainty.size:
        made.append(risk_coverage_figure(out_dir / "risk_coverage.png", uncertainty, error, unit))
    return made


def counts(values: Mapping[str, int]) -> dict[str, int]:
    """The summary's counts of what was not scored or was converted, those that are not zero (a
    summary without them says that everything was scored as it was)."""
    return {key: int(value) for key, value in values.items() if value}


def say_probabilities(source: Path, pred: PredictedClasses, threshold: str | float) -> None:
    """Warn that a prediction held probabilities and how they were made classes (once per
    evaluation: the others are treated alike, each one's threshold is in metrics.csv)."""
    if pred.threshold is None:
        how = "each pixel gets its most probable class (arg-max), as idl-predict does"
    elif threshold == "otsu":
        how = (
            f"thresholded as idl-predict does, by Otsu's threshold of each map ({pred.threshold:.4g} here; "
            "--threshold 0.5 sets a fixed one)"
        )
    else:
        how = f"thresholded at --threshold {pred.threshold:g}"
    log.warning(
        "%s: the prediction holds probabilities (0..1), not a class mask: %s. Every such prediction is "
        "treated so; metrics.csv has each one's threshold.",
        source,
        how,
    )


def read_groundtruth_mask(path: Path, dims: int) -> np.ndarray:
    """A ground-truth mask (class map or label image) as a plane or volume; non-finite values refused."""
    gt = mask_plane(read_image(path), str(path), dims)
    check_groundtruth_values(gt, str(path), "zyx"[-dims:])
    return gt


def check_same_shape(item: EvalItem, gt: tuple[int, ...], pred: tuple[int, ...]) -> None:
    """Refuse a ground truth whose shape differs from its prediction's, blaming the ground truth (a
    prediction always has its image's size)."""
    if pred != gt:
        raise DataError(
            f"{item.groundtruth}: ground-truth shape {gt} does not match the prediction "
            f"{item.prediction} {pred}, which has the size of its image. Check that this ground "
            "truth belongs to that image and has its size."
        )


def record_uncertainty(item: EvalItem, row: dict) -> np.ndarray | None:
    """The item's uncertainty map, if it has one, with its mean recorded in ``row``."""
    if item.uncertainty is None:
        return None
    uncertainty = read_image(item.uncertainty)
    finite = np.isfinite(uncertainty)  # NaN where the input pixel was not finite (core.nonfinite)
    row["uncertainty_mean"] = float(np.mean(uncertainty[finite])) if finite.any() else float("nan")
    return uncertainty


def write_evaluation(
    out_dir: Path,
    rows: list[dict],
    summarize: Callable[[pd.DataFrame], dict[str, float | int]],
    sample_figures: Sequence[Path],
    score: str,
    title: str,
    limits: tuple[float, float] = (-0.02, 1.02),
    boxplot: bool = True,
    uncertainty: Sequence[Figure] = (),
    overview: Sequence[Figure] = (),
    baseline: str = "",
) -> dict[str, float | int]:
    """The files every evaluation writes: metrics.csv, summary.json (with the mean uncertainty when
    there is one), and, with figures, a box plot of the per-image ``score`` (unless ``boxplot`` is
    off), ``figures.json`` (the per-image figures, named by their image, and the ``uncertainty`` and
    ``overview`` figures, each with its reading) and report.html (:mod:`idl.infer.evaluate.report`).
    ``baseline`` names the classical baseline whose scores are the summary's ``baseline_*``."""
    metrics = pd.DataFrame(rows)
    summary = summarize(metrics)
    if "uncertainty_mean" in metrics:
        summary["uncertainty_mean"] = float(metrics["uncertainty_mean"].mean())
    with atomic_path(out_dir / "metrics.csv") as tmp:
        metrics.to_csv(tmp, index=False)
    write_text(out_dir / "summary.json", json.dumps(summary, indent=2))
    if sample_figures or uncertainty or overview:
        boxes = (
            [
                Figure(
                    save_boxplot(
                        out_dir / f"{score}_boxplot.png", metrics[score].tolist(), score, limits
                    ).name,
                    f"{score} per image",
                )
            ]
            if boxplot and sample_figures
            else []
        )
        listing = {
            "title": title,
            "score": score,
            "baseline": baseline,
            "max_gallery": MAX_REPORT_FIGURES,
            "uncertainty": [f.to_dict() for f in uncertainty],
            "overview": [f.to_dict() for f in [*boxes, *overview]],
            "gallery": [{"name": path.stem, "file": path.name} for path in sample_figures],
        }
        write_text(out_dir / FIGURES_NAME, json.dumps(listing, indent=1))
        write_report(out_dir)
    return summary
