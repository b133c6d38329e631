"""Classification training data: labelled images from ``groundtruth.csv``, a stratified validation split,
class weights and the cross-entropy they weigh.

Images are resized to one input size (``--image-size``, or the images' own size when they all share
it, else the most common size), then normalized per channel exactly as at inference (see
:func:`idl.infer.post.classify.prepare_image`), and kept in memory as one float32 array.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from idl.infer.core.axes import match_channels
from idl.infer.core.errors import ConfigError, DataError
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.io.images import read_channels_last
from idl.infer.post.classes import class_indices, class_names_of, labelled_images
from idl.infer.post.classify import resize_to
from idl.train.augment import Augmentation, augment_pair
from idl.train.losses import LossFn

log = logging.getLogger("idl")


@dataclass(frozen=True)
class ClassificationData:
    """Normalized images ``(N, C, H, W)`` float32, class indices ``(N,)`` and what they mean."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    axes: str
    input_size: tuple[int, int]

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])


def _input_size(shapes: list[tuple[int, ...]], image_size: int | None) -> tuple[int, int]:
    """The size every image is resized to: ``image_size`` squared, the common size, or the most
    common one (logged)."""
    if image_size is not None:
        return (image_size, image_size)
    counts = Counter(s[:2] for s in shapes)
    size, n = counts.most_common(1)[0]
    if len(counts) > 1:
        log.warning(
            "the images have %d different sizes; all are resized to the most common one, %d x %d (%d of %d "
            "images). Pass --image-size to choose another.",
            len(counts),
            *size,
            n,
            len(shapes),
        )
    return (int(size[0]), int(size[1]))


def load_classification_data(
    split_dir: Path,
    norm: Normalization,
    axes: str | None = None,
    image_size: int | None = None,
    class_names: tuple[str, ...] | None = None,
    on_nonfinite: str = "replace",
) -> ClassificationData:
    """Read every image of ``split_dir/image`` with its label from the split's ``groundtruth.csv``."""
    items = labelled_images(split_dir)
    raw, used_axes, guesses = [], axes, Counter()
    for item in items:
        image, used_axes, guessed = read_channels_last(item.image, axes, "yx")
        guesses[used_axes] += guessed
        check_nonfinite(image, str(item.image), "yxc", on_nonfinite)
        if raw:
            image = match_channels(image, raw[0].shape[-1])
        if raw and image.shape[-1] != raw[0].shape[-1]:
            raise DataError(
                f"{item.image}: has {image.shape[-1]} channel(s) but {items[0].image} has "
                f"{raw[0].shape[-1]}. "
                "All images of a project need the same channels (pass --axes if they were misread)."
            )
        raw.append(image)
    for guess, count in guesses.items():
        if count:
            log.info("guessed axes '%s' for %d image(s) (pass --axes to set them)", guess, count)
    labels = [item.label or "" for item in items]
    names = class_names or class_names_of(labels)
    if len(names) < 2:
        raise DataError(
            f"{split_dir}: every image has the class '{names[0]}'; classification needs at least two classes."
        )
    size = _input_size([r.shape for r in raw], image_size)
    images = np.stack([np.moveaxis(normalize(resize_to(r, size), norm), -1, 0) for r in raw]).astype(
        np.float32
    )
    indices = np.array(class_indices(labels, names, str(split_dir)), np.int64)
    return ClassificationData(images, indices, names, used_axes or "yx", size)


def split_stratified(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split into (train, validation) indices, the same fraction of every class held out (at
    least one image per class that has two or more)."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        if len(members) >= 2:
            val.extend(members[: min(max(1, round(fraction * len(members))), len(members) - 1)])
    if not val:
        raise DataError("too few images to hold any out for validation: add images (two or more per class).")
    val_set = set(int(v) for v in val)
    train = np.array([i for i in range(len(labels)) if i not in val_set])
    return train, np.array(sorted(val_set))


class ImageDataset(Dataset):
    """Images ``(C, H, W)`` with class indices; augmented (no ground truth to move) seeded per epoch and
    index.

    With ``length`` (training) an epoch is that many images drawn at random from all of them, so the
    budget does not depend on how many images there are; without it (validation) every image once.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        augment: Augmentation | None = None,
        seed: int = 0,
        length: int | None = None,
    ):
        self.images, self.labels, self.augment, self.seed = images, labels, augment, seed
        self.length = length
        self.epoch = 0

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng((self.seed, self.epoch, index))
        if self.length is not None:
            index = int(rng.integers(len(self.labels)))
        image = self.images[index]
        if self.augment:
            image = augment_pair(image, None, self.augment, rng, y=1)[0]
        return torch.from_numpy(np.ascontiguousarray(image)), torch.tensor(self.labels[index])


def class_weights(setting: str | tuple[float, ...] | None, labels: np.ndarray, k: int) -> np.ndarray | None:
    """Per-class loss weights: none, ``balanced`` (n / (k * n_class), as scikit-learn) or given."""
    if setting is None:
        return None
    if setting == "balanced":
        counts = np.bincount(labels, minlength=k).astype(np.float64)
        if (counts == 0).any():
            absent = int(np.flatnonzero(counts == 0)[0])
            raise DataError(
                f"class {absent} has no training image, so 'balanced' class weights are undefined."
            )
        return len(labels) / (k * counts)
    if len(setting) != k:
        raise ConfigError(
            f"class_weights gives {len(setting)} weight(s) for {k} classes; give one per class."
        )
    return np.asarray(setting, np.float64)


def cross_entropy(weights: np.ndarray | None) -> LossFn:
    """Cross-entropy on logits ``(N, K)`` and class indices ``(N,)``, optionally class-weighted."""
    tensor = None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if tensor is None else tensor.to(logits.device)
        return F.cross_entropy(logits, target, weight=w)

    return loss
