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

from idl.export.onnx import ExportError
from idl.infer.core.axes import match_channels
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import Op, ScaleLinear, Sigmoid, Softmax
from idl.infer.runtime.model import PACKAGE_SUFFIX, read_info
from idl.infer.runtime.session import OnnxRunner
from idl.infer.tasks.base import PackageText
from idl.infer.tasks.registry import kind_of
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


def weight_formats(net: Any) -> tuple[str, ...]:
    """The package's weight formats: ONNX, and the torch state dict when ``idl.models`` can rebuild
    the network (it names its builder); other networks are packaged with ONNX weights alone."""
    return WEIGHT_FORMATS if getattr(net, "builder", None) else ("onnx",)


def _validation_text(every_size: tuple[str, ...], formats: tuple[str, ...] = WEIGHT_FORMATS) -> str:
    """What the package's validation ran, for its README."""
    if len(formats) == 1:
        return f"{formats[0]} reproduces the test output and runs at three tile sizes"
    if set(every_size) >= set(formats):
        return "both weight formats reproduce the test output and run at three tile sizes"
    others = [f for f in formats if f not in every_size]
    return (
        f"{' and '.join(every_size)} reproduces the test output and runs at three tile sizes; "
        f"{' and '.join(others)} reproduces the test output"
    )


def _readme(
    info: ModelInfo,
    text: PackageText,
    request: PackageRequest,
    has_mc: bool,
    every_size: tuple[str, ...],
    formats: tuple[str, ...],
) -> str:
    training = info.training
    lines = [
        f"# {info.name}",
        "",
        request.description or f"A {text.network} for {text.title} trained with idl.",
        "",
        "## Training data",
        "",
        f"- training images: {training.get('n_train', '?')}, validation images: {training.get('n_val', '?')}",
        f"- input channels: {info.in_channels}, axes of the training images: {info.axes}",
        text.targets,
        text.inputs,
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
        f"{_validation_text(every_size, formats)}. Metrics on the held-out test images:",
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
        f"Output: {text.use}",
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
            + text.uncertainty
            + " (see `config.idl.mc_dropout`).",
            "",
        ]
    lines += ["## Citation", ""] + [f"- {cite} doi:{doi}" for cite, doi in CITATIONS]
    return "\n".join(lines) + "\n"


