"""Mask R-CNN training (``--task instance --model maskrcnn``): its plan, data sized to the objects,
crops with their detection targets, torchvision's losses, and validation by loss and ``ap50``.

What torchvision leaves to the user is decided from the training labels here: anchor sizes (from the
objects' sizes), how many detections an image may hold (from the densest image), and the tile halo at
inference (from the largest object, so a tile always sees whole objects around the region it owns).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from idl.infer.core.errors import ConfigError
from idl.infer.core.model_info import ModelInfo
from idl.infer.evaluate.instance_metrics import counts_per_threshold, scores_from_counts
from idl.infer.runtime.iospec import DETECTOR_MIN_SIZE
from idl.models.maskrcnn import (
    InstanceMaskRCNN,
    MaskRCNNSpec,
    anchor_sizes_for,
    labels_from_targets,
    targets_from_labels,
)
from idl.train.augment import Augmentation, augment_pair
from idl.train.data import Sample, covering_windows, load_instance_data, smallest_side, split_validation
from idl.train.loop import Steps
from idl.train.plan import BUDGETS, Plan, Requests, device_kind, whole_image_plan
from idl.train.setup import Setup, data_summary

if TYPE_CHECKING:
    from idl.train.config import TrainConfig

log = logging.getLogger("idl")

DETECTOR_CLASSES = ("background", "object")
MIN_HALO = 32
US_PER_PIXEL_MASKRCNN = 84.0  # Mask R-CNN training step: 5.5 s for 4 crops of 128 px (docs/benchmarks.md)
MASKRCNN_PATCH, MASKRCNN_BATCH = 256, 2


def make_detection_plan(
    shapes: list[tuple[int, ...]], requests: Requests, device: str, base_lr: float = 1e-4
) -> Plan:
    """The plan of Mask R-CNN (not the default instance model: it needs a longer budget, 20 minutes on
    the reference CPU): crops of 256 px (or the images' size) in batches of 2."""
    kind = device_kind(device)
    budget = BUDGETS[kind]
    sources: dict[str, str] = {"patch": "set" if requests.patch_side else "default"}
    side = min(requests.patch_side or MASKRCNN_PATCH, *(min(s[-2:]) for s in shapes))
    batch = requests.batch_size or requests.batch_images or MASKRCNN_BATCH
    sources["batch_size"] = "set" if requests.batch_size or requests.batch_images else "default"
    steps = budget.seconds["maskrcnn"] * budget.speed * 1e6 / (US_PER_PIXEL_MASKRCNN * batch * side * side)
    network = "Mask R-CNN (ResNet-50 FPN)"
    return whole_image_plan((side, side), batch, steps, requests, kind, base_lr, sources, network)


def object_boxes(samples: list[Sample]) -> np.ndarray:
    """``(n, 2)``: height and width of every object's box in the label images."""
    from skimage.measure import regionprops

    boxes = [(r.bbox[2] - r.bbox[0], r.bbox[3] - r.bbox[1]) for s in samples for r in regionprops(s.target)]
    return np.asarray(boxes, dtype=float).reshape(-1, 2)


def max_detections_for(samples: list[Sample], tile: int) -> int:
    """Detections allowed per image: twice the most objects any training image has per tile area
    (at least torchvision's 100), so dense images are not cut off."""
    densest = max((len(np.unique(s.target)) - 1) / s.target.size for s in samples)
    return int(max(100, np.ceil(2 * densest * tile * tile)))


def halo_for(boxes: np.ndarray) -> int:
    """Tile context in pixels: the largest object's box side with a quarter margin, rounded up to 8
    (at least 32), so each tile sees every object whose centre it owns in full."""
    largest = float(boxes.max()) if boxes.size else 0.0
    return max(MIN_HALO, int(np.ceil(1.25 * largest / 8)) * 8)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(image, -1, 0), dtype=np.float32))


class DetectionDataset(Dataset):
    """Crops of at most ``patch`` pixels with their Mask R-CNN targets.

    Training (``length`` given): an epoch of ``length`` random, augmented crops, each from an image
    chosen in proportion to its size, seeded per epoch and index. Validation: fixed crops covering
    every image.
    """

    def __init__(
        self,
        samples: list[Sample],
        patch: int,
        augment: Augmentation | None,
        seed: int = 0,
        length: int | None = None,
    ) -> None:
        self.samples, self.patch, self.augment, self.seed = samples, patch, augment, seed
        self.epoch = 0
        self.length = length
        sizes = np.array([s.target.size for s in samples], np.float64)
        self.weights = sizes / sizes.sum()
        self.items: list[tuple[int, tuple[slice, ...]]] = []
        if length is None:
            for i, sample in enumerate(samples):
                for window in covering_windows(sample.target.shape, (patch,) * sample.target.ndim):
                    self.items.append((i, window))

    def __len__(self) -> int:
        return self.length if self.length is not None else len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.length is None:
            i, window = self.items[index]
            sample = self.samples[i]
            image, labels = sample.image[window], sample.target[window]
        else:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            sample = self.samples[int(rng.choice(len(self.samples), p=self.weights))]
            window = tuple(
                slice(o, o + min(self.patch, n))
                for n in sample.target.shape
                for o in [int(rng.integers(n - min(self.patch, n) + 1))]
            )
            image, labels = augment_pair(sample.image, sample.target, self.augment or {}, rng, window=window)
        return _tensor(image), targets_from_labels(np.ascontiguousarray(labels))


