"""Online augmentation beyond flips and 90-degree rotations, 2D and 3D, seeded per sample.

Geometric transforms (``rotate``, ``zoom``, ``shift``) are one in-plane affine map applied to image and
ground truth together: the image with linear interpolation, class maps and label images with nearest
neighbour so their values stay exact (regression targets, float, linearly like the image); what comes
from outside the image is 0 in both. Intensity
transforms (``contrast``, ``brightness``, ``gamma``, ``gaussian_noise``, ``poisson_noise``, ``blur``)
change the image only. Each is applied with probability :data:`PROBABILITY` and draws its strength
from the range in :data:`RANGES`. Images are the normalized ``([Z,] Y, X, C)`` float32 arrays of
training (about 0..1), targets ``([Z,] Y, X)`` or ``([Z,] Y, X, T)``.

scipy.ndimage rather than torchvision.transforms.v2: the same code serves 2D and 3D volumes and
numpy arrays of any channel count, and the ground truth gets exact nearest-neighbour values.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PROBABILITY = 0.5
RANGES: dict[str, tuple[float, float]] = {
    "rotate": (-30.0, 30.0),  # degrees, in-plane
    "zoom": (0.8, 1.25),  # scale factor
    "shift": (-0.1, 0.1),  # fraction of the image side
    "contrast": (0.75, 1.25),  # factor around the mean
    "brightness": (-0.1, 0.1),  # added
    "gamma": (0.7, 1.5),  # exponent on the image scaled to 0..1
    "gaussian_noise": (0.0, 0.05),  # standard deviation
    "poisson_noise": (20.0, 200.0),  # photons at intensity 1
    "blur": (0.5, 1.5),  # Gaussian sigma in pixels, in-plane
}
GEOMETRIC = ("rotate", "zoom", "shift")
INTENSITY = ("contrast", "brightness", "gamma", "gaussian_noise", "poisson_noise", "blur")


def _affine(
    rng: np.random.Generator, names: tuple[str, ...], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray] | None:
    """The in-plane (Y, X) matrix and offset mapping output to input coordinates, or None when no
    geometric transform was drawn."""
    drawn = [n for n in GEOMETRIC if n in names and rng.random() < PROBABILITY]
    if not drawn:
        return None
    angle = np.deg2rad(rng.uniform(*RANGES["rotate"])) if "rotate" in drawn else 0.0
    scale = rng.uniform(*RANGES["zoom"]) if "zoom" in drawn else 1.0
    shift = rng.uniform(*RANGES["shift"], size=2) * np.array(shape) if "shift" in drawn else np.zeros(2)
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, -s], [s, c]]) / scale
    centre = (np.array(shape) - 1) / 2
    offset = centre - matrix @ (centre + shift)
    return matrix, offset


def _warp(array: np.ndarray, matrix: np.ndarray, offset: np.ndarray, y: int, order: int) -> np.ndarray:
    """Apply the in-plane map to every (Y, X) plane of ``array`` (axes ``y`` and ``y + 1``)."""
    moved = np.moveaxis(array, (y, y + 1), (0, 1))
    flat = moved.reshape(moved.shape[0], moved.shape[1], -1)
    out = np.empty_like(flat)
    for i in range(flat.shape[-1]):
        # zeros outside for both: reflecting would mirror objects into the target (one label twice)
        out[..., i] = ndimage.affine_transform(flat[..., i], matrix, offset, order=order, mode="constant")
    return np.moveaxis(out.reshape(moved.shape), (0, 1), (y, y + 1))


def _intensity(image: np.ndarray, names: tuple[str, ...], rng: np.random.Generator, y: int) -> np.ndarray:
    image = image.astype(np.float32, copy=True)
    for name in INTENSITY:
        if name not in names or rng.random() >= PROBABILITY:
            continue
        low, high = RANGES[name]
        value = rng.uniform(low, high)
        if name == "contrast":
            mean = image.mean()
            image = (image - mean) * value + mean
        elif name == "brightness":
            image = image + value
        elif name == "gamma":
            lo, hi = float(image.min()), float(image.max())
            span = max(hi - lo, 1e-6)
            image = ((image - lo) / span) ** value * span + lo
        elif name == "gaussian_noise":
            image = image + rng.normal(0.0, value, image.shape).astype(np.float32)
        elif name == "poisson_noise":
            counts = rng.poisson(np.clip(image, 0, None) * value)
            image = (counts / value).astype(np.float32) + np.minimum(image, 0)
        elif name == "blur":
            sigma = [0.0] * image.ndim
            sigma[y] = sigma[y + 1] = value
            image = ndimage.gaussian_filter(image, sigma)
    return image.astype(np.float32, copy=False)


def augment_more(
    image: np.ndarray,
    target: np.ndarray | None,
    names: tuple[str, ...],
    rng: np.random.Generator,
    y: int | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply the drawn geometric transforms to image and target alike, then the intensity ones to the
    image. ``y`` is the image's Y axis (default: channels-last ``([Z,] Y, X, C)``); the target shares
    the image's spatial axes. Class maps and label images (integer targets) keep their exact values."""
    y = image.ndim - 3 if y is None else y
    affine = _affine(rng, names, (image.shape[y], image.shape[y + 1]))
    if affine is not None:
        image = _warp(image, *affine, y, order=1)
        if target is not None:
            exact = not np.issubdtype(target.dtype, np.floating)
            target = _warp(target, *affine, y, order=0 if exact else 1)
    return _intensity(image, names, rng, y), target
