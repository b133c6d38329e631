"""Evaluation of pixel-wise regression (e.g. in-silico staining) against ground truth.

Per image: Pearson correlation, mean absolute and squared error and the mean relative error; the
summary gives the median and mean Pearson over images (the distribution is in ``metrics.csv`` and a
box plot) and the errors over all test pixels. Figures show the signed error map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from idl.infer.core.errors import DataError
from idl.infer.evaluate.calibration import UncertaintySample, interval_coverage
from idl.infer.evaluate.checks import UNSCORED, check_groundtruth_values, check_prediction_values
from idl.infer.evaluate.figures import sigma_figure
from idl.infer.evaluate.metrics import pearson, regression_scores
from idl.infer.evaluate.plots import save_regression_figure
from idl.infer.evaluate.semantic import (
    EvalItem,
    counts,
    each_item,
    load_display_image,
    record_uncertainty,
    write_evaluation,
)
from idl.infer.io.images import read_channels_last
from idl.infer.post.labels import finite_pixels

log = logging.getLogger("idl")


def _channels_last(path: Path, dims: int) -> np.ndarray:
    return read_channels_last(path, None, "zyx"[-dims:])[0].astype(np.float32)


def _as_named(array: np.ndarray, dims: int) -> tuple[np.ndarray, str]:
    """A channels-last array and its axis names as messages give places: one channel without its
    axis (``y=5, x=7``), several with it."""
    spatial = "zyx"[-dims:]
    return (array[..., 0], spatial) if array.shape[-1] == 1 else (array, spatial + "c")


def evaluate_regression(
    items: list[EvalItem],
    out_dir: Path,
    figures: bool = True,
    axes: str | None = None,
    progress: bool = True,
    dims: int = 2,
    on_nonfinite: str = "replace",
    notes: Mapping[str, int] | None = None,
) -> dict[str, float | int]:
    """Score predictions, write metrics.csv, summary.json, figures and report.html; return the summary.

    Pixels with a non-finite predicted value (idl-predict writes NaN where the input pixel was not
    finite) are left out by the rule ``on_nonfinite`` (:mod:`idl.infer.evaluate.checks`); ground truth
    must be finite everywhere. ``notes`` and the count of pixels left out go into the summary."""
    rows, sample_figures = [], []
    abs_error = sq_error = abs_truth = 0.0
    n_pixels = unscored = 0
    within: dict[int, list[float]] = {1: [0.0, 0.0], 2: [0.0, 0.0]}  # k: [values within k sigma, values]
    deviations = UncertaintySample()  # (sigma, residual) pairs for the figure of error against sigma
    baseline: list[float | None] = []  # per image: |Pearson r| of the raw intensity and the target
    for item in each_item(items, out_dir, progress):
        gt, pred = _channels_last(item.groundtruth, dims), _channels_last(item.prediction, dims)
        if pred.shape != gt.shape:
            raise DataError(
                f"{item.prediction}: shape {pred.shape} (Y, X, channels) differs from its ground truth "
                f"{item.groundtruth} {gt.shape}. Predict the matching image again."
            )
        truth, names = _as_named(gt, dims)
        check_groundtruth_values(truth, str(item.groundtruth), names)
        valid = finite_pixels(pred, -1)
        values, names = _as_named(pred, dims)
        left_out = check_prediction_values(values, valid, str(item.prediction), names, on_nonfinite)
        unscored += left_out
        scored = (pred, gt) if valid is None else (pred[valid], gt[valid])
        scores = regression_scores(*scored)
        error = scored[0].astype(np.float64) - scored[1]
        abs_error += float(np.abs(error).sum())
        sq_error += float((error * error).sum())
        abs_truth += float(np.abs(scored[1]).sum())
        n_pixels += error.size
        row: dict[str, float | str] = {"filename": item.name, **scores}
        if left_out:
            row["unscored_pixels"] = left_out
        uncertainty = record_uncertainty(item, row)
        if uncertainty is not None and uncertainty.shape == pred.shape[:-1] and pred.shape[-1] == 1:
            # a standard deviation map of the prediction's units (--uncertainty std, the default)
            keep = np.isfinite(uncertainty) if valid is None else valid[..., 0] & np.isfinite(uncertainty)
            residual, sigma = pred[..., 0][keep] - gt[..., 0][keep], uncertainty[keep]
            for k, counted in within.items():
                counted[0] += interval_coverage(residual, sigma, k) * residual.size
                counted[1] += residual.size
            deviations.add(sigma, residual)
        rows.append(row)
        image = load_display_image(item.image, axes, dims)
        baseline.append(
            abs(pearson(image[..., 0], gt[..., 0]))
            if image is not None and image.shape[:-1] == gt.shape[:-1]
            else None
        )
        if figures:
            title = f"{item.name}  Pearson {scores['pearson']:.3f}"
            sample_figures.append(
                save_regression_figure(
                    out_dir / f"{item.name}.png", title, image, gt[..., 0], pred[..., 0], uncertainty
                )
            )

    compared = {}
    if baseline and all(b is not None for b in baseline):
        for row, value in zip(rows, baseline, strict=True):
            row["baseline_pearson"] = value
        compared = {
            "baseline_pearson_median": float(np.median(baseline)),
            "baseline_pearson_mean": float(np.mean(baseline)),
        }
    sigma, residual = deviations.arrays()
    measured = [sigma_figure(out_dir / "sigma.png", residual, sigma)] if figures and sigma.size else []

    def summarize(metrics: pd.DataFrame) -> dict[str, float | int]:
        return {
            "pearson_median": float(metrics["pearson"].median()),
            "pearson_mean": float(metrics["pearson"].mean()),
            "mae": abs_error / n_pixels,
            "mse": sq_error / n_pixels,
            "mean_relative_error": abs_error / abs_truth if abs_truth > 0 else float("nan"),
            "n_images": len(items),
            **{f"coverage_{k}sigma": n / total for k, (n, total) in within.items() if total},
            **counts({UNSCORED: unscored, **(notes or {})}),
            **compared,
        }

    summary = write_evaluation(
        out_dir,
        rows,
        summarize,
        sample_figures,
        "pearson",
        "idl evaluation: pixel-wise regression",
        (-1.02, 1.02),
        uncertainty=measured,
        baseline="raw intensity (|Pearson r| of the image and the target)" if compared else "",
    )
    log.info(
        "evaluation: Pearson median %.4f (mean %.4f), MAE %.4g over %d image(s)",
        summary["pearson_median"],
        summary["pearson_mean"],
        summary["mae"],
        len(items),
    )
    return summary
