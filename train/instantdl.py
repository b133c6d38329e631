"""InstantDL's config files, read unchanged: its keys, loss names and ``data_gen_args`` mapped to ours.

InstantDL spells keys in several ways across its own files (``Image_size``, ``Iterations_Over_Dataset``,
``pretrained_weights_path``), so keys match without regard to case. Its ``data_gen_args`` documents
more augmentations than it applied (flips and shifts were switched off by an operator-precedence bug;
resampling, normalization, gamma and Poisson noise were never written); here each one means what its
name says, with the strength the file gives where that has a clear meaning (:func:`augmentations`).
``zoom_range`` keeps InstantDL's unit, pixels: a crop up to ``100 v`` px smaller than the image, scaled
back (so the magnification depends on the image size, resolved by ``TrainConfig.with_image_side``).
Settings that would alter the ground truth (``binarize_mask``, ``threshold_background_groundtruth``,
``gaussian_blur_label``) are ignored with a warning: idl reads masks as classes and keeps them exact.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from idl.infer.core.errors import ConfigError, did_you_mean

log = logging.getLogger("idl")

# InstantDL config key (lower case) -> our field. "path" names the project folder: the command's argument.
KEYS = {
    "use_algorithm": "task",
    "path": None,
    "pretrained_weights": "pretrained",
    "pretrained_weights_path": "pretrained",
    "use_pretrained_weights": "pretrained",
    "batchsize": "batch_images",
    "iterations_over_dataset": "epoch_limit",
    "data_gen_args": "augment",
    "loss_function": "instantdl_loss",
    "num_classes": "num_classes",
    "image_size": "image_size",
    "seeds": "seed",
    "calculate_uncertainty": "uncertainty",
    "evaluation": "evaluate",
}
# our fields an InstantDL key sets besides its own in KEYS
ALSO_SETS = {
    "data_gen_args": ("augment_settings", "save_augmentations", "instantdl_zoom_px"),
    "image_size": ("patch_z",),
}
LOSSES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "binary_crossentropy": "bce",
    "dice_loss": "dice",
    "tversky_loss": "tversky",
    "focal_loss": "focal",
    "binary crossentropy dice loss": "bce+dice",
    "categorical_crossentropy": "ce",
}
# data_gen_args keys without an augmentation: what they would do, and why idl does not
IGNORED = {
    "binarize_mask": "masks are read as classes already (two values: a binary mask)",
    "threshold_background_groundtruth": "it would change the ground truth",
    "gaussian_blur_label": "it would blur the ground truth",
    "shear_range": "shearing is not offered",
    "channel_shift_range": "channel shifts are not offered",
    "fill_mode": "outside the image is always 0",
    "cval": "outside the image is always 0",
}
SWITCHES = {  # data_gen_args keys that switch one of ours on with our range
    "horizontal_flip": "hflip",
    "vertical_flip": "vflip",
    "resample_images": "resample",
    "std_normalization": "std_normalization",
    "feature_scaling": "feature_scaling",
    "threshold_background_image": "threshold_background",
    "poission_noise": "poisson_noise",  # InstantDL's spelling
    "poisson_noise": "poisson_noise",
}
STRENGTHS = (
    "rotation_range",
    "width_shift_range",
    "height_shift_range",
    "zoom_range",
    "contrast_range",
    "brightness_range",
    "gamma_shift",
    "gaussian_noise",
    "gaussian_blur_image",
)
DATA_GEN_ARGS = (*SWITCHES, *STRENGTHS, "save_augmented_images", *IGNORED)


CROP_KEY = "crop_px"  # a zoom given as InstantDL's pixels, resolved by TrainConfig.with_image_side


def spelled_keys(data: Mapping[str, Any]) -> dict[str, str]:
    """Our field -> the InstantDL key that sets it, as the file spells it (``Iterations_Over_Dataset``),
    so that messages about a value use the user's own key rather than an internal field name."""
    out: dict[str, str] = {}
    for key in data:
        ours = KEYS.get(key.lower())
        if ours is not None:
            for name in (ours, *ALSO_SETS.get(key.lower(), ())):
                out[name] = key
    return out


def canonical_loss(name: str) -> str:
    """Our loss name for ours or InstantDL's (``"binary crossentropy dice loss"`` -> ``bce+dice``)."""
    return LOSSES.get(str(name).strip().lower(), str(name))


