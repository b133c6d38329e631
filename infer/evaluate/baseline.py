"""Classical baselines, scored like a model's prediction: Otsu's threshold of the raw image
(segmentation), the raw intensity itself (regression).

Answers the first question a biologist should ask of a trained network: does it beat a threshold?
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from idl.infer.core.project import Pair
from idl.infer.evaluate.metrics import confusion_matrix, jaccard, pearson
from idl.infer.io.images import read_channels_last, read_image
from idl.infer.post.labels import semantic_target


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Foreground where the (first channel of the) image or volume is above its Otsu threshold."""
    from skimage.filters import threshold_otsu

    plane = image[..., 0].astype(np.float32)
    return (plane > threshold_otsu(plane)).astype(np.uint8)


def otsu_jaccard(pairs: Sequence[Pair], axes: str | None = None, dims: int = 2) -> float:
    """Jaccard over all pixels of Otsu masks of the raw images against binary ground truth."""
    total = np.zeros((2, 2), np.int64)
    for pair in pairs:
        if pair.groundtruth is None:
            continue
        image = read_channels_last(pair.image, axes, "zyx"[-dims:])[0]
        gt = semantic_target(read_image(pair.groundtruth), 2, str(pair.groundtruth), dims)
        total += confusion_matrix(otsu_mask(image), gt, 2)
    return jaccard(total)


def intensity_pearson(pairs: Sequence[Pair], axes: str | None = None) -> float:
    """Regression baseline: median over images of |Pearson r| between the raw input (first channel)
    and the target. Pearson is invariant to linear maps, so this is what the best per-image linear
    fit of intensity to target would score."""
    scores = [
        abs(
            pearson(
                read_channels_last(p.image, axes)[0][..., 0],
                read_channels_last(p.groundtruth, None)[0][..., 0],
            )
        )
        for p in pairs
        if p.groundtruth is not None
    ]
    return float(np.median(scores)) if scores else float("nan")


def otsu_instance_scores(pairs: Sequence[Pair], axes: str | None = None) -> dict[str, float]:
    """Instance baseline: connected components of Otsu masks of the raw images, scored like the
    models (ap50, ap50_95 from the match counts of all images)."""
    from idl.infer.evaluate.instance_metrics import MatchCounts, counts_per_threshold, scores_from_counts
    from idl.infer.post.instance_labels import binary_to_labels

    totals = [MatchCounts(0, 0, 0)] * 10
    for pair in pairs:
        if pair.groundtruth is None:
            continue
        image = read_channels_last(pair.image, axes, "yx")[0]
        counts = counts_per_threshold(read_image(pair.groundtruth), binary_to_labels(otsu_mask(image)))
        totals = [a + b for a, b in zip(totals, counts, strict=True)]
    return scores_from_counts(totals)


POLARITIES = ("bright", "dark")


def otsu_polarities(image: np.ndarray) -> dict[str, np.ndarray]:
    """Otsu masks of a channels-last image's first channel: the objects brighter than the
    threshold, and darker."""
    from skimage.filters import threshold_otsu

    plane = image[..., 0].astype(np.float32)
    above = plane > threshold_otsu(plane)
    return {"bright": above.astype(np.uint8), "dark": (~above).astype(np.uint8)}


def confusion_score(num_classes: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """The tally of a mask against its truth that adds up over images: the confusion matrix."""
    return lambda mask, truth: confusion_matrix(mask, truth, num_classes)


class OtsuBaseline:
    """Otsu's threshold of every test image as a prediction, scored as the model's predictions are,
    for the evaluation report's "does it beat a threshold?".

    Both polarities are scored (objects brighter or darker than the threshold) and the better one
    over the whole set is kept, so the baseline is what the best global threshold per image does,
    told the polarity that the model had to learn. ``tally(mask, truth)`` makes one image's numbers
    that add up over images (a confusion matrix, match counts)."""

    def __init__(self, tally: Callable[[np.ndarray, np.ndarray], Any]) -> None:
        self.tally = tally
        self.per_image: list[dict[str, Any] | None] = []
        self.name = "Otsu threshold"

    def add(self, image: np.ndarray | None, truth: np.ndarray, valid: np.ndarray | None = None) -> None:
        """One test image (channels last; None when not given) and its truth, at the ``valid``
        pixels the model was scored on."""
        if image is None or image.shape[:-1] != truth.shape:
            self.per_image.append(None)
            return
        masks = otsu_polarities(image)
        if valid is not None:
            masks, truth = {k: m[valid] for k, m in masks.items()}, truth[valid]
        self.per_image.append({k: self.tally(m, truth) for k, m in masks.items()})

    def finish(
        self, rows: list[dict], score: str, scores: Callable[[Any], dict[str, float]]
    ) -> dict[str, float]:
        """The summary's ``baseline_<name>`` scores of the better polarity, each row given its
        ``baseline_<score>``; {} unless every image could be thresholded."""
        if not self.per_image or any(p is None for p in self.per_image):
            return {}
        tallies: list[dict[str, Any]] = self.per_image  # type: ignore[assignment]
        totals = {k: sum(p[k] for p in tallies) for k in POLARITIES}
        best = max(POLARITIES, key=lambda k: scores(totals[k])[score])
        self.name = f"Otsu threshold ({best} objects)"
        for row, tally in zip(rows, tallies, strict=True):
            row[f"baseline_{score}"] = scores(tally[best])[score]
        return {f"baseline_{k}": v for k, v in scores(totals[best]).items()}
