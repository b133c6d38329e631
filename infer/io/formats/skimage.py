"""PNG (``.png``) and JPEG (``.jpg``, ``.jpeg``) through scikit-image: read whole, never written.

An RGBA PNG whose alpha is the same everywhere (fully opaque, as the Kaggle DSB2018 and InstantDL's
examples store them) is read as its colour channels. idl writes neither: a PNG holds only 8- or 16-bit
integers (probabilities and uncertainty are floats) and JPEG loses detail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from idl.infer.io.formats.registry import ImageFormat


def without_alpha(array: np.ndarray) -> np.ndarray | None:
    """The colour channels of an RGBA image ``(Y, X, 4)`` whose alpha is the same everywhere (fully
    opaque PNGs, as the Kaggle DSB2018 and InstantDL's examples store them), else ``None``: such an
    alpha channel holds no image content."""
    if array.ndim != 3 or array.shape[-1] != 4:
        return None
    alpha = array[..., 3]
    return array[..., :3] if alpha.min() == alpha.max() else None


def read_skimage(path: Path) -> np.ndarray:
    from skimage.io import imread

    return np.asarray(imread(path))


def read_png(path: Path) -> np.ndarray:
    array = read_skimage(path)
    opaque = without_alpha(array)
    return array if opaque is None else opaque


PNG = ImageFormat(name="png", suffixes=(".png",), description="PNG files", read=read_png)
JPEG = ImageFormat(name="jpeg", suffixes=(".jpg", ".jpeg"), description="JPEG files", read=read_skimage)
