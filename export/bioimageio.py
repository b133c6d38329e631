"""bioimage.io model packages (spec 0.5) from a trained idl model, validated with bioimageio.core.

The package holds the deterministic ONNX graph and the torch state dict (architecture from
:mod:`idl.models`), preprocessing equal to idl's normalization (``scale_range`` per channel, then
``ensure_dtype float32``; the input keeps the raw image dtype), the activation as post-processing,
axes with the network's real minimum size, step and halo, a test and a sample tensor, a cover made
from a test prediction and a README. The Monte Carlo dropout graph is an attachment described under
``config.idl.mc_dropout``. Nothing needs the network: no GitHub users are named, and validation runs
offline. A package that does not pass ``bioimageio.core.test_model`` is not written.
"""

from __future__ import annotations

import getpass
import json
import logging
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from idl.export.onnx import ExportError, NothingToShow
from idl.infer.core.axes import match_channels
from idl.infer.core.grid import AxisSize, read_window, smallest_tile
from idl.infer.core.model_info import ModelInfo
from idl.infer.runtime.model import PACKAGE_SUFFIX, read_info
from idl.infer.runtime.session import OnnxRunner
from idl.infer.tasks.registry import io_for_info, out_channels
from idl.models import InstanceMaskRCNN, ResNetClassifier, UNet

log = logging.getLogger("idl")

WEIGHT_FORMATS = ("onnx", "pytorch_state_dict")

LICENSE = "CC-BY-4.0"
CITATIONS = (
    (
        "Waibel, D.J.E., Boushehri, S.S. & Marr, C. InstantDL: an easy-to-use deep learning pipeline for "
        "image segmentation and classification. BMC Bioinformatics 22, 103 (2021).",
        "10.1186/s12859-021-04037-3",
    ),
    (
        "Ronneberger, O., Fischer, P. & Brox, T. U-Net: Convolutional Networks for Biomedical Image "
        "Segmentation. MICCAI 2015.",
        "10.1007/978-3-319-24574-4_28",
    ),
)
TASK_TAGS = {
    "semantic": ["semantic-segmentation", "segmentation"],
    "instance": ["instance-segmentation", "segmentation"],
    "regression": ["pixel-regression", "image-restoration"],
    "classification": ["classification"],
}
TEST_TENSOR_MAX = 256  # px per side of the test tensor (keeps the package and its validation small)


@dataclass(frozen=True)
class PackageRequest:
    """What goes into a package besides the network: a sample image, provenance and results."""

    sample: np.ndarray  # raw channels-last image (the test tensor is cut from it)
    authors: tuple[str, ...] = ()  # empty: the login name
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # resolved training configuration
    metrics: dict[str, Any] = field(default_factory=dict)  # test-set evaluation summary
    mc_samples: int = 20


