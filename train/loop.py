"""The training loop: Adam with a warm-up and cosine learning-rate schedule over a fixed budget of
optimizer steps, validation after every epoch (a fixed number of steps), the best epoch by the
validation score, early stopping, checkpoints every epoch, resumable."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from idl.infer.core.errors import IdlError
from idl.train import budget
from idl.train.distributed import SINGLE, Ranks, share_indices
from idl.train.losses import LossFn, predicted_classes
from idl.train.plan import learning_rate_at

log = logging.getLogger("idl")


@dataclass
class TrainState:
    """Progress of a run, saved in ``last.pt`` so ``--resume`` continues where it stopped."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_score: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    finished: bool = False
    seconds: float = 0.0  # spent training and validating (summed over resumed runs)
    history: list[dict[str, float]] = field(default_factory=list)
    # what the run decided while training (e.g. a classifier's orientation augmentation), kept for --resume
    decisions: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0  # the budget once extended or restarted (idl.train.budget); 0: the planned one
    extensions: list[str] = field(default_factory=list)  # why, one line per extension
    restarts: list[str] = field(default_factory=list)  # why, one line per restart
    restart_epoch: int = 0  # the epoch the current attempt started after (0: no restart)
    lr_scale: float = 1.0  # of the planned learning rate (lowered by restarts)

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
    metric: str = "score"  # the validation score's name, shown and logged next to the loss
    precise_batch_norm: bool = False  # recompute batch-norm statistics after every epoch
    steps_per_epoch: int = 0  # 0: whatever the training set's length gives
    learning_rate: float = 0.0  # 0: leave the optimizer's as it is (no schedule)
    warmup_steps: int = 0
    schedule: str = "trapezoid"  # see idl.train.plan.learning_rate_at
    amp: str = "off"  # mixed precision on CUDA: "bf16", "fp16" (with a gradient scaler) or "off"
    workers: int = 0  # data-loader worker processes (0: batches are made in the training process)
    pin_memory: bool = False  # page-locked batches, copied to the GPU while it computes
    # the budget may grow up to this many epochs while the validation score still rises
    # (idl.train.budget); 0 or at most ``epochs``: never extended
    max_epochs: int = 0
    # the best validation score without training (idl.train.reference): a run no better at the check
    # starts again; None: never
    reference: float | None = None
    reference_name: str = ""

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


BatchLoss = Callable[[torch.nn.Module, Any, Any, torch.device], torch.Tensor]
Validation = Callable[[torch.nn.Module, DataLoader, torch.device], tuple[float, float]]
Validator = Callable[[torch.nn.Module, torch.device], tuple[float, float]]


@dataclass(frozen=True)
class Steps:
    """How a network that is not called as ``loss(model(x), y)`` trains: the loss of one batch, the
    validation (mean loss, score) and how samples form a batch (e.g. lists of differently sized
    images for Mask R-CNN)."""

    batch_loss: BatchLoss
    validate: Validation
    collate: Callable[[list[Any]], Any] | None = None


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """The network in channels-last memory layout: convolutions on CPU run about 30 % faster
    (measured: 2D U-Net training step 0.35 -> 0.25 s, 3D 0.97 -> 0.67 s)."""
    volumes = any(p.ndim == 5 for p in model.parameters())
    return model.to(memory_format=torch.channels_last_3d if volumes else torch.channels_last)