def collate(batch: list[Any]) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Lists of images and targets (crops may differ in size)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def _on(device: torch.device, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]):
    return [x.to(device) for x in images], [{k: v.to(device) for k, v in t.items()} for t in targets]


def batch_loss(model: InstanceMaskRCNN, images: Any, targets: Any, device: torch.device) -> torch.Tensor:
    """torchvision's summed Mask R-CNN losses of one batch."""
    return model.losses(*_on(device, images, targets))


def validate(model: InstanceMaskRCNN, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    """Mean validation loss per crop (training-mode losses with batch-norm statistics fixed) and
    ``ap50`` of the predicted label images over all validation crops."""
    total, count, counts = 0.0, 0, None
    with torch.no_grad():
        for images, targets in loader:
            model.train()
            for module in model.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.eval()
            total += float(batch_loss(model, images, targets, device)) * len(images)
            count += len(images)
            model.eval()
            for image, target in zip(images, targets, strict=True):
                predicted = model(image[None].to(device))[0, 0].cpu().numpy().astype(np.int64)
                found = counts_per_threshold(labels_from_targets(target), predicted)
                counts = found if counts is None else [a + b for a, b in zip(counts, found, strict=True)]
    model.eval()
    return total / max(count, 1), (scores_from_counts(counts)["ap50"] if counts else 0.0)


STEPS = Steps(batch_loss=batch_loss, validate=validate, collate=collate)


def prepare_maskrcnn(project: Path, config: TrainConfig, name: str, device: str = "cpu") -> Setup:
    """Data, Mask R-CNN, steps and model description of an instance run with ``--model maskrcnn``."""
    if config.dims != 2:
        raise ConfigError("Mask R-CNN is 2D only; use --model unet for 3D instance segmentation.")
    data = load_instance_data(
        project / "train", config.normalization, config.axes, as_labels=True, on_nonfinite=config.on_nonfinite
    )
    halo = halo_for(object_boxes(data.samples))
    train_samples, val_samples, validation = split_validation(
        data.samples, config.val_fraction, config.seed, gap=halo, multiple=DETECTOR_MIN_SIZE
    )
    boxes = object_boxes(data.samples)
    if not boxes.size:
        raise ConfigError(f"{project / 'train'}: the label images hold no objects to train Mask R-CNN on.")
    sides = np.sqrt(boxes[:, 0] * boxes[:, 1])
    spec = MaskRCNNSpec(
        in_channels=data.in_channels,
        anchor_sizes=anchor_sizes_for(sides),
        max_detections=max_detections_for(data.samples, config.tile_size),
    )
    plan = replace(
        make_detection_plan(
            [s.target.shape for s in train_samples],
            config.plan_requests,
            device,
            config.resolved_learning_rate,
        ),
        validation=validation,
    )
    patch = plan.patch[-1]
    config = replace(
        config.with_plan(plan).with_image_side(smallest_side(train_samples)),
        image_size=patch,
        model="maskrcnn",
        num_classes=None,
        loss=None,  # torchvision's Mask R-CNN losses
        dropout=0.0,  # no dropout in Mask R-CNN, so no Monte Carlo uncertainty
        uncertainty=False,
    )
    info = ModelInfo(
        task="instance",
        in_channels=data.in_channels,
        num_classes=2,
        size_multiple=1,
        halo=halo,
        normalization=config.normalization,
        axes=data.axes,
        name=name,
        class_names=DETECTOR_CLASSES,
        output="labels",
        training={
            "n_train": len(train_samples),
            "n_val": len(val_samples),
            "patch": [patch, patch],
            "loss": "Mask R-CNN (torchvision)",
            "anchor_sizes": list(spec.anchor_sizes),
            "object_side_median": round(float(np.median(sides)), 1),
        },
    )
    summary = (
        f"{data_summary(len(train_samples), len(val_samples), data.in_channels)}, {sides.size} objects "
        f"(median side {np.median(sides):.0f} px), Mask R-CNN with anchors "
        f"{', '.join(map(str, spec.anchor_sizes))} px, crops of up to {patch} px"
    )
    return Setup(
        config=config,
        model=InstanceMaskRCNN(spec),
        spec=spec,
        info=info,
        train_set=DetectionDataset(
            train_samples, patch, config.augmentation, config.seed, plan.steps_per_epoch * plan.batch_size
        ),
        val_set=DetectionDataset(val_samples, patch, None) if val_samples else None,
        plan=plan,
        loss=lambda out, y: out,  # unused: STEPS computes the loss
        num_classes=2,
        summary=summary,
        steps=STEPS,
    )
