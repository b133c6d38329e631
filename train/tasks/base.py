"""The training side of a task: what ``idl-train`` needs to know to train its networks.

:func:`idl.train.pipeline.train_project` runs the same stages for every task and asks the task's
:class:`Trainer` (found by name through :mod:`idl.train.tasks.registry`) for what differs: the
networks it trains, its losses and learning rate, and :meth:`Trainer.prepare`, which reads the data
and builds the network, its datasets, loss, validation and description for the inference side (a
:class:`~idl.train.setup.Setup`). Adding a task means a subclass here, its inference-side
counterpart (:mod:`idl.infer.tasks`) and one ``register`` call on each side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import torch
    from torch import nn

    from idl.train.config import TrainConfig
    from idl.train.pretrained import Pretrained
    from idl.train.setup import Setup


@dataclass(frozen=True)
class LossChoice:
    """The losses that fit a task's data, the default among them, and how errors name the data."""

    default: str
    allowed: tuple[str, ...]
    kind: str  # e.g. "binary segmentation"


@dataclass(frozen=True)
class Start:
    """What a run starts from: pretrained weights, the checkpoint being resumed, the device."""

    device: torch.device
    pretrained: Pretrained | None = None
    saved: dict[str, Any] | None = None
    processes: int = 1  # training together (torchrun): the plan's batch is the global batch

    @property
    def architecture(self) -> dict[str, Any]:
        """The architecture of the weights the run starts from (pretrained, or the run resumed)."""
        if self.pretrained is not None:
            return self.pretrained.architecture
        return dict((self.saved or {}).get("spec", {}))


@dataclass(frozen=True)
class PostprocessingFit:
    """Post-processing thresholds chosen on the validation images, with the evidence: the validation
    score of each setting tried (in the order tried; the first best wins, so the defaults win ties)."""

    thresholds: dict[str, float]
    metric: str
    scores: list[tuple[dict[str, float], float]]

    @classmethod
    def first_best(cls, metric: str, scores: list[tuple[dict[str, float], float]]) -> PostprocessingFit:
        """The fit of the first setting of ``scores`` (in the order tried) that scores best."""
        chosen = max(scores, key=lambda row: row[1])  # max keeps the first of equals: the defaults win ties
        return cls(chosen[0], metric, scores)

    @property
    def best(self) -> float:
        return max(score for _, score in self.scores)

    def describe(self) -> str:
        default = self.scores[0]
        chosen = ", ".join(f"{k} {v:g}" for k, v in self.thresholds.items())
        return (
            f"{chosen} fitted on the validation images: {self.metric} {self.best:.4f} "
            f"(the defaults, {', '.join(f'{k} {v:g}' for k, v in default[0].items())}: {default[1]:.4f}; "
            f"{len(self.scores)} settings tried)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds,
            "metric": self.metric,
            "scores": [{**setting, self.metric: score} for setting, score in self.scores],
        }


class Trainer:
    """How one task trains. Subclasses set ``task`` and override :meth:`losses` and :meth:`prepare`."""

    task: ClassVar[str] = ""  # the name users give with --task
    models: ClassVar[tuple[str, ...]] = ("unet",)  # networks it can train; the first is the default
    loss_names: ClassVar[tuple[str, ...]] = ()  # every loss it knows (for the config's name check)
    dims: ClassVar[int | None] = None  # a fixed dimensionality (2 for classification), else from the data
    min_image_size: ClassVar[int] = 16  # the smallest --image-size (a training patch side)
    precise_batch_norm: ClassVar[bool] = False  # recompute batch-norm statistics after each epoch
    metric: ClassVar[str] = "score"  # the validation score: what the evaluation reports first
    # augmentations when none are given (flips and quarter turns: objects in images without an up or
    # down, as in segmentation)
    default_augmentations: ClassVar[tuple[str, ...]] = ("flip", "rot90")

    def calibration_rows(
        self, setup: Setup, model: nn.Module, device: Any
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The validation logits ``(N, K)`` and targets ``(N,)`` a temperature is fitted on
        (:mod:`idl.train.calibrate`), or None for a task whose outputs are not calibrated this way."""
        return None

    def sigma_rows(
        self, setup: Setup, model: nn.Module, device: Any, samples: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The validation residuals of the deterministic prediction and the standard deviation of
        ``samples`` Monte Carlo samples, pixel by pixel (regression's calibration,
        :func:`idl.train.calibrate.fit_sigma_scale`), or None for a task without such a map."""
        return None

    def fit_postprocessing(self, setup: Setup, model: nn.Module, device: Any) -> PostprocessingFit | None:
        """The thresholds of the inference side's post-processing that score best on the validation
        images, or None for a task without such thresholds (or without validation images)."""
        return None

    def default_model(self, device: str) -> str:
        """The network trained when none is named."""
        return self.models[0]

    def learning_rate(self, model: str | None) -> float:
        """Adam's step size when none is set."""
        return 1e-3

    def validation_metric(self, model: str | None) -> str:
        """The name of the validation score for ``model`` (default: :attr:`metric`)."""
        return self.metric

    def losses(self, num_classes: int) -> LossChoice:
        """The losses that fit data with ``num_classes`` classes (0: not classes)."""
        raise NotImplementedError

    def prepare(self, project: Path, config: TrainConfig, start: Start) -> Setup:
        """Read ``PROJECT/train`` and build the run: network, datasets, loss, validation, plan and the
        model's description (``Setup.config`` has every "from the data" setting resolved)."""
        raise NotImplementedError
