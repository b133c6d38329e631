"""Evaluation of image classification against ``groundtruth.csv``.

Scores (``summary.json``):

- ``accuracy``; ``auc``: ROC AUC of the class probabilities, for two classes that of the second
  class, beyond two the macro average of one-vs-rest AUCs (as scikit-learn's ``multi_class="ovr"``;
  classes absent from the test labels are left out of the average);
- ``jaccard``: of the second class for two classes, else the macro mean over the classes that occur
  in the labels or the predictions;
- ``mae``, ``mse``: mean absolute and squared difference between the one-hot ground truth and the
  probabilities (``mse`` is the Brier score divided by the number of classes);
- ``ece``: expected calibration error (10 equal-width confidence bins);
- with Monte Carlo dropout also ``accuracy_mc``, ``ece_mc`` (of the mean sampled distribution),
  ``uncertainty_mean`` and ``uncertainty_auroc``: how well the uncertainty separates wrong from
  right predictions (0.5: not at all, 1: every wrong prediction is more uncertain than every right
  one), likewise ``uncertainty_instantdl_auroc``;
- for idl classifiers ``atypicality_mean`` and ``atypical_fraction`` (the share of images with an
  atypicality above 1.5, i.e. unlike the training images; see :mod:`idl.infer.post.typicality`).

Figures: confusion matrix, ROC curves, a reliability diagram, the uncertainty of right and wrong
predictions, and the misclassified images; all in a self-contained ``report.html``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from idl.infer.core.errors import DataError
from idl.infer.evaluate.calibration import area_under_risk_coverage, auroc, errors_caught
from idl.infer.evaluate.figures import Figure, reliability_figure, risk_coverage_figure
from idl.infer.evaluate.semantic import write_evaluation
from idl.infer.post.classes import class_indices, label_key

log = logging.getLogger("idl")

MAX_SHOWN_ERRORS = 24


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by the bins' sizes."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def classification_scores(truth: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """accuracy, auc, jaccard, mae, mse and ece of ``(N, K)`` probabilities for integer labels."""
    from sklearn.metrics import jaccard_score

    k = probabilities.shape[1]
    predicted = probabilities.argmax(axis=1)
    one_hot = np.eye(k)[truth]
    if k == 2:
        auc = auroc(probabilities[:, 1], truth == 1)
        jaccard = jaccard_score(truth, predicted, average="binary", zero_division=0.0)
    else:
        per_class = [auroc(probabilities[:, c], truth == c) for c in range(k)]
        present = [a for a in per_class if np.isfinite(a)]
        auc = float(np.mean(present)) if present else float("nan")
        present = sorted(set(truth.tolist()) | set(predicted.tolist()))  # as the AUC: absent classes out
        jaccard = jaccard_score(truth, predicted, average="macro", labels=present, zero_division=0.0)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "auc": auc,
        "jaccard": float(jaccard),
        "mae": float(np.mean(np.abs(one_hot - probabilities))),
        "mse": float(np.mean((one_hot - probabilities) ** 2)),
        "ece": expected_calibration_error(probabilities, truth),
    }


def _columns(table: pd.DataFrame, prefix: str, class_names: Sequence[str]) -> np.ndarray | None:
    names = [f"{prefix}{c}" for c in class_names]
    if not all(n in table for n in names):
        return None
    return table[names].to_numpy(np.float64)


def _uncertainty_figures(
    out_dir: Path, probabilities: np.ndarray, correct: np.ndarray, table: pd.DataFrame, mc_correct: np.ndarray
) -> list[Figure]:
    """The images' reliability diagram (of the probabilities) and, with Monte Carlo samples, their
    risk-coverage curve (the uncertainty against the sampled prediction's mistakes)."""
    made = [reliability_figure(out_dir / "reliability.png", probabilities.max(axis=1), correct, "images")]
    if "uncertainty" in table:
        uncertainty = table["uncertainty"].to_numpy(np.float64)
        made.append(risk_coverage_figure(out_dir / "risk_coverage.png", uncertainty, ~mc_correct, "images"))
    return made


def _figures(
    out_dir: Path,
    truth: np.ndarray,
    probabilities: np.ndarray,
    class_names: Sequence[str],
    table: pd.DataFrame,
    mc_correct: np.ndarray,
) -> list[Path]:
    from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

    from idl.infer.evaluate.plots import _pyplot, save_figure

    plt = _pyplot()
    k = len(class_names)
    saved = []

    def save(fig, name: str) -> None:
        saved.append(save_figure(fig, out_dir / name))

    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * k, 1.0 + 0.6 * k) if k > 4 else (4.5, 4))
    ConfusionMatrixDisplay.from_predictions(
        truth,
        probabilities.argmax(axis=1),
        labels=list(range(k)),
        display_labels=list(class_names),
        ax=ax,
        colorbar=False,
        xticks_rotation=45 if k > 4 else "horizontal",
    )
    ax.set_title("confusion matrix (rows: ground truth)", fontsize=10)
    save(fig, "confusion_matrix.png")

    fig, ax = plt.subplots(figsize=(4.5, 4))
    for c, name in enumerate(class_names):
        if k == 2 and c == 0:
            continue
        positive = truth == c
        if positive.any() and not positive.all():
            RocCurveDisplay.from_predictions(positive, probabilities[:, c], ax=ax, name=str(name))
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_title("ROC " + ("(one vs rest)" if k > 2 else f"({class_names[1]})"), fontsize=10)
    save(fig, "roc.png")

    if "uncertainty" in table:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        bins = np.linspace(0, 1, 21)
        values, right = table["uncertainty"].to_numpy(np.float64), mc_correct
        ax.hist(values[right], bins=bins, alpha=0.6, label=f"right (n={int(right.sum())})", density=True)
        ax.hist(values[~right], bins=bins, alpha=0.6, label=f"wrong (n={int((~right).sum())})", density=True)
        ax.set_xlabel("uncertainty (normalized entropy)")
        ax.set_ylabel("density")
        ax.legend(fontsize=8)
        ax.set_title("uncertainty of right and wrong MC predictions", fontsize=10)
        save(fig, "uncertainty.png")
    return saved