def default_author() -> str:
    """The login name, the author of a package when none is named."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # containers without a user entry
        return "idl user"


def package_path(model_dir: Path, name: str) -> Path:
    """``<model_dir>/<name>.bioimageio.zip``."""
    return model_dir / f"{safe_name(name)}{PACKAGE_SUFFIX}"


def safe_name(name: str) -> str:
    """A model name bioimage.io accepts (letters, digits, ``-``, ``_``, spaces; at most 64 chars)."""
    cleaned = re.sub(r"[^A-Za-z0-9_\- ]+", "-", name).strip("- ") or "idl-model"
    return cleaned[:64]


def _test_input(sample: np.ndarray, rules: list[AxisSize]) -> np.ndarray:
    """A channels-last crop of ``sample`` with an accepted size (reflect-padded when too small): at
    most 256 px per side in 2D, the minimum size in 3D (volumes are costly to validate)."""
    caps = [TEST_TENSOR_MAX if len(rules) == 2 else r.minimum for r in rules]
    sides = [
        r.at_most(min(max(n, r.minimum), cap)) for r, n, cap in zip(rules, sample.shape, caps, strict=False)
    ]
    return np.ascontiguousarray(read_window(sample, tuple(slice(0, s) for s in sides)))


def _cover(image: np.ndarray, output: np.ndarray, path: Path) -> Path:
    """A 2:1 PNG: the (normalized) first input channel next to the last output channel (the
    foreground probability of a binary model)."""
    from skimage.io import imsave
    from skimage.transform import resize

    def tile(a: np.ndarray) -> np.ndarray:
        a = a.astype(np.float32)
        lo, hi = np.percentile(a, [1, 99.8])
        scaled = np.clip((a - lo) / (hi - lo + 1e-6), 0, 1)
        return resize(scaled, (256, 256), order=1, anti_aliasing=True)

    if output.ndim == 4:  # volumes: the central plane
        image, output = image[image.shape[0] // 2], output[:, output.shape[1] // 2]
    panel = np.concatenate([tile(image[..., 0]), tile(output[-1])], axis=1)
    imsave(path, (panel * 255).astype(np.uint8), check_contrast=False)
    return path


def _task_text(info: ModelInfo) -> str:
    if info.task == "classification":
        return "image classification"
    return "pixel-wise regression" if info.task == "regression" else f"{info.task} segmentation"


def _network_text(info: ModelInfo) -> str:
    if info.output == "labels":
        return "Mask R-CNN"
    if info.task == "classification":
        return str(info.training.get("architecture", "ResNet")).split(" ")[0].replace("resnet", "ResNet")
    return f"{info.dims}D U-Net"


def _classifier_test(sample: np.ndarray, info: ModelInfo, onnx_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test input of a classifier (the sample at the input size: raw when it has that size, else
    resized as float32) and its class probabilities ``(1, K)``."""
    from idl.infer.post.classify import prepare_image, resize_to

    io = io_for_info(info)
    image = sample if sample.shape[:-1] == tuple(info.input_size) else resize_to(sample, info.input_size)
    logits = OnnxRunner(onnx_path, "cpu")(prepare_image(image, io)[np.newaxis])
    from idl.infer.core.processing import apply_ops

    return np.ascontiguousarray(image), apply_ops(io.postprocessing, logits, "bc")


def _classifier_cover(image: np.ndarray, probabilities: np.ndarray, names, path: Path) -> Path:
    """A 2:1 PNG: the test image next to a bar chart of its class probabilities."""
    from idl.infer.evaluate.plots import _pyplot, display_image, save_figure

    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(6, 3))
    left.imshow(display_image(image), cmap="gray")
    left.axis("off")
    labels = list(names) or [f"class{i}" for i in range(len(probabilities))]
    right.barh(labels[::-1], probabilities[::-1], color="tab:blue")
    right.set_xlim(0, 1)
    right.set_xlabel("probability")
    return save_figure(fig, path)


def _validation_text(every_size: tuple[str, ...]) -> str:
    """What the package's validation ran, for its README."""
    if set(every_size) >= set(WEIGHT_FORMATS):
        return "both weight formats reproduce the test output and run at three tile sizes"
    others = [f for f in WEIGHT_FORMATS if f not in every_size]
    return (
        f"{' and '.join(every_size)} reproduces the test output and runs at three tile sizes; "
        f"{' and '.join(others)} reproduces the test output"
    )


