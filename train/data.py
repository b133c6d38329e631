"""Training data: loading a project's images and masks, the validation split, patch datasets."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from idl.infer.core.axes import match_channels
from idl.infer.core.errors import DataError
from idl.infer.core.grid import axis_tiles
from idl.infer.core.nonfinite import check_nonfinite, find_nonfinite
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.core.project import Pair, pair_files
from idl.infer.io.images import read_channels_last, read_image
from idl.infer.post.labels import infer_num_classes, mask_plane, semantic_target
from idl.train.augment import Augmentation, augment_pair

log = logging.getLogger("idl")


@dataclass(frozen=True)
class Sample:
    """One normalized image ``(Y, X, C)`` float32 and its target: a class map ``(Y, X)`` uint8 for
    segmentation, or normalized values ``(Y, X, T)`` float32 for regression."""

    name: str
    image: np.ndarray
    target: np.ndarray
    labels: np.ndarray | None = None  # instance: the label image the target was made from
    path: Path | None = None  # the image file, for messages

    @property
    def source(self) -> str:
        """The image's file name (its name without a file)."""
        return self.path.name if self.path is not None else self.name


@dataclass(frozen=True)
class TrainingData:
    samples: list[Sample]
    num_classes: int  # 0 for regression
    in_channels: int
    axes: str
    target_mean: tuple[float, ...] = ()  # regression: per target channel, in ground-truth units
    target_std: tuple[float, ...] = ()


Reader = Callable[[Path], np.ndarray]


def smallest_side(samples: list[Sample]) -> int:
    """The shortest in-plane side (Y or X, pixels) of any sample's image ``([Z,] Y, X, C)``."""
    return min(min(s.image.shape[-3:-1]) for s in samples)


def _same_channels(image: np.ndarray, channels: int, source: Path) -> np.ndarray:
    """``image`` with the first image's channel count where nothing is lost (grey and grey-as-RGB),
    logged; else unchanged (the caller reports the mismatch)."""
    matched = match_channels(image, channels)
    if matched.shape[-1] != channels:
        return image
    log.info("%s: %d channel(s) converted to the project's %d", source.name, image.shape[-1], channels)
    return matched


def _read_pairs(
    split_dir: Path, axes: str | None, read_target: Reader, spatial: str = "yx", on_nonfinite: str = "replace"
) -> tuple[list, str]:
    """Every ``(pair, image ([Z,] Y, X, C), target)`` of ``split_dir``, checked, and the axes used;
    non-finite image pixels are handled by ``on_nonfinite`` (:mod:`idl.infer.core.nonfinite`)."""
    pairs = pair_files(split_dir, require_groundtruth=True)
    raw: list[tuple[Pair, np.ndarray, np.ndarray]] = []
    guesses: dict[str, int] = {}
    used_axes = axes
    for pair in pairs:
        assert pair.groundtruth is not None
        image, used_axes, guessed = read_channels_last(pair.image, axes, spatial)
        if guessed:
            guesses[used_axes] = guesses.get(used_axes, 0) + 1
        check_nonfinite(image, str(pair.image), spatial + "c", on_nonfinite)
        target = read_target(pair.groundtruth)
        n = len(spatial)
        if target.shape[:n] != image.shape[:n]:
            raise DataError(
                f"{pair.groundtruth}: ground-truth shape {target.shape[:n]} does not match its image "
                f"{pair.image} ({spatial.upper()} = {image.shape[:n]}). Ground truth must have the "
                "image's size."
            )
        if raw and image.shape[-1] != raw[0][1].shape[-1]:
            image = _same_channels(image, raw[0][1].shape[-1], pair.image)
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


def check_split(split_dir: Path, axes: str | None, spatial: str = "yx") -> int:
    """Read every image of a split (``PROJECT/test``) and check that its ground truth, where there is
    one, has the image's size; returns how many images. Run before training, so a broken test set
    fails in seconds instead of after the training."""
    try:
        pairs = pair_files(split_dir, require_groundtruth=False)
    except DataError:
        return 0  # no test images: nothing will be evaluated (the run says so)
    n = len(spatial)
    for pair in pairs:
        image = read_channels_last(pair.image, axes, spatial)[0]
        if pair.groundtruth is None:
            continue
        truth = read_channels_last(pair.groundtruth, None, spatial)[0]
        if truth.shape[:n] != image.shape[:n]:
            raise DataError(
                f"{pair.groundtruth}: ground-truth shape {truth.shape[:n]} does not match its image "
                f"{pair.image} ({spatial.upper()} = {image.shape[:n]}). Ground truth must have the "
                "image's size; the test set is checked before training."
            )
    return len(pairs)


