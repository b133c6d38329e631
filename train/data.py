"""Training data: loading a project's images and masks, the validation split, patch datasets."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from idl.infer.axes import read_yxc
from idl.infer.errors import DataError
from idl.infer.io import read_image
from idl.infer.labels import infer_num_classes, mask_plane, semantic_target
from idl.infer.normalize import Normalization, normalize
from idl.infer.project import Pair, pair_files
from idl.infer.tiling import axis_tiles

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


def _read_pairs(split_dir: Path, axes: str | None, read_target: Reader) -> tuple[list, str]:
    """Every ``(pair, image (Y, X, C), target)`` of ``split_dir``, checked, and the axes used."""
    pairs = pair_files(split_dir, require_groundtruth=True)
    raw: list[tuple[Pair, np.ndarray, np.ndarray]] = []
    guesses: dict[str, int] = {}
    used_axes = axes
    for pair in pairs:
        assert pair.groundtruth is not None
        image, used_axes, guessed = read_yxc(pair.image, axes)
        if guessed:
            guesses[used_axes] = guesses.get(used_axes, 0) + 1
        target = read_target(pair.groundtruth)
        if target.shape[:2] != image.shape[:2]:
            raise DataError(
                f"{pair.groundtruth}: ground-truth shape {target.shape[:2]} does not match its image "
                f"{pair.image} (Y, X = {image.shape[:2]}). Ground truth must have the image's height and "
                "width."
            )
        if raw and image.shape[-1] != raw[0][1].shape[-1]:
            raise DataError(
                f"{pair.image}: has {image.shape[-1]} channel(s) but {raw[0][0].image} has "
                f"{raw[0][1].shape[-1]}. All images of a project need the same channels."
            )
        if raw and target.shape[2:] != raw[0][2].shape[2:]:
            raise DataError(
                f"{pair.groundtruth}: has {target.shape[2:]} target channel(s) but {raw[0][0].groundtruth} "
                f"has {raw[0][2].shape[2:]}. All targets of a project need the same channels."
            )
        raw.append((pair, image, target))
    for guess, count in guesses.items():
        log.info("guessed axes '%s' for %d image(s) (pass --axes to set them)", guess, count)
    return raw, used_axes or "yx"


def load_semantic_data(
    split_dir: Path, norm: Normalization, axes: str | None = None, num_classes: int | None = None
) -> TrainingData:
    """Read, check and normalize every image/mask pair of ``split_dir`` (e.g. ``PROJECT/train``)."""
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: mask_plane(read_image(p), str(p)))
    if num_classes is None:
        num_classes = infer_num_classes([gt for _, _, gt in raw])
        log.info(
            "found %s in the ground truth", "binary masks" if num_classes == 2 else f"{num_classes} classes"
        )
    samples = [
        Sample(pair.name, normalize(image, norm), semantic_target(gt, num_classes, str(pair.groundtruth)))
        for pair, image, gt in raw
    ]
    return TrainingData(samples, num_classes, raw[0][1].shape[-1], used_axes)


def _read_target(path: Path) -> np.ndarray:
    """A regression target as ``(Y, X, T)`` float32, checked for NaN and infinity."""
    target = read_yxc(path, None)[0].astype(np.float32)
    if not np.isfinite(target).all():
        raise DataError(f"{path}: the ground truth holds NaN or infinite values; fix or mask them first.")
    return target


def load_regression_data(split_dir: Path, norm: Normalization, axes: str | None = None) -> TrainingData:
    """Read every image/target pair of ``split_dir``; images are normalized as for segmentation,
    targets standardized per channel with the mean and standard deviation of all targets, which the
    model stores to give predictions in ground-truth units."""
    raw, used_axes = _read_pairs(split_dir, axes, _read_target)
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


def patch_size_for(samples: list[Sample], requested: int, multiple: int) -> int:
    """Largest square patch <= ``requested`` that fits every image, a multiple of ``multiple``."""
    smallest = min(min(s.image.shape[:2]) for s in samples)
    size = min(requested, smallest) // multiple * multiple
    if size < multiple:
        raise DataError(
            f"the smallest image is {smallest} px wide but the U-Net needs at least {multiple} px; "
            "use a smaller --depth or larger images."
        )
    return size


def _to_tensors(image: np.ndarray, target: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Channels-first image; class maps as int64, regression targets channels-first float32."""
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0)))
    if target.dtype == np.float32:
        return x, torch.from_numpy(np.ascontiguousarray(np.moveaxis(target, -1, 0)))
    return x, torch.from_numpy(np.ascontiguousarray(target).astype(np.int64))


def augment_pair(
    image: np.ndarray, target: np.ndarray, augment: tuple[str, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90-degree rotations applied identically to image ``(Y, X, C)`` and target."""
    if "flip" in augment:
        if rng.random() < 0.5:
            image, target = image[::-1], target[::-1]
        if rng.random() < 0.5:
            image, target = image[:, ::-1], target[:, ::-1]
    if "rot90" in augment and image.shape[0] == image.shape[1]:
        k = int(rng.integers(4))
        image, target = np.rot90(image, k, axes=(0, 1)), np.rot90(target, k, axes=(0, 1))
    return image, target


class PatchDataset(Dataset):
    """One random (augmented) square patch per image per epoch.

    Randomness comes from a generator seeded per epoch and index, so runs are reproducible and
    resumable regardless of data-loader workers.
    """

    def __init__(self, samples: list[Sample], patch: int, augment: tuple[str, ...], seed: int) -> None:
        self.samples = samples
        self.patch = patch
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        sample = self.samples[index]
        h, w = sample.image.shape[:2]
        y0 = int(rng.integers(h - self.patch + 1))
        x0 = int(rng.integers(w - self.patch + 1))
        window = (slice(y0, y0 + self.patch), slice(x0, x0 + self.patch))
        image, target = augment_pair(sample.image[window], sample.target[window], self.augment, rng)
        return _to_tensors(image, target)


class TileDataset(Dataset):
    """Deterministic patches covering every image (validation): the same crops every epoch."""

    def __init__(self, samples: list[Sample], patch: int) -> None:
        self.items: list[tuple[int, slice, slice]] = []
        for i, sample in enumerate(samples):
            h, w = sample.image.shape[:2]
            for r in axis_tiles(h, patch, 0, 1):
                for c in axis_tiles(w, patch, 0, 1):
                    self.items.append(
                        (i, slice(r.origin, r.origin + patch), slice(c.origin, c.origin + patch))
                    )
        self.samples = samples

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i, rows, cols = self.items[index]
        sample = self.samples[i]
        return _to_tensors(sample.image[rows, cols], sample.target[rows, cols])
