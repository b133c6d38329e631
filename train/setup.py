"""What a task prepares for the shared training run: the resolved settings, the network, its
description for the inference side, the datasets and the loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn
from torch.utils.data import Dataset

from idl.infer.core.model_info import ModelInfo
from idl.train.loop import Steps, Validator
from idl.train.losses import LossFn
from idl.train.plan import Plan

if TYPE_CHECKING:
    from idl.train.config import TrainConfig
    from idl.train.reference import Reference


class Choice(Protocol):
    """A decision a task takes while training, from what the network has learned so far (a
    classifier's flips and quarter turns): due at some epoch, decided on the main process, applied on
    every one, and kept in :attr:`idl.train.loop.TrainState.decisions` under :attr:`name`."""

    name: str

    def due(self, epoch: int, epochs: int) -> bool:
        """Whether to decide after ``epoch`` of ``epochs``."""

    def decide(self, model: nn.Module, device: Any, epoch: int, epochs: int) -> dict[str, Any] | None:
        """The decision (saved with the state), or None to wait for a later epoch."""

    def apply(self, decision: dict[str, Any]) -> None:
        """Put ``decision`` into effect for the epochs to come."""

    def describe(self, decision: dict[str, Any] | None) -> str:
        """The plan's line about it."""


@dataclass
class Setup:
    """Everything :func:`idl.train.pipeline.train_project` needs to train one task's network."""

    config: TrainConfig  # with every "decide from the data" setting resolved
    model: nn.Module
    spec: Any  # the network's spec dataclass (stored in checkpoints, compared on --resume)
    info: ModelInfo
    train_set: Dataset  # one epoch of samples (redrawn every epoch)
    val_set: Dataset | None  # validated batch by batch (classification, Mask R-CNN), or None
    loss: LossFn
    num_classes: int  # 0 for regression
    summary: str  # one log line describing the data and the network
    plan: Plan
    steps: Steps | None = None  # loss and validation of networks not trained as loss(model(x), y)
    validation: Validator | None = None  # whole-image validation (U-Net tasks); overrides val_set
    choice: Choice | None = None  # a decision taken while training (see Choice)
    # the best validation score without training: a run no better at the budget's check starts again
    reference: Reference | None = None


def data_summary(n_train: int, n_val: int, channels: int) -> str:
    """The start of every task's log line about its data."""
    return f"{n_train} training / {n_val} validation images, {channels} channel(s)"