def _readme(info: ModelInfo, request: PackageRequest, has_mc: bool, every_size: tuple[str, ...]) -> str:
    training = info.training
    lines = [
        f"# {info.name}",
        "",
        request.description or f"A {_network_text(info)} for {_task_text(info)} trained with idl.",
        "",
        "## Training data",
        "",
        f"- training images: {training.get('n_train', '?')}, validation images: {training.get('n_val', '?')}",
        f"- input channels: {info.in_channels}, axes of the training images: {info.axes}",
        (
            f"- targets: {len(info.target_mean)} channel(s), mean {list(info.target_mean)}, "
            f"standard deviation {list(info.target_std)}"
            if info.task == "regression"
            else f"- classes: {info.num_classes}"
            + (f" ({', '.join(info.class_names)})" if info.class_names else "")
        ),
        (
            f"- input size: {list(info.input_size)} px (images are resized to it), loss: "
            f"{training.get('loss', '?')}, images per class: {training.get('images_per_class', '?')}"
            if info.task == "classification"
            else f"- training patches: {training.get('patch', '?')} px, loss: {training.get('loss', '?')}"
        ),
        "",
        "## Settings",
        "",
    ]
    settings = request.settings or {"(not recorded)": ""}
    lines += [f"- `{k}`: {json.dumps(v)}" for k, v in sorted(settings.items())]
    lines += [
        "",
        "## Validation",
        "",
        "The package passed bioimageio.core's `test_model` when it was written: "
        f"{_validation_text(every_size)}. Metrics on the held-out test images:",
        "",
    ]
    metrics = {k: v for k, v in request.metrics.items() if isinstance(v, (int, float))}
    if metrics:
        lines += ["| metric | value |", "|---|---|"] + [
            f"| {k} | {v:.4g} |" for k, v in sorted(metrics.items())
        ]
    else:
        lines.append("No labelled test set was evaluated.")
    lines += [
        "",
        "## Use",
        "",
        "Input: the raw image (any intensity range); preprocessing scales each channel so that its "
        f"{info.normalization.low} and {info.normalization.high} percentiles map to 0 and 1. "
        "Output: "
        + (
            "per-pixel predictions in the units of the training ground truth (the network's output is "
            "mapped back with the training targets' mean and standard deviation, `scale_linear`)."
            if info.task == "regression"
            else (
                f"class probabilities (softmax), one per class. Resize images to {list(info.input_size)} "
                "px first (idl-predict does this itself)."
                if info.task == "classification"
                else "per-pixel class probabilities (sigmoid for one channel, softmax otherwise)."
            )
        ),
        "",
        "```",
        "idl-predict THIS_PACKAGE.zip IMAGES --out RESULTS" + (" [--mc-samples 20]" if has_mc else ""),
        "```",
        "",
    ]
    if has_mc:
        lines += [
            "Monte Carlo dropout: the attachment `model_mc.onnx` keeps dropout active "
            f"(p = {info.dropout}); idl-predict averages `--mc-samples` runs and writes "
            + (
                "an uncertainty in [0, 1] per image (normalized entropy of the mean distribution)"
                if info.task == "classification"
                else "a per-pixel uncertainty map"
            )
            + " (see `config.idl.mc_dropout`).",
            "",
        ]
    lines += ["## Citation", ""] + [f"- {text} doi:{doi}" for text, doi in CITATIONS]
    return "\n".join(lines) + "\n"


