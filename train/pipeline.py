"""``idl-train``'s whole run: data -> training -> ONNX export -> test prediction through ONNX Runtime
-> evaluation, logged to MLflow. What is shipped is what is evaluated: the test set is predicted by the
exported ONNX graphs on the inference side, not by torch.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from idl.export.bioimageio import PackageRequest, export_package, package_path
from idl.export.onnx import NothingToShow, export_onnx
from idl.infer.core.axes import guess_axes
from idl.infer.core.errors import DataError, IdlError
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.project import EVALUATION_DIR, MODEL_DIR, RESULTS_DIR, pair_files
from idl.infer.io.images import read_channels_last, read_image, voxel_size, write_text
from idl.infer.post.instance_labels import INSTANCE_CLASSES
from idl.infer.service.load import load_model
from idl.infer.service.run import predict_and_evaluate as predict_and_evaluate_request
from idl.infer.tasks.base import Request
from idl.infer.tasks.registry import task_for
from idl.infer.tiling.predict import PredictOptions
from idl.models import UNet, UNetSpec
from idl.train.checkpoint import (
    BEST_NAME,
    LAST_NAME,
    load_checkpoint,
    model_from_checkpoint,
    model_payload,
    save_checkpoint,
)
from idl.train.config import CLASSIFICATION_MODELS, IMPLEMENTED_TASKS, ConfigError, TrainConfig
from idl.train.data import (
    PatchDataset,
    TrainingData,
    load_instance_data,
    load_regression_data,
    load_semantic_data,
    patch_shape_for,
    smallest_side,
    split_validation,
)
from idl.train.loop import LoopSettings, TrainState, channels_last, fit, loader_validation
from idl.train.losses import make_loss
from idl.train.plan import (
    Fingerprint,
    Plan,
    class_components,
    make_plan,
    object_sizes,
    typical_size,
    validation_voxels,
)
from idl.train.pretrained import Pretrained, TransferReport, read_pretrained, transfer
from idl.train.setup import Setup, data_summary
from idl.train.tracking import Tracker
from idl.train.validation import WholeImageValidation, validation_tile

log = logging.getLogger("idl")

CONFIG_NAME = "config.json"


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
TRAINED_FILES = (
    BEST_NAME,
    LAST_NAME,
    CONFIG_NAME,
    PLAN_NAME,
    "model.onnx",
    "model_mc.onnx",
    PRETRAINED_REPORT,
)


def _adopt_architecture(config: TrainConfig, pretrained: Pretrained) -> TrainConfig:
    """Fine-tuning needs the pretrained network's depth and width; take them from the weights."""
    arch = pretrained.architecture
    wanted = {k: arch[k] for k in ("depth", "base_filters") if k in arch and arch[k] != getattr(config, k)}
    if wanted:
        log.info("using the pretrained network's %s", ", ".join(f"{k}={v}" for k, v in wanted.items()))
    return replace(config, **wanted)


def sample_image(project: Path, axes: str | None, spatial: str = "yx") -> np.ndarray:
    """The first test image (or training image) as channels-last: the package's test tensor."""
    for part in ("test", "train"):
        images = split_images(project / part)
        if images:
            return read_channels_last(images[0], axes, spatial)[0]
    raise IdlError(f"{project}: no image to build the bioimage.io package's test tensor from.")


def split_images(split_dir: Path) -> list[Path]:
    """The image files of a split (either layout), or none when it has no images."""
    try:
        return [p.image for p in pair_files(split_dir, require_groundtruth=False)]
    except DataError:
        return []


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


def _kind(data: TrainingData) -> str:
    if not data.num_classes:
        return f"regression of {len(data.target_mean)} channel(s)"
    return "binary" if data.num_classes == 2 else f"{data.num_classes} classes"


def model_name(project: Path, dims: int = 2, architecture: str = "unet") -> str:
    """The model's name (and package file name): the project folder's name plus the architecture
    (``unet2d``, ``unet3d``, ``resnet50`` ...)."""
    suffix = f"unet{dims}d" if architecture == "unet" else architecture
    return f"{Path(project).resolve().name}-{suffix}"


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


