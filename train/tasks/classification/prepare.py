"""A classification run: data, ResNet, plan, loss and model description (:func:`prepare_classification`)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.core.errors import ConfigError
from idl.infer.core.model_info import ModelInfo
from idl.infer.post.classes import class_indices, labelled_images
from idl.infer.post.typicality import fit_reference
from idl.models import ResNetClassifier, ResNetSpec
from idl.models.resnet import SMALL_INPUT
from idl.train.reference import classification as classification_reference
from idl.train.setup import Setup, data_summary
from idl.train.tasks.classification.data import (
    ImageDataset,
    class_weights,
    cross_entropy,
    load_classification_data,
    split_stratified,
)
from idl.train.tasks.classification.orientation import OrientationChoice
from idl.train.tasks.classification.plan import make_classification_plan

if TYPE_CHECKING:
    from idl.train.config import TrainConfig

log = logging.getLogger("idl")


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
    train_set = ImageDataset(
        data.images[train_idx],
        data.labels[train_idx],
        config.augmentation,
        config.seed,
        plan.steps_per_epoch * plan.batch_size,
    )
    choice = None
    if config.augment_planned and len(val_idx):  # flips and quarter turns: from the data
        choice = OrientationChoice(
            train_set,
            data.images[val_idx],
            data.labels[val_idx],
            data.class_names,
            config.augment,
            config.augment_settings,
        )
        plan = replace(plan, augmentation=choice.describe(None))
    return Setup(
        config=config,
        model=ResNetClassifier(spec),
        spec=spec,
        info=info,
        train_set=train_set,
        val_set=ImageDataset(data.images[val_idx], data.labels[val_idx]) if len(val_idx) else None,
        plan=plan,
        loss=cross_entropy(weights),
        num_classes=k,
        summary=summary,
        choice=choice,
        reference=classification_reference(data.labels[val_idx]) if len(val_idx) else None,
    )
