"""Instance segmentation on the training side. Two networks: the U-Net (default) learns background,
interior and boundary classes, turned into labels by a watershed and validated by AP50:95 of whole
images; Mask R-CNN (``--model maskrcnn``, :mod:`.maskrcnn`) learns the objects directly and is
validated by ``ap50`` of its crops; the star-convex polygon U-Net (``--model stardist``,
:mod:`.stardist`) learns an object probability and distances to the edge along rays; the flow-field
U-Net (``--model flows``, :mod:`.flows`) learns the foreground and each pixel's direction to its
object's centre."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.evaluate.instance_metrics import counts_per_threshold, scores_from_counts
from idl.infer.post.instance_labels import (
    FOREGROUND_THRESHOLD,
    INSTANCE_CLASSES,
    SEED_DYNAMIC,
    SEED_THRESHOLD,
    labels_from_probabilities,
)
from idl.train.data import Sample, TrainingData, load_instance_data
from idl.train.losses import BINARY_LOSSES, MULTICLASS_LOSSES
from idl.train.prepare import model_name
from idl.train.tasks.base import LossChoice, PostprocessingFit, Start
from idl.train.tasks.pixels import PixelTrainer
from idl.train.tasks.registry import register
from idl.train.tasks.semantic import segmentation_losses
from idl.train.validation import WholeImageValidation, probabilities

if TYPE_CHECKING:
    from torch import nn

    from idl.train.config import TrainConfig
    from idl.train.setup import Setup

MASK_RCNN = "maskrcnn"


def watershed_labels(logits: np.ndarray) -> np.ndarray:
    """The instance U-Net's labels, as idl-predict makes them (a watershed of its probabilities)."""
    return labels_from_probabilities(probabilities(logits))


# the watershed's thresholds tried after training, the defaults first (they win ties): on BBBC039 the
# network's boundary probability spills over the objects' edges, so the foreground at 1 - p_background
# > 0.5 leaves them a pixel too small, which the higher IoU thresholds of AP50:95 punish
FOREGROUND_GRID = (FOREGROUND_THRESHOLD, 0.4, 0.3, 0.2)
SEED_GRID = (SEED_THRESHOLD, 0.4, 0.6)
# the seeds: connected interiors (0), or the interior's maxima of dynamic 0.3, which split touching
# nuclei whose interiors meet (3D nuclei: test AP50:95 0.782 -> 0.890 at the same foreground
# threshold; BBBC039 0.767 -> 0.779; 12 tiles unchanged: docs/benchmarks.md)
SEED_DYNAMIC_GRID = (SEED_DYNAMIC, 0.3)


def fit_watershed(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> PostprocessingFit:
    """The foreground and seed thresholds and the seeds' kind of the watershed
    (:func:`labels_from_probabilities`) whose labels score the best AP50:95 over all ``(logits, true
    labels)`` pairs (the validation images), from :data:`FOREGROUND_GRID` x :data:`SEED_GRID` x
    :data:`SEED_DYNAMIC_GRID`."""
    grid = [
        {"foreground_threshold": f, "seed_threshold": s, "seed_dynamic": d}
        for d in SEED_DYNAMIC_GRID
        for f in FOREGROUND_GRID
        for s in SEED_GRID
    ]
    scored = [LabelsAP() for _ in grid]
    for logits, truth in pairs:
        values = probabilities(logits)
        for thresholds, score in zip(grid, scored, strict=True):
            score.add_labels(truth, labels_from_probabilities(values, **thresholds))
    scores = [(thresholds, score.result()) for thresholds, score in zip(grid, scored, strict=True)]
    return PostprocessingFit.first_best("ap50_95", scores)


def validation_pairs(
    setup: Setup, model: nn.Module, device: Any
) -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
    """Each validation image's raw output and true labels, for fitting the post-processing's
    thresholds; None where the run validates on no whole labelled images."""
    validation = setup.validation
    if not isinstance(validation, WholeImageValidation) or not validation.samples:
        return None
    return (
        (out, sample.labels) for out, sample in validation.logits(model, device) if sample.labels is not None
    )


class LabelsAP:
    """AP50:95 over all validation images of the labels idl-predict would write, made from a
    network's raw output by ``make_labels`` (default: the U-Net's watershed)."""

    def __init__(self, make_labels: Callable[[np.ndarray], np.ndarray] = watershed_labels) -> None:
        self.make_labels = make_labels
        self.counts: list | None = None

    def add(self, logits: np.ndarray, sample: Sample) -> None:
        assert sample.labels is not None
        self.add_labels(sample.labels, self.make_labels(logits))

    def add_labels(self, truth: np.ndarray, found: np.ndarray) -> None:
        """Count the matches of one image's labels ``found`` against its true labels."""
        counts = counts_per_threshold(truth, found)
        self.counts = (
            counts if self.counts is None else [a + b for a, b in zip(self.counts, counts, strict=True)]
        )

    def result(self) -> float:
        return scores_from_counts(self.counts)["ap50_95"] if self.counts else 0.0


class InstanceTrainer(PixelTrainer):
    task = "instance"
    models = ("unet", MASK_RCNN, "stardist", "flows")
    metric = "ap50_95"
    # the U-Net's; "stardist" and "flows": the star-convex polygon and flow-field networks' own
    # (train/tasks/instance/stardist.py, flows.py)
    loss_names = (*dict.fromkeys(BINARY_LOSSES + MULTICLASS_LOSSES), "stardist", "flows")
    class_names = INSTANCE_CLASSES

    def learning_rate(self, model: str | None) -> float:
        """1e-4 for Mask R-CNN (from scratch it diverges at 1e-3), 1e-3 for the U-Net."""
        return 1e-4 if model == MASK_RCNN else 1e-3

    def validation_metric(self, model: str | None) -> str:
        return "ap50" if model == MASK_RCNN else self.metric

    def losses(self, num_classes: int) -> LossChoice:
        return segmentation_losses(num_classes)

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        return load_instance_data(
            split_dir, config.normalization, config.axes, spatial, on_nonfinite=config.on_nonfinite
        )

    def image_score(self, num_classes: int) -> LabelsAP:
        return LabelsAP()

    def fit_postprocessing(self, setup: Setup, model: nn.Module, device: Any) -> PostprocessingFit | None:
        """The thresholds of the labels, fitted on the validation images: the U-Net's watershed
        (:func:`fit_watershed`) or the flow-field network's (:meth:`.flows.FlowTrainer.fit_postprocessing`);
        Mask R-CNN's and the star-convex network's have none fitted."""
        if setup.config.model == "flows":
            from idl.train.tasks.instance.flows import FLOW_TRAINER

            return FLOW_TRAINER.fit_postprocessing(setup, model, device)
        pairs = validation_pairs(setup, model, device) if setup.config.model in (None, "unet") else None
        return None if pairs is None else fit_watershed(pairs)

    def prepare(self, project: Path, config: TrainConfig, start: Start) -> Setup:
        if config.model == MASK_RCNN:
            from idl.train.tasks.instance.maskrcnn import prepare_maskrcnn

            return prepare_maskrcnn(project, config, model_name(project, 2, MASK_RCNN), str(start.device))
        if config.model == "stardist":
            from idl.train.tasks.instance.stardist import STARDIST_TRAINER

            return STARDIST_TRAINER.prepare(project, config, start)
        if config.model == "flows":
            from idl.train.tasks.instance.flows import FLOW_TRAINER

            return FLOW_TRAINER.prepare(project, config, start)
        return super().prepare(project, config, start)


register(InstanceTrainer())
