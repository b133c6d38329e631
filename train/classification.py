"""Classification training data and network: labelled images from ``groundtruth.csv``, a ResNet with
Monte Carlo dropout, cross-entropy with optional class weights.

Images are resized to one input size (``--image-size``, or the images' own size when they all share
it, else the most common size), then normalized per channel exactly as at inference (see
:func:`idl.infer.post.classify.prepare_image`), and kept in memory as one float32 array.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from idl.infer.core.axes import match_channels
from idl.infer.core.errors import ConfigError, DataError
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.nonfinite import check_nonfinite
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.io.images import read_channels_last
from idl.infer.post.classes import class_indices, class_names_of, labelled_images
from idl.infer.post.classify import resize_to
from idl.infer.post.typicality import fit_reference
from idl.models import ResNetClassifier, ResNetSpec
from idl.models.resnet import SMALL_INPUT
from idl.train.augment import Augmentation, augment_pair
from idl.train.losses import LossFn
from idl.train.plan import make_classification_plan
from idl.train.setup import Setup, data_summary

if TYPE_CHECKING:
    from idl.train.config import TrainConfig

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


def _check_test_labels(test_dir: Path, class_names: tuple[str, ...]) -> None:
    """Fail before training, not after it, when the test split's groundtruth.csv is broken or names
    classes the training data does not have."""
    if not (test_dir / "image").is_dir():
        return
    items = labelled_images(test_dir, require_labels=False)
    labels = [i.label for i in items if i.label is not None]
    class_indices(labels, class_names, f"{test_dir} (groundtruth.csv)")


def prepare_classification(
    project: Path, config: TrainConfig, arch: dict[str, Any] | None = None, device: str = "cpu"
) -> Setup:
    """Data, network, loss and model description of a classification run. ``arch`` holds the
    architecture of the weights the run starts from (pretrained, or the run being resumed): their
    variant and stem are kept."""
    if config.dims != 2:
        raise ConfigError("classification works on 2D images; use --dims 2 (3D classification is not built).")
    arch = arch or {}
    requests = config.plan_requests  # before the network is resolved: the plan says who chose it
    if arch.get("variant") and arch["variant"] != config.resolved_model(device):
        log.info("using the source network's architecture %s", arch["variant"])
        config = replace(config, model=arch["variant"])
    data = load_classification_data(
        project / "train",
        config.normalization,
        config.axes,
        config.image_size,
        on_nonfinite=config.on_nonfinite,
    )
    _check_test_labels(project / "test", data.class_names)
    k = len(data.class_names)
    if config.num_classes is not None and config.num_classes != k:
        raise ConfigError(
            f"--num-classes is {config.num_classes}, but groundtruth.csv holds {k} classes "
            f"({', '.join(data.class_names)}). Leave --num-classes out or fix the labels."
        )
    if config.val_fraction == 0:
        train_idx, val_idx = np.arange(len(data.labels)), np.zeros(0, np.int64)
    else:
        train_idx, val_idx = split_stratified(data.labels, config.val_fraction, config.seed)
    weights = class_weights(config.class_weights, data.labels[train_idx], k)
    loss_name = config.resolved_loss(k)
    config = replace(
        config,
        model=config.resolved_model(device),
        num_classes=k,
        loss=loss_name,
        dropout=config.resolved_dropout,
        image_size=config.image_size,
    )
    small = bool(arch.get("small_input", max(data.input_size) <= SMALL_INPUT))
    plan = make_classification_plan(
        data.input_size,
        config.model,
        small,
        requests,
        device,
        config.resolved_learning_rate,
    )
    validation = (
        f"{len(val_idx)} of {len(data.labels)} images, stratified by class"
        if len(val_idx)
        else "none (--val-fraction 0): the last epoch is kept"
    )
    plan = replace(plan, validation=validation)
    config = config.with_plan(plan).with_image_side(min(data.input_size))
    spec = ResNetSpec(data.in_channels, k, config.model, config.dropout, small)
    counts = np.bincount(data.labels, minlength=k)
    info = ModelInfo(
        task="classification",
        in_channels=data.in_channels,
        num_classes=k,
        size_multiple=1,
        halo=0,
        normalization=config.normalization,
        dims=2,
        axes=data.axes,
        dropout=config.dropout,
        class_names=data.class_names,
        name=f"{Path(project).resolve().name}-{config.model}",
        input_size=data.input_size,
        input_reference=fit_reference(data.images).to_dict(),
        training={
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "images_per_class": {n: int(c) for n, c in zip(data.class_names, counts, strict=True)},
            "input_size": list(data.input_size),
            "loss": loss_name,
            "class_weights": None if weights is None else [round(float(w), 4) for w in weights],
            "architecture": config.model + (" (small-input stem)" if small else ""),
        },
    )
    summary = (
        f"{data_summary(len(train_idx), len(val_idx), data.in_channels)}, "
        f"{k} classes ({', '.join(f'{n}: {c}' for n, c in zip(data.class_names, counts, strict=True))}), "
        f"input {data.input_size[0]} x {data.input_size[1]} px, {config.model}"
        f"{' (small-input stem)' if small else ''}, loss {loss_name}"
        f"{' with class weights ' + np.array2string(weights, precision=3) if weights is not None else ''}"
    )
    return Setup(
        config=config,
        model=ResNetClassifier(spec),
        spec=spec,
        info=info,
        train_set=ImageDataset(
            data.images[train_idx],
            data.labels[train_idx],
            config.augmentation,
            config.seed,
            plan.steps_per_epoch * plan.batch_size,
        ),
        val_set=ImageDataset(data.images[val_idx], data.labels[val_idx]) if len(val_idx) else None,
        plan=plan,
        loss=cross_entropy(weights),
        num_classes=k,
        summary=summary,
    )