def fingerprint_of(project: Path, data: TrainingData, dims: int, task: str) -> Fingerprint:
    """Sizes, spacing and object sizes of the training data (see :mod:`idl.train.plan`)."""
    measured = [
        object_sizes(s.labels if s.labels is not None else class_components(s.target))
        for s in data.samples
        if task != "regression"
    ]
    sizes = np.concatenate([m[0] for m in measured] or [np.zeros(0)])
    areas = np.concatenate([m[1] for m in measured] or [np.zeros(0)])
    images = training_images(project)
    spacing = voxel_size(images[0]) if dims == 3 and images else None
    return Fingerprint(
        dims=dims,
        shapes=tuple(tuple(s.target.shape[:dims]) for s in data.samples),
        channels=data.in_channels,
        spacing=spacing,
        object_size=typical_size(sizes, areas),
        n_objects=int(sizes.size),
    )


def _fit_patch(plan: Plan, samples: list, multiples: tuple[int, ...], spatial: str, batch_set: bool) -> Plan:
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
    return replace(plan, patch=patch, batch_size=batch)


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
    ours = [model_name(project, dims) for dims in (2, 3)]
    ours += [model_name(project, 2, name) for name in (*CLASSIFICATION_MODELS, "maskrcnn")]
    for name in ours:  # ours only, not packages a user put there
        package_path(model_dir, name).unlink(missing_ok=True)
    for folder in (project / RESULTS_DIR, project / EVALUATION_DIR):
        if folder.is_dir():
            shutil.rmtree(folder)
    log.info("--overwrite: removed the previous model, results and evaluation of %s", project)


def _prepare_unet(
    project: Path, config: TrainConfig, pretrained: Pretrained | None, device: torch.device
) -> Setup:
    """Data, plan, U-Net, loss, validation and model description of a segmentation, instance or
    regression run."""
    if config.model not in (None, "unet"):
        raise ConfigError(f"model '{config.model}' does not fit the {config.task} task; use unet")
    if pretrained is not None:
        config = _adopt_architecture(config, pretrained)
    spatial = "zyx"[-config.dims :]
    if config.task == "regression":
        data = load_regression_data(project / "train", config.normalization, config.axes, spatial)
    elif config.task == "instance":
        data = load_instance_data(project / "train", config.normalization, config.axes, spatial)
    else:
        data = load_semantic_data(
            project / "train", config.normalization, config.axes, config.num_classes, spatial
        )
    fp = fingerprint_of(project, data, config.dims, config.task)
    planned = partial(
        make_plan,
        fp,
        config.plan_requests,
        str(device),
        base_lr=config.resolved_learning_rate,
        memory_gb=gpu_memory(device),
    )
    plan = planned()
    spec = UNetSpec(depth=plan.depth, dims=config.dims, anisotropic=plan.anisotropic)
    halo = (spec.z_halo,) * (config.dims == 3) + (spec.halo,) * 2
    train_samples, val_samples, validation = split_validation(
        data.samples, config.val_fraction, config.seed, gap=spec.halo, multiple=spec.size_multiple
    )
    tile = validation_tile(config.dims, config.tile_size, halo, spec.multiples)
    shapes = [s.target.shape[: config.dims] for s in val_samples]
    plan = planned(validation_voxels=validation_voxels(shapes, tile, halo, spec.multiples))  # same depth
    plan = replace(
        _fit_patch(plan, train_samples, spec.multiples, spatial, config.batch_size is not None),
        validation=validation,
    )
    loss_name = config.resolved_loss(data.num_classes)
    config = replace(
        config.with_plan(plan).with_image_side(smallest_side(train_samples)),
        model="unet",
        num_classes=data.num_classes or None,
        loss=loss_name,
        dropout=config.resolved_dropout,
    )
    if config.task == "regression":
        out_channels = len(data.target_mean)  # one linear output per target channel
    else:
        out_channels = 1 if data.num_classes == 2 else data.num_classes  # sigmoid, or softmax
    spec = UNetSpec(
        in_channels=data.in_channels,
        out_channels=out_channels,
        depth=plan.depth,
        base_filters=config.base_filters,
        dropout=config.dropout,
        dims=config.dims,
        anisotropic=plan.anisotropic,
    )
    patch = plan.patch
    info = ModelInfo(
        task=config.task,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        size_multiple=spec.size_multiple,
        halo=spec.halo,
        z_multiple=spec.z_multiple if config.dims == 3 else 0,
        z_halo=spec.z_halo if config.dims == 3 else 0,
        dims=config.dims,
        normalization=config.normalization,
        axes=data.axes,
        dropout=config.dropout,
        name=model_name(project, config.dims),
        target_mean=data.target_mean,
        target_std=data.target_std,
        class_names=INSTANCE_CLASSES if config.task == "instance" else (),
        training={
            "n_train": len(train_samples),
            "n_val": len(val_samples),
            "patch": list(patch),
            "loss": loss_name,
            "validation": validation,
            "steps": plan.total_steps,
        },
    )
    summary = (
        f"{data_summary(len(train_samples), len(val_samples), data.in_channels)}, {_kind(data)}, "
        f"patches of {' x '.join(map(str, patch))} px, loss {loss_name}"
    )
    loss = make_loss(loss_name, data.num_classes, config.task)
    return Setup(
        config=config,
        model=UNet(spec),
        spec=spec,
        info=info,
        train_set=PatchDataset(
            train_samples, patch, config.augmentation, config.seed, plan.steps_per_epoch, plan.batch_size
        ),
        val_set=None,
        validation=WholeImageValidation(
            val_samples, config.task, max(data.num_classes, 2), loss, tile, halo, spec.multiples
        )
        if val_samples
        else None,
        loss=loss,
        num_classes=data.num_classes,
        summary=summary,
        plan=plan,
    )


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


