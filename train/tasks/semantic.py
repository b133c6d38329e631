"""Semantic segmentation on the training side: class masks, a segmentation loss (bce+dice for two
classes, cross-entropy otherwise), validated by the Jaccard index of the Otsu-thresholded (binary) or
arg-max mask of whole images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.core.errors import ConfigError
from idl.infer.evaluate.metrics import confusion_matrix, jaccard
from idl.infer.post.postprocess import to_mask
from idl.models.segnet import SegNet, SegNetSpec
from idl.train.calibrate import PIXELS, pixel_rows
from idl.train.data import Sample, TrainingData, load_semantic_data
from idl.train.losses import BINARY_LOSSES, MULTICLASS_LOSSES
from idl.train.reference import Reference, binary_segmentation, majority_segmentation
from idl.train.tasks.base import LossChoice, Start
from idl.train.tasks.pixels import PixelTrainer
from idl.train.tasks.registry import register
from idl.train.validation import WholeImageValidation, probabilities

if TYPE_CHECKING:
    from torch import nn

    from idl.train.config import TrainConfig
    from idl.train.setup import Setup

SEGNET = "segnet"


def segmentation_losses(num_classes: int) -> LossChoice:
    """bce+dice and its kin for two classes (one sigmoid channel), ce and its kin for more."""
    if num_classes == 2:
        return LossChoice("bce+dice", BINARY_LOSSES, "binary segmentation")
    return LossChoice("ce", MULTICLASS_LOSSES, f"{num_classes}-class segmentation")


class MaskJaccard:
    """Jaccard index over all validation pixels of the class masks idl-predict would write."""

    def __init__(self, num_classes: int) -> None:
        self.k = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.int64)

    def add(self, logits: np.ndarray, sample: Sample) -> None:
        mask, _ = to_mask(probabilities(logits), "otsu")
        self.confusion += confusion_matrix(mask, sample.target, self.k)

    def result(self) -> float:
        return jaccard(self.confusion)


class SemanticTrainer(PixelTrainer):
    task = "semantic"
    models = ("unet", SEGNET)
    metric = "jaccard"
    loss_names = tuple(dict.fromkeys(BINARY_LOSSES + MULTICLASS_LOSSES))

    def losses(self, num_classes: int) -> LossChoice:
        return segmentation_losses(num_classes)

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        return load_semantic_data(
            split_dir, config.normalization, config.axes, config.num_classes, spatial, config.on_nonfinite
        )

    def image_score(self, num_classes: int) -> MaskJaccard:
        return MaskJaccard(num_classes)

    def reference(self, samples: list[Sample], num_classes: int) -> Reference:
        """Otsu's threshold or all foreground (two classes), the most common class (more)."""
        targets = [s.target for s in samples]
        if num_classes == 2:
            return binary_segmentation([s.image for s in samples], targets)
        return majority_segmentation(targets, num_classes)

    def calibration_rows(
        self, setup: Setup, model: nn.Module, device: Any
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Validation pixels: the network's logits and the target classes (at most
        :data:`~idl.train.calibrate.PIXELS` in all, chosen with a fixed seed)."""
        if not isinstance(setup.validation, WholeImageValidation) or not setup.validation.samples:
            return None
        rng = np.random.default_rng(0)
        limit = PIXELS // len(setup.validation.samples)
        rows = [
            pixel_rows(logits, sample.target, limit, rng)
            for logits, sample in setup.validation.logits(model, device)
        ]
        return np.concatenate([r for r, _ in rows]), np.concatenate([t for _, t in rows])

    def prepare(self, project: Path, config: TrainConfig, start: Start) -> Setup:
        if config.model == SEGNET and not isinstance(self, SegNetTrainer):
            return SEGNET_TRAINER.prepare(project, config, start)
        return super().prepare(project, config, start)


class SegNetTrainer(SemanticTrainer):
    """Semantic segmentation with SegNet (``--model segnet``, 2D): the U-Net's plan, data, loss and
    validation, another network."""

    network = SegNet
    network_name = SEGNET
    spec_type = SegNetSpec

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        if len(spatial) != 2:
            raise ConfigError("--model segnet is built for 2D images; use --model unet for volumes.")
        return super().load_data(split_dir, config, spatial)


SEGNET_TRAINER = SegNetTrainer()
register(SemanticTrainer())
