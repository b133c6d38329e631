"""Training configuration: every default in one place, InstantDL's config keys understood.

Resolution order: defaults < ``--config FILE`` < command-line flags. The resolved configuration is saved
as ``PROJECT/model/config.json`` and logged to MLflow; that file can be passed back with ``--config``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from idl.infer.core.errors import ConfigError, did_you_mean
from idl.infer.core.model_info import normalize_task
from idl.infer.core.nonfinite import POLICIES as NONFINITE_POLICIES
from idl.infer.core.normalize import Normalization
from idl.infer.runtime.session import DEVICES
from idl.infer.tiling.tta import TTA_AUTO, TTA_SETTINGS
from idl.models.unet import DROPOUT_PLACES
from idl.train.augment import Augmentation
from idl.train.augment import resolve as resolve_augmentation
from idl.train.choices import AMP_CHOICES
from idl.train.instantdl import KEYS as INSTANTDL_KEYS
from idl.train.instantdl import LOSSES as INSTANTDL_LOSSES
from idl.train.instantdl import canonical_loss, spelled_keys, translate
from idl.train.plan import SCHEDULES, Plan, Requests
from idl.train.tasks.registry import all_trainers, trainer_for, trainer_names

log = logging.getLogger("idl")


def _task(name: str, source: str) -> str:
    try:
        return normalize_task(name)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from exc


class SettingError(ConfigError):
    """A setting's value is out of its range. ``key`` is the field, so that a value read from a config
    file can be reported under the file's own key (InstantDL's ``iterations_over_dataset`` rather than
    ``epoch_limit``: :func:`resolve_config`)."""

    def __init__(self, key: str, requirement: str) -> None:
        self.key, self.requirement = key, requirement
        super().__init__(f"{key} {requirement}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``None`` means "decide from the data"."""

    task: str = "semantic"
    # The training budget, in epochs of steps_per_epoch optimizer steps (not passes over the files).
    # None: planned from the data and the device (train/plan.py); the learning rate warms up, then
    # decays to zero at the last epoch.
    epochs: int | None = None
    steps_per_epoch: int | None = None  # None: 50 on CPU, 250 on GPU
    # InstantDL's iterations_over_dataset: at most this many epochs (its number was a limit too: it
    # stopped early when validation stopped improving)
    epoch_limit: int | None = None
    batch_size: int | None = None  # None: planned (patches per step), 32 images for classification
    # InstantDL's batchsize: patches per step for the U-Net (at least 2: batch norm does not hold with
    # one), images for classifiers. batch_size (ours, taken as given) wins when both are set.
    batch_images: int | None = None
    learning_rate: float | None = None  # None: 1e-4 for Mask R-CNN, else 1e-3
    # after a linear warm-up: trapezoid (constant, then linearly to zero over the last 40 %), cosine
    # or constant (see train/plan.py)
    lr_schedule: str = "trapezoid"
    patience: int | None = None  # epochs without a better validation score; None: half the epochs
    # a run whose validation score still rises where its learning rate would start to decay gets more
    # epochs, up to this many times the planned ones (train/budget.py); None: 3 for a planned budget,
    # 1 (never) where epochs are set or InstantDL's iterations_over_dataset limits them
    budget_cap: float | None = None
    seed: int = 42
    loss: str | None = None  # bce+dice (binary), ce (multi-class, classification) or mse (regression)
    # InstantDL's loss_function: used where it fits the task, else the task's default (with a warning),
    # because InstantDL's own example files pair tasks with losses that do not fit them
    instantdl_loss: str | None = None
    num_classes: int | None = None  # 2 for binary masks, else max label + 1
    # segmentation/regression: side of the random training patches (rounded to the U-Net's multiple),
    # None: planned; classification: images are resized to this side, None: kept at their size
    image_size: int | None = None
    patch_z: int | None = None  # 3D: depth of the training patches; None: planned
    dims: int | None = None  # None: 3 when the training images are volumes, else 2
    anisotropic: bool | None = None  # 3D: pool in-plane only at the first level; None: from voxel size
    axes: str | None = None
    depth: int | None = None  # None: planned from the object sizes (3 to 5)
    base_filters: int = 16
    model: str | None = None  # None: unet (segmentation, regression) or resnet50 (classification)
    # classification: None (every class weighs the same), "balanced" (inverse class frequency) or
    # one weight per class
    class_weights: str | tuple[float, ...] | None = None
    dropout: float | None = None  # None: 0.2 in 2D, 0.3 in 3D (InstantDL's defaults)
    # U-Net: where the dropout sits (models.unet.DROPOUT_PLACES): "encoder" (InstantDL) or "last"
    dropout_at: str = "encoder"
    val_fraction: float = 0.2
    # None: the task's (its trainer's default_augmentations; a classifier decides from the data whether
    # flips and quarter turns keep the classes, train/tasks/classification/orientation.py)
    augment: tuple[str, ...] | None = None
    # per augmentation: {"probability": p, "range": [lowest, highest]}; ours (train/augment.py) where
    # not given. Resolved on creation, so the saved config shows what was used.
    augment_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # InstantDL's zoom_range v: each sample is a crop of its image, up to 100 v pixels smaller, scaled
    # back to the image's size; the magnification range follows from the image side
    # (:meth:`with_image_side`)
    instantdl_zoom_px: int | None = None
    normalization: Normalization = field(default_factory=Normalization)
    uncertainty: bool = True
    # 10: within 0.005 AUROC of 20 on BBBC039 and the EM sections (docs/benchmarks.md, issue 18)
    mc_samples: int = 10
    # test-time augmentation of the test set's prediction (infer/tiling/tta.py TTA_SETTINGS): "flips",
    # "d4", "off" or "auto" (the task's choice with Monte Carlo samples: d4 for semantic segmentation)
    tta: str | None = TTA_AUTO
    # fit a temperature (semantic, classification) or the Monte Carlo sigma's factor (regression) on
    # the validation images (train/calibrate.py)
    calibrate: bool = True
    # also write int8 graphs (model_int8.onnx, model_int8_mc.onnx) for CPUs, kept where they agree with
    # the float32 graphs on the validation images (export/quantize.py)
    int8: bool = True
    evaluate: bool = True
    device: str = "auto"
    amp: str = "auto"  # mixed precision on CUDA: auto (bf16 if the GPU has it, else fp16), bf16, fp16, off
    workers: int | None = None  # data-loader processes; None: up to 4 on CUDA, 0 on CPU (train/accelerate.py)
    registered_model: str | None = None  # MLflow model-registry name of the package; None: the model's name
    # NaN/inf pixels in images: "replace" (ignored by the normalization, 0 for the network) or "error"
    on_nonfinite: str = "replace"
    pretrained: str | None = None
    tracking_uri: str | None = None
    tile_size: int = 512
    overlap: float | None = None  # None: the halo the model recommends
    freeze_encoder: bool = False  # with pretrained weights: train only the decoder and head
    package: bool = True  # also write a validated bioimage.io package
    save_augmentations: bool = False  # write PROJECT/model/augmentations.png before training
    authors: tuple[str, ...] = ()  # for the package; empty: it names no author
    # whether the plan may add to ``augment`` (a classifier's flips and quarter turns, decided from the
    # data); None: when ``augment`` is not given. Saved in config.json, so --resume decides alike.
    augment_planned: bool | None = None

    def __post_init__(self) -> None:
        if self.loss is not None:  # InstantDL's loss names, from a config file or the command line
            object.__setattr__(self, "loss", canonical_loss(self.loss))
        if self.instantdl_loss is not None:
            object.__setattr__(self, "instantdl_loss", canonical_loss(self.instantdl_loss))
        try:
            trainer = trainer_for(self.task)
        except ConfigError:
            known = ", ".join(trainer_names())
            raise ConfigError(f"task '{self.task}' is not a task name; use one of {known}") from None
        for ok, key, requirement in self._range_checks(trainer.min_image_size):
            if not ok:
                raise SettingError(key, requirement)
        if self.augment_planned is None:
            object.__setattr__(self, "augment_planned", self.augment is None)
        names = trainer.default_augmentations if self.augment is None else self.augment
        try:
            resolved = resolve_augmentation(names, self.augment_settings)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        object.__setattr__(self, "augment", tuple(resolved))
        object.__setattr__(self, "augment_settings", {n: s.to_dict() for n, s in resolved.items()})
        valid_losses = tuple(dict.fromkeys(n for t in all_trainers() for n in t.loss_names))
        for loss in (self.loss, self.instantdl_loss):
            if loss is not None and loss not in valid_losses:
                raise ConfigError(
                    f"unknown loss '{loss}'.{did_you_mean(loss, valid_losses + tuple(INSTANTDL_LOSSES))} "
                    f"Valid: {', '.join(valid_losses)} (or InstantDL's: {', '.join(INSTANTDL_LOSSES)})"
                )
        valid_models = trainer.models
        if self.model is not None and self.model not in valid_models:
            raise ConfigError(
                f"model '{self.model}' does not fit the {self.task} task."
                f"{did_you_mean(self.model, valid_models)} Use one of {', '.join(valid_models)}"
            )
        weights = self.class_weights
        if isinstance(weights, str) and weights != "balanced":
            raise ConfigError(f"class_weights must be 'balanced' or one number per class, got '{weights}'")
        if isinstance(weights, tuple) and (len(weights) < 2 or not all(w > 0 for w in weights)):
            raise ConfigError(f"class_weights need one positive number per class, got {list(weights)}")

    def _range_checks(self, min_image_size: int) -> list[tuple[bool, str, str]]:
        """``(holds, field, requirement)`` for every value with a range or a fixed set of choices."""
        return [
            (
                self.epochs is None or self.epochs >= 1,
                "epochs",
                "must be >= 1 (InstantDL's 0 epochs, predicting with given weights, is idl-predict with a "
                "trained model)",
            ),
            (self.steps_per_epoch is None or self.steps_per_epoch >= 1, "steps_per_epoch", "must be >= 1"),
            (self.epoch_limit is None or self.epoch_limit >= 1, "epoch_limit", "must be >= 1"),
            (self.batch_size is None or self.batch_size >= 1, "batch_size", "must be >= 1"),
            (self.batch_images is None or self.batch_images >= 1, "batch_images", "must be >= 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate", "must be > 0"),
            (self.patience is None or self.patience >= 1, "patience", "must be >= 1"),
            (
                self.budget_cap is None or self.budget_cap >= 1,
                "budget_cap",
                "must be >= 1 (1: never extended)",
            ),
            (
                self.lr_schedule in SCHEDULES,
                "lr_schedule",
                f"'{self.lr_schedule}' is not known.{did_you_mean(self.lr_schedule, SCHEDULES)} "
                f"Use one of {', '.join(SCHEDULES)}",
            ),
            (self.image_size is None or self.image_size >= 8, "image_size", "must be >= 8"),
            (
                self.image_size is None or self.image_size >= min_image_size,
                "image_size",
                f"(the training patch side) must be >= {min_image_size}",
            ),
            (self.dims in (None, 2, 3), "dims", "must be 2 or 3"),
            (self.depth is None or 1 <= self.depth <= 6, "depth", "must be between 1 and 6"),
            (self.base_filters >= 1, "base_filters", "must be >= 1"),
            (self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)"),
            (
                self.dropout_at in DROPOUT_PLACES,
                "dropout_at",
                f"must be one of {', '.join(DROPOUT_PLACES)}, got '{self.dropout_at}'",
            ),
            (self.patch_z is None or self.patch_z >= 1, "patch_z", "must be >= 1"),
            (self.amp in AMP_CHOICES, "amp", f"must be one of {', '.join(AMP_CHOICES)}, got '{self.amp}'"),
            (self.workers is None or self.workers >= 0, "workers", "must be >= 0"),
            (
                0.0 <= self.val_fraction < 1.0,
                "val_fraction",
                "must be at least 0 (0: no validation) and below 1",
            ),
            (self.mc_samples >= 2, "mc_samples", "must be >= 2"),
            (self.tta in (None, *TTA_SETTINGS), "tta", f"must be one of {', '.join(TTA_SETTINGS)}"),
            (
                self.device in DEVICES,
                "device",
                f"'{self.device}' is not known.{did_you_mean(self.device, DEVICES)} "
                f"Use one of {', '.join(DEVICES)}",
            ),
            (self.num_classes is None or self.num_classes >= 2, "num_classes", "must be >= 2"),
            (
                self.on_nonfinite in NONFINITE_POLICIES,
                "on_nonfinite",
                f"must be one of {', '.join(NONFINITE_POLICIES)}, got '{self.on_nonfinite}'",
            ),
        ]

    @property
    def augmentation(self) -> Augmentation:
        """The augmentations of training with their probabilities and ranges."""
        return resolve_augmentation(self.augment, self.augment_settings)

    def resolved_model(self, device: str = "cuda") -> str:
        """The network: as set, or the task's default for the device."""
        return self.model or trainer_for(self.task).default_model(device)

    @property
    def resolved_learning_rate(self) -> float:
        """Adam's step size: as set, or the task's default for the network."""
        if self.learning_rate is not None:
            return self.learning_rate
        return trainer_for(self.task).learning_rate(self.model)

    @property
    def classification_batch_size(self) -> int:
        """Images per training step of a classifier."""
        return self.batch_size or self.batch_images or 32

    @property
    def resolved_dropout(self) -> float:
        """The dropout rate: as set, or InstantDL's default for the dimensionality."""
        if self.dropout is not None:
            return self.dropout
        return 0.3 if self.dims == 3 else 0.2

    @property
    def plan_requests(self) -> Requests:
        """The plan items this configuration sets (the rest is planned from the data)."""
        return Requests(
            patch_side=self.image_size,
            patch_z=self.patch_z,
            batch_size=self.batch_size,
            batch_images=self.batch_images,
            depth=self.depth,
            anisotropic=self.anisotropic,
            steps_per_epoch=self.steps_per_epoch,
            epochs=self.epochs,
            epoch_limit=self.epoch_limit,
            patience=self.patience,
            learning_rate=self.learning_rate,
            network_set=self.model is not None,
        )

    def resolved_loss(self, num_classes: int) -> str:
        """The loss to train with: ``loss`` if set (it must fit the task: classification, regression,
        binary or multi-class segmentation), else InstantDL's ``loss_function`` where it fits, else the
        task's default."""
        choice = trainer_for(self.task).losses(num_classes)
        default, allowed, kind = choice.default, choice.allowed, choice.kind
        if self.loss is not None:
            if self.loss not in allowed:
                raise ConfigError(f"loss '{self.loss}' does not fit {kind}; use one of {', '.join(allowed)}")
            return self.loss
        if self.instantdl_loss is not None and self.instantdl_loss not in allowed:
            log.warning(
                "loss_function '%s' does not fit %s; training with '%s' (set loss to one of %s to choose)",
                self.instantdl_loss,
                kind,
                default,
                ", ".join(allowed),
            )
            return default
        return self.instantdl_loss or default

    def with_plan(self, plan: Plan) -> TrainConfig:
        """These settings with the plan's values filled in (saved and logged as used)."""
        planned: dict[str, Any] = {
            "batch_size": plan.batch_size,
            "epochs": plan.epochs,
            "steps_per_epoch": plan.steps_per_epoch,
            "patience": plan.patience,
            "learning_rate": plan.learning_rate,
        }
        if plan.depth:  # a U-Net
            planned.update(depth=plan.depth, image_size=plan.patch[-1])
            if plan.dims == 3:
                planned.update(anisotropic=plan.anisotropic, patch_z=plan.patch[0])
        return replace(self, **planned)

    def with_image_side(self, side: int) -> TrainConfig:
        """These settings with InstantDL's zoom in pixels (``instantdl_zoom_px``) turned into our
        magnification range for training images whose shorter side is ``side`` pixels: up to
        ``side / (side - px)``, the crop never less than half the side. InstantDL crops that many pixels
        off the whole image and scales the rest back; a fixed magnification would zoom a 128 px tile as
        far as a 1024 px slice, and up to 2x made its own lung example fail in half of the seeds."""
        if self.instantdl_zoom_px is None or "zoom" not in self.augment:
            return self
        crop = min(self.instantdl_zoom_px, side // 2)
        highest = round(side / max(1, side - crop), 3)
        settings = {**self.augment_settings}
        settings["zoom"] = {**settings.get("zoom", {}), "range": [1.0, highest]}
        log.info(
            "InstantDL's zoom: crops up to %d px of %d px images, a magnification of 1 to %g",
            crop,
            side,
            highest,
        )
        return replace(self, augment_settings=settings)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["augment"] = list(self.augment or ())
        data["authors"] = list(self.authors)
        if isinstance(self.class_weights, tuple):
            data["class_weights"] = list(self.class_weights)
        return data


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    **{
        k: ("a whole number", (int,))
        for k in (
            "epochs",
            "steps_per_epoch",
            "epoch_limit",
            "batch_size",
            "batch_images",
            "patience",
            "seed",
            "num_classes",
            "image_size",
            "dims",
            "depth",
            "base_filters",
            "mc_samples",
            "tile_size",
            "patch_z",
            "instantdl_zoom_px",
            "workers",
        )
    },
    **{
        k: ("a number", (int, float))
        for k in ("learning_rate", "dropout", "val_fraction", "overlap", "budget_cap")
    },
    **{
        k: ("true or false", (bool,))
        for k in (
            "uncertainty",
            "calibrate",
            "int8",
            "evaluate",
            "freeze_encoder",
            "package",
            "anisotropic",
            "save_augmentations",
            "augment_planned",
        )
    },
    **{
        k: ("a text", (str,))
        for k in (
            "task",
            "tta",
            "loss",
            "instantdl_loss",
            "axes",
            "device",
            "pretrained",
            "tracking_uri",
            "model",
            "lr_schedule",
            "dropout_at",
            "amp",
            "registered_model",
        )
    },
}