def build_description(
    net: UNet | ResNetClassifier | InstanceMaskRCNN,
    info: ModelInfo,
    onnx_path: Path,
    mc_path: Path | None,
    request: PackageRequest,
    workdir: Path,
) -> Any:
    """The bioimage.io ``ModelDescr`` for an idl U-Net; its files are written into ``workdir``."""
    from bioimageio.spec.model import v0_5 as bio

    from idl.infer.tiling.predict import predict_probabilities

    info = read_info(OnnxRunner(onnx_path, "cpu")) or info  # describe the graph as exported
    # a grey test image for a colour model (InstantDL's MNIST example: RGB training, grey test images)
    request = replace(request, sample=match_channels(request.sample, info.in_channels))
    letters = "zyx"[-info.dims :]
    classifier = info.task == "classification"
    detector = info.output == "labels"
    io = io_for_info(info)
    if classifier:
        rules = [AxisSize(n, 0) for n in info.input_size]
        test_image, test_output = _classifier_test(request.sample, info, onnx_path)
        out = test_output.astype(np.float32)
    else:
        rules = [AxisSize(smallest_tile(info.halo_of(a), io.sizes[a]), io.sizes[a].step) for a in letters]
        test_image = _test_input(request.sample, rules)
        test_output, _ = predict_probabilities(
            OnnxRunner(onnx_path, "cpu"), test_image, io, max(test_image.shape[:-1]), 0
        )
        out = test_output[np.newaxis].astype(np.float32)
        if detector and not np.any(out[0, 0]):
            raise NothingToShow(
                f"{info.name}: the model finds no object in the package's test image, and bioimage.io "
                "needs a test output with objects. Train longer (or on more images), then write the "
                "package with idl-export."
            )
    raw_in = np.moveaxis(test_image, -1, 0)[np.newaxis]
    np.save(workdir / "test_input.npy", raw_in)
    np.save(workdir / "test_output.npy", out)
    # sample tensors must be images (imageio reads them): the tensors without the batch axis, as TIFF
    tifffile.imwrite(workdir / "sample_input.tif", raw_in[0], photometric="minisblack")
    if not classifier:
        tifffile.imwrite(workdir / "sample_output.tif", out[0], photometric="minisblack")
    if classifier:
        cover = _classifier_cover(test_image, out[0], info.class_names, workdir / "cover.png")
    elif detector:
        cover = _labels_cover(test_image, test_output[0], workdir / "cover.png")
    else:
        cover = _cover(test_image, test_output, workdir / "cover.png")
    readme = workdir / "README.md"
    readme.write_text(_readme(info, request, mc_path is not None, _every_size(net, info)), encoding="utf-8")
    environment = workdir / "environment.yaml"
    environment.write_text(_environment(), encoding="utf-8")
    state = workdir / "weights.pt"
    torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, state)
    onnx_copy = workdir / "weights.onnx"
    shutil.copyfile(onnx_path, onnx_copy)

    output = _output_meaning(info, bio)
    norm = info.normalization
    spatial = [bio.AxisId(a) for a in letters]
    inputs = [
        bio.InputTensorDescr(
            id=bio.TensorId("input"),
            description="raw image; each channel is scaled by its own percentiles",
            axes=[
                bio.BatchAxis(size=1 if detector else None),
                bio.ChannelAxis(
                    channel_names=[bio.Identifier(f"channel{i}") for i in range(info.in_channels)]
                ),
                *[
                    bio.SpaceInputAxis(
                        id=a,
                        size=r.minimum if r.step == 0 else bio.ParameterizedSize(min=r.minimum, step=r.step),
                    )
                    for a, r in zip(spatial, rules, strict=True)
                ],
            ],
            test_tensor=bio.FileDescr(source=workdir / "test_input.npy"),
            sample_tensor=bio.FileDescr(source=workdir / "sample_input.tif"),
            data=bio.IntervalOrRatioDataDescr(type=str(raw_in.dtype)),
            preprocessing=[
                bio.ScaleRangeDescr(
                    kwargs=bio.ScaleRangeKwargs(
                        axes=spatial, min_percentile=norm.low, max_percentile=norm.high, eps=norm.eps
                    )
                ),
                bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32")),
            ],
        )
    ]
    outputs = [
        bio.OutputTensorDescr(
            id=bio.TensorId(output.tensor),
            description=output.description,
            axes=[
                bio.BatchAxis(size=1 if detector else None),
                bio.ChannelAxis(channel_names=[bio.Identifier(safe_identifier(n)) for n in output.channels]),
                *[
                    bio.SpaceOutputAxisWithHalo(
                        id=a,
                        size=bio.SizeReference(tensor_id=bio.TensorId("input"), axis_id=a),
                        halo=info.halo_of(str(a)),
                    )
                    for a in ([] if classifier else spatial)
                ],
            ],
            test_tensor=bio.FileDescr(source=workdir / "test_output.npy"),
            sample_tensor=None if classifier else bio.FileDescr(source=workdir / "sample_output.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=output.value_range),
            postprocessing=[] if output.postprocessing is None else [output.postprocessing],
        )
    ]
    weights = bio.WeightsDescr(
        pytorch_state_dict=bio.PytorchStateDictWeightsDescr(
            source=state,
            architecture=bio.ArchitectureFromLibraryDescr(
                callable=bio.Identifier(_builder(info)),
                import_from="idl.models",
                kwargs=asdict(net.spec),
            ),
            pytorch_version=bio.Version(torch.__version__.split("+")[0]),
            dependencies=bio.FileDescr(source=environment),
        ),
        onnx=bio.OnnxWeightsDescr(
            source=onnx_copy, opset_version=_opset(onnx_path), parent="pytorch_state_dict"
        ),
    )
    config: dict[str, Any] = {"model_info": json.loads(info.to_json())}
    attachments = []
    if mc_path is not None:
        mc_copy = workdir / "model_mc.onnx"
        shutil.copyfile(mc_path, mc_copy)
        attachments.append(bio.FileDescr(source=mc_copy))
        config["mc_dropout"] = {"file": mc_copy.name, "p": info.dropout, "n_samples": request.mc_samples}
    tolerance = {}
    if detector:  # a mask probability within rounding of 0.5 may flip a pixel between frameworks
        tolerance = {"bioimageio": {"reproducibility_tolerance": [{"mismatched_elements_per_million": 1000}]}}
    if request.metrics:
        config["test_metrics"] = {k: v for k, v in request.metrics.items() if isinstance(v, (int, float))}
    return bio.ModelDescr(
        name=safe_name(info.name),
        description=(request.description or f"{_network_text(info)} ({_task_text(info)}) trained with idl")[
            :1024
        ],
        authors=[bio.Author(name=a) for a in request.authors or (default_author(),)],
        cite=[bio.CiteEntry(text=text, doi=bio.Doi(doi)) for text, doi in CITATIONS],
        license=LICENSE,
        documentation=bio.FileDescr(source=readme),
        covers=[bio.FileDescr(source=cover)],
        tags=[
            "idl",
            "resnet" if classifier else ("maskrcnn" if detector else "unet"),
            f"{info.dims}d",
            "pytorch",
            "onnx",
            *(["monte-carlo-dropout"] if mc_path is not None else []),
            *TASK_TAGS[info.task],
        ],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        attachments=attachments,
        config={"idl": config, **tolerance},
        version="0.1.0",
    )


@dataclass(frozen=True)
class _Output:
    tensor: str
    description: str
    channels: list[str]
    value_range: tuple[float | None, float | None]
    postprocessing: Any  # None: the output is used as it is


def _builder(info: ModelInfo) -> str:
    """The ``idl.models`` function that builds the network from the package's ``kwargs``."""
    if info.output == "labels":
        return "build_maskrcnn"
    return "build_resnet" if info.task == "classification" else "build_unet2d"


def _labels_cover(image: np.ndarray, labels: np.ndarray, path: Path) -> Path:
    """A 2:1 PNG: the test image next to it with every object's outline in its own colour."""
    from skimage.io import imsave

    from idl.infer.evaluate.instance import outlines
    from idl.infer.evaluate.plots import display_image

    shown = display_image(image)
    if shown.ndim == 3:
        shown = shown.mean(axis=-1)
    grey = np.repeat(shown[..., None], 3, axis=-1)
    panel = np.concatenate([grey, outlines(np.rint(labels).astype(np.int64), image)], axis=1)
    imsave(path, (np.clip(panel, 0, 1) * 255).astype(np.uint8), check_contrast=False)
    return path


def _output_meaning(info: ModelInfo, bio: Any) -> _Output:
    """What the network's output is and how its raw values become it (an activation, or for
    regression the mapping back to ground-truth units)."""
    if info.output == "labels":
        return _Output(
            "labels",
            "labels (0 background, 1..N objects) and the detection score of the object owning each pixel",
            ["labels", "score"],
            (0.0, None),
            None,
        )
    if info.task == "regression":
        mean, std = list(info.target_mean), list(info.target_std)
        if len(mean) == 1:
            kwargs = bio.ScaleLinearKwargs(gain=std[0], offset=mean[0])
        else:
            kwargs = bio.ScaleLinearAlongAxisKwargs(axis=bio.AxisId("channel"), gain=std, offset=mean)
        channels = [f"target{i}" for i in range(len(mean))]
        return _Output(
            "prediction",
            "per-pixel prediction in ground-truth units",
            channels,
            (None, None),
            bio.ScaleLinearDescr(kwargs=kwargs),
        )
    channels = list(info.class_names) or (
        ["foreground"] if out_channels(info) == 1 else [f"class{i}" for i in range(out_channels(info))]
    )
    if info.task == "classification":
        softmax = bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))
        return _Output("probabilities", "class probabilities per image", channels, (0.0, 1.0), softmax)
    activation = (
        bio.SigmoidDescr()
        if out_channels(info) == 1
        else bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))
    )
    return _Output("probabilities", "per-pixel class probabilities", channels, (0.0, 1.0), activation)


