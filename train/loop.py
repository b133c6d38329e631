"""The training loop: Adam, early stopping on validation loss, checkpoints every epoch, resumable."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from idl.infer.errors import IdlError
from idl.infer.metrics import jaccard
from idl.train.losses import LossFn, predicted_classes


@dataclass
class TrainState:
    """Progress of a run, saved in ``last.pt`` so ``--resume`` continues where it stopped."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LoopSettings:
    epochs: int
    batch_size: int
    patience: int
    seed: int
    num_classes: int
    progress: bool = True
    task: str = "semantic"
    precise_batch_norm: bool = False  # recompute batch-norm statistics after every epoch
    score_name: str = ""  # the validation score's name when the task's default does not apply

    @property
    def metric(self) -> str:
        """The validation score shown and logged next to the loss."""
        if self.score_name:
            return self.score_name
        return {"regression": "pearson", "classification": "accuracy"}.get(self.task, "jaccard")


BatchLoss = Callable[[torch.nn.Module, Any, Any, torch.device], torch.Tensor]
Validation = Callable[[torch.nn.Module, DataLoader, torch.device], tuple[float, float]]


@dataclass(frozen=True)
class Steps:
    """How a network that is not called as ``loss(model(x), y)`` trains: the loss of one batch, the
    validation (mean loss, score) and how samples form a batch (e.g. lists of differently sized
    images for Mask R-CNN)."""

    batch_loss: BatchLoss
    validate: Validation
    collate: Callable[[list[Any]], Any] | None = None


def _confusion(pred: torch.Tensor, target: torch.Tensor, k: int) -> np.ndarray:
    index = target.reshape(-1) * k + pred.reshape(-1)
    return torch.bincount(index, minlength=k * k).reshape(k, k).cpu().numpy()


def _pearson_from_sums(sums: np.ndarray) -> float:
    """Pearson r from ``n, sum p, sum t, sum p^2, sum t^2, sum p*t`` (float64, streaming)."""
    n, sp, st, spp, stt, spt = sums
    cov = spt - sp * st / n
    var = (spp - sp * sp / n) * (stt - st * st / n)
    return float(cov / np.sqrt(var)) if var > 0 else 0.0


def validate(
    model: torch.nn.Module, loader: DataLoader, loss_fn: LossFn, settings: LoopSettings, device: torch.device
) -> tuple[float, float]:
    """Mean validation loss (per patch or image) and the score over all validation pixels: Jaccard for
    segmentation, Pearson correlation for regression; for classification the accuracy over images."""
    model.eval()
    total_loss, count = 0.0, 0
    k = settings.num_classes
    cm = np.zeros((k, k), np.int64)
    sums = np.zeros(6)
    with torch.no_grad():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            out = model(x)
            total_loss += float(loss_fn(out, y)) * x.shape[0]
            count += x.shape[0]
            if settings.task == "regression":
                p, t = out.double(), y.double()
                sums += [
                    p.numel(),
                    *(float(v) for v in (p.sum(), t.sum(), (p * p).sum(), (t * t).sum(), (p * t).sum())),
                ]
            else:
                cm += _confusion(predicted_classes(out), y, k)
    if settings.task == "regression":
        score = _pearson_from_sums(sums)
    elif settings.task == "classification":
        score = float(np.trace(cm) / max(cm.sum(), 1))
    else:
        score = jaccard(cm)
    return total_loss / count, score


def recompute_batch_norm(model: torch.nn.Module, loader: DataLoader, device: torch.device) -> int:
    """Replace the running statistics of the trainable batch-norm layers by their average over the
    batches of one pass of ``loader`` with the current weights ("precise BN", in training mode as the
    statistics were gathered during training); returns how many layers.

    With few steps per epoch (small data sets) the exponential running averages lag behind the
    weights, and evaluation-mode predictions swing from epoch to epoch (a classifier's validation
    accuracy jumping between chance and 0.8). Frozen layers keep their statistics.
    """
    norms = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training
    ]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    with torch.no_grad():
        for x, _ in loader:
            model(x.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return len(norms)


def _standard_loss(loss_fn: LossFn) -> BatchLoss:
    def batch_loss(model: torch.nn.Module, x: Any, y: Any, device: torch.device) -> torch.Tensor:
        return loss_fn(model(x.to(device)), y.to(device))

    return batch_loss


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: bool,
) -> float:
    """One pass over the training patches; returns the mean loss per sample."""
    model.train()
    total, count = 0.0, 0
    for x, y in tqdm(loader, unit="batch", leave=False, disable=not progress, desc="train"):
        optimizer.zero_grad(set_to_none=True)
        loss = batch_loss(model, x, y, device)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / count


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: Dataset,
    val_set: Dataset,
    loss_fn: LossFn,
    settings: LoopSettings,
    state: TrainState,
    device: torch.device,
    on_epoch: Callable[[TrainState, bool], None],
    steps: Steps | None = None,
) -> TrainState:
    """Train until ``settings.epochs`` or early stopping; ``on_epoch(state, improved)`` saves and logs.
    ``steps`` replaces the loss and validation of networks called as ``loss(model(x), y)``."""
    collate = steps.collate if steps is not None else None
    batch_loss = steps.batch_loss if steps is not None else _standard_loss(loss_fn)
    val_loader = DataLoader(val_set, batch_size=settings.batch_size, shuffle=False, collate_fn=collate)
    bar = tqdm(
        total=settings.epochs, initial=state.epoch, unit="epoch", disable=not settings.progress, desc="epochs"
    )
    while not state.finished and state.epoch < settings.epochs:
        train_set.epoch = state.epoch
        shuffle = torch.Generator().manual_seed(settings.seed * 100_003 + state.epoch)
        # a last batch of one image breaks batch norm where features are 1 x 1 (small classifiers)
        single = len(train_set) % settings.batch_size == 1 and len(train_set) > 1
        loader = DataLoader(
            train_set,
            batch_size=settings.batch_size,
            shuffle=True,
            generator=shuffle,
            drop_last=single,
            collate_fn=collate,
        )
        train_loss = train_epoch(model, loader, batch_loss, optimizer, device, settings.progress)
        if settings.precise_batch_norm:
            model.train()
            recompute_batch_norm(model, loader, device)
        if steps is not None:
            val_loss, val_score = steps.validate(model, val_loader, device)
        else:
            val_loss, val_score = validate(model, val_loader, loss_fn, settings, device)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise IdlError(
                f"training diverged in epoch {state.epoch + 1} (training loss {train_loss}, validation loss "
                f"{val_loss}). Lower --learning-rate, check the images for NaN/inf values, or resume from "
                "the last good epoch with --resume."
            )
        state.epoch += 1
        improved = val_loss < state.best_val_loss
        if improved:
            state.best_val_loss, state.best_epoch, state.bad_epochs = val_loss, state.epoch, 0
        else:
            state.bad_epochs += 1
        state.history.append(
            {
                "epoch": state.epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                f"val_{settings.metric}": val_score,
            }
        )
        if state.bad_epochs >= settings.patience or state.epoch >= settings.epochs:
            state.finished = True
        on_epoch(state, improved)
        bar.update(1)
        bar.set_postfix(
            loss=f"{train_loss:.4f}",
            val_loss=f"{val_loss:.4f}",
            **{f"val_{settings.metric}": f"{val_score:.3f}"},
        )
    bar.close()
    return state