def _check_kind(key: str, value: Any, source: str, spelled: str | None = None) -> None:
    """Refuse a value of the wrong type for field ``key``, named as the file spells it (``spelled``)."""
    if key not in _KINDS:
        return
    name, kinds = _KINDS[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(f"{source}: '{spelled or key}' must be {name}, got {value!r}.")


def _augment(value: Any, source: str) -> dict[str, Any]:
    """``augment`` as a list of names, or as an object of name -> settings (``{}``: ours)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, dict):
        for name, settings in value.items():
            if not isinstance(settings, dict):
                raise ConfigError(
                    f"{source}: augmentation '{name}' needs an object such as "
                    f'{{"probability": 0.5, "range": [-30, 30]}} (or {{}} for ours), got {settings!r}.'
                )
        return {"augment": tuple(value), "augment_settings": {k: v for k, v in value.items() if v}}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return {"augment": tuple(value)}
    raise ConfigError(
        f"{source}: 'augment' must be a list of augmentation names or an object, got {value!r}."
    )


def config_from_mapping(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate keys of a config mapping (ours or InstantDL's) and return our field overrides."""
    out: dict[str, Any] = {}
    valid = sorted(set(FIELD_NAMES) | set(INSTANTDL_KEYS))
    instantdl = {k: v for k, v in data.items() if k.lower() in INSTANTDL_KEYS}
    ours = [(k, v) for k, v in data.items() if k.lower() not in INSTANTDL_KEYS]
    spelled = spelled_keys(data)
    for key, value in [*translate(instantdl, source).items(), *ours]:
        if key not in FIELD_NAMES:
            raise ConfigError(
                f"{source}: unknown key '{key}'.{did_you_mean(key, valid)} Valid keys: {', '.join(valid)}"
            )
        if value is None:
            continue  # null means "the default" (InstantDL's example configs use it so)
        _check_kind(key, value, source, spelled.get(key))
        if key == "normalization" and isinstance(value, dict):
            value = Normalization(**value)
        if key == "augment":
            out.update(_augment(value, source))
            continue
        if key == "authors" and isinstance(value, list):
            value = tuple(value)
        if key == "class_weights":
            value = parse_class_weights(value, source)
        if key == "authors" and isinstance(value, str):
            value = (value,)
        if key == "task":  # ours or InstantDL's use_algorithm
            value = _task(str(value), source)
        out[key] = value
    return out


def parse_class_weights(value: Any, source: str = "--class-weights") -> str | tuple[float, ...]:
    """``balanced`` or one weight per class (a list, or text like ``1,3.5``)."""
    if isinstance(value, str) and value.strip().lower() == "balanced":
        return "balanced"
    if isinstance(value, tuple):
        return value
    items = value.split(",") if isinstance(value, str) else value
    try:
        return tuple(float(v) for v in items)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{source}: class weights must be 'balanced' or one number per class (e.g. 1,3.5), got {value!r}."
        ) from exc


