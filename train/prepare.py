"""What the tasks' preparations share: the model's name, the project's images and dimensionality,
the device's memory, the data fingerprint the plan is made from, and fitting the plan to the data."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from idl.infer.core.axes import guess_axes
from idl.infer.core.errors import DataError
from idl.infer.core.project import pair_files
from idl.infer.io.images import read_image
from idl.infer.io.physical import disagreeing, pixel_sizes
from idl.train.data import Sample, TrainingData, patch_shape_for
from idl.train.plan import Fingerprint, Plan, class_components, object_sizes, receptive_field, typical_size

if TYPE_CHECKING:
    from idl.train.config import TrainConfig
    from idl.train.pretrained import Pretrained

log = logging.getLogger("idl")


def model_name(project: Path, dims: int = 2, architecture: str = "unet") -> str:
    """The model's name (and package file name): the project folder's name plus the architecture
    (``unet2d``, ``unet3d``, ``resnet50`` ...)."""
    suffix = f"unet{dims}d" if architecture == "unet" else architecture
    return f"{Path(project).resolve().name}-{suffix}"


def split_images(split_dir: Path) -> list[Path]:
    """The image files of a split (either layout), or none when it has no images."""
    try:
        return [p.image for p in pair_files(split_dir, require_groundtruth=False)]
    except DataError:
        return []


def training_images(project: Path) -> list[Path]:
    """The image files of ``PROJECT/train``."""
    return split_images(project / "train")


def gpu_memory(device: torch.device) -> float | None:
    """The GPU's memory in GB (the plan's batch grows with it), or ``None`` on CPU."""
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).total_memory / 2**30


def detect_dims(project: Path, axes: str | None) -> int:
    """3 when the training images are volumes (a z axis in ``axes``, four axes, or three axes none of
    which is small enough to be channels), else 2; logged."""
    if axes is not None:
        return 3 if "z" in axes.lower() else 2
    images = training_images(project)
    if not images:
        return 2
    shape = read_image(images[0]).shape
    dims = 3 if len(shape) >= 4 or (len(shape) == 3 and guess_axes(shape, "yx") is None) else 2
    if dims == 3:
        log.info(
            "%s has shape %s: a volume, so a 3D U-Net (pass --dims 2 if it is not)", images[0].name, shape
        )
    return dims


def training_pixel_size(project: Path, dims: int) -> tuple[float, ...]:
    """The training images' pixel size in micrometres per spatial axis ((z,) y, x; the median over
    the images whose files record it), or () when a file records none. Images whose sizes differ from
    the median by more than 10 % get a warning naming them: a network learns objects at the size in
    pixels it sees them, so rescale such images or train them apart."""
    spatial = "zyx"[-dims:]
    sizes = {path: pixel_sizes(path) for path in training_images(project)}
    odd = disagreeing(sizes)
    if odd:
        shown = "; ".join(odd[:5]) + (f"; and {len(odd) - 5} more" if len(odd) > 5 else "")
        log.warning(
            "the training images' pixel sizes disagree by more than 10 %%: %s. The network sees objects "
            "at their size in pixels: resample these images to one pixel size, or train them apart.",
            shown,
        )
    if not sizes or not all(all(a in s for a in spatial) for s in sizes.values()):
        return ()
    return tuple(float(np.median([s[a] for s in sizes.values()])) for a in spatial)


def fingerprint_of(project: Path, data: TrainingData, dims: int, objects: bool = True) -> Fingerprint:
    """Sizes, spacing and (with ``objects``: the targets are classes or labels) object sizes of the
    training data (see :mod:`idl.train.plan`)."""
    measured = [
        object_sizes(s.labels if s.labels is not None else class_components(s.target))
        for s in data.samples
        if objects
    ]
    sizes = np.concatenate([m[0] for m in measured] or [np.zeros(0)])
    areas = np.concatenate([m[1] for m in measured] or [np.zeros(0)])
    size = training_pixel_size(project, dims)
    spacing = size if dims == 3 and size else None
    return Fingerprint(
        dims=dims,
        shapes=tuple(tuple(s.target.shape[:dims]) for s in data.samples),
        channels=data.in_channels,
        spacing=spacing,
        object_size=typical_size(sizes, areas),
        n_objects=int(sizes.size),
        names=tuple(s.source for s in data.samples),
        pixel_size=size,
    )


def check_image_sizes(samples: list[Sample], minimum: int) -> None:
    """Refuse training images with an in-plane side below ``minimum`` px (the smallest training
    patch), naming them: the plan would otherwise shrink every patch to the smallest image, or fail
    on a setting it derived from it."""
    small = [s for s in samples if min(s.image.shape[-3:-1]) < minimum]
    if not small:
        return
    first = small[0]
    size = " x ".join(map(str, first.image.shape[:-1]))
    more = f" (and {len(small) - 1} more, e.g. {small[1].source})" if len(small) > 1 else ""
    raise DataError(
        f"{first.path or first.name}: the training image is {size} px{more}; training needs images of at "
        f"least {minimum} x {minimum} px (the smallest training patch). Remove it from the training data "
        "(idl-predict predicts images of any size) or use a larger image."
    )


def fit_patch(
    plan: Plan, samples: list[Sample], multiples: tuple[int, ...], spatial: str, batch_set: bool
) -> Plan:
    """The plan with its patch shrunk to fit the training region (after a region was held out), the
    batch grown to keep the voxels per step (unless set)."""
    patch = patch_shape_for(samples, plan.patch, multiples, spatial)
    if patch == plan.patch:
        return plan
    batch = (
        plan.batch_size
        if batch_set
        else max(plan.batch_size, plan.batch_size * math.prod(plan.patch) // math.prod(patch))
    )
    region = min(samples, key=lambda s: min(s.image.shape[-3:-1]))
    shape = " x ".join(map(str, region.image.shape[:-1]))
    why = (
        f"shrunk from {' x '.join(map(str, plan.patch))} px to fit the training region of {region.source} "
        f"({shape} px; the rest is held out for validation)"
    )
    receptive = receptive_field(plan.depth)
    if plan.dims == 2 and patch[-1] < receptive:
        why += f", less than the receptive field of {receptive} px"
    return replace(plan, patch=patch, batch_size=batch, sources={**plan.sources, "patch": why})


def adopt_architecture(config: TrainConfig, pretrained: Pretrained) -> TrainConfig:
    """Fine-tuning needs the pretrained network's depth and width; take them from the weights."""
    arch = pretrained.architecture
    wanted = {k: arch[k] for k in ("depth", "base_filters") if k in arch and arch[k] != getattr(config, k)}
    if wanted:
        log.info("using the pretrained network's %s", ", ".join(f"{k}={v}" for k, v in wanted.items()))
    return replace(config, **wanted)