def _environment() -> str:
    """The conda environment for the torch weights: the architecture is imported from idl.models."""
    torch_version = torch.__version__.split("+")[0]
    return (
        "name: idl\n"
        "channels: [conda-forge, nodefaults]\n"
        "dependencies:\n"
        "  - python>=3.10\n"
        f"  - pytorch>={torch_version.rsplit('.', 1)[0]}\n"
        "  - pip\n"
        "  - pip:\n"
        "      - idl-toolkit[train]\n"
    )


def safe_identifier(name: str) -> str:
    """A channel name bioimage.io accepts (an identifier)."""
    cleaned = re.sub(r"\W+", "_", name).strip("_") or "channel"
    return cleaned if not cleaned[0].isdigit() else f"c{cleaned}"


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def validate_package(path: Path, every_size: tuple[str, ...] = WEIGHT_FORMATS) -> Any:
    """Run bioimageio.core's ``test_model`` on a package (offline); raise :class:`ExportError` unless
    it passes, with the validation report in the message.

    ``test_model`` runs every weight format on the test tensor and then at three tile sizes with
    batches of 1 and 2. Formats outside ``every_size`` are checked on the test tensor only: a 3D
    U-Net's smallest valid tile is 2 x halo + 16 voxels per axis (208 at depth 4), and PyTorch's
    run of those sizes took 5 minutes of a 2-core CPU (ONNX Runtime's 3; docs/benchmarks.md)."""
    from bioimageio.core import test_model

    formats = [None] if set(every_size) >= set(WEIGHT_FORMATS) else list(every_size)  # None: every format
    for fmt in formats:
        summary = test_model(path, weight_format=fmt)  # type: ignore[arg-type]
        if summary.status != "passed":
            raise ExportError(f"{path}: the bioimage.io package failed validation:\n{summary.format()}")
    for fmt in WEIGHT_FORMATS:
        if fmt not in every_size:
            _check_test_output(path, fmt)
    return summary


