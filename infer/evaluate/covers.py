"""Cover images of bioimage.io packages: a 2:1 PNG of the test input next to what the model makes of
it (a probability map, the objects' outlines, or a bar chart of class probabilities)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from idl.infer.evaluate.plots import _pyplot, display_image, save_figure


def probability_cover(image: np.ndarray, output: np.ndarray, path: Path) -> Path:
    """The (normalized) first input channel next to the last output channel (the foreground
    probability of a binary model); volumes by their central plane."""
    from skimage.io import imsave
    from skimage.transform import resize

    def tile(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        lo, hi = np.percentile(a, [1, 99.8])
        scaled = np.clip((a - lo) / (hi - lo + 1e-6), 0, 1)
        return resize(scaled, (256, 256), order=1, anti_aliasing=True)

    if output.ndim == 4:  # volumes: the central plane
        image, output = image[image.shape[0] // 2], output[:, output.shape[1] // 2]
    panel = np.concatenate([tile(image[..., 0]), tile(output[-1])], axis=1)
    imsave(path, (panel * 255).astype(np.uint8), check_contrast=False)
    return path


def labels_cover(image: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """The test image next to it with every object's outline in its own colour."""
    from skimage.io import imsave

    from idl.infer.evaluate.instance import outlines

    shown = display_image(image)
    if shown.ndim == 3:
        shown = shown.mean(axis=-1)
    grey = np.repeat(shown[..., None], 3, axis=-1)
    panel = np.concatenate([grey, outlines(np.rint(labels).astype(np.int64), image)], axis=1)
    imsave(path, (np.clip(panel, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    return path


def classes_cover(image: np.ndarray, probabilities: np.ndarray, names: Sequence[str], path: Path) -> Path:
    """The test image next to a bar chart of its class probabilities."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
    left.imshow(display_image(image), cmap="gray")
    left.axis("off")
    labels = list(names) or [f"class{i}" for i in range(len(probabilities))]
    right.barh(labels[::-1], probabilities[::-1], color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    return save_figure(fig, path)