FEW_WITH_FOREGROUND = 0.1  # below this share of masks with foreground, training warns


def _some(paths: list[Path], shown: int = 5) -> str:
    """The first ``shown`` file names of ``paths`` and how many more."""
    names = ", ".join(p.name for p in paths[:shown])
    return names + (f" and {len(paths) - shown} more" if len(paths) > shown else "")


def check_foreground(masks: list[tuple[Path, bool]], kind: str, what: str) -> None:
    """Refuse training masks of which none holds ``what`` (every pixel 0: nothing to learn, and
    validation would score 0 while the run looked fine); warn when fewer than
    :data:`FEW_WITH_FOREGROUND` of them do. Many empty masks can be right (tiles of background teach
    what is not an object), so that is a warning, not an error. ``masks``: (file, holds foreground)."""
    holding = [path for path, found in masks if found]
    if not holding:
        folder = masks[0][0].parent
        raise DataError(
            f"{folder}: none of the {len(masks)} training {kind}(s) holds {what} (every pixel is 0), so "
            "there is nothing to learn. Check that the ground truth was saved with its objects (not an "
            f"empty or all-background export) and that {folder} holds the right files."
        )
    if len(holding) < FEW_WITH_FOREGROUND * len(masks):
        log.warning(
            "only %d of %d training %s(s) hold %s (%s); the other %d are empty. That can be right "
            "(background tiles), but check that no ground truth was saved empty by mistake",
            len(holding),
            len(masks),
            kind,
            what,
            _some(holding),
            len(masks) - len(holding),
        )


def load_semantic_data(
    split_dir: Path,
    norm: Normalization,
    axes: str | None = None,
    num_classes: int | None = None,
    spatial: str = "yx",
    on_nonfinite: str = "replace",
) -> TrainingData:
    """Read, check and normalize every image/mask pair of ``split_dir`` (e.g. ``PROJECT/train``)."""
    dims = len(spatial)
    raw, used_axes = _read_pairs(
        split_dir, axes, lambda p: mask_plane(read_image(p), str(p), dims), spatial, on_nonfinite
    )
    check_foreground([(pair.groundtruth, bool(np.any(gt != 0))) for pair, _, gt in raw], "mask", "foreground")
    if num_classes is None:
        num_classes = infer_num_classes(
            [gt for _, _, gt in raw], [str(pair.groundtruth) for pair, _, _ in raw], strict=True
        )
        log.info(
            "found %s in the ground truth", "binary masks" if num_classes == 2 else f"{num_classes} classes"
        )
    samples = [
        Sample(
            pair.name,
            normalize(image, norm),
            semantic_target(gt, num_classes, str(pair.groundtruth), dims),
            path=pair.image,
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
    on_nonfinite: str = "replace",
) -> TrainingData:
    """Read every image/label-image pair of ``split_dir``; targets are the instance U-Net's three
    classes (background, interior, boundary; see :func:`idl.infer.post.instance_labels.instance_target`),
    or with ``as_labels`` the label images themselves (int64, for Mask R-CNN)."""
    from idl.infer.post.instance_labels import instance_target

    def target(labels: np.ndarray) -> np.ndarray:
        return labels.astype(np.int64) if as_labels else instance_target(labels)

    dims = len(spatial)
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: _read_labels(p, dims), spatial, on_nonfinite)
    objects = sum(len(np.unique(labels)) - int((labels == 0).any()) for _, _, labels in raw)
    log.info("instance ground truth: %d object(s) in %d image(s)", objects, len(raw))
    check_foreground(
        [(pair.groundtruth, bool(np.any(labels))) for pair, _, labels in raw], "label image", "an object"
    )
    samples = [
        Sample(
            pair.name,
            normalize(image, norm),
            target(labels),
            None if as_labels else labels.astype(np.int32),
            path=pair.image,
        )
        for pair, image, labels in raw
    ]
    return TrainingData(samples, 3, raw[0][1].shape[-1], used_axes)


def _read_target(path: Path, spatial: str = "yx") -> np.ndarray:
    """A regression target as ``([Z,] Y, X, T)`` float32, checked for NaN and infinity."""
    target = read_channels_last(path, None, spatial)[0].astype(np.float32)
    found = find_nonfinite(target)
    if found is not None:
        raise DataError(
            f"{path}: the ground truth holds {found.describe(spatial + 'c')}; a target must be a number "
            "everywhere. Fix them, or crop the image and its ground truth to where both are known."
        )
    return target


