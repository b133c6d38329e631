"""``idl-train``'s whole run: data -> training -> ONNX export -> test prediction through ONNX Runtime
-> evaluation, logged to MLflow. What is shipped is what is evaluated: the test set is predicted by the
exported ONNX graphs on the inference side, not by torch.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from idl.export.bioimageio import PackageRequest, export_package, package_path
from idl.export.metadata import record_footprints
from idl.export.onnx import NothingToShow, export_onnx
from idl.export.quantize import quantize_model, skip_quantization
from idl.infer.core.errors import IdlError
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.project import EVALUATION_DIR, MODEL_DIR, RESULTS_DIR
from idl.infer.evaluate.run_record import HISTORY_FILE, history_json
from idl.infer.io.images import read_channels_last, write_text
from idl.infer.io.places import remove_leftovers, writable_folder
from idl.infer.runtime.model import mc_path_for
from idl.infer.runtime.precision import DETERMINISTIC, MONTE_CARLO, int8_path_for
from idl.infer.service.load import load_model
from idl.infer.service.run import predict_and_evaluate as predict_and_evaluate_request
from idl.infer.tasks.base import Request
from idl.infer.tasks.registry import task_for
from idl.infer.tiling.predict import PredictOptions
from idl.train import budget
from idl.train.accelerate import acceleration
from idl.train.calibrate import fit_sigma_scale, fit_temperature
from idl.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    load_checkpoint,
    model_payload,
    save_checkpoint,
)
from idl.train.config import ConfigError, TrainConfig
from idl.train.distributed import SINGLE, Ranks, from_environment
from idl.train.fingerprint import DataFingerprint, check_unchanged, fingerprint
from idl.train.int8 import quantization_data
from idl.train.loop import LoopSettings, TrainState, channels_last, loader_validation
from idl.train.loop import fit as fit_loop
from idl.train.plan import Plan
from idl.train.prepare import detect_dims, model_name, split_images
from idl.train.pretrained import Pretrained, TransferReport, read_pretrained, transfer
from idl.train.reference import Reference
from idl.train.setup import Setup
from idl.train.tasks.base import Start, Trainer
from idl.train.tasks.registry import all_trainers, trainer_for
from idl.train.tracking import Tracker

log = logging.getLogger("idl")

CONFIG_NAME = "config.json"
DATA_KEY = "data_fingerprint"  # last.pt: the training files the run started from (train/fingerprint.py)
PLAN_KEY = "plan"  # last.pt: the plan, whose reasons a resumed run keeps for the items it does not change


@dataclass
class RunResult:
    """What a training run produced."""

    model_dir: Path
    state: TrainState
    onnx: Path
    onnx_mc: Path | None
    summary: dict[str, Any] | None
    run_id: str
    package: Path | None = None


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was requested but torch sees no CUDA GPU; use --device auto or cpu.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


PRETRAINED_REPORT = "pretrained.txt"
PLAN_NAME = "plan.json"


def plan_json(plan: Plan, config: TrainConfig) -> str:
    """``plan.json``: the network trained (its ``--model`` name) and the plan."""
    return json.dumps({"model": config.model, **plan.to_dict()}, indent=2)


TRAINED_FILES = (
    BEST_NAME,
    LAST_NAME,
    CONFIG_NAME,
    PLAN_NAME,
    "model.onnx",
    "model_mc.onnx",
    "model_int8.onnx",
    "model_int8_mc.onnx",
    PRETRAINED_REPORT,
)


def sample_image(project: Path, axes: str | None, spatial: str = "yx") -> np.ndarray:
    """The first test image (or training image) as channels-last: the package's test tensor."""
    for part in ("test", "train"):
        images = split_images(project / part)
        if images:
            return read_channels_last(images[0], axes, spatial)[0]
    raise IdlError(f"{project}: no image to build the bioimage.io package's test tensor from.")


def write_package(
    project: Path,
    config: TrainConfig,
    net: nn.Module,
    info: ModelInfo,
    onnx_path: Path,
    mc_path: Path | None,
    summary: dict[str, Any] | None,
) -> Path:
    """The validated bioimage.io package of a trained model, next to its ONNX graphs."""
    request = PackageRequest(
        sample=sample_image(project, config.axes, "zyx"[-config.dims :]),
        authors=config.authors,
        settings=config.to_dict(),
        metrics=summary or {},
        mc_samples=config.mc_samples,
    )
    return export_package(
        net, info, onnx_path, mc_path, request, package_path(project / MODEL_DIR, info.name)
    )