def train_project(
    project: Path,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train, export, predict and evaluate one project; returns where everything went."""
    project = Path(project)
    if config.task not in IMPLEMENTED_TASKS:
        raise ConfigError(
            f"task '{config.task}' is not available yet; available: {', '.join(IMPLEMENTED_TASKS)}"
        )
    if config.freeze_encoder and config.pretrained is None:
        raise ConfigError("--freeze-encoder keeps pretrained encoder weights: give --pretrained as well.")
    model_dir = project / MODEL_DIR
    replaces = _replaces_model(project, resume, overwrite)
    device = resolve_device(config.device)
    pretrained = read_pretrained(config.pretrained) if config.pretrained and not resume else None
    saved = load_checkpoint(model_dir / LAST_NAME) if resume else None

    if config.dims is None:
        config = replace(
            config, dims=2 if config.task == "classification" else detect_dims(project, config.axes)
        )
    torch.manual_seed(config.seed)  # the network's initialization
    if config.task == "classification":
        from idl.train.classification import prepare_classification

        # the architecture details the data does not decide come from the source weights, or on
        # --resume from the run being continued
        source = pretrained.architecture if pretrained is not None else (saved or {}).get("spec", {})
        setup = prepare_classification(project, config, source, str(device))
    elif config.task == "instance" and config.model == "maskrcnn":
        from idl.train.detection import prepare_maskrcnn

        setup = prepare_maskrcnn(project, config, model_name(project, 2, "maskrcnn"), str(device))
    else:
        setup = _prepare_unet(project, config, pretrained, device)
    config, info, model = setup.config, setup.info, setup.model
    config = replace(config, learning_rate=config.resolved_learning_rate)  # saved and logged as used
    plan = replace(setup.plan, schedule=config.lr_schedule)
    log.info("training plan (set in the config or on the command line to change an item):\n%s", plan.table())
    if config.uncertainty and config.dropout == 0:
        log.warning("dropout is 0, so there is no Monte Carlo dropout: predicting without uncertainty")
        config = replace(config, uncertainty=False)
    log.info("%s, device %s", setup.summary, device)

    report = _transfer_weights(model, pretrained) if pretrained is not None else None
    if replaces:  # only now: the pretrained weights may come from this folder, and the data is fine
        _clear_previous(project)
    model_dir.mkdir(parents=True, exist_ok=True)
    if report is not None:
        write_text(model_dir / PRETRAINED_REPORT, report.table() + "\n")
    # tensors the source lacked stay trainable in a frozen encoder, also when the run is resumed
    fresh = {n for n, _ in report.skipped} if report is not None else set((saved or {}).get("fresh", []))
    if config.freeze_encoder:
        _freeze(model, fresh)
    model = model.to(device)
    if not setup.steps:  # Mask R-CNN takes lists of images of any size
        model = channels_last(model)
    # all parameters: frozen ones get no gradient, so Adam leaves them alone, and the optimizer state
    # of a checkpoint fits whatever was frozen
    optimizer = torch.optim.Adam(model.parameters(), lr=config.resolved_learning_rate)
    state, run_id = TrainState(), None
    if saved is not None:
        payload = saved
        wanted = asdict(setup.spec)
        if payload["spec"] != wanted:
            raise ConfigError(
                f"{model_dir / LAST_NAME} holds a network built with {payload['spec']}, but the current "
                f"settings build {wanted}. Resume with the original settings "
                f"(--config {model_dir / CONFIG_NAME}) or train anew with --overwrite."
            )
        model.load_state_dict(payload["state_dict"])
        try:
            optimizer.load_state_dict(payload["optimizer"])
        except ValueError:  # written when the optimizer held only the unfrozen parameters
            log.warning("the optimizer state in %s does not fit; Adam starts afresh", model_dir / LAST_NAME)
        state = TrainState(**{"best_score": -math.inf, **payload["state"]})
        # the new run may allow more epochs or more patience than the one that stopped
        state.finished = state.bad_epochs >= config.patience or state.epoch >= config.epochs
        torch.set_rng_state(payload["torch_rng"])
        run_id = payload.get("mlflow_run_id")
        log.info("resuming after epoch %d (best epoch %d)", state.epoch, state.best_epoch)
    write_text(model_dir / CONFIG_NAME, json.dumps(config.to_dict(), indent=2))
    write_text(model_dir / PLAN_NAME, plan.to_json())
    if config.save_augmentations:
        from idl.train.preview import PREVIEW_NAME, save_augmentation_grid

        preview = save_augmentation_grid(setup.train_set, model_dir / PREVIEW_NAME)
        log.info("augmented training samples: %s (stop with Ctrl-C if they look wrong)", preview)

    tracker = Tracker(project, config.tracking_uri, run_id)
    try:
        tracker.log_params({**config.to_dict(), "data": info.training, "plan": plan.to_dict()})

        def on_epoch(current: TrainState, improved: bool) -> None:
            payload = {
                **model_payload(model, info),
                "config": config.to_dict(),
                "state": current.to_dict(),
                "fresh": sorted(fresh),
            }
            if improved:
                save_checkpoint(model_dir / BEST_NAME, payload)
            save_checkpoint(
                model_dir / LAST_NAME,
                {
                    **payload,
                    "optimizer": optimizer.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "mlflow_run_id": tracker.run_id,
                },
            )
            metrics = {k: v for k, v in current.history[-1].items() if k != "epoch"}
            tracker.log_metrics(metrics, step=current.epoch)

        settings = LoopSettings(
            plan.epochs,
            plan.batch_size,
            plan.patience,
            config.seed,
            setup.num_classes,
            progress,
            config.task,
            precise_batch_norm=config.task == "classification",
            score_name="ap50" if config.model == "maskrcnn" else "",
            steps_per_epoch=plan.steps_per_epoch,
            learning_rate=plan.learning_rate,
            warmup_steps=plan.warmup_steps,
            schedule=config.lr_schedule,
        )
        validation = setup.validation
        if validation is None and setup.val_set is not None:
            validation = loader_validation(setup.val_set, setup.loss, settings, setup.steps)
        fit(
            model,
            optimizer,
            setup.train_set,
            validation,
            setup.loss,
            settings,
            state,
            device,
            on_epoch,
            setup.steps,
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

        best, _ = model_from_checkpoint(load_checkpoint(model_dir / BEST_NAME))
        onnx_path, mc_path = export_onnx(best, info, model_dir)
        for path in (model_dir / CONFIG_NAME, model_dir / BEST_NAME, onnx_path, mc_path):
            if path is not None:
                tracker.log_artifact(path, "model")
        summary = predict_and_evaluate(project, config, progress)
        if summary is not None:
            tracker.log_metrics({f"test_{k}": v for k, v in summary.items() if isinstance(v, float)})
            tracker.log_artifact(project / EVALUATION_DIR)
        package = None
        if config.package:
            try:
                package = write_package(project, config, best, info, onnx_path, mc_path, summary)
                tracker.log_artifact(package, "model")
            except NothingToShow as exc:  # the model and its evaluation are saved all the same
                log.warning("no bioimage.io package written: %s", exc)
    except BaseException:
        tracker.end("FAILED")
        raise
    tracker.end()
    return RunResult(model_dir, state, onnx_path, mc_path, summary, tracker.run_id, package)


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
    )
    request = Request(
        model,
        files,
        project / RESULTS_DIR,
        options,
        config.axes,
        groundtruth=groundtruth if config.evaluate else None,
        evaluation_dir=project / EVALUATION_DIR,
    )
    return predict_and_evaluate_request(request)[1]
