"""Synthetic fluorescence-nuclei images with exact masks, for the demo, tests and benchmarks.

Each image holds elliptical nuclei of varied size, orientation and brightness (some dim ones, and
touching pairs), with internal texture, optical blur, uneven illumination, Poisson shot noise and
Gaussian camera read noise, stored as 16-bit counts like a microscope would. Labels are rasterized
before blurring, so the ground truth is exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from idl.infer.io.images import write_tiff


@dataclass(frozen=True)
class NucleiSpec:
    """Appearance of the synthetic nuclei images."""

    size: int = 256
    objects: tuple[int, int] = (8, 22)
    radius: tuple[float, float] = (5.0, 14.0)
    touching_fraction: float = 0.35
    brightness: tuple[float, float] = (0.25, 1.0)
    blur: tuple[float, float] = (1.0, 2.2)
    background: tuple[float, float] = (0.05, 0.45)
    photons: float = 120.0
    read_noise: float = 4.0
    offset: float = 100.0


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth random field scaled to [0, 1] (uneven illumination, texture).

    Wide fields are drawn on a coarse grid and interpolated up: same look, a fraction of the cost.
    """
    factor = max(1, int(sigma // 4))
    coarse = tuple(-(-n // factor) for n in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(coarse), sigma / factor, mode="reflect")
    if factor > 1:
        field = ndimage.zoom(field, factor, order=1)[: shape[0], : shape[1]]
    field -= field.min()
    return field / (field.max() + 1e-12)


def _ellipse(
    labels: np.ndarray,
    center: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    taken: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Pixels of an ellipse, or ``None`` if it is empty or hits a labelled (or ``taken``) pixel."""
    from skimage.draw import ellipse

    rr, cc = ellipse(center[0], center[1], axes[0], axes[1], shape=labels.shape, rotation=angle)
    if rr.size == 0 or np.any(labels[rr, cc]):
        return None
    if taken is not None:
        width = labels.shape[1]
        if np.isin(rr * width + cc, taken[0] * width + taken[1]).any():
            return None
    return rr, cc


def synthetic_nuclei(
    rng: np.random.Generator, spec: NucleiSpec = NucleiSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image uint16, labels uint16)`` pair; labels are 0 for background and 1..N for nuclei."""
    shape = (spec.size, spec.size)
    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float64)
    target = int(rng.integers(spec.objects[0], spec.objects[1] + 1))
    texture = 0.75 + 0.5 * _smooth_field(rng, shape, 2.0)
    placed, attempts = 0, 0
    while placed < target and attempts < target * 40:
        attempts += 1
        axes = tuple(rng.uniform(*spec.radius, size=2))
        center = tuple(rng.uniform(axes[0], spec.size - axes[0], size=2))
        pair = rng.random() < spec.touching_fraction
        first = _ellipse(labels, center, axes, rng.uniform(0, np.pi))
        if first is None:
            continue
        shapes = [first]
        if pair:  # a second nucleus pressed against the first
            axes2 = tuple(rng.uniform(*spec.radius, size=2))
            direction = rng.uniform(0, 2 * np.pi)
            distance = (min(axes) + min(axes2)) * rng.uniform(0.95, 1.15)
            c2 = (center[0] + distance * np.sin(direction), center[1] + distance * np.cos(direction))
            second = _ellipse(labels, c2, axes2, rng.uniform(0, np.pi), taken=first)
            if second is not None:
                shapes.append(second)
        for rr, cc in shapes:
            placed += 1
            labels[rr, cc] = placed
            signal[rr, cc] = rng.uniform(*spec.brightness) * texture[rr, cc]
    return _acquire(rng, signal, spec), labels


def _acquire(rng: np.random.Generator, signal: np.ndarray, spec: NucleiSpec) -> np.ndarray:
    """Image a 2D fluorophore density as ``spec``'s microscope would: blur, uneven illumination,
    Poisson shot noise and Gaussian read noise, as uint16 counts."""
    shape = signal.shape
    blurred = ndimage.gaussian_filter(signal, rng.uniform(*spec.blur))
    illumination = rng.uniform(*spec.background) * (0.4 + 0.6 * _smooth_field(rng, shape, spec.size / 4))
    expected = (blurred + illumination) * spec.photons
    counts = rng.poisson(expected) + rng.normal(spec.offset, spec.read_noise, shape)
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def synthetic_rods(
    rng: np.random.Generator,
    angles: tuple[float, float] = (0.0, np.pi),
    spec: NucleiSpec = NucleiSpec(),
    objects: tuple[int, int] = (5, 9),
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image uint16, mask uint8)`` pair: rod-shaped cells (the foreground, mask 1) among round
    debris of the same brightness and texture (background, mask 0), as bacteria among dirt.

    Rods are 7-9 px wide and 28-40 px long, at an angle drawn from ``angles`` (radians; 0 lies along
    the x axis); debris discs have a radius of 5-8 px, so only the shape tells them
    apart. Training on one narrow range of ``angles`` and testing on all of them measures whether a
    model learned the shape or only the orientation it saw (what rotation augmentation is for).
    """
    shape = (spec.size, spec.size)
    labels = np.zeros(shape, np.uint8)  # 1 rod, 2 debris
    signal = np.zeros(shape, np.float64)
    texture = 0.75 + 0.5 * _smooth_field(rng, shape, 2.0)
    grown = np.zeros(shape, np.uint8)  # objects keep 3 px apart
    for value in (1, 2):
        target, placed = int(rng.integers(objects[0], objects[1] + 1)), 0
        for _ in range(target * 40):
            if placed == target:
                break
            if value == 1:
                axes, angle = (rng.uniform(3.5, 4.5), rng.uniform(14.0, 20.0)), rng.uniform(*angles)
            else:
                radius = rng.uniform(5.0, 8.0)
                axes, angle = (radius, radius * rng.uniform(0.9, 1.1)), rng.uniform(0, np.pi)
            margin = max(axes) + 2
            center = tuple(rng.uniform(margin, spec.size - margin, size=2))
            pixels = _ellipse(grown, center, axes, angle)
            if pixels is None:
                continue
            labels[pixels] = value
            grown = ndimage.binary_dilation(labels > 0, iterations=3).astype(np.uint8)
            signal[pixels] = rng.uniform(*spec.brightness) * texture[pixels]
            placed += 1
    return _acquire(rng, signal, spec), (labels == 1).astype(np.uint8)


def write_semantic_project(
    root: str | Path, n_train: int = 40, n_test: int = 10, seed: int = 0, spec: NucleiSpec = NucleiSpec()
) -> Path:
    """Write a project in idl's layout: ``{train,test}/{image,groundtruth}/nuclei_XXX.tif``.

    Ground truth is a binary mask (uint8, 1 = nucleus). Returns the project folder.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            image, labels = synthetic_nuclei(rng, spec)
            name = f"nuclei_{i:03d}.tif"
            write_tiff(root / split / "image" / name, image)
            write_tiff(root / split / "groundtruth" / name, (labels > 0).astype(np.uint8))
    return root


def write_instance_project(
    root: str | Path, n_train: int = 40, n_test: int = 10, seed: int = 0, spec: NucleiSpec = NucleiSpec()
) -> Path:
    """Like :func:`write_semantic_project`, with label images (uint16, one value per nucleus; a third
    of the nuclei touch a neighbour) as ground truth."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            image, labels = synthetic_nuclei(rng, spec)
            write_tiff(root / split / "image" / f"nuclei_{i:03d}.tif", image)
            write_tiff(root / split / "groundtruth" / f"nuclei_{i:03d}.tif", labels)
    return root


def synthetic_staining(
    rng: np.random.Generator, spec: NucleiSpec = NucleiSpec(), scale: float = 1000.0
) -> tuple[np.ndarray, np.ndarray]:
    """One in-silico staining pair: a label-free (brightfield-like) image and its fluorescence stain.

    Hidden nuclei shape both. The input shows them only as faint dark rims (the gradient of their
    density) on a textured, unevenly lit background with noise; the target is a smooth, nonlinear
    stain of the nuclei themselves (``scale * density ** 1.5``, float32), so a pixel's intensity
    alone barely predicts it (a low Pearson baseline) while the structure around it does.
    """
    _, labels = synthetic_nuclei(rng, spec)
    shape = labels.shape
    brightness = rng.uniform(0.4, 1.0, int(labels.max()) + 1)
    brightness[0] = 0.0
    density = ndimage.gaussian_filter(brightness[labels], 1.5)
    target = (scale * density**1.5).astype(np.float32)
    rims = ndimage.gaussian_gradient_magnitude(density, 2.0)
    background = 0.6 + 0.3 * _smooth_field(rng, shape, spec.size / 4) + 0.05 * _smooth_field(rng, shape, 3.0)
    signal = (background - 1.5 * rims + 0.08 * density) * 2000.0
    counts = signal + rng.normal(0.0, 25.0, shape)
    image = np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    return image, target


def write_regression_project(
    root: str | Path,
    n_train: int = 40,
    n_test: int = 10,
    seed: int = 0,
    spec: NucleiSpec = NucleiSpec(),
    scale: float = 1000.0,
) -> Path:
    """Write an in-silico staining project: ``{train,test}/{image,groundtruth}/stain_XXX.tif``, inputs
    uint16, targets float32 in arbitrary units (``scale``). Returns the project folder."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            image, target = synthetic_staining(rng, spec, scale)
            name = f"stain_{i:03d}.tif"
            write_tiff(root / split / "image" / name, image)
            write_tiff(root / split / "groundtruth" / name, target)
    return root


def synthetic_nuclei_3d(
    rng: np.random.Generator,
    shape: tuple[int, int, int] = (32, 96, 96),
    objects: tuple[int, int] = (6, 14),
    radius: tuple[float, float] = (4.0, 9.0),
    z_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One ``(volume uint16, labels uint16)`` pair of ellipsoidal nuclei, blurred and noisy.

    ``z_scale`` is the voxel length in z relative to in-plane (2 for 1 x 1 x 2 voxels): nuclei are
    that much flatter in voxels and the blur shorter along z, as in an anisotropic stack.
    """
    labels = np.zeros(shape, np.uint16)
    signal = np.zeros(shape, np.float64)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    target = int(rng.integers(objects[0], objects[1] + 1))
    placed = 0
    for _ in range(target * 30):
        if placed == target:
            break
        radii = rng.uniform(*radius, size=3)
        radii[0] /= z_scale
        center = [rng.uniform(r, n - r) if n > 2 * r else n / 2 for r, n in zip(radii, shape, strict=True)]
        inside = ((zz - center[0]) / radii[0]) ** 2 + ((yy - center[1]) / radii[1]) ** 2 + (
            (xx - center[2]) / radii[2]
        ) ** 2 <= 1.0
        if not inside.any() or labels[inside].any():
            continue
        placed += 1
        labels[inside] = placed
        signal[inside] = rng.uniform(0.3, 1.0)
    blur = rng.uniform(1.0, 1.8)
    blurred = ndimage.gaussian_filter(signal, (blur / z_scale, blur, blur))
    background = rng.uniform(0.05, 0.3) * (0.5 + 0.5 * _smooth_field(rng, shape[1:], shape[1] / 3))
    expected = (blurred + background[np.newaxis]) * 120.0
    counts = rng.poisson(expected) + rng.normal(100.0, 4.0, shape)
    return np.clip(np.round(counts), 0, 65535).astype(np.uint16), labels


def write_semantic_project_3d(
    root: str | Path,
    n_train: int = 12,
    n_test: int = 4,
    seed: int = 0,
    shape: tuple[int, int, int] = (32, 96, 96),
    z_scale: float = 1.0,
) -> Path:
    """A 3D project: ``{train,test}/{image,groundtruth}/volume_XXX.tif`` (ZYX uint16 volumes, uint8
    masks). Returns the project folder."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        for i in range(count):
            volume, labels = synthetic_nuclei_3d(rng, shape, z_scale=z_scale)
            name = f"volume_{i:03d}.tif"
            write_tiff(root / split / "image" / name, volume)
            write_tiff(root / split / "groundtruth" / name, (labels > 0).astype(np.uint8))
    return root


CELL_CLASSES = ("round", "elongated", "dividing")


def synthetic_cell(rng: np.random.Generator, kind: str, size: int = 32) -> np.ndarray:
    """One uint16 image of a single nucleus of class ``kind`` (see :data:`CELL_CLASSES`): round
    (axis ratio 1-1.4), elongated (1.3-2.5, so the two overlap a little) or dividing (two touching
    nuclei); random size, orientation, position, brightness, blur and noise."""
    shape = (size, size)
    labels = np.zeros(shape, np.uint16)
    scale = size / 32
    radius = rng.uniform(4.0, 6.0) * scale
    angle = rng.uniform(0, np.pi)
    center = np.array(shape) / 2 + rng.uniform(-3, 3, size=2) * scale
    if kind == "round":
        ratio = rng.uniform(1.0, 1.4)
        shapes = [(center, (radius * ratio, radius))]
    elif kind == "elongated":
        ratio = rng.uniform(1.3, 2.5)
        shapes = [(center, (radius * ratio, radius / np.sqrt(ratio)))]
    elif kind == "dividing":
        r = radius * 0.8
        offset = r * rng.uniform(0.9, 1.15) * np.array([np.sin(angle), np.cos(angle)])
        shapes = [(center - offset, (r, r * rng.uniform(0.8, 1.0))), (center + offset, (r, r))]
    else:
        raise ValueError(f"unknown cell class '{kind}'; use one of {', '.join(CELL_CLASSES)}")
    signal = np.zeros(shape, np.float64)
    texture = 0.75 + 0.5 * _smooth_field(rng, shape, 1.5)
    brightness = rng.uniform(0.4, 1.0)
    from skimage.draw import ellipse

    for c, axes in shapes:
        rr, cc = ellipse(c[0], c[1], axes[0], axes[1], shape=shape, rotation=angle)
        labels[rr, cc] = 1
        signal[rr, cc] = brightness * texture[rr, cc]
    blurred = ndimage.gaussian_filter(signal, rng.uniform(0.6, 1.4) * scale)
    expected = (blurred + rng.uniform(0.05, 0.3)) * 150.0
    counts = rng.poisson(expected) + rng.normal(100.0, 4.0, shape)
    return np.clip(np.round(counts), 0, np.iinfo(np.uint16).max).astype(np.uint16)


def write_classification_project(
    root: str | Path, n_train: int = 90, n_test: int = 30, seed: int = 0, size: int = 32
) -> Path:
    """Write ``{train,test}/image/cell_XXX.tif`` and ``{train,test}/groundtruth/groundtruth.csv``
    (``filename,groundtruth`` with the class names of :data:`CELL_CLASSES`, classes in turn)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("test", n_test)):
        rows = ["filename,groundtruth"]
        for i in range(count):
            kind = CELL_CLASSES[i % len(CELL_CLASSES)]
            name = f"cell_{i:03d}.tif"
            write_tiff(root / split / "image" / name, synthetic_cell(rng, kind, size))
            rows.append(f"{name},{kind}")
        (root / split / "groundtruth").mkdir(parents=True, exist_ok=True)
        (root / split / "groundtruth" / "groundtruth.csv").write_text(
            "\n".join(rows) + "\n", encoding="utf-8"
        )
    return root
