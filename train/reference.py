"""What a network must beat on its own validation data: the trivial answer or the classical one.

A run whose validation score has not left this reference where its budget is checked
(:mod:`idl.train.budget`) has learned nothing a threshold would not give, and is restarted. Each
function scores, on the validation images and with the task's own validation measure, the best of
the answers that need no training:

- binary segmentation: Otsu's threshold of each image (bright or dark objects, whichever scores
  better) and "everything is foreground";
- multi-class segmentation: the most common class everywhere;
- regression: the input itself, up to a linear map (its Pearson r with the target, sign-free);
- classification: the most common class for every image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from idl.infer.evaluate.baseline import otsu_mask
from idl.infer.evaluate.metrics import confusion_matrix, jaccard, pearson


@dataclass(frozen=True)
class Reference:
    """The best validation score of an answer without training, and which answer it is."""

    name: str
    score: float


def binary_segmentation(images: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Reference:
    """Jaccard over all validation pixels of Otsu's mask of each image's first channel (bright or
    dark objects, the better), or of a mask of all foreground, whichever is higher."""
    # ties go to the simplest answer
    answers = {"all foreground": 2, "Otsu threshold, bright objects": 0, "Otsu threshold, dark objects": 1}
    confusion = np.zeros((3, 2, 2), np.int64)
    for image, target in zip(images, targets, strict=True):
        flat = np.ptp(image[..., 0]) == 0  # no threshold to find
        bright = np.zeros(image.shape[:-1], bool) if flat else otsu_mask(image).astype(bool)
        truth = (target > 0).astype(np.uint8)
        for i, mask in enumerate((bright, ~bright, np.ones_like(bright))):
            confusion[i] += confusion_matrix(mask.astype(np.uint8), truth, 2)
    scores = {name: jaccard(confusion[i]) for name, i in answers.items()}
    best = max(scores, key=scores.__getitem__)
    return Reference(best, scores[best])


def majority_segmentation(targets: Sequence[np.ndarray], num_classes: int) -> Reference:
    """Mean foreground Jaccard of the most common validation class everywhere."""
    counts = sum(np.bincount(t.ravel(), minlength=num_classes)[:num_classes] for t in targets)
    common = int(np.argmax(counts))
    confusion = sum(
        confusion_matrix(np.full(t.shape, common, np.uint8), t.astype(np.uint8), num_classes) for t in targets
    )
    return Reference(f"class {common} everywhere", jaccard(confusion))


def regression(images: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> Reference:
    """Mean over images and target channels of |Pearson's r| between the input's first channel and
    the target (the input, up to a linear map)."""
    values = [
        abs(pearson(image[..., 0], target[..., t]))
        for image, target in zip(images, targets, strict=True)
        for t in range(target.shape[-1])
    ]
    return Reference("the input, linearly scaled", float(np.nanmean(values)) if values else 0.0)


def classification(labels: np.ndarray) -> Reference:
    """Accuracy of the most common validation class for every image."""
    counts = np.bincount(labels)
    return Reference(f"class {int(np.argmax(counts))} for every image", float(counts.max() / counts.sum()))
