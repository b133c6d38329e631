"""Online augmentation, 2D and 3D, seeded per sample, applied jointly to image and ground truth.

Every augmentation has a :class:`Setting`: the probability it is applied to a sample and the range its
strength is drawn from (uniformly). :data:`DEFAULTS` holds ours; a config file may change either per
augmentation (:func:`resolve`).

- Geometric, image and ground truth together: ``flip`` (both in-plane axes, each with its probability),
  ``hflip`` (X), ``vflip`` (Y), ``rot90`` (a quarter, half or three-quarter turn), and ``rotate``,
  ``zoom``, ``shift``, ``elastic``, which are composed into one in-plane coordinate map and resampled
  once. The image is interpolated linearly; class maps and label images (integer targets) by nearest
  neighbour so their values stay exact; regression targets (float) linearly, like the image. A training
  patch given with its whole image (``window``) is resampled from the pixels around it, so a turned or
  zoomed-out patch shows its real surroundings; only what lies outside the image is 0, in both (black
  corners cut into every turned patch would teach the network an edge that no real image has, and
  shift the batch-norm statistics away from those of real images).
- Intensity, the image only: ``threshold_background``, ``resample`` (down and up again), ``blur``,
  ``contrast``, ``brightness``, ``gamma``, ``gaussian_noise``, ``poisson_noise``, ``feature_scaling``
  (min-max to 0..1) and ``std_normalization`` (zero mean, unit variance). The ground truth is never
  changed by them: for segmentation it must stay exact, and a regression target (another stain, a clean
  image) is the quantity to learn, not a view of the input to be perturbed with it.

Volumes are transformed plane by plane with one in-plane map (Z is often sampled differently and the
depth of a training patch is small). Images are the normalized ``([Z,] Y, X, C)`` float32 arrays of
training (about 0..1) unless an axis index says otherwise, targets ``([Z,] Y, X)`` or
``([Z,] Y, X, T)``.

scipy.ndimage rather than torchvision.transforms.v2: the same code serves 2D images and 3D volumes with
any channel count, and the ground truth gets exact nearest-neighbour values.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from idl.infer.core.errors import did_you_mean


@dataclass(frozen=True)
class Setting:
    """How often an augmentation is applied to a sample, and the range its strength is drawn from
    (``None`` for those without a strength, e.g. flips)."""

    probability: float
    range: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"probability": self.probability}
        if self.range is not None:
            data["range"] = list(self.range)
        return data


Augmentation = Mapping[str, Setting]
"""The augmentations of a run, by name, in the order of :data:`DEFAULTS`."""

DEFAULTS: dict[str, Setting] = {
    "flip": Setting(0.5),  # each in-plane axis
    "hflip": Setting(0.5),
    "vflip": Setting(0.5),
    "rot90": Setting(0.75),  # 1, 2 or 3 quarter turns: with 0.75 every orientation is equally likely
    "rotate": Setting(0.5, (-30.0, 30.0)),  # degrees, in-plane
    "zoom": Setting(0.5, (0.8, 1.25)),  # magnification
    "shift": Setting(0.5, (-0.1, 0.1)),  # fraction of the image side
    "elastic": Setting(0.5, (1.0, 4.0)),  # displacement (standard deviation, pixels) of a smooth field
    "threshold_background": Setting(0.5),  # pixels below the image mean set to the minimum
    "resample": Setting(0.5, (1.5, 3.0)),  # down-sampling factor, then back up to the original size
    "blur": Setting(0.5, (0.5, 1.5)),  # Gaussian sigma in pixels, in-plane
    "contrast": Setting(0.5, (0.75, 1.25)),  # factor around the mean
    "brightness": Setting(0.5, (0.8, 1.2)),  # factor
    "gamma": Setting(0.5, (0.7, 1.5)),  # exponent on the image scaled to 0..1
    "gaussian_noise": Setting(0.5, (0.0, 0.05)),  # standard deviation
    "poisson_noise": Setting(0.5, (20.0, 200.0)),  # photons at intensity 1 (fewer: noisier)
    "feature_scaling": Setting(0.5),  # min-max to 0..1
    "std_normalization": Setting(0.5),  # zero mean, unit variance
}
NAMES = tuple(DEFAULTS)
RIGHT_ANGLES = ("flip", "hflip", "vflip", "rot90")
GEOMETRIC = ("rotate", "zoom", "shift", "elastic")
INTENSITY = NAMES[len(RIGHT_ANGLES) + len(GEOMETRIC) :]
# valid strengths: (lowest, highest, what the number means)
BOUNDS: dict[str, tuple[float, float, str]] = {
    "rotate": (-180.0, 180.0, "degrees"),
    "zoom": (0.1, 10.0, "a magnification"),
    "shift": (-0.5, 0.5, "a fraction of the image side"),
    "elastic": (0.0, 50.0, "pixels"),
    "resample": (1.0, 16.0, "a down-sampling factor"),
    "blur": (0.0, 20.0, "a sigma in pixels"),
    "contrast": (0.0, 10.0, "a factor"),
    "brightness": (0.0, 10.0, "a factor"),
    "gamma": (0.05, 20.0, "an exponent"),
    "gaussian_noise": (0.0, 10.0, "a standard deviation"),
    "poisson_noise": (0.1, 1e6, "photons at intensity 1"),
}
ELASTIC_SPACING = 32  # pixels between the control points of the elastic displacement field


def _setting(name: str, given: Mapping[str, Any]) -> Setting:
    """One augmentation's setting: ours, with the given ``probability`` and ``range`` checked."""
    default = DEFAULTS[name]
    unknown = [k for k in given if k not in ("probability", "range")]
    if unknown:
        raise ValueError(f"augmentation '{name}': unknown setting '{unknown[0]}'; valid: probability, range")
    probability = given.get("probability", default.probability)
    if (
        isinstance(probability, bool)
        or not isinstance(probability, (int, float))
        or not 0 <= probability <= 1
    ):
        raise ValueError(
            f"augmentation '{name}': probability must be a number in [0, 1], got {probability!r}"
        )
    value = given.get("range")
    if value is None:
        return Setting(float(probability), default.range)
    if default.range is None:
        raise ValueError(f"augmentation '{name}' has no strength to draw; give only its probability")
    low, high, meaning = BOUNDS[name]
    ok = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        and low <= value[0] <= value[1] <= high
    )
    if not ok:
        raise ValueError(
            f"augmentation '{name}': range must be [lowest, highest] with {low:g} <= lowest <= highest "
            f"<= {high:g} ({meaning}), got {value!r}"
        )
    return Setting(float(probability), (float(value[0]), float(value[1])))


