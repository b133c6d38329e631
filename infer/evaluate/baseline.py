"""Classical baselines, scored like a model's prediction: Otsu's threshold of the raw image
(segmentation), the raw intensity itself (regression).

Answers the first question a biologist should ask of a trained network: does it beat a threshold?
"""

from __future__ import annotations

from collections.abc import Sequence

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