def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A batch on ``device``, channels-last when it is an image (4D) or volume (5D) batch (copied
    while the GPU computes when the batch is in pinned memory)."""
    x = x.to(device, non_blocking=True)
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def validate(
    model: torch.nn.Module, loader: DataLoader, loss_fn: LossFn, settings: LoopSettings, device: torch.device
) -> tuple[float, float]:
    """Mean validation loss per sample and the accuracy: the share of samples (images for a
    classifier) whose predicted class is right."""
    model.eval()
    total_loss, count, right, seen = 0.0, 0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            x, y = to_device(x, device), y.to(device)
            out = model(x)
            total_loss += float(loss_fn(out, y)) * x.shape[0]
            count += x.shape[0]
            right += int((predicted_classes(out) == y).sum())
            seen += y.numel()
    return total_loss / count, right / max(seen, 1)


def recompute_batch_norm(model: torch.nn.Module, loader: Iterable[Any], device: torch.device) -> int:
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
            model(to_device(x, device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return len(norms)


def _standard_loss(loss_fn: LossFn) -> BatchLoss:
    def batch_loss(model: torch.nn.Module, x: Any, y: Any, device: torch.device) -> torch.Tensor:
        return loss_fn(model(to_device(x, device)), y.to(device))

    return batch_loss


AMP_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def train_epoch(
    model: torch.nn.Module,
    loader: DataLoader,
    batch_loss: BatchLoss,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    progress: bool,
    learning_rate: Callable[[int], float] | None = None,
    amp: str = "off",
) -> float:
    """One pass over the epoch's batches; returns the mean loss per sample. ``learning_rate(i)`` sets
    the step size of the epoch's ``i``-th step. ``amp`` ``bf16``/``fp16``: the forward pass and loss in
    that precision on CUDA (fp16 with a gradient scaler, so small gradients do not vanish)."""
    model.train()
    total, count = 0.0, 0
    enabled = amp in AMP_TYPES and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=enabled and amp == "fp16")
    for i, (x, y) in enumerate(
        tqdm(loader, unit="batch", leave=False, disable=None if progress else True, desc="train")
    ):
        if learning_rate is not None:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(i)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=AMP_TYPES.get(amp, torch.bfloat16), enabled=enabled):
            loss = batch_loss(model, x, y, device)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * len(x)
        count += len(x)
    return total / count


def loader_validation(
    val_set: Dataset,
    loss_fn: LossFn,
    settings: LoopSettings,
    steps: Steps | None = None,
) -> Validator:
    """A validator over the batches of ``val_set`` (classification; Mask R-CNN through ``steps``)."""
    collate = steps.collate if steps is not None else None
    loader = DataLoader(val_set, batch_size=settings.batch_size, shuffle=False, collate_fn=collate)

    def run(model: torch.nn.Module, device: torch.device) -> tuple[float, float]:
        if steps is not None:
            return steps.validate(model, loader, device)
        return validate(model, loader, loss_fn, settings, device)

    return run


PRECISE_BN_BATCHES = 20  # batches of an epoch that the recomputed batch-norm statistics average


BURN_IN = 0.25  # of the epochs: too early for the network to be chosen


def burn_in_epochs(epochs: int) -> int:
    """Epochs at the start in which the latest epoch is kept whatever its score (at least one).

    An untrained network's output often follows the image's brightness, and thresholding it scores
    like a threshold of the raw image: on easy data the first epoch can out-score the next few. So
    the best epoch is chosen by score only after the first quarter of the budget; patience counts
    from there too.
    """
    return max(1, math.ceil(BURN_IN * epochs))


def _improved(state: TrainState, val_loss: float, score: float, burn_in: int) -> bool:
    """Within the burn-in always; then a better score, or the same score at a lower loss (the first
    epochs of instance training often all score 0)."""
    if state.epoch <= burn_in:
        return True
    return score > state.best_score or (score == state.best_score and val_loss < state.best_val_loss)


def _burn_in(state: TrainState, settings: LoopSettings) -> int:
    """The last epoch of the burn-in (:func:`burn_in_epochs`): only the first attempt has one, so a
    restarted run keeps its best epoch until the new attempt scores better."""
    return burn_in_epochs(settings.epochs) if state.restart_epoch == 0 else state.restart_epoch


def _rebudget(
    state: TrainState,
    settings: LoopSettings,
    epochs: int,
    steps: int,
    main: bool,
    training: tuple[torch.nn.Module, torch.optim.Optimizer],
) -> int:
    """The budget after this epoch (of ``steps`` steps), :mod:`idl.train.budget`'s rules applied at
    the current attempt's check epoch: started again when its best score is no better than the
    reference, extended when the cap allows and the score is still rising; else ``epochs``."""
    attempt, length = state.epoch - state.restart_epoch, epochs - state.restart_epoch
    if attempt != budget.check_epoch(length):
        return epochs
    most = max(settings.max_epochs, settings.epochs)
    scores = [h[f"val_{settings.metric}"] for h in state.history[state.restart_epoch :]]
    judged = scores[_burn_in(state, settings) - state.restart_epoch :] or scores[-1:]
    if budget.stuck(max(judged), settings.reference) and state.epoch + settings.epochs <= most:
        return _restart(state, settings, max(judged), main, *training)
    if epochs >= most:
        return epochs
    trend = budget.trend(scores)
    if trend is None or not trend.rising:
        return epochs
    longer = budget.extended(epochs, settings.epochs, most)
    line = budget.describe(trend, settings.metric, state.epoch, longer, steps)
    state.epochs = longer
    state.extensions.append(line)
    if main:
        log.info("budget: %s", line)
    return longer


def _decay_now(state: TrainState, settings: LoopSettings, epochs: int, steps: int, main: bool) -> int:
    """A run whose budget was extended and whose score then stopped improving for ``patience``
    epochs is not stopped at its high learning rate: its end moves to the planned decay's length
    (:data:`~idl.train.plan.DECAY_FRACTION` of the planned epochs) from now, so the rate falls to
    zero over those epochs, and the patience counts again. Other runs: ``epochs`` unchanged (they
    stop)."""
    sooner = state.epoch + max(1, math.ceil(budget.DECAY_FRACTION * settings.epochs))
    if epochs <= settings.epochs or sooner >= epochs:
        return epochs
    line = (
        f"after epoch {state.epoch}: no better validation {settings.metric} for {state.bad_epochs} epochs "
        f"of the extended budget: the learning rate decays to zero by epoch {sooner} ({sooner * steps} "
        "steps)"
    )
    state.epochs, state.bad_epochs = sooner, 0
    state.extensions.append(line)
    if main:
        log.info("budget: %s", line)
    return sooner


def _restart(
    state: TrainState,
    settings: LoopSettings,
    best: float,
    main: bool,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> int:
    """Start again: the network's weights drawn anew (the same on every rank), the optimizer's
    moments cleared, the learning rate lowered, the planned epochs ahead; returns the budget."""
    torch.manual_seed(settings.seed + 7919 * (len(state.restarts) + 1))
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    optimizer.state.clear()
    state.lr_scale *= budget.RESTART_LR
    if settings.learning_rate <= 0:  # no schedule sets the rate: lower the optimizer's own
        for group in optimizer.param_groups:
            group["lr"] *= budget.RESTART_LR
    state.restart_epoch, state.epochs = state.epoch, state.epoch + settings.epochs
    state.bad_epochs = 0  # the best epoch so far stays: the new attempt's must beat it
    assert settings.reference is not None
    rate = (
        settings.learning_rate * state.lr_scale
        if settings.learning_rate > 0
        else optimizer.param_groups[0]["lr"]
    )
    line = budget.describe_restart(
        best, settings.reference, settings.reference_name, settings.metric, state.epoch, state.epochs, rate
    )
    state.restarts.append(line)
    if main:
        log.info("budget: %s", line)
    return state.epochs


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train_set: Dataset,
    validation: Validator | None,
    loss_fn: LossFn,
    settings: LoopSettings,
    state: TrainState,
    device: torch.device,
    on_epoch: Callable[[TrainState, bool], None],
    steps: Steps | None = None,
    ranks: Ranks = SINGLE,
    after_epoch: Callable[[TrainState], None] | None = None,
) -> TrainState:
    """Train until ``settings.epochs`` or early stopping; ``on_epoch(state, improved)`` saves and logs.

    ``train_set`` holds one epoch (``steps_per_epoch * batch_size`` samples, redrawn per epoch).
    The best epoch is the one with the highest validation score (ties: the lower loss) after the
    burn-in (:func:`burn_in_epochs`); without ``validation`` every epoch counts as the best so far,
    so the last one is kept.
    ``steps`` replaces the loss of networks not called as ``loss(model(x), y)``.

    With several ``ranks`` (torchrun) each trains on its part of every global batch
    (:func:`~idl.train.distributed.share_indices`) through DistributedDataParallel; rank 0 validates
    and alone calls ``on_epoch``; the losses are averaged over the ranks.

    A run still rising where its learning rate would start to decay gets more epochs, up to
    ``settings.max_epochs`` (:mod:`idl.train.budget`; recorded in ``state.epochs`` and
    ``state.extensions``).

    ``after_epoch(state)`` runs before the first epoch (a resumed run re-applies what it decided) and
    after every epoch, before ``on_epoch`` saves the state: the place for decisions taken while
    training (:attr:`TrainState.decisions`).
    """
    collate = steps.collate if steps is not None else None
    batch_loss = steps.batch_loss if steps is not None else _standard_loss(loss_fn)
    trained = ranks.wrap(model, device, unused_parameters=steps is not None)
    batch_size = ranks.local_batch(settings.batch_size)
    progress = settings.progress and ranks.main
    epochs = state.epochs or settings.epochs  # the budget, extended while the score still rises
    bar = tqdm(
        total=epochs, initial=state.epoch, unit="epoch", disable=None if progress else True, desc="epochs"
    )
    if after_epoch is not None:
        after_epoch(state)
    while not state.finished and state.epoch < epochs:
        started = time.perf_counter()
        train_set.epoch = state.epoch
        epoch_set = Subset(train_set, share_indices(len(train_set), settings.batch_size, ranks))
        # a last batch of one image breaks batch norm where features are 1 x 1 (small classifiers)
        single = len(epoch_set) % batch_size == 1 and len(epoch_set) > 1
        loader = DataLoader(
            epoch_set,
            batch_size=batch_size,
            shuffle=False,
            drop_last=single,
            collate_fn=collate,
            num_workers=settings.workers,
            pin_memory=settings.pin_memory,
            persistent_workers=False,
        )
        schedule = None
        if settings.learning_rate > 0:  # over the current attempt (all of the run without restarts)
            first = (state.epoch - state.restart_epoch) * len(loader)
            total = (epochs - state.restart_epoch) * len(loader)
            rate = settings.learning_rate * state.lr_scale

            def schedule(i: int, first: int = first, total: int = total, rate: float = rate) -> float:
                return learning_rate_at(first + i, total, rate, settings.warmup_steps, settings.schedule)

        train_loss = ranks.mean(
            train_epoch(trained, loader, batch_loss, optimizer, device, progress, schedule, settings.amp)
        )
        if settings.precise_batch_norm:
            model.train()
            recompute_batch_norm(model, itertools.islice(loader, PRECISE_BN_BATCHES), device)
            ranks.average_buffers(model)
        if validation is not None:
            val_loss, val_score = ranks.from_main(lambda: validation(model, device))
        else:
            val_loss, val_score = math.nan, math.nan
        if not (math.isfinite(train_loss) and (validation is None or math.isfinite(val_loss))):
            resume = " or resume from the last good epoch with --resume" if state.epoch else ""
            raise IdlError(
                f"training diverged in epoch {state.epoch + 1} (training loss {train_loss}, validation loss "
                f"{val_loss}). Lower --learning-rate{resume}."
            )
        state.epoch += 1
        state.seconds += time.perf_counter() - started
        improved = validation is None or _improved(state, val_loss, val_score, _burn_in(state, settings))
        if improved:
            state.best_epoch, state.bad_epochs = state.epoch, 0
            if validation is not None:
                state.best_val_loss, state.best_score = val_loss, val_score
        else:
            state.bad_epochs += 1
        record = {"epoch": state.epoch, "train_loss": train_loss}
        if validation is not None:
            record.update({"val_loss": val_loss, f"val_{settings.metric}": val_score})
        state.history.append(record)
        if validation is not None and state.bad_epochs < settings.patience:
            epochs = _rebudget(state, settings, epochs, len(loader), ranks.main, (model, optimizer))
        elif validation is not None:
            epochs = _decay_now(state, settings, epochs, len(loader), ranks.main)
        bar.total = epochs
        if state.bad_epochs >= settings.patience or state.epoch >= epochs:
            state.finished = True
        if after_epoch is not None:
            after_epoch(state)
        if ranks.main:
            on_epoch(state, improved)
        bar.update(1)
        shown = {"loss": f"{train_loss:.4f}"}
        if validation is not None:
            shown.update({"val_loss": f"{val_loss:.4f}", f"val_{settings.metric}": f"{val_score:.3f}"})
        bar.set_postfix(**shown)
    bar.close()
    return state
