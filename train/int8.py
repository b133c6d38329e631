"""The training side of the int8 graphs (:mod:`idl.export.quantize`): a run's calibration patches
and validation images, for ``idl-train`` after export and for ``idl-export`` from a checkpoint.

idl-export has no run: it rebuilds the run's data from the checkpoint's settings and the project
its training images are in (the checkpoint's own project, ``PROJECT/model/best.pt``, unless
``--project`` names another). The same settings and seed give the same validation images as
training had. Without the project's training images no int8 graph is made, and the model
description says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from idl.export.quantize import (
    CALIBRATION_PATCHES,
    QuantizationData,
    quantize_model,
    rule_for,
    skip_quantization,
)
from idl.infer.core.errors import IdlError
from idl.infer.core.model_info import ModelInfo
from idl.train.config import TrainConfig, config_from_mapping
from idl.train.setup import Setup
from idl.train.tasks.base import Start
from idl.train.tasks.registry import trainer_for
from idl.train.validation import WholeImageValidation

log = logging.getLogger("idl")


def training_inputs(dataset: Dataset, count: int = CALIBRATION_PATCHES) -> list[np.ndarray]:
    """``count`` items of a training set's first epoch, spread over it (augmented as in training;
    the items are seeded, so the same run, and idl-export's rebuilt one, give the same patches):
    network inputs ``(1, C, *spatial)``."""
    length = len(dataset)  # type: ignore[arg-type]
    if length == 0:
        return []
    picks = np.unique(np.linspace(0, length - 1, min(count, length)).round().astype(int))
    epoch = getattr(dataset, "epoch", None)
    if epoch is not None:  # the first epoch's items: idl-export's rebuilt run draws the same ones
        dataset.epoch = 0  # type: ignore[attr-defined]
    inputs = []
    try:
        for index in picks:
            x = dataset[int(index)][0]
            array = x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            inputs.append(np.ascontiguousarray(array[np.newaxis], np.float32))
    finally:
        if epoch is not None:
            dataset.epoch = epoch  # type: ignore[attr-defined]
    return inputs


def validation_images(setup: Setup) -> list[np.ndarray]:
    """The validation images as the int8 check compares them: normalized channels-last images of the
    U-Net tasks (predicted whole), a classifier's network inputs ``(C, H, W)``; empty without."""
    if isinstance(setup.validation, WholeImageValidation):
        return [s.image for s in setup.validation.samples]
    images = getattr(setup.val_set, "images", None)
    return [np.asarray(image, np.float32) for image in images] if images is not None else []


def quantization_data(setup: Setup, config: TrainConfig) -> QuantizationData:
    """A run's calibration patches and validation images (none for a model without an agreement
    rule, :func:`~idl.export.quantize.rule_for`: its graphs are not quantized)."""
    if rule_for(setup.info) is None:
        return QuantizationData([], [])
    return QuantizationData(
        training_inputs(setup.train_set), validation_images(setup), config.tile_size, config.mc_samples
    )


def setup_of_checkpoint(project: Path, payload: dict[str, Any], source: str) -> tuple[Setup, TrainConfig]:
    """The run's data rebuilt from a checkpoint's settings (``payload``, read from ``source``) and
    ``project``'s training images, on the CPU."""
    config = TrainConfig(**config_from_mapping(dict(payload.get("config") or {}), source))
    setup = trainer_for(config.task).prepare(project, config, Start(torch.device("cpu"), saved=payload))
    return setup, setup.config


def quantize_checkpoint(
    det_path: Path,
    mc_path: Path | None,
    info: ModelInfo,
    payload: dict[str, Any],
    checkpoint: Path,
    project: Path,
) -> ModelInfo:
    """idl-export's int8 graphs: calibrated and checked on ``project``'s data as the checkpoint's run
    split it; without training images there, none is made (and the model description says why)."""
    if rule_for(info) is None:  # recorded as not quantized, whatever the project holds
        return quantize_model(det_path, mc_path, info, QuantizationData([], []))
    if not (project / "train").is_dir():
        reason = (
            f"idl-export found no training images in {project / 'train'} to calibrate and check it on; "
            "export with --project PROJECT"
        )
        log.warning("no int8 graph: %s", reason)
        return skip_quantization(det_path, mc_path, info, reason)
    try:
        setup, config = setup_of_checkpoint(project, payload, str(checkpoint))
    except (IdlError, OSError, ValueError, TypeError) as exc:
        reason = f"the training data of {project} could not be read as the checkpoint's run read it ({exc})"
        log.warning("no int8 graph: %s", reason)
        return skip_quantization(det_path, mc_path, info, reason)
    return quantize_model(det_path, mc_path, info, quantization_data(setup, config))
