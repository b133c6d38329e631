"""What the inference side needs to know about a model, stored inside the ONNX file.

Training writes a :class:`ModelInfo` as JSON into the ONNX ``metadata_props`` under the key ``idl``, so
a single ``model.onnx`` is self-describing: task, channels, classes, normalization, the size multiple
the network needs and the halo that makes tiling seamless.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from idl.infer.core.normalize import Normalization

METADATA_KEY = "idl"
# (task, output) -> kind, for models saved before ModelInfo stored its kind
LEGACY_KINDS = {("instance", "labels"): "detection"}
TASKS = ("semantic", "instance", "regression", "classification")
# where a U-Net's Monte Carlo dropout sits (models.unet.UNetSpec.dropout_at, idl-train --dropout-at), here
# without torch so that the command line reads it: "encoder": after every encoder level and the
# bottleneck, as InstantDL (a Monte Carlo sample reruns everything after the first level); "decoder":
# after the bottleneck and every decoder level (the encoder and the skip connections' share of the
# decoder's convolutions run once per tile); "last": before the 1x1 head only (a sample reruns the head
# alone)
DROPOUT_PLACES = ("encoder", "decoder", "last")
TASK_ALIASES = {
    "semantic": "semantic",
    "semanticsegmentation": "semantic",
    "instance": "instance",
    "instancesegmentation": "instance",
    "regression": "regression",
    "classification": "classification",
}


def normalize_task(name: str) -> str:
    """Our task name for ours or InstantDL's spelling (``SemanticSegmentation`` -> ``semantic``)."""
    key = name.replace("_", "").replace("-", "").replace(" ", "").lower()
    if key not in TASK_ALIASES:
        raise ValueError(
            f"unknown task '{name}'; use one of {', '.join(TASKS)} (InstantDL's SemanticSegmentation, "
            "InstanceSegmentation, Regression and Classification work too)"
        )
    return TASK_ALIASES[key]


@dataclass(frozen=True)
class ModelInfo:
    """Self-description of an exported idl model."""

    task: str
    in_channels: int
    num_classes: int
    size_multiple: int
    halo: int
    normalization: Normalization = field(default_factory=Normalization)
    dims: int = 2
    axes: str = "yx"
    dropout: float = 0.0
    class_names: tuple[str, ...] = ()
    name: str = "idl-model"
    training: dict[str, Any] = field(default_factory=dict)
    output: str = "logits"  # what the graph outputs: "logits" (activation applied by idl) or "probabilities"
    # which task module serves the model (idl.infer.tasks): the task, or for the instance task the
    # network's kind ("detection": Mask R-CNN); derived for models saved before it was stored
    kind: str = ""
    # regression: per target channel, the mean and standard deviation the network was trained to
    # predict in units of; idl maps its output back to ground-truth units with them
    target_mean: tuple[float, ...] = ()
    target_std: tuple[float, ...] = ()
    # 3D: size multiple and halo along z when they differ from in-plane (anisotropic U-Net); 0: same
    z_multiple: int = 0
    z_halo: int = 0
    # classification: the (Y, X) size every image is resized to before normalization; () for the
    # U-Net tasks, which take any size
    input_size: tuple[int, ...] = ()
    # classification: statistics of the training inputs, to tell how unusual an image is (see
    # idl.infer.post.typicality); {} when not recorded
    input_reference: dict[str, Any] = field(default_factory=dict)
    # micrometres per pixel along the spatial axes ((z,) y, x) of the training images, as their files
    # record them; () when they do not (the package's axes then carry no physical scale)
    pixel_size: tuple[float, ...] = ()
    # the temperature folded into the network's last layer by calibration (idl.train.calibrate): its
    # logits are the trained network's divided by it; 1: not calibrated
    temperature: float = 1.0
    # regression: the factor the Monte Carlo standard deviation is multiplied by, so that the validation
    # residuals are standard normal in its units (idl.train.calibrate.fit_sigma_scale); 1: not calibrated
    sigma_scale: float = 1.0
    # the thresholds of the task's post-processing fitted on the validation images (the instance
    # U-Net's watershed: foreground_threshold and seed_threshold, infer/post/instance_labels.py; flow
    # fields: prob_threshold and flow_error, infer/post/flows.py); {}: the post-processing's defaults
    postprocessing: dict[str, float] = field(default_factory=dict)
    # the int8 graphs written beside the float32 ones (idl.export.quantize): per graph ("deterministic",
    # "monte_carlo") its file, whether it was kept, and its agreement with the float32 graph on the
    # validation images (measure, value, limit, images); the quantization scheme and calibration; or
    # "skipped" with the reason none was made. {}: none made (exported with --no-int8, or before int8
    # graphs existed). idl.infer.runtime.precision reads it.
    quantized: dict[str, Any] = field(default_factory=dict)

    # the float32 graphs' memory per call (idl.infer.runtime.footprint): "deterministic" and
    # "monte_carlo" -> [fixed bytes, bytes per input pixel], measured at export so that idl-predict
    # sizes its tiles without ONNX's shape inference (importing onnx took 0.6 s of its start); {}:
    # measured when predicting
    footprint: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.kind:
            object.__setattr__(self, "kind", LEGACY_KINDS.get((self.task, self.output), self.task))

    def multiple_of(self, axis: str) -> int:
        """Size multiple along ``axis`` (z, y or x)."""
        return (self.z_multiple or self.size_multiple) if axis == "z" else self.size_multiple

    def halo_of(self, axis: str) -> int:
        """Tile halo along ``axis`` (z, y or x)."""
        return (self.z_halo or self.halo) if axis == "z" else self.halo

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("class_names", "target_mean", "target_std", "input_size", "pixel_size"):
            data[key] = list(data[key])
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelInfo:
        data = json.loads(text)
        data.setdefault("output", "probabilities")  # models exported before the activation moved out
        data["normalization"] = Normalization(**data.get("normalization", {}))
        for key in ("class_names", "target_mean", "target_std", "input_size", "pixel_size"):
            data[key] = tuple(data.get(key, ()))
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})