def _replaces_model(project: Path, resume: bool, overwrite: bool) -> bool:
    """Whether this run replaces a trained model; refuses to do so silently (without ``overwrite``)."""
    model_dir = project / MODEL_DIR
    if resume or not (model_dir / LAST_NAME).exists():
        return False
    if not overwrite:
        raise IdlError(
            f"{model_dir} already holds a trained model. Pass --resume to continue that training, or "
            "--overwrite to train a new model in its place (or move the folder away first)."
        )
    return True


def _clear_previous(project: Path) -> None:
    """Remove the previous model and its outputs, so no stale checkpoint, Monte Carlo graph,
    prediction or figure survives into the new run (done once the new data has been read, so a data
    error loses nothing)."""
    model_dir = project / MODEL_DIR
    for name in TRAINED_FILES:
        (model_dir / name).unlink(missing_ok=True)
    ours = {model_name(project, dims, m) for t in all_trainers() for m in t.models for dims in (2, 3)}
    for name in sorted(ours):  # ours only, not packages a user put there
        package_path(model_dir, name).unlink(missing_ok=True)
    for folder in (project / RESULTS_DIR, project / EVALUATION_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)
    log.info("--overwrite: removed the previous model, results and evaluation of %s", project)


def _transfer_weights(model: nn.Module, pretrained: Pretrained) -> TransferReport:
    """Copy matching pretrained tensors into ``model``; raises when none matches."""
    report = transfer(model, pretrained.state_dict)
    if not report.loaded:
        raise ConfigError(
            f"--pretrained {pretrained.source}: no tensor matches this network by name and shape."
        )
    log.info(
        "pretrained weights from %s: %d tensors loaded, %d skipped\n%s",
        pretrained.source,
        len(report.loaded),
        len(report.skipped),
        report.table(),
    )
    return report


def _freeze(model: Any, fresh: set[str]) -> None:
    """Freeze the pretrained encoder; tensors the source did not have stay trainable."""
    frozen = model.freeze_encoder(keep_trainable=fresh)
    log.info("encoder frozen: %d parameters are not trained", frozen)
    untrained = sorted(n for n in fresh if model.in_encoder(n))
    if untrained:
        log.warning(
            "not in the pretrained weights, so kept trainable in the frozen encoder: %s", ", ".join(untrained)
        )


@dataclass
class Resolved:
    """A run's settings after the first stage: the task's trainer, the device, and what the run
    starts from."""

    project: Path
    config: TrainConfig
    trainer: Trainer
    start: Start
    replaces: bool  # an earlier model is replaced (--overwrite)
    ranks: Ranks = SINGLE  # the processes training together (torchrun)
    data: DataFingerprint | None = None  # the training files, stored in last.pt (checked on --resume)

    @property
    def model_dir(self) -> Path:
        return self.project / MODEL_DIR


@dataclass
class Run:
    """What the stages after :func:`prepare` share: the network ready to train and its state."""

    resolved: Resolved
    config: TrainConfig  # every "from the data" setting resolved
    setup: Setup
    plan: Plan
    model: nn.Module
    optimizer: torch.optim.Optimizer
    state: TrainState
    fresh: set[str]  # tensors the pretrained weights lacked (trainable in a frozen encoder)
    run_id: str | None  # the MLflow run being continued
    progress: bool

    @property
    def model_dir(self) -> Path:
        return self.resolved.model_dir