def resolve(
    names: Iterable[str], settings: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, Setting]:
    """The augmentations of a run: the named ones, each with its settings (ours where not given).
    Raises ``ValueError`` naming the valid names for an unknown one."""
    names = tuple(names)
    settings = settings or {}
    for name in (*names, *settings):
        if name not in DEFAULTS:
            raise ValueError(
                f"unknown augmentation '{name}'.{did_you_mean(name, NAMES)} Valid: {', '.join(NAMES)}"
            )
    extra = [n for n in settings if n not in names]
    if extra:
        raise ValueError(
            f"settings for augmentation '{extra[0]}', which is not switched on; add it to augment"
        )
    return {n: _setting(n, settings.get(n, {})) for n in NAMES if n in names}


def _draw(rng: np.random.Generator, setting: Setting) -> float | None:
    """The strength for this sample, or None when the augmentation is not applied to it."""
    if rng.random() >= setting.probability:
        return None
    return float(rng.uniform(*setting.range)) if setting.range is not None else 1.0


def _right_angles(image, target, augmentation: Augmentation, rng, y: int):
    """Flips and quarter turns: exact, so applied as array views before any resampling."""
    x = y + 1

    def both(f, *args, **kwargs):
        return f(image, *args, **kwargs), (None if target is None else f(target, *args, **kwargs))

    for name, axes in (("flip", (y, x)), ("vflip", (y,)), ("hflip", (x,))):
        if name in augmentation:
            for axis in axes:
                if rng.random() < augmentation[name].probability:
                    image, target = both(np.flip, axis)
    if "rot90" in augmentation and image.shape[y] == image.shape[x]:
        if rng.random() < augmentation["rot90"].probability:
            image, target = both(np.rot90, int(rng.integers(1, 4)), axes=(y, x))
    return image, target