def build_description(
    net: UNet | ResNetClassifier | InstanceMaskRCNN,
    info: ModelInfo,
    onnx_path: Path,
    mc_path: Path | None,
    request: PackageRequest,
    workdir: Path,
) -> Any:
    """The bioimage.io ``ModelDescr`` of an idl model, as its task describes it (:meth:`Task.package_text`
    and the task's IOSpec); its files are written into ``workdir``."""
    from bioimageio.spec.model import v0_5 as bio

    info = read_info(OnnxRunner(onnx_path, "cpu")) or info  # describe the graph as exported
    task = kind_of(info)
    text, io = task.package_text(info), task.io_spec(info)
    # a grey test image for a colour model (InstantDL's MNIST example: RGB training, grey test images)
    request = replace(request, sample=match_channels(request.sample, info.in_channels))
    letters = "zyx"[-info.dims :]
    per_image = not any(a in io.output_axes for a in letters)  # one value per class, no space axes
    one_at_a_time = io.max_batch == 1
    rules = task.package_sizes(info)
    test_image, out = task.package_test(request.sample, info, onnx_path)
    raw_in = np.moveaxis(test_image, -1, 0)[np.newaxis]
    np.save(workdir / "test_input.npy", raw_in)
    np.save(workdir / "test_output.npy", out)
    # sample tensors must be images (imageio reads them): the tensors without the batch axis, as TIFF
    tifffile.imwrite(workdir / "sample_input.tif", raw_in[0], photometric="minisblack")
    if not per_image:
        tifffile.imwrite(workdir / "sample_output.tif", out[0], photometric="minisblack")
    cover = task.package_cover(test_image, out[0], info, workdir / "cover.png")
    readme = workdir / "README.md"
    formats = weight_formats(net)
    every_size = _every_size(net, info)
    readme.write_text(
        _readme(info, text, request, mc_path is not None, every_size, formats), encoding="utf-8"
    )
    onnx_copy = workdir / "weights.onnx"
    shutil.copyfile(onnx_path, onnx_copy)

    norm = info.normalization
    spatial = [bio.AxisId(a) for a in letters]
    inputs = [
        bio.InputTensorDescr(
            id=bio.TensorId("input"),
            description="raw image; each channel is scaled by its own percentiles",
            axes=[
                bio.BatchAxis(size=1 if one_at_a_time else None),
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
            id=bio.TensorId(text.tensor),
            description=text.output,
            axes=[
                bio.BatchAxis(size=1 if one_at_a_time else None),
                bio.ChannelAxis(channel_names=[bio.Identifier(safe_identifier(n)) for n in text.channels]),
                *[_output_axis(bio, a, info.halo_of(str(a))) for a in ([] if per_image else spatial)],
            ],
            test_tensor=bio.FileDescr(source=workdir / "test_output.npy"),
            sample_tensor=None if per_image else bio.FileDescr(source=workdir / "sample_output.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=text.value_range),
            postprocessing=_postprocessing(io.postprocessing, bio),
        )
    ]
    torch_weights = None
    if "pytorch_state_dict" in formats:
        state = workdir / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, state)
        environment = workdir / "environment.yaml"
        environment.write_text(_environment(), encoding="utf-8")
        torch_weights = bio.PytorchStateDictWeightsDescr(
            source=state,
            architecture=bio.ArchitectureFromLibraryDescr(
                callable=bio.Identifier(net.builder),
                import_from="idl.models",
                kwargs=asdict(net.spec),
            ),
            pytorch_version=bio.Version(torch.__version__.split("+")[0]),
            dependencies=bio.FileDescr(source=environment),
        )
    weights = bio.WeightsDescr(
        pytorch_state_dict=torch_weights,
        onnx=bio.OnnxWeightsDescr(
            source=onnx_copy,
            opset_version=_opset(onnx_path),
            parent="pytorch_state_dict" if torch_weights is not None else None,
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
    if text.mismatch_ppm is not None:
        allowed = [{"mismatched_elements_per_million": text.mismatch_ppm}]
        tolerance = {"bioimageio": {"reproducibility_tolerance": allowed}}
    if request.metrics:
        config["test_metrics"] = {k: v for k, v in request.metrics.items() if isinstance(v, (int, float))}
    return bio.ModelDescr(
        name=safe_name(info.name),
        description=(request.description or f"{text.network} ({text.title}) trained with idl")[:1024],
        authors=[bio.Author(name=a) for a in request.authors or (default_author(),)],
        cite=[bio.CiteEntry(text=text, doi=bio.Doi(doi)) for text, doi in CITATIONS],
        license=LICENSE,
        documentation=bio.FileDescr(source=readme),
        covers=[bio.FileDescr(source=cover)],
        tags=[
            "idl",
            text.tags[0],
            f"{info.dims}d",
            "pytorch",
            "onnx",
            *(["monte-carlo-dropout"] if mc_path is not None else []),
            *text.tags[1:],
        ],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        attachments=attachments,
        config={"idl": config, **tolerance},
        version="0.1.0",
    )


def _output_axis(bio: Any, axis: Any, halo: int) -> Any:
    """A space axis of the output, as large as the input's, with its halo when it has one."""
    size = bio.SizeReference(tensor_id=bio.TensorId("input"), axis_id=axis)
    if halo:
        return bio.SpaceOutputAxisWithHalo(id=axis, size=size, halo=halo)
    return bio.SpaceOutputAxis(id=axis, size=size)


def _postprocessing(ops: tuple[Op, ...], bio: Any) -> list[Any]:
    """bioimage.io's description of the task's post-processing (an activation, or the mapping of a
    regression back to ground-truth units)."""
    described: list[Any] = []
    channel = bio.AxisId("channel")
    for op in ops:
        if isinstance(op, Sigmoid):
            described.append(bio.SigmoidDescr())
        elif isinstance(op, Softmax):
            described.append(bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=channel)))
        elif isinstance(op, ScaleLinear):
            gain = list(op.gain) if isinstance(op.gain, tuple) else [op.gain]
            offset = list(op.offset) if isinstance(op.offset, tuple) else [op.offset]
            if len(gain) == len(offset) == 1:
                kwargs = bio.ScaleLinearKwargs(gain=gain[0], offset=offset[0])
            else:
                kwargs = bio.ScaleLinearAlongAxisKwargs(axis=channel, gain=gain, offset=offset)
            described.append(bio.ScaleLinearDescr(kwargs=kwargs))
        else:
            raise ExportError(f"no bioimage.io description of the post-processing step {op}")
    return described


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


def validate_package(
    path: Path, every_size: tuple[str, ...] = WEIGHT_FORMATS, formats: tuple[str, ...] = WEIGHT_FORMATS
) -> Any:
    """Run bioimageio.core's ``test_model`` on a package (offline); raise :class:`ExportError` unless
    it passes, with the validation report in the message.

    ``test_model`` runs every weight format on the test tensor and then at three tile sizes with
    batches of 1 and 2. Formats outside ``every_size`` are checked on the test tensor only: a 3D
    U-Net's smallest valid tile is 2 x halo + 16 voxels per axis (208 at depth 4), and PyTorch's
    run of those sizes took 5 minutes of a 2-core CPU (ONNX Runtime's 3; docs/benchmarks.md).
    ``formats`` are the weight formats the package holds."""
    from bioimageio.core import test_model

    runs = [None] if set(every_size) >= set(formats) else list(every_size)  # None: every format
    for fmt in runs:
        summary = test_model(path, weight_format=fmt)  # type: ignore[arg-type]
        if summary.status != "passed":
            raise ExportError(f"{path}: the bioimage.io package failed validation:\n{summary.format()}")
    for fmt in formats:
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
    return weight_formats(net)


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
        summary = validate_package(staged, _every_size(net, info), weight_formats(net))
        staged.replace(out_path)
    log.info("wrote %s (bioimage.io test_model: %s)", out_path.name, summary.status)
    return out_path