def _error_gallery(
    path: Path, table: pd.DataFrame, wrong: np.ndarray, images: dict[str, Path], axes: str | None
) -> Path | None:
    """Thumbnails of misclassified images with their true and predicted class."""
    from idl.infer.evaluate.plots import display_image, save_panels
    from idl.infer.io.images import read_channels_last

    rows = table[wrong].head(MAX_SHOWN_ERRORS)
    panels = []
    for _, row in rows.iterrows():
        source = images.get(str(row["key"]))
        if source is None:
            continue
        try:
            image = read_channels_last(source, axes, "yx")[0]
        except DataError:
            continue
        note = f" (u {row['uncertainty']:.2f})" if "uncertainty" in row else ""
        title = f"{row['filename']}: {row['groundtruth']} -> {row['prediction']}{note}"
        panels.append((title, display_image(image), {"cmap": "gray"}))
    if not panels:
        return None
    per_row = 6
    grid = [panels[i : i + per_row] for i in range(0, len(panels), per_row)]
    title = f"misclassified images ({int(wrong.sum())} in all): true -> predicted class (uncertainty)"
    return save_panels(path, title, grid)


def evaluate_classification(
    results: Path,
    labels: dict[str, str],
    class_names: Sequence[str],
    out_dir: Path,
    images: dict[str, Path] | None = None,
    axes: str | None = None,
    figures: bool = True,
    labels_source: str = "groundtruth.csv",
    notes: Mapping[str, int] | None = None,
) -> dict[str, float | int]:
    """Score ``results.csv`` against ``labels`` (image name -> class, from ``labels_source``); write
    metrics.csv, summary.json, figures and report.html into ``out_dir``; return the summary (with
    ``notes``, e.g. the labelled images without a prediction)."""
    table = pd.read_csv(results, dtype={"filename": str, "prediction": str, "prediction_mc": str})
    keys = [label_key(n) for n in table["filename"]]  # labels are keyed by name without suffix
    missing = [n for n, key in zip(table["filename"], keys, strict=True) if key not in labels]
    if missing:
        raise DataError(
            f"{labels_source}: no row for {missing[0]} ({len(missing)} image(s) without one); add "
            "'file name,class' rows for every image."
        )
    class_names = [str(c) for c in class_names]
    table["groundtruth"] = [labels[key] for key in keys]
    table["key"] = keys
    truth = np.array(class_indices(table["groundtruth"].tolist(), class_names, labels_source))
    probabilities = _columns(table, "probability_", class_names)
    if probabilities is None:
        raise DataError(f"{results}: expected columns probability_<class> for {', '.join(class_names)}.")
    check_probabilities(probabilities, table["filename"], results)
    scores = classification_scores(truth, probabilities)
    correct = probabilities.argmax(axis=1) == truth
    metrics = table[["filename", "groundtruth", "prediction"]].copy()
    metrics["correct"] = correct.astype(int)
    metrics["probability_groundtruth"] = probabilities[np.arange(len(truth)), truth]
    mc = _columns(table, "mc_probability_", class_names)
    extra: dict[str, float] = {}
    if mc is not None and "uncertainty" in table:
        mc_scores = classification_scores(truth, mc)
        mc_correct = mc.argmax(axis=1) == truth
        extra = {
            "accuracy_mc": mc_scores["accuracy"],
            "auc_mc": mc_scores["auc"],
            "ece_mc": mc_scores["ece"],
            # does the uncertainty flag the (MC) prediction's own mistakes?
            "uncertainty_auroc": auroc(table["uncertainty"].to_numpy(), ~mc_correct),
            "uncertainty_instantdl_auroc": auroc(table["uncertainty_instantdl"].to_numpy(), ~mc_correct),
            "uncertainty_aurc": area_under_risk_coverage(table["uncertainty"].to_numpy(), ~mc_correct),
            "errors_caught_10": errors_caught(table["uncertainty"].to_numpy(), ~mc_correct, 0.1),
        }
        metrics["prediction_mc"] = table["prediction_mc"]
        metrics["uncertainty_mean"] = table["uncertainty"]  # per image: its uncertainty
        metrics["uncertainty_instantdl"] = table["uncertainty_instantdl"]
    if "atypicality" in table:
        metrics["atypicality"] = table["atypicality"]
        extra["atypicality_mean"] = float(table["atypicality"].mean())
        extra["atypical_fraction"] = float((table["atypicality"] > 1.5).mean())
    out_dir.mkdir(parents=True, exist_ok=True)
    # the uncertainty describes the MC prediction: its figure splits by the MC prediction's mistakes
    mc_right = (mc.argmax(axis=1) == truth) if mc is not None else correct
    overview = _figures(out_dir, truth, probabilities, class_names, table, mc_right) if figures else []
    measured = _uncertainty_figures(out_dir, probabilities, correct, table, mc_right) if figures else []
    most = np.bincount(truth, minlength=len(class_names)).argmax()  # the baseline: always this class
    gallery = (
        _error_gallery(out_dir / "misclassified.png", table, ~correct, images or {}, axes)
        if figures and (~correct).any()
        else None
    )

    def summarize(_: pd.DataFrame) -> dict[str, float | int]:
        counted = {key: int(value) for key, value in (notes or {}).items() if value}
        return {
            **scores,
            **extra,
            "n_images": len(truth),
            "num_classes": len(class_names),
            **counted,
            "baseline_accuracy": float(np.mean(truth == most)),
        }

    shown = [Figure(p.name, p.stem.replace("_", " ")) for p in [*overview, *([gallery] if gallery else [])]]
    summary = write_evaluation(
        out_dir,
        metrics.to_dict("records"),
        summarize,
        [],
        "probability_groundtruth",
        "idl evaluation: classification",
        boxplot=False,
        uncertainty=measured,
        overview=shown,
        baseline=f"always the most frequent class ({class_names[most]})",
    )
    log.info(
        "evaluation: accuracy %.4f, AUC %.4f over %d image(s)%s",
        summary["accuracy"],
        summary["auc"],
        len(truth),
        f"; uncertainty AUROC (wrong vs right) {extra['uncertainty_auroc']:.3f}"
        if "uncertainty_auroc" in extra
        else "",
    )
    return summary