def _elastic_field(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """A smooth random (2, Y, X) displacement field: control points every :data:`ELASTIC_SPACING`
    pixels with normal displacements of standard deviation ``strength``, interpolated cubically."""
    grid = tuple(max(2, math.ceil(n / ELASTIC_SPACING) + 1) for n in shape)
    coarse = rng.normal(0.0, strength, size=(2, *grid))
    return np.stack([resize(c, shape, order=3, mode="edge", anti_aliasing=False) for c in coarse])


def _coordinates(
    rng: np.random.Generator, augmentation: Augmentation, shape: tuple[int, int]
) -> np.ndarray | None:
    """Where each output pixel of a plane is read from: a (2, Y, X) array, or None when no geometric
    transform was drawn for this sample."""
    drawn = [n for n in GEOMETRIC if n in augmentation and rng.random() < augmentation[n].probability]
    if not drawn:
        return None

    def strength(name: str, default: float) -> float:
        return float(rng.uniform(*augmentation[name].range)) if name in drawn else default

    angle = np.deg2rad(strength("rotate", 0.0))  # counter-clockwise as displayed, as scipy.ndimage.rotate
    scale = strength("zoom", 1.0)
    shift = np.array([strength("shift", 0.0) * n for n in shape])  # each axis drawn on its own
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.array([[c, s], [-s, c]]) / scale
    centre = (np.array(shape) - 1) / 2
    grid = np.indices(shape, dtype=np.float64).reshape(2, -1)
    source = matrix @ (grid - centre[:, None] - shift[:, None]) + centre[:, None]
    source = source.reshape(2, *shape)
    if "elastic" in drawn:
        source += _elastic_field(rng, shape, strength("elastic", 0.0))
    return source


def _warp_from(array: np.ndarray, source: np.ndarray, y: int, order: int) -> np.ndarray:
    """Resample the planes of a whole image at ``source`` (plane coordinates), reading only the block
    the coordinates reach, so the cost follows the patch and not the image. The block is never empty:
    the patch lies inside the image and a shift moves its centre by at most half its side."""
    planes = array.shape[y : y + 2]
    low = [max(0, int(np.floor(source[a].min())) - 1) for a in range(2)]
    high = [min(n, int(np.ceil(source[a].max())) + 2) for a, n in zip(range(2), planes, strict=True)]
    block = (slice(None),) * y + (slice(low[0], high[0]), slice(low[1], high[1]))
    return _warp(array[block], source - np.array(low, np.float64)[:, None, None], y, order)


def _warp(array: np.ndarray, source: np.ndarray, y: int, order: int) -> np.ndarray:
    """Resample every (Y, X) plane of ``array`` (axes ``y`` and ``y + 1``) at ``source``; the planes
    out have the shape of ``source``'s grid."""
    moved = np.moveaxis(array, (y, y + 1), (0, 1))
    flat = moved.reshape(moved.shape[0], moved.shape[1], -1)
    out = np.empty((*source.shape[1:], flat.shape[-1]), flat.dtype)
    for i in range(flat.shape[-1]):
        # zeros outside for both: reflecting would mirror objects into the target (one label twice)
        out[..., i] = ndimage.map_coordinates(flat[..., i], source, order=order, mode="constant")
    return np.moveaxis(out.reshape(*source.shape[1:], *moved.shape[2:]), (0, 1), (y, y + 1))


def _resample(image: np.ndarray, factor: float, y: int) -> np.ndarray:
    """Down-sample the planes by ``factor`` (with anti-aliasing) and back up: a blurrier, blockier view
    of the same field, as from a lower-resolution microscope."""
    small = list(image.shape)
    for axis in (y, y + 1):
        small[axis] = max(1, round(image.shape[axis] / factor))
    down = resize(image, small, order=1, anti_aliasing=True, preserve_range=True)
    return resize(down, image.shape, order=1, anti_aliasing=False, preserve_range=True)


def _intensity(image: np.ndarray, augmentation: Augmentation, rng: np.random.Generator, y: int) -> np.ndarray:
    image = image.astype(np.float32, copy=True)
    for name in INTENSITY:
        if name not in augmentation:
            continue
        value = _draw(rng, augmentation[name])
        if value is None:
            continue
        if name == "threshold_background":
            image = np.where(image < image.mean(), image.min(), image)
        elif name == "resample":
            image = _resample(image, value, y)
        elif name == "blur":
            sigma = [0.0] * image.ndim
            sigma[y] = sigma[y + 1] = value
            image = ndimage.gaussian_filter(image, sigma)
        elif name == "contrast":
            mean = image.mean()
            image = (image - mean) * value + mean
        elif name == "brightness":
            image = image * value
        elif name == "gamma":
            lo, hi = float(image.min()), float(image.max())
            span = max(hi - lo, 1e-6)
            image = ((image - lo) / span) ** value * span + lo
        elif name == "gaussian_noise":
            image = image + rng.normal(0.0, value, image.shape).astype(np.float32)
        elif name == "poisson_noise":
            counts = rng.poisson(np.clip(image, 0, None) * value)
            image = (counts / value).astype(np.float32) + np.minimum(image, 0)
        elif name == "feature_scaling":
            lo, hi = float(image.min()), float(image.max())
            image = (image - lo) / max(hi - lo, 1e-6)
        elif name == "std_normalization":
            image = (image - image.mean()) / max(float(image.std()), 1e-6)
    return image.astype(np.float32, copy=False)


def augment_pair(
    image: np.ndarray,
    target: np.ndarray | None,
    augmentation: Augmentation,
    rng: np.random.Generator,
    y: int | None = None,
    window: tuple[slice, ...] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Augment one sample: the drawn geometric transforms (one resampling), then flips and quarter
    turns, for image and target alike; then the intensity transforms, for the image only.

    ``y`` is the image's Y axis (default: channels-last ``([Z,] Y, X, C)``; X follows it); the target
    shares the image's leading spatial axes, or is ``None`` for image-level labels. Class maps and label
    images (integer targets) keep their exact values. With ``window`` (slices of the leading spatial
    axes, ending with Y and X), image and target are a whole image and the sample is the patch in that
    window: the geometric transforms turn and scale it about its centre and read what comes into view
    from the image around it."""
    y = image.ndim - 3 if y is None else y
    if window is not None:
        leading = tuple(window[:y])
        image = image[leading]
        target = None if target is None else target[leading]
        plane = tuple(window[y : y + 2])
        shape = tuple(s.stop - s.start for s in plane)
    else:
        shape = (image.shape[y], image.shape[y + 1])
    source = _coordinates(rng, augmentation, shape)
    if source is None and window is not None:
        inside = (slice(None),) * y + plane
        image, target = image[inside], None if target is None else target[inside]
    elif source is not None:
        warp = _warp
        if window is not None:
            source = source + np.array([s.start for s in plane], np.float64)[:, None, None]
            warp = _warp_from
        image = warp(image, source, y, order=1)
        if target is not None:
            exact = not np.issubdtype(target.dtype, np.floating)
            target = warp(target, source, y, order=0 if exact else 1)
    image, target = _right_angles(image, target, augmentation, rng, y)
    if any(n in augmentation for n in INTENSITY):
        image = _intensity(image, augmentation, rng, y)
    return image, target