def train_project(
    project: Path,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train, export, predict and evaluate one project; returns where everything went.

    The stages: :func:`resolve` the settings, :func:`prepare` data and network (the task's
    trainer), :func:`fit` it, :func:`export` the best epoch to ONNX, :func:`evaluate` the test set
    through the exported graphs, and write the bioimage.io :func:`package`; all logged to MLflow.

    Started by ``torchrun`` (:mod:`idl.train.distributed`), every process trains its part of each
    batch; rank 0 alone logs, checkpoints, exports, evaluates and packages, and every rank returns
    its result."""
    ranks = from_environment()
    try:
        run = prepare(resolve(Path(project), config, resume, overwrite, ranks), progress and ranks.main)
        tracker = Tracker(run.resolved.project, run.config.tracking_uri, run.run_id) if ranks.main else None
        try:
            if tracker is not None:
                tracker.log_params(
                    {**run.config.to_dict(), "data": run.setup.info.training, "plan": run.plan.to_dict()}
                )
            fit(run, tracker)
            return ranks.from_main(lambda: _finish(run, tracker))
        except BaseException:
            if tracker is not None:
                tracker.end("FAILED")
            raise
    finally:
        ranks.stop()


def _finish(run: Run, tracker: Tracker | None) -> RunResult:
    """Export, evaluation, package and registration: rank 0's work after training."""
    assert tracker is not None
    best, onnx_path, mc_path = export(run, tracker)
    summary = evaluate(run, tracker)
    written = package(run, best, onnx_path, mc_path, summary, tracker)
    tracker.end()
    return RunResult(run.model_dir, run.state, onnx_path, mc_path, summary, tracker.run_id, written)


def resolve(
    project: Path, config: TrainConfig, resume: bool, overwrite: bool, ranks: Ranks = SINGLE
) -> Resolved:
    """The task's trainer, the device (this rank's, having joined the process group), the
    dimensionality, the pretrained weights or the checkpoint being resumed; refuses to replace a
    model silently."""
    trainer = trainer_for(config.task)
    for folder, role in ((project, "project"), (project / MODEL_DIR, "model")):
        writable_folder(folder, role)  # before the data is read and the network trained
    if config.freeze_encoder and config.pretrained is None:
        raise ConfigError("--freeze-encoder keeps pretrained encoder weights: give --pretrained as well.")
    replaces = _replaces_model(project, resume, overwrite)
    device = ranks.start(resolve_device(config.device))
    pretrained = read_pretrained(config.pretrained) if config.pretrained and not resume else None
    saved = load_checkpoint(project / MODEL_DIR / LAST_NAME) if resume else None
    data = _data_fingerprint(project)
    if saved is not None:  # before the data is read: changed data fails in seconds
        check_unchanged(saved.get(DATA_KEY), data, project / MODEL_DIR / LAST_NAME, project)
    if config.dims is None:
        config = replace(config, dims=trainer.dims or detect_dims(project, config.axes))
    start = Start(device, pretrained, saved, processes=ranks.world)
    return Resolved(project, config, trainer, start, replaces, ranks, data)


def _data_fingerprint(project: Path) -> DataFingerprint:
    """The training files' fingerprint, with the time it took when that is noticeable."""
    began = time.perf_counter()
    data = fingerprint(project)
    seconds = time.perf_counter() - began
    if seconds > 2:
        megabytes = sum(size for size, _ in data.files.values()) / 1e6
        log.info("training data: %d files, %.0f MB hashed in %.1f s", len(data.files), megabytes, seconds)
    return data


def prepare(resolved: Resolved, progress: bool) -> Run:
    """Data, plan and network from the task's trainer; pretrained weights or the resumed state
    loaded; the previous model cleared (only now: the data has been read without error); the
    resolved config and the plan saved."""
    start, model_dir = resolved.start, resolved.model_dir
    torch.manual_seed(resolved.config.seed)  # the network's initialization
    setup = resolved.trainer.prepare(resolved.project, resolved.config, start)
    config, model = setup.config, setup.model
    config = replace(config, learning_rate=config.resolved_learning_rate)  # saved and logged as used
    plan = replace(setup.plan, schedule=config.lr_schedule)
    if start.saved is not None:
        plan = _keep_reasons(plan, _saved_plan(start.saved, model_dir))
    plan = replace(plan, max_epochs=budget.max_epochs(plan.epochs, _budget_cap(config, plan)))
    reference = _reference(setup, config)
    if reference is not None:
        plan = replace(plan, reference=f"{reference.name}: validation {reference.score:.4f}")
    log.info("training plan (set in the config or on the command line to change an item):\n%s", plan.table())
    for note in plan.notes:
        log.warning(note)
    if config.uncertainty and config.dropout == 0:
        log.warning("dropout is 0, so there is no Monte Carlo dropout: predicting without uncertainty")
        config = replace(config, uncertainty=False)
    log.info("%s, device %s", setup.summary, start.device)

    report = _transfer_weights(model, start.pretrained) if start.pretrained is not None else None
    ranks = resolved.ranks
    if ranks.main:  # the others wait: they must not read a folder being cleared
        if resolved.replaces:  # only now: the pretrained weights may come from this folder
            _clear_previous(resolved.project)
        model_dir.mkdir(parents=True, exist_ok=True)
        remove_leftovers(model_dir)  # a checkpoint half written when an earlier run was killed
        if report is not None:
            write_text(model_dir / PRETRAINED_REPORT, report.table() + "\n")
    ranks.barrier()
    # tensors the source lacked stay trainable in a frozen encoder, also when the run is resumed
    saved = start.saved
    fresh = {n for n, _ in report.skipped} if report is not None else set((saved or {}).get("fresh", []))
    if config.freeze_encoder:
        _freeze(model, fresh)
    model = model.to(start.device)
    if not setup.steps:  # Mask R-CNN takes lists of images of any size
        model = channels_last(model)
    # all parameters: frozen ones get no gradient, so Adam leaves them alone, and the optimizer state
    # of a checkpoint fits whatever was frozen
    optimizer = torch.optim.Adam(model.parameters(), lr=config.resolved_learning_rate)
    state, run_id = TrainState(), None
    if saved is not None:
        state, run_id = _resume(saved, setup, model, optimizer, config, model_dir)
    if ranks.active:  # dropout masks differ between ranks, as they would between samples of a batch
        torch.manual_seed(config.seed + 1000 * ranks.rank + state.epoch)
    if not ranks.main:
        return Run(resolved, config, setup, plan, model, optimizer, state, fresh, run_id, False)
    write_text(model_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2))
    write_text(model_dir / PLAN_NAME, plan_json(plan, config))
    if config.save_augmentations:
        from idl.train.preview import PREVIEW_NAME, save_augmentation_grid

        preview = save_augmentation_grid(setup.train_set, model_dir / PREVIEW_NAME)
        log.info("augmented training samples: %s (stop with Ctrl-C if they look wrong)", preview)
    return Run(resolved, config, setup, plan, model, optimizer, state, fresh, run_id, progress)