def check_probabilities(probabilities: np.ndarray, names: Sequence[str], results: Path) -> None:
    """Refuse rows of ``results.csv`` whose probabilities are not all finite numbers: their arg-max
    would be a class no one predicted."""
    bad = ~np.isfinite(probabilities).all(axis=1)
    if bad.any():
        first = list(names)[int(np.argmax(bad))]
        raise DataError(
            f"{results}: the probabilities of {first} are not finite numbers ({int(bad.sum())} row(s) with "
            "NaN, inf or an empty cell). Classify those images again with idl-predict."
        )


def evaluate_results_folder(
    pred_dir: Path,
    gt: Path,
    out_dir: Path,
    image_dir: Path | None = None,
    axes: str | None = None,
    strict: bool = False,
) -> dict[str, float | int]:
    """``idl-evaluate --task classification``: ``pred_dir/results.csv`` against ``gt`` (a
    ``groundtruth.csv`` or the folder holding it); classes from the results' probability columns.
    Labelled images without a row in ``results.csv`` are named in a warning and counted in the
    summary, or refused with ``strict``."""
    from idl.infer.evaluate.checks import MISSING, missing_predictions
    from idl.infer.post.classes import images_by_name, label_csv_for, read_labels
    from idl.infer.post.classify import RESULTS_NAME

    results = pred_dir / RESULTS_NAME
    if not results.is_file():
        raise DataError(f"{results}: not found. Classify the images with idl-predict first.")
    header = pd.read_csv(results, nrows=0).columns
    class_names = [c.removeprefix("probability_") for c in header if c.startswith("probability_")]
    if not class_names:
        raise DataError(f"{results}: no probability_<class> columns; is this idl-predict's results.csv?")
    labels = read_labels(gt)
    source = str(label_csv_for(gt))
    predicted = [label_key(n) for n in pd.read_csv(results, usecols=["filename"], dtype=str)["filename"]]
    missing = missing_predictions(predicted, labels, source, strict)
    images = images_by_name(image_dir) if image_dir is not None else {}
    return evaluate_classification(
        results,
        labels,
        class_names,
        out_dir,
        images,
        axes,
        labels_source=source,
        notes={MISSING: len(missing)},
    )
