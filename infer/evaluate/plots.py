"""Evaluation figures (matplotlib, headless): per-image panels and score distributions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from idl.infer.io.images import atomic_path

MAX_DISPLAY = 1024  # larger images are subsampled for display only

# error map colours: true negative, true positive, false positive, false negative
ERROR_COLOURS = np.array([[0, 0, 0], [0.85, 0.85, 0.85], [0.9, 0.1, 0.6], [0.1, 0.8, 0.2]])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path) -> Path:
    """Lay out, write atomically as PNG (100 dpi) and close a matplotlib figure."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)
    return path


def _display_step(shape: tuple[int, ...]) -> int:
    return max(1, -(-max(shape[:2]) // MAX_DISPLAY))


def display_image(image: np.ndarray) -> np.ndarray:
    """A channels-last image scaled to [0, 1] for display (first channel, or RGB when 3 channels)."""
    image = image.astype(np.float32)
    if image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    lo, hi = np.percentile(image, [1, 99.8])
    return np.clip((image - lo) / (hi - lo + 1e-6), 0, 1)


def error_map(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """RGB map: grey = correct foreground, magenta = false positive, green = missed (false negative)."""
    p, g = pred > 0, gt > 0
    code = np.zeros(pred.shape, np.uint8)
    code[p & g] = 1
    code[p & ~g] = 2
    code[~p & g] = 3
    wrong_class = p & g & (pred != gt)
    code[wrong_class] = 2
    return ERROR_COLOURS[code]


Panel = tuple[str, np.ndarray, dict]


def save_panels(
    path: Path, title: str, rows: Sequence[Sequence[Panel]], colorbars: Sequence[str] = ()
) -> Path:
    """Rows of images side by side in one PNG, with colour bars on the panels named in ``colorbars``."""
    plt = _pyplot()
    ncols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(3.2 * ncols, 3.6 * len(rows)), squeeze=False)
    for row_axes, panels in zip(axes, rows, strict=True):
        for ax in row_axes[len(panels) :]:
            ax.axis("off")
        for ax, (name, data, kwargs) in zip(row_axes, panels, strict=False):
            shown = ax.imshow(data, **kwargs)
            ax.set_title(name, fontsize=9)
            ax.axis("off")
            if any(name.endswith(c) for c in colorbars):
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def _views(arrays: Sequence[np.ndarray | None], dims: int) -> list[tuple[str, list[np.ndarray | None]]]:
    """2D: the arrays themselves; 3D: their central xy and xz slices (spatial axes first)."""
    if dims == 2:
        return [("", list(arrays))]
    z, y = (arrays[1].shape[0] // 2, arrays[1].shape[1] // 2)  # arrays[1] is the ground truth
    xy = [None if a is None else a[z] for a in arrays]
    xz = [None if a is None else a[:, y] for a in arrays]
    return [(f"xy z={z}: ", xy), (f"xz y={y}: ", xz)]


def _subsample(shape: tuple[int, ...]) -> tuple[slice, slice]:
    step = _display_step(shape)
    return (slice(None, None, step), slice(None, None, step))


def _framed(prefix: str, image, middle: list[Panel], uncertainty, sub, label: str) -> list[Panel]:
    """The image panel (when there is an image), ``middle``, and the uncertainty panel (when there
    is one): the frame both figure kinds share."""
    panels: list[Panel] = []
    if image is not None:
        panels.append((prefix + "image", display_image(image[sub]), {"cmap": "gray"}))
    panels += middle
    if uncertainty is not None:
        panels.append((prefix + label, uncertainty[sub], {"cmap": "magma"}))
    return panels


def _semantic_row(prefix: str, image, gt, pred, uncertainty, num_classes: int) -> list[Panel]:
    sub = _subsample(gt.shape)
    classes = {"cmap": "viridis", "vmin": 0, "vmax": max(num_classes - 1, 1), "interpolation": "nearest"}
    middle: list[Panel] = [
        (prefix + "ground truth", gt[sub], classes),
        (prefix + "prediction", pred[sub], classes),
        (
            prefix + "errors: FP magenta, FN green",
            error_map(pred[sub], gt[sub]),
            {"interpolation": "nearest"},
        ),
    ]
    return _framed(prefix, image, middle, uncertainty, sub, "uncertainty")


def save_sample_figure(
    path: Path,
    title: str,
    image: np.ndarray | None,
    gt: np.ndarray,
    pred: np.ndarray,
    uncertainty: np.ndarray | None,
    num_classes: int,
) -> Path:
    """Segmentation: image | ground truth | prediction | error map | uncertainty, side by side;
    for volumes one row for the central xy slice and one for the central xz slice."""
    rows = [
        _semantic_row(prefix, *views, num_classes)
        for prefix, views in _views([image, gt, pred, uncertainty], gt.ndim)
    ]
    return save_panels(path, title, rows, colorbars=("uncertainty",))


def _regression_row(prefix: str, image, gt, pred, uncertainty) -> list[Panel]:
    sub = _subsample(gt.shape)
    gt, pred = gt[sub], pred[sub]
    lo, hi = np.percentile(gt, [0.5, 99.5])
    values = {"cmap": "viridis", "vmin": lo, "vmax": hi}
    error = pred.astype(np.float32) - gt
    limit = float(np.percentile(np.abs(error), 99.5)) or 1.0
    middle: list[Panel] = [
        (prefix + "ground truth", gt, values),
        (prefix + "prediction", pred, values),
        (prefix + "error: prediction - truth", error, {"cmap": "RdBu_r", "vmin": -limit, "vmax": limit}),
    ]
    return _framed(prefix, image, middle, uncertainty, sub, "uncertainty (std)")


def save_regression_figure(
    path: Path,
    title: str,
    image: np.ndarray | None,
    gt: np.ndarray,
    pred: np.ndarray,
    uncertainty: np.ndarray | None,
) -> Path:
    """Regression: image | ground truth | prediction (same scale) | signed error | uncertainty; for
    volumes the central xy and xz slices."""
    rows = [
        _regression_row(prefix, *views) for prefix, views in _views([image, gt, pred, uncertainty], gt.ndim)
    ]
    return save_panels(
        path, title, rows, colorbars=("ground truth", "error: prediction - truth", "uncertainty (std)")
    )


def save_boxplot(
    path: Path, values: Sequence[float], label: str, limits: tuple[float, float] = (-0.02, 1.02)
) -> Path:
    """Box plot with the individual per-image values drawn on top."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(3.5, 4))
    ax.boxplot([list(values)], tick_labels=[label], widths=0.5)
    jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(values))
    ax.scatter(1 + jitter, values, s=12, alpha=0.6, color="tab:blue")
    ax.set_ylim(*limits)
    ax.set_ylabel(label)
    ax.set_title(f"per-image {label} (n={len(values)})", fontsize=10)
    return save_figure(fig, path)
