"""Pixel-wise regression on the training side: targets normalized by their mean and standard
deviation, one linear output per target channel, a regression loss (mse by default), validated by
the mean Pearson r of whole images."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.evaluate.metrics import pearson
from idl.train.data import Sample, TrainingData, load_regression_data
from idl.train.losses import REGRESSION_LOSSES, LossFn, regression_loss
from idl.train.reference import Reference, regression
from idl.train.tasks.base import LossChoice
from idl.train.tasks.pixels import PixelTrainer
from idl.train.tasks.registry import register

if TYPE_CHECKING:
    from torch import nn

    from idl.train.config import TrainConfig
    from idl.train.setup import Setup


class MeanPearson:
    """The mean over images and target channels of Pearson's r between output and target."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, logits: np.ndarray, sample: Sample) -> None:
        target = np.moveaxis(sample.target, -1, 0)
        self.values += [pearson(p, t) for p, t in zip(logits, target, strict=True)]

    def result(self) -> float:
        return float(np.mean(self.values))


class RegressionTrainer(PixelTrainer):
    task = "regression"
    metric = "pearson"
    loss_names = REGRESSION_LOSSES
    objects = False

    def losses(self, num_classes: int) -> LossChoice:
        return LossChoice("mse", REGRESSION_LOSSES, "regression")

    def load_data(self, split_dir: Path, config: TrainConfig, spatial: str) -> TrainingData:
        return load_regression_data(
            split_dir, config.normalization, config.axes, spatial, config.on_nonfinite
        )

    def make_loss(self, name: str, num_classes: int) -> LossFn:
        return regression_loss(name)

    def describe_data(self, data: TrainingData) -> str:
        return f"regression of {len(data.target_mean)} channel(s)"

    def image_score(self, num_classes: int) -> MeanPearson:
        return MeanPearson()

    def sigma_rows(
        self, setup: Setup, model: nn.Module, device: Any, samples: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Validation pixels (at most :data:`~idl.train.calibrate.PIXELS`, a seeded choice): the
        residual of the deterministic output and the samples' standard deviation, both in the
        network's normalized target units (their ratio is what is fitted, the same in ground-truth
        units), channel by channel."""
        from idl.models import set_mc_dropout
        from idl.train.calibrate import PIXELS, at_most
        from idl.train.validation import WholeImageValidation

        validation = setup.validation
        if not isinstance(validation, WholeImageValidation) or not validation.samples:
            return None
        if samples < 2 or set_mc_dropout(model, False) == 0:
            return None
        rng = np.random.default_rng(0)
        limit = PIXELS // len(validation.samples)
        rows: list[tuple[np.ndarray, ...]] = []
        for plain, drawn, sample in validation.monte_carlo(model, device, samples):
            residual = (np.moveaxis(sample.target, -1, 0) - plain).ravel()
            rows.append(at_most(limit, rng, residual, drawn.std(axis=0).ravel()))
        return np.concatenate([r for r, _ in rows]), np.concatenate([s for _, s in rows])

    def reference(self, samples: list[Sample], num_classes: int) -> Reference:
        """The input itself, up to a linear map."""
        return regression([s.image for s in samples], [s.target for s in samples])


register(RegressionTrainer())