def load_regression_data(
    split_dir: Path,
    norm: Normalization,
    axes: str | None = None,
    spatial: str = "yx",
    on_nonfinite: str = "replace",
) -> TrainingData:
    """Read every image/target pair of ``split_dir``; images are normalized as for segmentation,
    targets standardized per channel with the mean and standard deviation of all targets, which the
    model stores to give predictions in ground-truth units."""
    raw, used_axes = _read_pairs(split_dir, axes, lambda p: _read_target(p, spatial), spatial, on_nonfinite)
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
        Sample(pair.name, normalize(image, norm), ((target - mean) / std).astype(np.float32), path=pair.image)
        for pair, image, target in raw
    ]
    return TrainingData(
        samples, 0, raw[0][1].shape[-1], used_axes, tuple(map(float, mean)), tuple(map(float, std))
    )


def split_validation(
    samples: list[Sample], fraction: float, seed: int, gap: int = 0, multiple: int = 1
) -> tuple[list[Sample], list[Sample], str]:
    """Split into (train, validation, description).

    Two or more images: a seeded random share of whole images (at least one on each side). One image:
    a block at the far end of its longest in-plane axis (see :func:`split_region`). ``fraction`` 0:
    no validation at all.
    """
    if fraction == 0:
        return list(samples), [], "none (--val-fraction 0): the last epoch is kept"
    if not samples:
        raise DataError("no training images.")
    if len(samples) == 1:
        train, val, description = split_region(samples[0], fraction, gap, multiple)
        return [train], [val], description
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = min(max(1, round(fraction * len(samples))), len(samples) - 1)
    val = {int(i) for i in order[:n_val]}
    train_set = [s for i, s in enumerate(samples) if i not in val]
    val_set = [s for i, s in enumerate(samples) if i in val]
    return (
        train_set,
        val_set,
        f"{len(val_set)} of {len(samples)} images ({', '.join(s.name for s in val_set)})",
    )


def _crop(sample: Sample, axis: int, start: int, stop: int) -> Sample:
    index = tuple(slice(start, stop) if i == axis else slice(None) for i in range(sample.target.ndim))
    labels = None if sample.labels is None else sample.labels[index]
    return Sample(sample.name, sample.image[index], sample.target[index], labels, sample.path)


MIN_TRAIN_SHARE = 0.5  # of a single image's split axis that always stays for training


def split_region(sample: Sample, fraction: float, gap: int, multiple: int = 1) -> tuple[Sample, Sample, str]:
    """Hold out the far end of one image's longest in-plane axis for validation.

    The block is ``fraction`` of that axis (at least ``multiple`` px) and lies ``gap`` px (the
    network's halo, half its receptive field) away from the region training patches come from, so no
    training patch sees a validation pixel and no validated output sees a training pixel. On images
    too small for the whole gap the gap shrinks, with a warning: the training region keeps at least
    :data:`MIN_TRAIN_SHARE` of the axis (a 128 px quadrant of a volume and a depth-4 gap of 96 px would
    otherwise leave 32 px to train on).
    """
    spatial = sample.target.shape
    axis = len(spatial) - 2 + int(np.argmax(spatial[-2:]))
    n = spatial[axis]
    n_val = max(multiple, round(fraction * n))
    smallest_train = max(2 * multiple, math.ceil(MIN_TRAIN_SHARE * n / multiple) * multiple)
    room = n - n_val - smallest_train
    if room < 0:
        raise DataError(
            f"{sample.name}: the only training image is {n} px along its longest axis, too small to hold out "
            f"a validation block of {n_val} px and keep {smallest_train} px to train on. Add images, or "
            "train without validation (--val-fraction 0)."
        )
    used_gap = min(gap, room)
    if used_gap < gap:
        log.warning(
            "%s: the image is too small to keep the validation block %d px (the network's halo) away from "
            "the training region and half the image for training; the gap is %d px, so validation "
            "scores are somewhat optimistic",
            sample.name,
            gap,
            used_gap,
        )
    stop_train = n - n_val - used_gap
    train = _crop(sample, axis, 0, stop_train)
    val = _crop(sample, axis, n - n_val, n)
    letter = "zyx"[-len(spatial) :][axis]
    description = (
        f"one training image: {letter} >= {n - n_val} of {sample.name} ({n_val} of {n} px), "
        f"{used_gap} px away from the training region ({letter} < {stop_train})"
    )
    return train, val, description


