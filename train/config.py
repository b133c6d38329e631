"""Training configuration: every default in one place, InstantDL's config keys understood.

Resolution order: defaults < ``--config FILE`` < command-line flags. The resolved configuration is saved
as ``PROJECT/model/config.json`` and logged to MLflow; that file can be passed back with ``--config``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from idl.infer.errors import IdlError
from idl.infer.model_info import TASKS, normalize_task
from idl.infer.normalize import Normalization
from idl.infer.session import DEVICES
from idl.train.augment import GEOMETRIC, INTENSITY

IMPLEMENTED_TASKS = ("semantic", "instance", "regression", "classification")
BINARY_LOSSES = ("bce", "dice", "bce+dice", "focal", "tversky")
MULTICLASS_LOSSES = ("ce", "dice", "ce+dice", "focal", "tversky")
REGRESSION_LOSSES = ("mse", "mae", "huber")
CLASSIFICATION_LOSSES = ("ce",)
SEGMENTATION_MODELS = ("unet",)
INSTANCE_MODELS = ("unet", "maskrcnn")
CLASSIFICATION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101")
DEFAULT_AUGMENTATIONS = ("flip", "rot90")
AUGMENTATIONS = (*DEFAULT_AUGMENTATIONS, *GEOMETRIC, *INTENSITY)

# InstantDL config keys -> ours. "path" names the project folder and is handled by the caller.
INSTANTDL_KEYS = {
    "use_algorithm": "task",
    "pretrained_weights": "pretrained",
    "batchsize": "batch_size",
    "iterations_over_dataset": "epochs",
    "data_gen_args": "augment",
    "loss_function": "loss",
    "num_classes": "num_classes",
    "image_size": "image_size",
    "seeds": "seed",
    "calculate_uncertainty": "uncertainty",
    "evaluation": "evaluate",
}
INSTANTDL_LOSSES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "binary_crossentropy": "bce",
    "dice_loss": "dice",
    "tversky_loss": "tversky",
    "focal_loss": "focal",
    "binary crossentropy dice loss": "bce+dice",
    "categorical_crossentropy": "ce",
}


def canonical_loss(name: str) -> str:
    """Our loss name for ours or InstantDL's (``"binary crossentropy dice loss"`` -> ``bce+dice``)."""
    return INSTANTDL_LOSSES.get(str(name).strip().lower(), str(name))


class ConfigError(IdlError):
    """A configuration key or value is invalid."""


