"""Training data: loading a project's images and masks, the validation split, patch datasets."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from idl.infer.axes import read_channels_last
from idl.infer.errors import DataError
from idl.infer.io import read_image
from idl.infer.labels import infer_num_classes, mask_plane, semantic_target
from idl.infer.normalize import Normalization, normalize
from idl.infer.project import Pair, pair_files
from idl.infer.tiling import axis_tiles
from idl.train.augment import Augmentation, augment_pair

log = logging.getLogger("idl")


@dataclass(frozen=True)
class Sample:
    """One normalized image ``(Y, X, C)`` float32 and its target: a class map ``(Y, X)`` uint8 for
    segmentation, or normalized values ``(Y, X, T)`` float32 for regression."""

    name: str
    image: np.ndarray
    target: np.ndarray


@dataclass(frozen=True)
class TrainingData:
    samples: list[Sample]
    num_classes: int  # 0 for regression
    in_channels: int
    axes: str
    target_mean: tuple[float, ...] = ()  # regression: per target channel, in ground-truth units
    target_std: tuple[float, ...] = ()


Reader = Callable[[Path], np.ndarray]


def _read_pairs(
    split_dir: Path, axes: str | None, read_target: Reader, spatial: str = "yx"
) -> tuple[list, str]:
    """Every ``(pair, image ([Z,] Y, X, C), target)`` of ``split_dir``, checked, and the axes used."""
    pairs = pair_files(split_dir, require_groundtruth=True)
    raw: list[tuple[Pair, np.ndarray, np.ndarray]] = []
    guesses: dict[str, int] = {}
    used_axes = axes
    for pair in pairs:
        assert pair.groundtruth is not None
        image, used_axes, guessed = read_channels_last(pair.image, axes, spatial)
        if guessed:
            guesses[used_axes] = guesses.get(used_axes, 0) + 1
        target = read_target(pair.groundtruth)
        n = len(spatial)
        if target.shape[:n] != image.shape[:n]:
            raise DataError(
                f"{pair.groundtruth}: ground-truth shape {target.shape[:n]} does not match its image "
                f"{pair.image} ({spatial.upper()} = {image.shape[:n]}). Ground truth must have the "
                "image's size."
            )
        if raw and image.shape[-1] != raw[0][1].shape[-1]:
            raise DataError(
                f"{pair.image}: has {image.shape[-1]} channel(s) but {raw[0][0].image} has "
                f"{raw[0][1].shape[-1]}. All images of a project need the same channels."
            )
        if raw and target.shape[n:] != raw[0][2].shape[n:]:
            raise DataError(
                f"{pair.groundtruth}: has {target.shape[n:]} target channel(s) but {raw[0][0].groundtruth} "
                f"has {raw[0][2].shape[n:]}. All targets of a project need the same channels."
            )
        raw.append((pair, image, target))
    for guess, count in guesses.items():
        log.info("guessed axes '%s' for %d image(s) (pass --axes to set them)", guess, count)
    return raw, used_axes or spatial


def load_semantic_data(
    split_dir: Path,
    norm: Normalization,
    axes: str | None = None,
    num_classes: int | None = None,
    spatial: str = "yx",
) -> TrainingData:
    """Read, check and normalize every image/mask pair of ``split_dir`` (e.g. ``PROJECT/train``)."""
    dims = len(spatial)
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: mask_plane(read_image(p), str(p), dims), spatial)
    if num_classes is None:
        num_classes = infer_num_classes([gt for _, _, gt in raw])
        log.info(
            "found %s in the ground truth", "binary masks" if num_classes == 2 else f"{num_classes} classes"
        )
    samples = [
        Sample(
            pair.name, normalize(image, norm), semantic_target(gt, num_classes, str(pair.groundtruth), dims)
        )
        for pair, image, gt in raw
    ]
    return TrainingData(samples, num_classes, raw[0][1].shape[-1], used_axes)


def _read_labels(path: Path, dims: int) -> np.ndarray:
    """An instance label image (0 background, 1..N objects), checked to hold whole numbers."""
    labels = mask_plane(read_image(path), str(path), dims)
    if np.issubdtype(labels.dtype, np.floating) and not np.all(np.mod(labels, 1) == 0):
        raise DataError(f"{path}: a label image must hold whole numbers (0 background, 1..N objects).")
    if labels.min() < 0:
        raise DataError(f"{path}: a label image must not hold negative values.")
    return labels.astype(np.int64)


def load_instance_data(
    split_dir: Path,
    norm: Normalization,
    axes: str | None = None,
    spatial: str = "yx",
    as_labels: bool = False,
) -> TrainingData:
    """Read every image/label-image pair of ``split_dir``; targets are the instance U-Net's three
    classes (background, interior, boundary; see :func:`idl.infer.instance_labels.instance_target`),
    or with ``as_labels`` the label images themselves (int64, for Mask R-CNN)."""
    from idl.infer.instance_labels import instance_target

    def target(labels: np.ndarray) -> np.ndarray:
        return labels.astype(np.int64) if as_labels else instance_target(labels)

    dims = len(spatial)
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: _read_labels(p, dims), spatial)
    objects = sum(len(np.unique(labels)) - int((labels == 0).any()) for _, _, labels in raw)
    log.info("instance ground truth: %d object(s) in %d image(s)", objects, len(raw))
    samples = [Sample(pair.name, normalize(image, norm), target(labels)) for pair, image, labels in raw]
    return TrainingData(samples, 3, raw[0][1].shape[-1], used_axes)


def _read_target(path: Path, spatial: str = "yx") -> np.ndarray:
    """A regression target as ``([Z,] Y, X, T)`` float32, checked for NaN and infinity."""
    target = read_channels_last(path, None, spatial)[0].astype(np.float32)
    if not np.isfinite(target).all():
        raise DataError(f"{path}: the ground truth holds NaN or infinite values; fix or mask them first.")
    return target


def load_regression_data(
    split_dir: Path, norm: Normalization, axes: str | None = None, spatial: str = "yx"
) -> TrainingData:
    """Read every image/target pair of ``split_dir``; images are normalized as for segmentation,
    targets standardized per channel with the mean and standard deviation of all targets, which the
    model stores to give predictions in ground-truth units."""
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: _read_target(p, spatial), spatial)
    stacked = np.concatenate([t.reshape(-1, t.shape[-1]) for _, _, t in raw]).astype(np.float64)
    mean, std = stacked.mean(axis=0), stacked.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    log.info(
        "regression targets: %d channel(s), mean %s, std %s",
        len(mean),
        np.array2string(mean, precision=4),
        np.array2string(std, precision=4),
    )
    samples = [
        Sample(pair.name, normalize(image, norm), ((target - mean) / std).astype(np.float32))
        for pair, image, target in raw
    ]
    return TrainingData(
        samples, 0, raw[0][1].shape[-1], used_axes, tuple(map(float, mean)), tuple(map(float, std))
    )


def split_validation(samples: list[Sample], fraction: float, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Seeded random split into (train, validation); at least one image on each side."""
    if len(samples) < 2:
        raise DataError(
            f"only {len(samples)} training image(s): at least 2 are needed (one is held out to validate). "
            "Add images, or cut a large image into several files."
        )
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(max(1, round(fraction * len(samples))), len(samples) - 1)
    val = {int(i) for i in order[:n_val]}
    return [s for i, s in enumerate(samples) if i not in val], [s for i, s in enumerate(samples) if i in val]