def patch_shape_for(
    samples: list[Sample], requested: tuple[int, ...], multiples: tuple[int, ...], spatial: str
) -> tuple[int, ...]:
    """Largest patch <= ``requested`` per axis that fits every image, in multiples of ``multiples``.

    The in-plane sides are kept equal (the smaller of the two), so 90-degree rotations always apply.
    """
    shape = []
    for i, (want, m) in enumerate(zip(requested, multiples, strict=True)):
        limiting = min(samples, key=lambda s: s.image.shape[i])
        smallest = limiting.image.shape[i]
        size = min(want, smallest) // m * m
        if size < m:
            raise DataError(
                f"{limiting.source}: the smallest training image (region) is {smallest} px along "
                f"{spatial[i]} but the U-Net needs at least {m} px there; use a smaller --depth (or the "
                "anisotropic 3D U-Net), or remove the image from the training data."
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


FOREGROUND_SHARE = 1 / 3  # of patches forced to hold foreground (nnU-Net's share)
MAX_COORDINATES = 10_000  # foreground positions kept per image and class


def foreground_positions(target: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Up to :data:`MAX_COORDINATES` random positions of every foreground class (values > 0) of a class
    map or label image; nothing for regression targets (float). One sort of the foreground's values
    groups the positions, so a label image of thousands of objects costs no more than a class map."""
    if target.dtype == np.float32:
        return {}
    rng = np.random.default_rng(seed)
    flat = np.flatnonzero(target.ravel() > 0)
    values = target.ravel()[flat]
    order = np.argsort(values, kind="stable")  # each value's positions stay in row-major order
    found, starts = np.unique(values[order], return_index=True)
    out = {}
    stops = np.append(starts[1:], flat.size)[: starts.size]
    for value, start, stop in zip(found, starts, stops, strict=True):
        positions = np.stack(np.unravel_index(flat[order[start:stop]], target.shape), axis=1)
        if len(positions) > MAX_COORDINATES:
            positions = positions[rng.choice(len(positions), MAX_COORDINATES, replace=False)]
        out[int(value)] = positions
    return out


class PatchDataset(Dataset):
    """Fixed-length epochs of random (augmented) patches drawn from all training images (2D or 3D).

    An epoch holds ``steps * batch_size`` patches whatever the number of images: each patch comes from
    an image chosen with probability proportional to its size, and :data:`FOREGROUND_SHARE` of them are
    placed on a random pixel of a random foreground class of that image, so sparse objects and rare
    classes are seen (``placing``: per sample, the map whose foreground values are the classes,
    where the target is not such a map). Randomness comes from a generator seeded per epoch and
    index, so runs are reproducible and resumable regardless of data-loader workers.
    """

    def __init__(
        self,
        samples: list[Sample],
        patch: int | tuple[int, ...],
        augment: Augmentation,
        seed: int,
        steps: int = 1,
        batch_size: int = 1,
        foreground: float = FOREGROUND_SHARE,
        placing: list[np.ndarray] | None = None,
    ) -> None:
        self.samples = samples
        self.patch = _patch(patch, samples[0].image.ndim - 1)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.length = steps * batch_size
        sizes = np.array([s.target.size for s in samples], np.float64)
        self.weights = sizes / sizes.sum()
        self.foreground = foreground
        maps = placing if placing is not None else [s.target for s in samples]
        self.positions = [foreground_positions(m, seed + i) for i, m in enumerate(maps)]

    def __len__(self) -> int:
        return self.length

    def window(self, index: int, rng: np.random.Generator) -> tuple[int, tuple[slice, ...]]:
        """The image and the patch window of item ``index``."""
        i = int(rng.choice(len(self.samples), p=self.weights))
        shape = self.samples[i].target.shape[: len(self.patch)]  # regression targets have channels
        sizes = [min(p, n) for p, n in zip(self.patch, shape, strict=True)]
        positions = self.positions[i]
        if positions and rng.random() < self.foreground:
            classes = sorted(positions)
            chosen = positions[classes[int(rng.integers(len(classes)))]]
            point = chosen[int(rng.integers(len(chosen)))]
            # the point lies anywhere inside the patch, which stays inside the image
            origins = [
                int(np.clip(c - rng.integers(p), 0, n - p))
                for c, p, n in zip(point, sizes, shape, strict=True)
            ]
        else:
            origins = [int(rng.integers(n - p + 1)) for p, n in zip(sizes, shape, strict=True)]
        return i, tuple(slice(o, o + p) for o, p in zip(origins, sizes, strict=True))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        i, window = self.window(index, rng)
        sample = self.samples[i]
        image, target = augment_pair(sample.image, sample.target, self.augment, rng, window=window)
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