def _task(name: str) -> str:
    try:
        return normalize_task(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; ``None`` means "decide from the data"."""

    task: str = "semantic"
    epochs: int = 100
    batch_size: int | None = None  # None: 4 patches (segmentation, regression) or 32 images
    learning_rate: float | None = None  # None: 1e-4 for Mask R-CNN, else 1e-3
    patience: int = 10
    seed: int = 42
    loss: str | None = None  # bce+dice (binary), ce (multi-class, classification) or mse (regression)
    num_classes: int | None = None  # 2 for binary masks, else max label + 1
    # segmentation/regression: side of the random training patches (rounded to the U-Net's multiple),
    # None: 256; classification: images are resized to this side, None: kept at their size
    image_size: int | None = None
    patch_z: int = 32  # 3D: depth of the training patches (rounded to the U-Net's z multiple)
    dims: int = 2
    anisotropic: bool | None = None  # 3D: pool in-plane only at the first level; None: from voxel size
    axes: str | None = None
    depth: int | None = None  # None: 4 in 2D, 3 in 3D
    base_filters: int = 16
    model: str | None = None  # None: unet (segmentation, regression) or resnet50 (classification)
    # classification: None (every class weighs the same), "balanced" (inverse class frequency) or
    # one weight per class
    class_weights: str | tuple[float, ...] | None = None
    dropout: float | None = None  # None: 0.2 in 2D, 0.3 in 3D (InstantDL's defaults)
    val_fraction: float = 0.2
    augment: tuple[str, ...] = DEFAULT_AUGMENTATIONS
    normalization: Normalization = field(default_factory=Normalization)
    uncertainty: bool = True
    mc_samples: int = 20
    evaluate: bool = True
    device: str = "auto"
    pretrained: str | None = None
    tracking_uri: str | None = None
    tile_size: int = 512
    overlap: float | None = None  # None: the halo the model recommends
    freeze_encoder: bool = False  # with pretrained weights: train only the decoder and head
    package: bool = True  # also write a validated bioimage.io package
    save_augmentations: bool = False  # write PROJECT/model/augmentations.png before training
    authors: tuple[str, ...] = ()  # for the package; empty: the login name

    def __post_init__(self) -> None:
        if self.loss is not None:  # InstantDL's loss names, from a config file or the command line
            object.__setattr__(self, "loss", canonical_loss(self.loss))
        checks = [
            (self.task in TASKS, f"task '{self.task}' is not a task name"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.batch_size is None or self.batch_size >= 1, "batch_size must be >= 1"),
            (self.learning_rate is None or self.learning_rate > 0, "learning_rate must be > 0"),
            (self.patience >= 1, "patience must be >= 1"),
            (self.image_size is None or self.image_size >= 8, "image_size must be >= 8"),
            (
                self.image_size is None or self.image_size >= 16 or self.task == "classification",
                "image_size (the training patch side) must be >= 16",
            ),
            (self.dims in (2, 3), "dims must be 2 or 3"),
            (self.depth is None or 1 <= self.depth <= 6, "depth must be between 1 and 6"),
            (self.base_filters >= 1, "base_filters must be >= 1"),
            (self.dropout is None or 0.0 <= self.dropout < 1.0, "dropout must be in [0, 1)"),
            (self.patch_z >= 1, "patch_z must be >= 1"),
            (0.0 < self.val_fraction < 1.0, "val_fraction must be between 0 and 1"),
            (self.mc_samples >= 2, "mc_samples must be >= 2"),
            (self.device in DEVICES, f"device must be one of {', '.join(DEVICES)}"),
            (self.num_classes is None or self.num_classes >= 2, "num_classes must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        unknown = [a for a in self.augment if a not in AUGMENTATIONS]
        if unknown:
            raise ConfigError(f"unknown augmentation(s) {unknown}; valid: {', '.join(AUGMENTATIONS)}")
        valid_losses = BINARY_LOSSES + MULTICLASS_LOSSES + REGRESSION_LOSSES + CLASSIFICATION_LOSSES
        if self.loss is not None and self.loss not in valid_losses:
            raise ConfigError(f"unknown loss '{self.loss}'; valid: {', '.join(dict.fromkeys(valid_losses))}")
        valid_models = {"classification": CLASSIFICATION_MODELS, "instance": INSTANCE_MODELS}.get(
            self.task, SEGMENTATION_MODELS
        )
        if self.model is not None and self.model not in valid_models:
            raise ConfigError(
                f"model '{self.model}' does not fit the {self.task} task; "
                f"use one of {', '.join(valid_models)}"
            )
        weights = self.class_weights
        if isinstance(weights, str) and weights != "balanced":
            raise ConfigError(f"class_weights must be 'balanced' or one number per class, got '{weights}'")
        if isinstance(weights, tuple) and (len(weights) < 2 or not all(w > 0 for w in weights)):
            raise ConfigError(f"class_weights need one positive number per class, got {list(weights)}")

    @property
    def resolved_model(self) -> str:
        """The network: as set, or resnet50 for classification (InstantDL's) and the U-Net otherwise."""
        return self.model or ("resnet50" if self.task == "classification" else "unet")

    @property
    def resolved_learning_rate(self) -> float:
        """Adam's step size: as set, or 1e-4 for Mask R-CNN (from scratch it diverges at 1e-3) and
        1e-3 for the other networks."""
        if self.learning_rate is not None:
            return self.learning_rate
        return 1e-4 if self.model == "maskrcnn" else 1e-3

    @property
    def resolved_batch_size(self) -> int:
        """Patches (segmentation, regression) or images (classification) per training step."""
        if self.batch_size is not None:
            return self.batch_size
        return 32 if self.task == "classification" else 4

    @property
    def patch_size(self) -> int:
        """Side of the training patches of the U-Net tasks."""
        return self.image_size or 256

    @property
    def resolved_depth(self) -> int:
        """U-Net levels: as set, or 4 in 2D and 3 in 3D (volumes cost far more per level)."""
        if self.depth is not None:
            return self.depth
        return 3 if self.dims == 3 else 4

    @property
    def resolved_dropout(self) -> float:
        """The dropout rate: as set, or InstantDL's default for the dimensionality."""
        if self.dropout is not None:
            return self.dropout
        return 0.3 if self.dims == 3 else 0.2

    def resolved_loss(self, num_classes: int) -> str:
        """The loss to train with; checks it fits the task (binary or multi-class segmentation,
        regression)."""
        if self.task == "classification":
            loss = self.loss or "ce"
            if loss not in CLASSIFICATION_LOSSES:
                raise ConfigError(
                    f"loss '{loss}' does not fit classification; "
                    f"use one of {', '.join(CLASSIFICATION_LOSSES)}"
                )
            return loss
        if self.task == "regression":
            loss = self.loss or "mse"
            if loss not in REGRESSION_LOSSES:
                raise ConfigError(
                    f"loss '{loss}' does not fit regression; use one of {', '.join(REGRESSION_LOSSES)}"
                )
            return loss
        if num_classes == 2:
            loss = self.loss or "bce+dice"
            allowed = BINARY_LOSSES
        else:
            loss = self.loss or "ce"
            allowed = MULTICLASS_LOSSES
        if loss not in allowed:
            kind = "binary" if num_classes == 2 else f"{num_classes}-class"
            raise ConfigError(
                f"loss '{loss}' does not fit {kind} segmentation; use one of {', '.join(allowed)}"
            )
        return loss

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["augment"] = list(self.augment)
        data["authors"] = list(self.authors)
        if isinstance(self.class_weights, tuple):
            data["class_weights"] = list(self.class_weights)
        return data


FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def _did_you_mean(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _augmentations_of(args: dict[str, Any]) -> tuple[str, ...]:
    """Our augmentations for InstantDL's (Keras-style) ``data_gen_args``: flips, rotations (right
    angles when the range is a multiple of 90 degrees, else arbitrary), shifts and zoom where asked for.
    Our ranges apply (see :mod:`idl.train.augment`)."""
    rotation = args.get("rotation_range") or 0
    wanted = {
        "flip": args.get("horizontal_flip") or args.get("vertical_flip"),
        "rot90": rotation and rotation % 90 == 0,
        "rotate": rotation and rotation % 90 != 0,
        "shift": args.get("width_shift_range") or args.get("height_shift_range"),
        "zoom": args.get("zoom_range"),
    }
    return tuple(name for name, on in wanted.items() if on)


def _translate_instantdl(key: str, value: Any) -> tuple[str, Any]:
    """Map one InstantDL key/value to ours."""
    ours = INSTANTDL_KEYS[key]
    if ours == "task":
        value = _task(str(value))
    elif ours == "loss":
        value = canonical_loss(value)
    elif ours == "pretrained" and value in (False, "False", "", None):
        value = None
    elif ours == "seed":
        value = 42 if value in (True, None) else (0 if value is False else int(value))
    elif ours == "augment" and isinstance(value, dict):
        value = _augmentations_of(value)
    elif ours == "image_size" and isinstance(value, (list, tuple)):
        value = int(min(v for v in value[:2]))
    elif ours == "num_classes" and value == 1:
        value = 2  # InstantDL counts a binary (sigmoid) task as one class
    return ours, value


_KINDS: dict[str, tuple[str, tuple[type, ...]]] = {
    **{
        k: ("a whole number", (int,))
        for k in (
            "epochs",
            "batch_size",
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
        )
    },
    **{k: ("a number", (int, float)) for k in ("learning_rate", "dropout", "val_fraction", "overlap")},
    **{
        k: ("true or false", (bool,))
        for k in ("uncertainty", "evaluate", "freeze_encoder", "package", "anisotropic", "save_augmentations")
    },
    **{
        k: ("a text", (str,))
        for k in ("task", "loss", "axes", "device", "pretrained", "tracking_uri", "model")
    },
}


def _check_kind(key: str, value: Any, source: str) -> None:
    if key not in _KINDS:
        return
    name, kinds = _KINDS[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise ConfigError(f"{source}: '{key}' must be {name}, got {value!r}.")


def config_from_mapping(data: dict[str, Any], source: str) -> dict[str, Any]:
    """Validate keys of a config mapping (ours or InstantDL's) and return our field overrides."""
    out: dict[str, Any] = {}
    valid = sorted(FIELD_NAMES) + sorted(INSTANTDL_KEYS) + ["path"]
    for key, value in data.items():
        if key == "path":
            continue  # the project folder is the command's argument
        if key in INSTANTDL_KEYS:
            key, value = _translate_instantdl(key, value)
        elif key not in FIELD_NAMES:
            raise ConfigError(
                f"{source}: unknown key '{key}'.{_did_you_mean(key, valid)} Valid keys: {', '.join(valid)}"
            )
        if value is None:
            continue  # null means "the default" (InstantDL's example configs use it so)
        _check_kind(key, value, source)
        if key == "normalization" and isinstance(value, dict):
            value = Normalization(**value)
        if key in ("augment", "authors") and isinstance(value, list):
            value = tuple(value)
        if key == "class_weights":
            value = parse_class_weights(value, source)
        if key == "authors" and isinstance(value, str):
            value = (value,)
        if key == "task":
            value = _task(str(value))
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


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a JSON config file into field overrides."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}).") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a JSON object of key: value pairs.")
    return config_from_mapping(data, str(path))


def resolve_config(file: Path | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the config file, then the non-``None`` command-line overrides."""
    values: dict[str, Any] = load_config_file(file) if file is not None else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if values.get("class_weights") is not None:  # "balanced", "1,2.5" (command line) or a list
        values["class_weights"] = parse_class_weights(values["class_weights"])
    try:
        return replace(TrainConfig(), **values)
    except TypeError as exc:
        raise ConfigError(str(exc)) from exc
