"""Star-convex polygon training (``--task instance --model stardist``; StarDist, Schmidt et al. 2018).

The U-Net's plan, patches and whole-image validation are the instance U-Net's; what differs is the
target and the head. Training patches carry the label image itself (augmented by nearest neighbour,
so labels stay exact), and the loss computes from each patch's labels the object probability and
the distances to the edge along the rays (:mod:`idl.infer.post.stardist`, in numpy): binary
cross-entropy on the probability plus, weighted by it, the mean absolute error of the distances
(StarDist's weights 1 and 0.2, and a faint pull of the background's distances to 0). Validation
makes labels from polygons as ``idl-predict`` does and scores AP50:95.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from idl.infer.core.errors import ConfigError
from idl.infer.post.stardist import RAYS, object_probability, objects_from_output, star_distances
from idl.models.unet import StarDistSpec, StarDistUNet, UNetSpec
from idl.train.data import Sample, TrainingData, load_instance_data
from idl.train.losses import LossFn
from idl.train.tasks.instance import LabelsAP
from idl.train.tasks.pixels import PixelTrainer

if TYPE_CHECKING:
    from idl.train.config import TrainConfig

STARDIST = "stardist"
DISTANCE_WEIGHT = 0.2  # StarDist's train_loss_weights (1, 0.2)
BACKGROUND_WEIGHT = 1e-4  # StarDist's train_background_reg: background distances pulled to 0


def typical_radius(samples: list[Sample]) -> float:
    """The median over the training objects of the radius of a disk of the same area (px), at least 1."""
    areas = np.concatenate([np.bincount(s.target.ravel())[1:] for s in samples])
    areas = areas[areas > 0]
    return float(max(1.0, np.sqrt(np.median(areas) / np.pi))) if areas.size else 1.0


def label_data(split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
    """The label images of ``split_dir`` as the targets (int64, augmented by nearest neighbour) and
    as each sample's ``labels`` (int32, what validation scores against)."""
    data = load_instance_data(
        split_dir,
        config.normalization,
        config.axes,
        spatial,
        as_labels=True,
        on_nonfinite=config.on_nonfinite,
    )
    return replace(data, samples=[replace(s, labels=s.target.astype(np.int32)) for s in data.samples])


def star_targets(labels: np.ndarray, rays: int) -> tuple[np.ndarray, np.ndarray]:
    """``(N, Y, X)`` object probabilities and ``(N, rays, Y, X)`` distances of a batch of label
    patches ``(N, Y, X)``."""
    prob = np.stack([object_probability(patch) for patch in labels])
    dist = np.stack([star_distances(patch, rays) for patch in labels])
    return prob, dist


def stardist_loss(rays: int = RAYS) -> LossFn:
    """The loss of a batch: ``out`` ``(N, 1 + rays, Y, X)`` (probability, distances) against label
    patches ``(N, Y, X)``."""

    def loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        prob_np, dist_np = star_targets(labels.cpu().numpy(), rays)
        prob_t = torch.from_numpy(prob_np).to(out.device)
        dist_t = torch.from_numpy(dist_np).to(out.device)
        prob, dist = out[:, 0], out[:, 1:]
        bce = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), prob_t)
        weight = prob_t.unsqueeze(1)
        error = (dist - dist_t).abs()
        inside = (error * weight).sum() / (weight.sum() * rays).clamp_min(1e-6)
        background = (error * (weight == 0)).mean()
        return bce + DISTANCE_WEIGHT * inside + BACKGROUND_WEIGHT * background

    return loss


def star_labels(out: np.ndarray) -> np.ndarray:
    """The labels idl-predict makes from the network's probability and distances."""
    return objects_from_output(out)[0]


class StarDistTrainer(PixelTrainer):
    """The instance task's star-convex polygon network (reached through ``--model stardist``)."""

    task = "instance"
    metric = "ap50_95"
    network = StarDistUNet
    network_name = STARDIST
    kind = STARDIST
    class_names = ()

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        if len(spatial) != 2:
            raise ConfigError(
                f"--model {self.network_name} is built for 2D images; use --model unet for volumes."
            )
        return replace(label_data(split_dir, config, spatial), num_classes=1 + RAYS)

    def network_spec(self, spec: UNetSpec, data: TrainingData) -> StarDistSpec:
        """The U-Net's spec with the distance head in units of the objects' median radius."""
        return StarDistSpec(**asdict(spec), distance_scale=typical_radius(data.samples))

    def loss_name(self, config: TrainConfig, num_classes: int) -> str:
        return STARDIST

    def make_loss(self, name: str, num_classes: int) -> LossFn:
        return stardist_loss(num_classes - 1)

    def describe_data(self, data: TrainingData) -> str:
        return f"label images, object probability and distances along {data.num_classes - 1} rays"

    def image_score(self, num_classes: int) -> LabelsAP:
        return LabelsAP(star_labels)


STARDIST_TRAINER = StarDistTrainer()