def _check_test_output(path: Path, weight_format: str) -> None:
    """Raise :class:`ExportError` unless ``weight_format`` reproduces the package's test output within
    the package's reproducibility tolerance (bioimage.io's default: relative and absolute 1e-3, 100
    mismatched elements per million), as ``test_model`` checks it."""
    from bioimageio.core import create_prediction_pipeline, load_model_description
    from bioimageio.core.digest_spec import get_test_input_sample, get_test_output_sample

    descr = load_model_description(path, perform_io_checks=False)
    sample = get_test_input_sample(descr)
    with create_prediction_pipeline(descr, weight_format=weight_format) as pipeline:  # type: ignore[arg-type]
        pipeline.apply_preprocessing(sample)  # the test input is whole: no padding, no cropping
        got = pipeline.predict_sample_without_blocking(
            sample,
            skip_preprocessing=True,
            skip_postprocessing=True,
            skip_input_padding=True,
            skip_output_cropping=True,
        )
        pipeline.apply_postprocessing(got)
    for member, want in get_test_output_sample(descr).members.items():
        tol = _tolerance(descr, weight_format, str(member))
        a = np.asarray(got.members[member].data, np.float64)
        b = np.asarray(want.data, np.float64)
        close = np.isclose(a, b, tol.relative_tolerance, tol.absolute_tolerance) if a.shape == b.shape else 0
        ppm = 1e6 * (1 - np.mean(close))
        if ppm > tol.mismatched_elements_per_million:
            raise ExportError(
                f"{path}: the {weight_format} weights do not reproduce the test output '{member}' "
                f"({ppm:.0f} mismatched elements per million, {tol.mismatched_elements_per_million} "
                f"allowed; shapes {a.shape} and {b.shape})"
            )


def _tolerance(descr: Any, weight_format: str, member: str) -> Any:
    """The package's reproducibility tolerance for one weight format and output."""
    from bioimageio.spec.model.v0_5 import ReproducibilityTolerance

    for tol in descr.config.bioimageio.reproducibility_tolerance:
        if (not tol.weights_formats or weight_format in tol.weights_formats) and (
            not tol.output_ids or member in tol.output_ids
        ):
            return tol
    return ReproducibilityTolerance()


def _every_size(net: UNet | ResNetClassifier | InstanceMaskRCNN, info: ModelInfo) -> tuple[str, ...]:
    """The weight formats ``test_model`` runs at every tile size: both for 2D U-Nets and classifiers
    (seconds), ONNX only for 3D U-Nets and Mask R-CNN, whose PyTorch runs take minutes on a CPU."""
    if isinstance(net, InstanceMaskRCNN) or info.dims == 3:
        return ("onnx",)
    return WEIGHT_FORMATS


def export_package(
    net: UNet | ResNetClassifier | InstanceMaskRCNN,
    info: ModelInfo,
    onnx_path: Path,
    mc_path: Path | None,
    request: PackageRequest,
    out_path: Path,
) -> Path:
    """Build, validate and atomically write ``out_path`` (a ``.bioimageio.zip``)."""
    from bioimageio.spec import save_bioimageio_package

    out_path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".package-") as tmp:
        workdir = Path(tmp)
        descr = build_description(net, info, onnx_path, mc_path, request, workdir)
        staged = workdir / out_path.name
        save_bioimageio_package(descr, output_path=staged)
        summary = validate_package(staged, _every_size(net, info))
        staged.replace(out_path)
    log.info("wrote %s (bioimage.io test_model: %s)", out_path.name, summary.status)
    return out_path
