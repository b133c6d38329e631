"""Flow-field training (``--task instance --model flows``; cellpose, Stringer et al. 2021).

The U-Net's plan, patches and whole-image validation are the instance U-Net's; what differs is the
target and the head. Each training image's objects get the heat diffused from their centres once, on
the whole image (:func:`idl.infer.post.flows.diffused_heat`), so an object cut by a patch's border
keeps the flows of its whole shape. Heat and labels travel through the augmentation as one integer
target (:func:`pack`: the label in the high bits, the heat in 16 low bits), so nearest-neighbour
resampling keeps both exact and flips and turns move them together; the loss turns each augmented
patch's heat into flows (:func:`idl.infer.post.flows.heat_flows`), so the vectors turn with the patch.
The loss is cellpose's: binary cross-entropy on the foreground probability plus half the mean
squared error of the flows scaled by 5. Validation makes labels as ``idl-predict`` does and scores
AP50:95. After training, the probability threshold and the flow-error limit of the labels are chosen
on the validation images (:func:`fit_thresholds`) and travel with the model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from idl.infer.post.flows import (
    FLOW_ERROR,
    PROB_THRESHOLD,
    checked_objects,
    diffused_heat,
    flow_errors,
    heat_flows,
    objects_from_output,
    sink_objects,
)
from idl.models.unet import FlowUNet, UNetSpec
from idl.train.data import Sample, TrainingData
from idl.train.losses import LossFn
from idl.train.tasks.base import PostprocessingFit
from idl.train.tasks.instance import LabelsAP, validation_pairs
from idl.train.tasks.instance.stardist import StarDistTrainer, label_data

if TYPE_CHECKING:
    from collections.abc import Iterable

    from torch import nn

    from idl.train.config import TrainConfig
    from idl.train.setup import Setup

FLOWS = "flows"
FLOW_SCALE = 5.0  # cellpose trains the flows at 5x their unit length
HEAT_BITS = 16  # the heat's share of a packed target
HEAT_LEVELS = 2**HEAT_BITS - 1


def pack(labels: np.ndarray) -> np.ndarray:
    """int64 ``labels * 2**16 + heat``: each object's heat (0..1, :func:`diffused_heat`) in 16
    bits below its label, one integer target that nearest-neighbour augmentation keeps exact."""
    heat = np.rint(diffused_heat(labels) * HEAT_LEVELS).astype(np.int64)
    return (labels.astype(np.int64) << HEAT_BITS) | heat


def unpack(target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels and heat (0..1) of packed targets (:func:`pack`), any shape."""
    return target >> HEAT_BITS, (target & HEAT_LEVELS).astype(np.float64) / HEAT_LEVELS


def flow_targets(target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of packed patches ``(N, *spatial)`` (2D or 3D): the foreground ``(N, *spatial)``, the flows
    ``(N, D, *spatial)`` and their weight ``(N, *spatial)``, 0 on each patch's outermost pixels (there
    the heat's neighbour beyond the patch is unknown, so the central difference would be wrong)."""
    labels, heat = unpack(target)
    dims = target.ndim - 1
    weight = np.zeros(labels.shape, np.float32)
    weight[(slice(None), *(slice(1, -1),) * dims)] = 1.0
    return (labels > 0).astype(np.float32), heat_flows(labels, heat, dims), weight


def flows_loss() -> LossFn:
    """The loss of a batch: ``out`` ``(N, 1 + D, *spatial)`` (probability, flows) against packed
    targets."""

    def loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        foreground, flows, weight = (
            torch.from_numpy(a).to(out.device) for a in flow_targets(target.cpu().numpy())
        )
        bce = F.binary_cross_entropy(out[:, 0].clamp(1e-6, 1 - 1e-6), foreground)
        squared = ((out[:, 1:] - flows) * FLOW_SCALE) ** 2 * weight.unsqueeze(1)
        return bce + squared.sum() / (2 * flows.shape[1] * weight.sum().clamp_min(1.0))

    return loss


PROB_GRID = (PROB_THRESHOLD, 0.4, 0.6)  # the default first: it wins ties
FLOW_ERROR_GRID = (FLOW_ERROR, 0.6, 0.8, 1.0, 1.5, 2.5)


def fit_thresholds(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> PostprocessingFit:
    """The foreground probability threshold and flow-error limit (:func:`labels_from_flows`) whose
    labels score the best AP50:95 over all ``(output (1 + D, *spatial), true labels)`` pairs (the
    validation images), from :data:`PROB_GRID` x :data:`FLOW_ERROR_GRID`. A network's flows are
    shorter than unit vectors where it is unsure (small objects, edges), so cellpose's limit of 0.4
    can drop objects a network found well; the limit that suits it is measured, not assumed. Each
    image is followed once per probability threshold; the limits only filter its objects."""
    scored = {(p, e): LabelsAP(flow_labels) for p in PROB_GRID for e in FLOW_ERROR_GRID}
    for out, truth in pairs:
        for prob_threshold in PROB_GRID:
            labels = sink_objects(out[0], out[1:], prob_threshold)
            errors = flow_errors(labels, out[1:])
            for limit in FLOW_ERROR_GRID:
                found, _ = checked_objects(labels, errors, out[0], limit)
                scored[(prob_threshold, limit)].add_labels(truth.astype(np.int64), found.astype(np.int64))
    scores = [({"prob_threshold": p, "flow_error": e}, s.result()) for (p, e), s in scored.items()]
    return PostprocessingFit.first_best("ap50_95", scores)


def flow_labels(out: np.ndarray) -> np.ndarray:
    """The labels idl-predict makes from the network's probability and flows."""
    return objects_from_output(out)[0]


class FlowTrainer(StarDistTrainer):
    """The instance task's flow-field network (reached through ``--model flows``), 2D and 3D: the
    star-convex network's training with label images packed with their heat."""

    network = FlowUNet
    network_name = FLOWS
    kind = FLOWS

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        """The label images (2D or 3D) with their packed targets: ``1 + D`` output channels."""
        data = label_data(split_dir, config, spatial)
        samples = [replace(s, target=pack(s.target)) for s in data.samples]
        return replace(data, samples=samples, num_classes=1 + len(spatial))

    def network_spec(self, spec: UNetSpec, data: TrainingData) -> UNetSpec:
        return spec

    def placing(self, samples: list[Sample]) -> list[np.ndarray]:
        """The label images (:func:`label_data` gives every sample its own): patches are placed on
        objects, as the star-convex network's are (each packed target's value is one pixel's heat,
        not a class)."""
        return [s.target >> HEAT_BITS if s.labels is None else s.labels for s in samples]

    def loss_name(self, config: TrainConfig, num_classes: int) -> str:
        return FLOWS

    def make_loss(self, name: str, num_classes: int) -> LossFn:
        return flows_loss()

    def describe_data(self, data: TrainingData) -> str:
        return "label images, foreground probability and flows to the object centres"

    def image_score(self, num_classes: int) -> LabelsAP:
        return LabelsAP(flow_labels)

    def fit_postprocessing(self, setup: Setup, model: nn.Module, device: Any) -> PostprocessingFit | None:
        """The thresholds of the labels fitted on the validation images (:func:`fit_thresholds`)."""
        pairs = validation_pairs(setup, model, device)
        return None if pairs is None else fit_thresholds(pairs)


FLOW_TRAINER = FlowTrainer()
