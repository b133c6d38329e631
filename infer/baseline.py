"""Classical baseline: Otsu's threshold of the raw image, scored like a model's prediction.

Answers the first question a biologist should ask of a trained network: does it beat a threshold?
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from idl.infer.axes import read_yxc
from idl.infer.io import read_image
from idl.infer.labels import semantic_target
from idl.infer.metrics import confusion_matrix, jaccard
from idl.infer.project import Pair


def otsu_mask(image: np.ndarray) -> np.ndarray:
    """Foreground where the (first channel of the) image is above its Otsu threshold."""
    from skimage.filters import threshold_otsu

    plane = image[..., 0].astype(np.float32)
    return (plane > threshold_otsu(plane)).astype(np.uint8)


def otsu_jaccard(pairs: Sequence[Pair], axes: str | None = None) -> float:
    """Jaccard over all pixels of Otsu masks of the raw images against binary ground truth."""
    total = np.zeros((2, 2), np.int64)
    for pair in pairs:
        if pair.groundtruth is None:
            continue
        image = read_yxc(pair.image, axes)[0]
        gt = semantic_target(read_image(pair.groundtruth), 2, str(pair.groundtruth))
        total += confusion_matrix(otsu_mask(image), gt, 2)
    return jaccard(total)
