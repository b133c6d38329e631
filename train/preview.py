"""``--save-augmentations``: a PNG grid of augmented training samples next to their ground truth, so a
user can see what the network will be shown before a long run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from idl.infer.evaluate.plots import _pyplot, display_image, save_figure
from idl.models.maskrcnn import labels_from_targets

PREVIEW_NAME = "augmentations.png"


def _middle(array: np.ndarray, dims: int) -> np.ndarray:
    """A 2D view of ``dims`` spatial axes (last): the central plane of a volume."""
    return array[array.shape[0] // 2] if dims == 3 else array


def _target_panel(target: Any, dims: int) -> tuple[np.ndarray | str, str]:
    """What to draw for one sample's ground truth, and its title."""
    if isinstance(target, dict):  # Mask R-CNN: one mask per object -> a label image
        return labels_from_targets(target), f"{len(target['masks'])} objects"
    value = target.numpy() if isinstance(target, torch.Tensor) else np.asarray(target)
    if value.ndim == 0:  # classification
        return f"class {int(value)}", "label"
    if value.ndim > dims:  # regression: (T, *spatial), the first target channel
        value = value[0]
    return _middle(value, dims), "ground truth"


def save_augmentation_grid(dataset: Any, path: Path, samples: int = 8) -> Path:
    """Draw the first ``samples`` items of a training dataset (as the first epoch draws them): the
    image's first channel (central plane for volumes) above its ground truth."""
    plt = _pyplot()
    n = min(samples, len(dataset))
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for i in range(n):
        image, target = dataset[i]
        dims = image.ndim - 1  # (C, *spatial)
        axes[0, i].imshow(display_image(_middle(image.numpy()[0], dims)), cmap="gray")
        axes[0, i].set_title(f"sample {i}", fontsize=8)
        shown, title = _target_panel(target, dims)
        if isinstance(shown, str):
            axes[1, i].text(0.5, 0.5, shown, ha="center", va="center", fontsize=10)
        else:
            axes[1, i].imshow(shown, cmap="nipy_spectral" if shown.dtype.kind in "iu" else "magma")
        axes[1, i].set_title(title, fontsize=8)
        for ax in axes[:, i]:
            ax.axis("off")
    fig.suptitle("augmented training samples (first epoch)", fontsize=10)
    return save_figure(fig, path)
