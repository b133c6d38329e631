"""What the U-Net tasks share (semantic, instance, regression): the data as image and target pairs,
a plan from the data's fingerprint, a U-Net with one output channel per class (or target), random
patches, and validation on whole images tiled as at inference."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from idl.infer.core.errors import ConfigError
from idl.infer.core.model_info import ModelInfo
from idl.infer.tasks.registry import task_named
from idl.models import UNet, UNetSpec
from idl.models.unet import PaddedNetwork
from idl.train.data import PatchDataset, Sample, TrainingData, check_split, smallest_side, split_validation
from idl.train.losses import LossFn, make_loss
from idl.train.plan import make_plan, validation_voxels
from idl.train.prepare import (
    adopt_architecture,
    check_image_sizes,
    fingerprint_of,
    fit_patch,
    gpu_memory,
    model_name,
)
from idl.train.reference import Reference
from idl.train.setup import Setup, data_summary
from idl.train.tasks.base import Start, Trainer
from idl.train.validation import ImageScore, WholeImageValidation, validation_tile

if TYPE_CHECKING:
    from idl.train.config import TrainConfig


class PixelTrainer(Trainer):
    """A task trained as a U-Net on image and target pairs. Subclasses read the data
    (:meth:`load_data`), score validation images (:meth:`image_score`) and name their losses."""

    class_names: ClassVar[tuple[str, ...]] = ()  # names of the output classes, when fixed by the task
    objects: ClassVar[bool] = True  # the targets are classes or labels (the plan measures objects)
    network: ClassVar[type[PaddedNetwork]] = UNet  # the network it trains (--model name: network_name)
    spec_type: ClassVar[type[UNetSpec]] = UNetSpec  # its spec (the halo and size multiples come from it)
    network_name: ClassVar[str] = "unet"
    kind: ClassVar[str] = ""  # the inference side's task module (ModelInfo.kind); "": the task's

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        """Images and targets of ``split_dir``, normalized as at inference."""
        raise NotImplementedError

    def image_score(self, num_classes: int) -> ImageScore:
        """The validation score over whole images, after the task's own post-processing."""
        raise NotImplementedError

    def reference(self, samples: list[Sample], num_classes: int) -> Reference | None:
        """The best validation score of an answer without training (:mod:`idl.train.reference`), or
        None where the task has none: such runs are never started again."""
        return None

    def placing(self, samples: list[Sample]) -> list[np.ndarray] | None:
        """Per sample, the map whose foreground classes patches are placed on; None: the targets."""
        return None

    def network_spec(self, spec: UNetSpec, data: TrainingData) -> UNetSpec:
        """The spec of the network trained (a subclass's network may need more than a U-Net's)."""
        return spec

    def loss_name(self, config: TrainConfig, num_classes: int) -> str:
        """The loss trained with (the config's, InstantDL's where it fits, or the task's default)."""
        return config.resolved_loss(num_classes)

    def make_loss(self, name: str, num_classes: int) -> LossFn:
        """The loss ``name`` for logits ``(N, K, ...)`` and class maps (default: segmentation)."""
        return make_loss(name, num_classes)

    def describe_data(self, data: TrainingData) -> str:
        """What the targets are, for the run's log line."""
        return "binary" if data.num_classes == 2 else f"{data.num_classes} classes"

    def prepare(self, project: Path, config: TrainConfig, start: Start) -> Setup:
        if config.model not in (None, self.network_name):
            raise ConfigError(
                f"model '{config.model}' does not fit the {config.task} task; use {self.network_name}"
            )
        if start.pretrained is not None:
            config = adopt_architecture(config, start.pretrained)
        assert config.dims is not None
        dims, spatial = config.dims, "zyx"[-config.dims :]
        data = self.load_data(project / "train", config, spatial)
        check_image_sizes(data.samples, self.min_image_size)
        if (project / "test").is_dir() and config.evaluate:
            check_split(project / "test", config.axes, spatial)  # fails now, not after training
        fingerprint = fingerprint_of(project, data, dims, self.objects)
        planned = partial(
            make_plan,
            fingerprint,
            config.plan_requests,
            str(start.device),
            base_lr=config.resolved_learning_rate,
            memory_gb=gpu_memory(start.device),
            processes=start.processes,
        )
        plan = planned()
        spec = self.spec_type(depth=plan.depth, dims=dims, anisotropic=plan.anisotropic)
        halo = (spec.z_halo,) * (dims == 3) + (spec.halo,) * 2
        train_samples, val_samples, validation = split_validation(
            data.samples, config.val_fraction, config.seed, gap=spec.halo, multiple=spec.size_multiple
        )
        tile = validation_tile(dims, config.tile_size, halo, spec.multiples)
        shapes = [s.target.shape[:dims] for s in val_samples]
        plan = planned(validation_voxels=validation_voxels(shapes, tile, halo, spec.multiples))  # same depth
        plan = replace(
            fit_patch(plan, train_samples, spec.multiples, spatial, config.batch_size is not None),
            validation=validation,
        )
        loss_name = self.loss_name(config, data.num_classes)
        config = replace(
            config.with_plan(plan).with_image_side(smallest_side(train_samples)),
            model=self.network_name,
            num_classes=data.num_classes or None,
            loss=loss_name,
            dropout=config.resolved_dropout,
        )
        spec = self.spec_type(
            in_channels=data.in_channels,
            depth=plan.depth,
            base_filters=config.base_filters,
            dropout=config.dropout,
            dims=dims,
            anisotropic=plan.anisotropic,
            dropout_at=config.dropout_at,
        )
        patch = plan.patch
        info = ModelInfo(
            task=self.task,
            kind=self.kind,
            in_channels=data.in_channels,
            num_classes=data.num_classes,
            size_multiple=spec.size_multiple,
            halo=spec.halo,
            z_multiple=spec.z_multiple if dims == 3 else 0,
            z_halo=spec.z_halo if dims == 3 else 0,
            dims=dims,
            normalization=config.normalization,
            axes=data.axes,
            dropout=config.dropout,
            name=model_name(project, dims, self.network_name),
            target_mean=data.target_mean,
            target_std=data.target_std,
            class_names=self.class_names,
            pixel_size=fingerprint.pixel_size,
            training={
                "n_train": len(train_samples),
                "n_val": len(val_samples),
                "patch": list(patch),
                "loss": loss_name,
                "validation": validation,
                "steps": plan.total_steps,
                "architecture": self.network_name,
            },
        )
        # the channels the inference side reads: one sigmoid channel for two classes, one per class,
        # or one linear output per regression target (the task's own count, never a second copy)
        spec = self.network_spec(replace(spec, out_channels=task_named(info.kind).out_channels(info)), data)
        summary = (
            f"{data_summary(len(train_samples), len(val_samples), data.in_channels)}, "
            f"{self.describe_data(data)}, patches of {' x '.join(map(str, patch))} px, loss {loss_name}"
        )
        loss = self.make_loss(loss_name, data.num_classes)
        score = partial(self.image_score, max(data.num_classes, 2))
        whole_images = WholeImageValidation(val_samples, score, loss, tile, halo, spec.multiples)
        return Setup(
            config=config,
            model=self.network(spec),
            spec=spec,
            info=info,
            train_set=PatchDataset(
                train_samples,
                patch,
                config.augmentation,
                config.seed,
                plan.steps_per_epoch,
                plan.batch_size,
                placing=self.placing(train_samples),
            ),
            val_set=None,
            validation=whole_images if val_samples else None,
            loss=loss,
            num_classes=data.num_classes,
            summary=summary,
            plan=plan,
            reference=self.reference(val_samples, max(data.num_classes, 2)) if val_samples else None,
        )