def _factor_range(value: Any) -> list[float]:
    """``1 +/- v`` for one number (InstantDL's and Keras' contrast, brightness), ``[a, b]`` as given."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [max(0.0, 1.0 - float(value)), 1.0 + float(value)]


def _strength(key: str, value: Any) -> tuple[str, dict[str, Any]]:
    """Our augmentation and settings for one ``data_gen_args`` key with a strength."""
    if key == "rotation_range":
        if float(value) % 90 == 0:
            return "rot90", {}
        return "rotate", {"range": [-float(value), float(value)]}
    if key in ("width_shift_range", "height_shift_range"):
        return "shift", {"range": [-float(value), float(value)]}
    if key == "zoom_range":  # [a, b]: a magnification; a number v: InstantDL's crop of up to 100 v px
        if isinstance(value, (list, tuple)):
            return "zoom", {"range": [float(v) for v in value]}
        return "zoom", {CROP_KEY: max(1, round(100 * float(value)))}
    if key == "contrast_range":
        return "contrast", {"range": _factor_range(value)}
    if key == "brightness_range":
        return "brightness", {"range": _factor_range(value)}
    if key == "gamma_shift":
        low, high = _factor_range(value)
        return "gamma", {"range": [max(low, 0.05), high]}
    if key == "gaussian_noise":
        return "gaussian_noise", {"range": [0.0, float(value)]}
    if key == "gaussian_blur_image":  # true: our range; a number: sigma up to it
        return "blur", {} if value is True else {"range": [0.0, float(value)]}
    raise KeyError(key)


def augmentations(args: dict[str, Any], source: str) -> tuple[dict[str, dict[str, Any]], bool]:
    """Our augmentations (name -> settings) for InstantDL's ``data_gen_args``, and whether it asks to
    save augmented images. ``false``, ``0`` and ``null`` switch an entry off."""
    if not isinstance(args, dict):
        raise ConfigError(
            f"{source}: 'data_gen_args' must be an object of augmentation settings, got {args!r}."
        )
    out: dict[str, dict[str, Any]] = {}
    save = False
    for raw_key, value in args.items():
        key = raw_key.lower()
        if key not in DATA_GEN_ARGS:
            raise ConfigError(
                f"{source}: unknown data_gen_args key '{raw_key}'.{did_you_mean(key, DATA_GEN_ARGS)} "
                f"Valid: {', '.join(DATA_GEN_ARGS)}."
            )
        if value in (False, None, 0) or value == []:
            continue
        if key == "save_augmented_images":
            save = bool(value)
        elif key in IGNORED:
            log.warning("%s: data_gen_args '%s' is ignored: %s.", source, raw_key, IGNORED[key])
        elif key in SWITCHES:
            out.setdefault(SWITCHES[key], {})
        else:
            if isinstance(value, bool) and key != "gaussian_blur_image":
                raise ConfigError(f"{source}: data_gen_args '{raw_key}' needs a number, got {value!r}.")
            name, settings = _strength(key, value)
            widest = out.get(name, {}).get("range")  # width and height shifts: the larger one
            if widest is None or (settings.get("range") and settings["range"][1] > widest[1]):
                out[name] = settings
    return out, save


def _pretrained(values: dict[str, Any], source: str) -> str | None:
    """InstantDL's weights: a path used if the file exists (else training starts from scratch, as in
    InstantDL); its Keras ``.hdf5`` files cannot be loaded into idl's networks."""
    if values.get("use_pretrained_weights") is False:
        return None
    path = values.get("pretrained_weights_path", values.get("pretrained_weights"))
    if path in (None, False, True, ""):
        return None
    if not Path(str(path)).exists():
        log.warning(
            "%s: pretrained weights '%s' not found; training from scratch (as InstantDL does).", source, path
        )
        return None
    if Path(str(path)).suffix.lower() in (".hdf5", ".h5"):
        raise ConfigError(
            f"{source}: '{path}' holds Keras weights from InstantDL, which idl's PyTorch networks cannot "
            "load. Remove 'pretrained_weights_path' (or set it to false) to train from scratch, or give an "
            "idl model folder or bioimage.io package."
        )
    return str(path)


def _image_size(value: list | tuple, key: str, source: str) -> tuple[int, int | None]:
    """InstantDL's ``image_size`` list, ``[x, y, (z,) channels]``: the in-plane side (the smaller of
    x and y) and the depth of 3D patches (``None`` without one)."""
    whole = all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if not whole or len(value) not in (2, 3, 4):
        raise ConfigError(
            f"{source}: '{key}' must be a whole number or InstantDL's [x, y, channels] (3D: [x, y, z, "
            f"channels]) of whole numbers, got {list(value)!r}."
        )
    return min(value[:2]), (value[2] if len(value) == 4 else None)


def translate(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Our field values for InstantDL's keys (in any case: InstantDL's files spell them variously)."""
    spelled = {k.lower(): k for k in values}
    values = {k.lower(): v for k, v in values.items()}
    out: dict[str, Any] = {}
    for key, value in values.items():
        ours = KEYS[key]
        if ours is None or ours == "pretrained" or value is None:
            continue
        if ours == "image_size" and value is False:
            continue  # InstantDL's "no resizing": idl never resizes for the U-Net tasks; planned patches
        if ours == "epoch_limit" and value == 0 and not isinstance(value, bool):
            log.warning(
                "%s: iterations_over_dataset 0 asks InstantDL to only predict with the given weights; idl "
                "cannot load InstantDL's Keras weights, so it trains with its planned budget (to predict "
                "with a trained idl model, use idl-predict)",
                source,
            )
            continue
        if ours == "instantdl_loss":
            value = canonical_loss(value)
        elif ours == "seed":
            value = 42 if value is True else (0 if value is False else value)
        elif ours == "augment":
            value, save = augmentations(value, source)
            if save:
                out["save_augmentations"] = True
            if CROP_KEY in value.get("zoom", {}):
                out["instantdl_zoom_px"] = value["zoom"].pop(CROP_KEY)
        elif ours == "image_size" and isinstance(value, (list, tuple)):
            value, z = _image_size(value, spelled.get(key, key), source)
            if z is not None:
                out["patch_z"] = z
        elif ours == "num_classes" and value == 1:
            value = 2  # InstantDL counts a binary (sigmoid) task as one class
        out[ours] = value
    pretrained = _pretrained(values, source)
    if pretrained is not None:
        out["pretrained"] = pretrained
    return out