# a JSON string, or a bare Python literal outside strings
_PYTHON_LITERALS = re.compile(r'"(?:\\.|[^"\\])*"|\b(True|False|None)\b')


def json_text(text: str) -> str:
    """JSON text with Python's ``True``/``False``/``None`` (outside strings) turned into JSON's, as
    InstantDL's own example files write them."""
    spelled = {"True": "true", "False": "false", "None": "null"}
    return _PYTHON_LITERALS.sub(lambda m: spelled[m.group(1)] if m.group(1) else m.group(0), text)


def read_config_file(path: Path) -> dict[str, Any]:
    """The key: value pairs of a JSON config file (Python literals tolerated), unchecked."""
    try:
        # utf-8-sig: Windows editors (Notepad) start UTF-8 files with a byte-order mark
        data = json.loads(json_text(Path(path).read_text(encoding="utf-8-sig")))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a JSON object of key: value pairs.")
    return data


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON config file (ours or InstantDL's) into field overrides."""
    return config_from_mapping(read_config_file(path), str(path))


def project_of_config(path: Path) -> Path:
    """The project folder an InstantDL config file names in ``path``: as given (relative to the working
    folder, as InstantDL reads it) or else relative to the config file's own folder."""
    data = {k.lower(): v for k, v in read_config_file(path).items()}
    if not data.get("path"):
        raise ConfigError(f"{path}: no 'path' names the project folder; give the PROJECT folder instead.")
    candidates = [Path(str(data["path"])), Path(path).parent / str(data["path"])]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    files = [c for c in candidates if c.exists()]
    if files:
        raise ConfigError(
            f"{path}: 'path' names {files[0]}, which is a file, not a folder; 'path' must name the "
            "project folder (the one holding train/ and test/). Correct it or give the PROJECT folder."
        )
    raise ConfigError(
        f"{path}: the project folder '{data['path']}' was found neither in the working folder nor next to "
        "the config file; correct 'path' or give the PROJECT folder."
    )


def file_keys(data: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """Our field -> (the key as the config file spells it, the file's value): ours as they are,
    InstantDL's under their own names (``batchsize`` for ``batch_images``)."""
    names = {k: (k, v) for k, v in data.items() if k in FIELD_NAMES}
    names.update({field: (key, data[key]) for field, key in spelled_keys(data).items()})
    return names


def _in_file_terms(error: SettingError, keys: dict[str, tuple[str, Any]], source: str) -> ConfigError:
    """``error`` about a value from a config file, under the file's own key and with its value."""
    if error.key not in keys:
        return error
    key, value = keys[error.key]
    if error.requirement.startswith("'"):  # names the value already: "device 'cuda0' is not known. ..."
        return ConfigError(f"{source}: {key} {error.requirement}")
    got = "" if "got" in error.requirement else f", got {value!r}"
    return ConfigError(f"{source}: '{key}' {error.requirement}{got}.")


def resolve_config(file: Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the config file, then the non-``None`` command-line overrides. A value out of
    range is reported under the key the file gives it (InstantDL's keys included)."""
    data = read_config_file(file) if file is not None else {}
    values: dict[str, Any] = config_from_mapping(data, str(file)) if file is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    keys = {k: v for k, v in file_keys(data).items() if k not in given}
    values.update(given)
    if overrides.get("augment") is not None:  # the command line's names: keep the file's settings of those
        kept = values.get("augment_settings", {})
        values["augment_settings"] = {k: v for k, v in kept.items() if k in overrides["augment"]}
    if values.get("class_weights") is not None:  # "balanced", "1,2.5" (command line) or a list
        values["class_weights"] = parse_class_weights(values["class_weights"])
    try:
        return TrainConfig(**values)
    except SettingError as exc:
        raise _in_file_terms(exc, keys, str(file)) from None
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