def patch_shape_for(
    samples: list[Sample], requested: tuple[int, ...], multiples: tuple[int, ...], spatial: str
) -> tuple[int, ...]:
    """Largest patch <= ``requested`` per axis that fits every image, in multiples of ``multiples``.

    The in-plane sides are kept equal (the smaller of the two), so 90-degree rotations always apply.
    """
    shape = []
    for i, (want, m) in enumerate(zip(requested, multiples, strict=True)):
        smallest = min(s.image.shape[i] for s in samples)
        size = min(want, smallest) // m * m
        if size < m:
            raise DataError(
                f"the smallest image is {smallest} px along {spatial[i]} but the U-Net needs at least "
                f"{m} px there; use a smaller --depth (or the anisotropic 3D U-Net) or larger images."
            )
        shape.append(size)
    side = min(shape[-2:])
    return (*shape[:-2], side, side)


def _to_tensors(image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels-first image; class maps as int64, regression targets channels-first float32."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
    if target.dtype == np.float32:
        return x, torch.from_numpy(np.ascontiguousarray(np.moveaxis(target, -1, 0)))
    return x, torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))


def _patch(patch: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    return (patch,) * dims if isinstance(patch, int) else tuple(patch)


class PatchDataset(Dataset):
    """One random (augmented) patch per image per epoch (2D or 3D).

    Randomness comes from a generator seeded per epoch and index, so runs are reproducible and
    resumable regardless of data-loader workers.
    """

    def __init__(
        self, samples: list[Sample], patch: int | tuple[int, ...], augment: Augmentation, seed: int
    ) -> None:
        self.samples = samples
        self.patch = _patch(patch, samples[0].image.ndim - 1)
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        sample = self.samples[index]
        window = tuple(
            slice(o, o + p)
            for o, p in (
                (int(rng.integers(n - p + 1)), p)
                for n, p in zip(sample.image.shape, self.patch, strict=False)
            )
        )
        image, target = augment_pair(sample.image[window], sample.target[window], self.augment, rng)
        return _to_tensors(image, target)


def covering_windows(shape: tuple[int, ...], patch: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Windows of ``patch`` (at most the image's own size) that together cover an image of ``shape``,
    overlapping as little as possible: the fixed validation crops."""
    sizes = [min(p, n) for p, n in zip(patch, shape, strict=True)]
    per_axis = [axis_tiles(n, p, 0, 1) for n, p in zip(shape, sizes, strict=True)]
    return [
        tuple(slice(t.origin, t.origin + p) for t, p in zip(combo, sizes, strict=True))
        for combo in itertools.product(*per_axis)
    ]


class TileDataset(Dataset):
    """Deterministic patches covering every image (validation): the same crops every epoch."""

    def __init__(self, samples: list[Sample], patch: int | tuple[int, ...]) -> None:
        self.items: list[tuple[int, tuple[slice, ...]]] = []
        shape = _patch(patch, samples[0].image.ndim - 1)
        for i, sample in enumerate(samples):
            self.items += [(i, w) for w in covering_windows(sample.image.shape[: len(shape)], shape)]
        self.samples = samples

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, window = self.items[index]
        sample = self.samples[i]
        return _to_tensors(sample.image[window], sample.target[window])