def _reference(setup: Setup, config: TrainConfig) -> Reference | None:
    """The answer without training a run must beat, or None where a run is never started again:
    with pretrained weights (a restart would throw them away)."""
    return None if config.pretrained else setup.reference


def _budget_cap(config: TrainConfig, plan: Plan) -> float:
    """How far the budget may grow while validation still rises: as set, else :data:`budget.CAP` for
    a planned budget and 1 (never) for epochs set by the user or limited by InstantDL's
    ``iterations_over_dataset``, and for runs without validation."""
    if config.budget_cap is not None:
        return config.budget_cap
    planned = "budget" in plan.sources.get("epochs", "set")
    return budget.CAP if planned and config.val_fraction > 0 else 1.0


def _saved_plan(saved: dict[str, Any], model_dir: Path) -> dict[str, Any]:
    """The plan of the run being resumed: from its checkpoint, or (checkpoints written before it was
    stored there) from ``plan.json``; empty when neither has it."""
    if isinstance(saved.get(PLAN_KEY), dict):
        return saved[PLAN_KEY]
    try:
        data = json.loads((model_dir / PLAN_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _keep_reasons(plan: Plan, saved: dict[str, Any]) -> Plan:
    """``plan`` with the reasons (``sources``) of the resumed run's plan for every item whose value
    is unchanged. A resumed run reads its settings from ``config.json``, where every planned value
    is written out, so without this each item would read "set" and be logged as a changed setting."""
    before = saved.get("sources", {})
    now = plan.to_dict()
    kept = {
        k: before[k] if k in before and k in saved and saved[k] == now.get(k) else v
        for k, v in plan.sources.items()
    }
    return replace(plan, sources=kept)


def _resume(
    saved: dict[str, Any],
    setup: Setup,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    model_dir: Path,
) -> tuple[TrainState, str | None]:
    """Load the checkpoint being resumed into ``model`` and ``optimizer``; its state and MLflow run."""
    wanted = asdict(setup.spec)
    if saved["spec"] != wanted:
        raise ConfigError(
            f"{model_dir / LAST_NAME} holds a network built with {saved['spec']}, but the current "
            f"settings build {wanted}. Resume with the original settings "
            f"(--config {model_dir / CONFIG_NAME}) or train anew with --overwrite."
        )
    model.load_state_dict(saved["state_dict"])
    try:
        optimizer.load_state_dict(saved["optimizer"])
    except ValueError:  # written when the optimizer held only the unfrozen parameters
        log.warning("the optimizer state in %s does not fit; Adam starts afresh", model_dir / LAST_NAME)
    state = TrainState(**{"best_score": -math.inf, **saved["state"]})
    # the new run may allow more epochs or more patience than the one that stopped
    state.finished = state.bad_epochs >= config.patience or state.epoch >= config.epochs
    torch.set_rng_state(saved["torch_rng"])
    log.info("resuming after epoch %d (best epoch %d)", state.epoch, state.best_epoch)
    return state, saved.get("mlflow_run_id")


def fit(run: Run, tracker: Tracker | None) -> TrainState:
    """Train until the budget or early stopping, validating and checkpointing every epoch (rank 0,
    which alone has a ``tracker``)."""
    config, setup, plan, model, model_dir = run.config, run.setup, run.plan, run.model, run.model_dir
    trainer = run.resolved.trainer
    metric = trainer.validation_metric(config.model)

    def on_epoch(current: TrainState, improved: bool) -> None:
        assert tracker is not None  # called on rank 0 only
        payload = {
            **model_payload(model, setup.info),
            "config": config.to_dict(),
            "state": current.to_dict(),
            "fresh": sorted(run.fresh),
        }
        if improved:
            save_checkpoint(model_dir / BEST_NAME, payload)
        save_checkpoint(
            model_dir / LAST_NAME,
            {
                **payload,
                "optimizer": run.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "mlflow_run_id": tracker.run_id,
                PLAN_KEY: plan.to_dict(),
                **({DATA_KEY: run.resolved.data.to_dict()} if run.resolved.data is not None else {}),
            },
        )
        write_text(model_dir / HISTORY_FILE, history_json(current.history, current.best_epoch, metric))
        metrics = {k: v for k, v in current.history[-1].items() if k != "epoch"}
        tracker.log_metrics(metrics, step=current.epoch)

    reference = _reference(setup, config)
    settings = LoopSettings(
        plan.epochs,
        plan.batch_size,
        plan.patience,
        config.seed,
        setup.num_classes,
        run.progress,
        metric=metric,
        precise_batch_norm=trainer.precise_batch_norm,
        steps_per_epoch=plan.steps_per_epoch,
        learning_rate=plan.learning_rate,
        warmup_steps=plan.warmup_steps,
        schedule=config.lr_schedule,
        max_epochs=plan.max_epochs,
        reference=None if reference is None else reference.score,
        reference_name="" if reference is None else reference.name,
        **asdict(acceleration(config, run.resolved.start.device)),
    )
    validation = setup.validation
    if validation is None and setup.val_set is not None:
        validation = loader_validation(setup.val_set, setup.loss, settings, setup.steps)
    state = run.state
    after_epoch = _decisions(run)
    fit_loop(
        model,
        run.optimizer,
        setup.train_set,
        validation,
        setup.loss,
        settings,
        state,
        run.resolved.start.device,
        on_epoch,
        setup.steps,
        run.resolved.ranks,
        after_epoch,
    )
    if validation is None:
        log.info(
            "training done after %d epoch(s) in %.0f s, no validation: keeping the last",
            state.epoch,
            state.seconds,
        )
    else:
        log.info(
            "training done after %d epoch(s) in %.0f s; best validation %s %.4f (loss %.4f) at epoch %d",
            state.epoch,
            state.seconds,
            settings.metric,
            state.best_score,
            state.best_val_loss,
            state.best_epoch,
        )
    return state


def _decisions(run: Run) -> Callable[[TrainState], None]:
    """What the loop calls before the first epoch and after every one: the task's decision taken
    while training (:class:`idl.train.setup.Choice`: decided on rank 0 when due, every rank gets it
    and applies it) and the budget's extensions (:mod:`idl.train.budget`, made by the loop). Both are
    kept in the state (so ``--resume`` applies them again) and written into the plan."""
    choice, ranks, device = run.setup.choice, run.resolved.ranks, run.resolved.start.device

    def after_epoch(state: TrainState) -> None:
        plan = run.plan
        if choice is not None:
            epochs = plan.epochs
            if choice.name not in state.decisions and state.epoch and choice.due(state.epoch, epochs):
                decided = ranks.from_main(lambda: choice.decide(run.model, device, state.epoch, epochs))
                if decided is not None:
                    state.decisions[choice.name] = decided
                    if ranks.main:
                        log.info("augmentation: %s", choice.describe(decided))
            if choice.name in state.decisions:
                choice.apply(state.decisions[choice.name])
                plan = replace(plan, augmentation=choice.describe(state.decisions[choice.name]))
        if state.epochs:
            plan = replace(
                plan,
                extended_to=state.epochs,
                extensions=tuple(state.extensions),
                restarts=tuple(state.restarts),
            )
        if plan != run.plan:
            run.plan = plan
            if ranks.main:
                write_text(run.model_dir / PLAN_NAME, plan_json(plan, run.config))

    return after_epoch


def export(run: Run, tracker: Tracker) -> tuple[nn.Module, Path, Path | None]:
    """The best epoch's network (built as trained) exported to ONNX, deterministic and Monte Carlo."""
    setup, model_dir = run.setup, run.model_dir
    best = type(setup.model)(setup.spec)
    saved = load_checkpoint(model_dir / BEST_NAME)
    best.load_state_dict(saved["state_dict"])
    best.eval()
    if run.config.calibrate:
        calibrate(run, best, saved, tracker)
    fit_postprocessing(run, best, saved, tracker)
    onnx_path, mc_path = export_onnx(best, run.setup.info, model_dir)
    run.setup.info = record_footprints(onnx_path, mc_path, run.setup.info)
    if run.config.int8:
        quantize(run, onnx_path, mc_path, tracker)
    int8 = int8_path_for(onnx_path)
    for path in (model_dir / CONFIG_NAME, model_dir / BEST_NAME, onnx_path, mc_path, int8, mc_path_for(int8)):
        if path is not None and path.is_file():
            tracker.log_artifact(path, "model")
    return best, onnx_path, mc_path


def quantize(run: Run, onnx_path: Path, mc_path: Path | None, tracker: Tracker) -> None:
    """The int8 graphs beside the exported ones, calibrated on training patches and kept where they
    agree with the float32 graphs on the validation images (:mod:`idl.export.quantize`); what was
    measured goes into every graph's model description and to MLflow."""
    try:
        data = quantization_data(run.setup, run.config)
    except Exception as exc:  # the int8 graphs are an extra: a run never fails for them
        log.warning("no int8 graph: the calibration patches or validation images could not be read (%s)", exc)
        skip_quantization(onnx_path, mc_path, run.setup.info, f"no calibration data ({exc})")
        return
    info = quantize_model(onnx_path, mc_path, run.setup.info, data)
    for key in (DETERMINISTIC, MONTE_CARLO):
        entry = info.quantized.get(key)
        if entry is not None and "value" in entry:
            tracker.log_metrics(
                {f"int8_{key}_difference": entry["value"], f"int8_{key}_kept": float(entry["kept"])}
            )


def calibrate(run: Run, best: nn.Module, saved: dict[str, Any], tracker: Tracker) -> None:
    """Fit a temperature (semantic, classification) or a factor of the Monte Carlo standard deviation
    (regression) on the validation images (:mod:`idl.train.calibrate`), fold a temperature into
    ``best`` (loaded from the checkpoint ``saved``) and record either in the model description;
    tasks without calibration are left alone."""
    scale = getattr(best, "scale_output", None)
    cpu = torch.device("cpu")  # where the best epoch was loaded
    trainer, info = run.resolved.trainer, run.setup.info
    rows = trainer.calibration_rows(run.setup, best, cpu) if scale else None
    samples = run.config.mc_samples if run.config.uncertainty else 0
    sigma_rows = None if rows is not None else trainer.sigma_rows(run.setup, best, cpu, samples)
    if rows is not None:
        found = fit_temperature(*rows)
        scale(1.0 / found.temperature)
        changed = {"temperature": found.temperature}
        metrics = {"temperature": found.temperature, "val_ece_calibrated": found.ece_after}
    elif sigma_rows is not None and (fitted := fit_sigma_scale(*sigma_rows)) is not None:
        found = fitted
        changed = {"sigma_scale": found.sigma_scale}
        metrics = {"sigma_scale": found.sigma_scale, "val_coverage_1sigma": found.coverage_1sigma_after}
    else:
        return
    training = {**info.training, "calibration": found.to_dict()}
    run.setup.info = replace(info, training=training, **changed)
    keep_in_best(run, best, saved)
    log.info("calibration: %s", found.describe())
    tracker.log_metrics(metrics)


def keep_in_best(run: Run, best: nn.Module, saved: dict[str, Any]) -> None:
    """Write ``best`` (the network as it is now) and the run's model description into the best
    checkpoint ``saved`` was read from, so idl-export from it exports what training exported (a
    calibrated network, fitted post-processing)."""
    save_checkpoint(run.model_dir / BEST_NAME, {**saved, **model_payload(best, run.setup.info)})


def fit_postprocessing(run: Run, best: nn.Module, saved: dict[str, Any], tracker: Tracker) -> None:
    """Choose the thresholds of the task's post-processing on the validation images (tasks that
    have such thresholds, :meth:`~idl.train.tasks.base.Trainer.fit_postprocessing`) and record them
    in the model description and the best checkpoint (``saved``, as read before), so idl-predict,
    idl-export and packages use them."""
    found = run.resolved.trainer.fit_postprocessing(run.setup, best, torch.device("cpu"))
    if found is None:
        return
    info = run.setup.info
    training = {**info.training, "postprocessing": found.to_dict()}
    run.setup.info = replace(info, training=training, postprocessing=found.thresholds)
    keep_in_best(run, best, saved)
    log.info("post-processing: %s", found.describe())
    tracker.log_metrics({f"postprocessing_{k}": v for k, v in found.thresholds.items()})


def evaluate(run: Run, tracker: Tracker) -> dict[str, Any] | None:
    """``PROJECT/test`` predicted by the exported graphs and evaluated, as idl-predict does."""
    project = run.resolved.project
    summary = predict_and_evaluate(project, run.config, run.progress)
    if summary is not None:
        tracker.log_metrics({f"test_{k}": v for k, v in summary.items() if isinstance(v, float)})
        tracker.log_artifact(project / EVALUATION_DIR)
    return summary


def package(
    run: Run,
    best: nn.Module,
    onnx_path: Path,
    mc_path: Path | None,
    summary: dict[str, Any] | None,
    tracker: Tracker,
) -> Path | None:
    """The validated bioimage.io package (unless switched off); a model whose test output bioimage.io
    would refuse keeps its ONNX graphs and evaluation, with a warning."""
    if not run.config.package:
        return None
    try:
        written = write_package(
            run.resolved.project, run.config, best, run.setup.info, onnx_path, mc_path, summary
        )
    except NothingToShow as exc:
        log.warning("no bioimage.io package written: %s", exc)
        return None
    name = run.config.registered_model or run.setup.info.name
    tags = {"task": run.config.task, "model": str(run.config.model), "dims": str(run.config.dims)}
    try:
        tracker.register(written, name, summary or {}, tags)
    except Exception as exc:  # a store without a registry, or a server that refuses: the model is kept
        log.warning("the package was not registered in MLflow's model registry (%s): %s", tracker.uri, exc)
    return written


def predict_and_evaluate(project: Path, config: TrainConfig, progress: bool = True) -> dict[str, Any] | None:
    """Predict ``PROJECT/test`` with the exported ONNX model, as idl-predict does; evaluate when every
    test image has ground truth."""
    test_dir = project / "test"
    if not split_images(test_dir):
        log.info("no test images in %s: skipping test prediction and evaluation", test_dir)
        return None
    model = load_model(project / MODEL_DIR, config.device)
    files, groundtruth = task_for(model).split(test_dir)
    if config.evaluate and groundtruth is None:
        log.info("not every test image has ground truth: skipping evaluation")
    options = PredictOptions(
        tile_size=config.tile_size,
        overlap=config.overlap,
        mc_samples=config.mc_samples if config.uncertainty else 0,
        progress=progress,
        on_nonfinite=config.on_nonfinite,
        overwrite=True,  # the test set's predictions are this model's, never an earlier run's
        seed=config.seed,  # the Monte Carlo samples too: the same run writes the same files
        tta=config.tta,
    )
    request = Request(
        model,
        files,
        project / RESULTS_DIR,
        options,
        config.axes,
        groundtruth=groundtruth if config.evaluate else None,
        evaluation_dir=project / EVALUATION_DIR,
        # a calibrated model's probabilities too: the evaluation measures their calibration on the test set
        save_probabilities=model.info is not None and model.info.temperature != 1.0,
    )
    return predict_and_evaluate_request(request)[1]
