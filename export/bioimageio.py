"""bioimage.io model packages (spec 0.5) from a trained idl model, validated with bioimageio.core.

The package holds three weight formats of the deterministic network: the ONNX graph, the torch state
dict with a self-contained architecture file generated from idl's sources
(:mod:`idl.export.standalone`), and a TorchScript trace (:mod:`idl.export.torchscript`), so tools run
it without idl installed. Also preprocessing equal to idl's normalization (``scale_range`` per
channel, then ``ensure_dtype float32``; the input keeps the raw image dtype), the activation as
post-processing, axes with the network's real minimum size, step and halo, a test and a sample
tensor, a cover made from a test prediction and a README. The Monte Carlo dropout graph is an
attachment described under ``config.idl.mc_dropout``. Nothing needs the network: no GitHub users are
named, and validation runs offline. A package is not written unless it passes
``bioimageio.core.test_model`` and every weight format agrees with the ONNX weights on the test input
(largest difference at most 1e-4).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from idl.export.onnx import TOLERANCE, ExportError
from idl.export.standalone import architecture_file_name, standalone_source
from idl.export.torchscript import export_torchscript
from idl.infer.core.axes import match_channels
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import Op, ScaleLinear, Sigmoid, Softmax
from idl.infer.io.images import DiskFull, free_space, is_disk_full
from idl.infer.runtime.model import PACKAGE_SUFFIX, read_info
from idl.infer.runtime.session import OnnxRunner
from idl.infer.tasks.base import PackageText
from idl.infer.tasks.registry import kind_of
from idl.models.network import WEIGHT_FORMATS, Network
from idl.models.registry import describe

log = logging.getLogger("idl")

# a package beyond its graphs, weights and test tensors: cover, README, network source, rdf.yaml
PACKAGE_EXTRAS = 512 * 1024
# free space below which a failed write is taken for a full disk (PyTorch's writer names no errno)
NEARLY_FULL = 1 << 20

LICENSE = "CC-BY-4.0"
INSTANTDL_CITATION = (
    "Waibel, D.J.E., Boushehri, S.S. & Marr, C. InstantDL: an easy-to-use deep learning pipeline for "
    "image segmentation and classification. BMC Bioinformatics 22, 103 (2021).",
    "10.1186/s12859-021-04037-3",
)


def citations(text: PackageText) -> tuple[tuple[str, str], ...]:
    """What a package cites: InstantDL, then the network's own paper."""
    return (INSTANTDL_CITATION, *text.citations)


@dataclass(frozen=True)
class PackageRequest:
    """What goes into a package besides the network: a sample image, provenance and results."""

    sample: np.ndarray  # raw channels-last image (the test tensor is cut from it)
    authors: tuple[str, ...] = ()  # empty: the package names no author (never the login name)
    description: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # resolved training configuration
    metrics: dict[str, Any] = field(default_factory=dict)  # test-set evaluation summary
    mc_samples: int = 20


def package_path(model_dir: Path, name: str) -> Path:
    """``<model_dir>/<name>.bioimageio.zip``."""
    return model_dir / f"{safe_name(name)}{PACKAGE_SUFFIX}"


def safe_name(name: str) -> str:
    """A model name bioimage.io accepts (letters, digits, ``-``, ``_``, spaces; at most 64 chars)."""
    cleaned = re.sub(r"[^A-Za-z0-9_\- ]+", "-", name).strip("- ") or "idl-model"
    return cleaned[:64]


def weight_formats(net: Network) -> tuple[str, ...]:
    """The package's weight formats, as the network says: ONNX, and the torch state dict and its
    TorchScript trace for a network that names its builder (the callable of its architecture file);
    other networks are packaged with ONNX weights alone."""
    return describe(net).weight_formats


def _validation_text(
    every_size: tuple[str, ...], formats: tuple[str, ...] = WEIGHT_FORMATS, mismatch_ppm: int | None = None
) -> str:
    """What the package's validation ran, for its README."""
    if len(formats) == 1:
        return f"{formats[0]} reproduces the test output and runs at three tile sizes"
    agree = f"every weight format agrees with the ONNX weights on the test input within {TOLERANCE:g}" + (
        f" (but for {mismatch_ppm} elements per million)" if mismatch_ppm else ""
    )
    if set(every_size) >= set(formats):
        return (
            f"every weight format ({', '.join(formats)}) reproduces the test output and runs at three "
            f"tile sizes; {agree}"
        )
    others = [f for f in formats if f not in every_size]
    return (
        f"{' and '.join(every_size)} reproduces the test output and runs at three tile sizes; "
        f"{' and '.join(others)} reproduces the test output; {agree}"
    )


def _weights_text(formats: tuple[str, ...], architecture: str | None) -> list[str]:
    """The README's lines on the weight formats and who runs them."""
    lines = ["Weights: `weights.onnx` (ONNX; idl-predict, ONNX Runtime, bioimage.io tools)"]
    if "torchscript" in formats:
        lines.append("`weights_torchscript.pt` (TorchScript; deepImageJ, Fiji, QuPath, ilastik)")
    if "pytorch_state_dict" in formats and architecture:
        lines.append(
            f"`weights.pt` (PyTorch state dict; the network is defined in `{architecture}`, which needs "
            "torch but not idl, see `environment.yaml`)"
        )
    return [", ".join(lines) + ".", ""]


def _readme(
    info: ModelInfo,
    text: PackageText,
    request: PackageRequest,
    has_mc: bool,
    every_size: tuple[str, ...],
    formats: tuple[str, ...],
    architecture: str | None = None,
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
        f"{_validation_text(every_size, formats, text.mismatch_ppm)}. Metrics on the held-out test images:",
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
        *_weights_text(formats, architecture),
    ]
    if has_mc:
        lines += [
            "Monte Carlo dropout: the attachment `model_mc.onnx` keeps dropout active "
            f"(p = {info.dropout}); idl-predict averages `--mc-samples` runs and writes "
            + text.uncertainty
            + " (see `config.idl.mc_dropout`).",
            "",
        ]
    lines += ["## Citation", ""] + [f"- {cite} doi:{doi}" for cite, doi in citations(text)]
    return "\n".join(lines) + "\n"


def build_description(
    net: Network,
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
    every_size = _every_size(net)
    architecture = architecture_file_name(type(net)) if "pytorch_state_dict" in formats else None
    readme.write_text(
        _readme(info, text, request, mc_path is not None, every_size, formats, architecture), encoding="utf-8"
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
                        **_physical(info, str(a)),
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
                *[_output_axis(bio, a, info) for a in ([] if per_image else spatial)],
            ],
            test_tensor=bio.FileDescr(source=workdir / "test_output.npy"),
            sample_tensor=None if per_image else bio.FileDescr(source=workdir / "sample_output.tif"),
            data=bio.IntervalOrRatioDataDescr(type="float32", range=text.value_range),
            postprocessing=_postprocessing(io.postprocessing, bio),
        )
    ]
    torch_weights = torchscript = None
    torch_version = bio.Version(torch.__version__.split("+")[0])
    if "pytorch_state_dict" in formats:
        state = workdir / "weights.pt"
        torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()}, state)
        source = standalone_source(type(net))
        arch_file = workdir / str(architecture)
        arch_file.write_text(source, encoding="utf-8")
        environment = workdir / "environment.yaml"
        environment.write_text(_environment(source), encoding="utf-8")
        torch_weights = bio.PytorchStateDictWeightsDescr(
            source=state,
            architecture=bio.ArchitectureFromFileDescr(
                source=arch_file,
                callable=bio.Identifier(net.builder),
                kwargs=json.loads(json.dumps(asdict(net.spec))),  # plain YAML values (tuples as lists)
            ),
            pytorch_version=torch_version,
            dependencies=bio.FileDescr(source=environment),
        )
    if "torchscript" in formats:
        traced = workdir / "weights_torchscript.pt"
        export_torchscript(net, info, traced)
        torchscript = bio.TorchscriptWeightsDescr(
            source=traced,
            pytorch_version=torch_version,
            parent="pytorch_state_dict" if torch_weights is not None else None,
        )
    weights = bio.WeightsDescr(
        pytorch_state_dict=torch_weights,
        torchscript=torchscript,
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
    if text.postprocessing:
        config["postprocessing"] = dict(text.postprocessing)
    if request.metrics:
        config["test_metrics"] = {k: v for k, v in request.metrics.items() if isinstance(v, (int, float))}
    return bio.ModelDescr(
        name=safe_name(info.name),
        description=(request.description or f"{text.network} ({text.title}) trained with idl")[:1024],
        authors=[bio.Author(name=a) for a in request.authors],  # none named: left out, not guessed
        cite=[bio.CiteEntry(text=cite, doi=bio.Doi(doi)) for cite, doi in citations(text)],
        license=LICENSE,
        documentation=bio.FileDescr(source=readme),
        covers=[bio.FileDescr(source=cover)],
        tags=[
            "idl",
            text.tags[0],
            f"{info.dims}d",
            "pytorch",
            "onnx",
            *(["torchscript"] if torchscript is not None else []),
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


def _physical(info: ModelInfo, axis: str) -> dict[str, Any]:
    """A space axis's physical pixel size where the training images recorded it (nothing otherwise:
    bioimage.io's default scale 1, no unit), in nanometres: bioimage.io checks that an output's halo
    times its scale over the input's scale is a whole number, which float arithmetic misses for
    sizes such as 0.2 um (12 x 0.2 / 0.2 = 12.000000000000002) and never for whole nanometres."""
    spatial = "zyx"[-info.dims :]
    if len(info.pixel_size) != len(spatial) or axis not in spatial:
        return {}
    nanometres = float(info.pixel_size[spatial.index(axis)]) * 1000
    halo = info.halo_of(axis)
    exact = round(nanometres, 2)
    if halo * exact / exact != halo:
        exact = float(max(1, round(nanometres)))
    return {"scale": exact, "unit": "nanometer"}


def _output_axis(bio: Any, axis: Any, info: ModelInfo) -> Any:
    """A space axis of the output, as large as the input's (and of its physical size), with its halo
    when it has one."""
    size = bio.SizeReference(tensor_id=bio.TensorId("input"), axis_id=axis)
    halo = info.halo_of(str(axis))
    if halo:
        return bio.SpaceOutputAxisWithHalo(id=axis, size=size, halo=halo, **_physical(info, str(axis)))
    return bio.SpaceOutputAxis(id=axis, size=size, **_physical(info, str(axis)))


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


def _environment(architecture: str) -> str:
    """The conda environment of the state dict's architecture file: torch, and torchvision when the
    file imports it (ResNet, Mask R-CNN); no idl."""
    lines = [
        "name: idl-model",
        "channels: [conda-forge, nodefaults]",
        "dependencies:",
        "  - python>=3.10",
        f"  - pytorch>={_minor(torch.__version__)}",
    ]
    if re.search(r"^\s*(from|import) torchvision\b", architecture, re.MULTILINE):
        import torchvision

        lines.append(f"  - torchvision>={_minor(torchvision.__version__)}")
    if re.search(r"^\s*import numpy\b", architecture, re.MULTILINE):
        lines.append("  - numpy")
    return "\n".join(lines) + "\n"


def _minor(version: str) -> str:
    """``2.14`` of ``2.14.1+cpu``."""
    return version.split("+")[0].rsplit(".", 1)[0]


def safe_identifier(name: str) -> str:
    """A channel name bioimage.io accepts (an identifier)."""
    cleaned = re.sub(r"\W+", "_", name).strip("_") or "channel"
    return cleaned if not cleaned[0].isdigit() else f"c{cleaned}"


def _opset(path: Path) -> int:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@dataclass(frozen=True)
class Validation:
    """What a package's validation found: bioimageio.core's ``test_model`` report and, per weight
    format, the largest difference of its network output from the ONNX weights' on the test input."""

    summary: Any
    differences: dict[str, float]

    @property
    def status(self) -> str:
        return str(self.summary.status)

    def figures(self) -> str:
        """``pytorch_state_dict 1.2e-06, torchscript 0`` (or ``onnx only``)."""
        return ", ".join(f"{f} {d:.2g}" for f, d in self.differences.items()) or "onnx only"


def validate_package(
    path: Path, every_size: tuple[str, ...] = WEIGHT_FORMATS, formats: tuple[str, ...] = WEIGHT_FORMATS
) -> Validation:
    """Run bioimageio.core's ``test_model`` on a package (offline) and compare every weight format with
    the ONNX weights; raise :class:`ExportError` unless it passes, with the validation report or the
    figures in the message.

    ``test_model`` runs every weight format on the test tensor and then at three tile sizes with
    batches of 1 and 2. Formats outside ``every_size`` are checked on the test tensor only: a 3D
    U-Net's smallest valid tile is 2 x halo + 16 voxels per axis (208 at depth 4), and PyTorch's
    run of those sizes took 5 minutes of a 2-core CPU (ONNX Runtime's 3; docs/benchmarks.md).
    ``formats`` are the weight formats the package holds; each must give the ONNX weights' network
    output on the test input within 1e-4 (:func:`compare_weight_formats`).

    A zip is unpacked once and its files validated: bioimageio.core reads a member from the zip
    each time it loads it, and inflating the weights was half of a ResNet-18 package's validation
    (23 s of test_model and comparison from the zip, 12 s from its unpacked files)."""
    from bioimageio.core import test_model

    runs = [None] if set(every_size) >= set(formats) else list(every_size)  # None: every format
    with _unpacked(path) as rdf, _jit_deprecation_ignored():
        for fmt in runs:
            summary = test_model(rdf, weight_format=fmt)  # type: ignore[arg-type]
            if summary.status != "passed":
                raise ExportError(f"{path}: the bioimage.io package failed validation:\n{summary.format()}")
        reproduce = tuple(f for f in formats if f not in every_size)
        return Validation(summary, compare_weight_formats(rdf, formats, reproduce, label=path))


@contextlib.contextmanager
def _jit_deprecation_ignored() -> Iterator[None]:
    """Without torch 2.14's deprecation warning for ``torch.jit.load``, which bioimageio.core uses to
    load TorchScript weights (the format deepImageJ, Fiji, QuPath and ilastik run)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", FutureWarning)
        yield


@contextlib.contextmanager
def _unpacked(path: Path) -> Iterator[Path]:
    """The ``rdf.yaml`` of a package: a zip's unpacked into a temporary folder beside it."""
    if not (path.is_file() and zipfile.is_zipfile(path)):
        yield path
        return
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".validate-", suffix=".part") as tmp:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(tmp)
        names = [n for n in ("rdf.yaml", "bioimageio.yaml") if (Path(tmp) / n).is_file()]
        yield Path(tmp) / (names[0] if names else "rdf.yaml")


def compare_weight_formats(
    path: Path,
    formats: tuple[str, ...],
    reproduce: tuple[str, ...] = (),
    tolerance: float = TOLERANCE,
    label: Path | None = None,
) -> dict[str, float]:
    """Run each weight format of a package on its test input (preprocessed as the package says, the
    network's output before post-processing) and return, per format other than ONNX, the largest
    absolute difference from the ONNX weights' output. Raise :class:`ExportError` when one exceeds
    ``tolerance``; a package that allows mismatched elements between formats (Mask R-CNN's labels,
    where a mask probability within rounding of 0.5 may flip a pixel) may have that many elements
    per million further apart. The formats in ``reproduce`` must also reproduce the test output
    (:func:`_check_test_output`). ``label`` names the package in messages (default ``path``)."""
    from bioimageio.core import load_model_description

    label = label or path
    descr = load_model_description(path, perform_io_checks=False)
    raw = {}
    for fmt in formats:
        raw[fmt] = _run_test_input(descr, fmt, label if fmt in reproduce else None)
    if "onnx" not in raw:
        return {}
    differences = {}
    for fmt in formats:
        if fmt == "onnx":
            continue
        worst, share = 0.0, 0.0
        for member, want in raw["onnx"].items():
            got = raw[fmt][member]
            if got.shape != want.shape:
                raise ExportError(
                    f"{label}: the {fmt} weights output '{member}' of shape {got.shape}, the ONNX weights "
                    f"{want.shape}"
                )
            diff = np.abs(got - want)
            worst = max(worst, float(diff.max(initial=0.0)))
            share = max(share, float(np.mean(diff > tolerance)) if diff.size else 0.0)
        differences[fmt] = worst
        allowed = _declared_mismatch_ppm(descr, fmt)
        if worst > tolerance and 1e6 * share > allowed:
            also = f", {1e6 * share:.0f} elements per million ({allowed:.0f} allowed)" if allowed else ""
            raise ExportError(
                f"{label}: the {fmt} weights differ from the ONNX weights by up to {worst:.3g} on the test "
                f"input (> {tolerance:g}{also}); the package is not written. Please report this."
            )
    return differences


def _declared_mismatch_ppm(descr: Any, weight_format: str) -> float:
    """Elements per million the package itself allows to differ for ``weight_format`` (0 unless its
    ``config.bioimageio.reproducibility_tolerance`` says so)."""
    declared = [
        tol.mismatched_elements_per_million
        for tol in descr.config.bioimageio.reproducibility_tolerance
        if not tol.weights_formats or weight_format in tol.weights_formats
    ]
    return float(max(declared, default=0))


def _run_test_input(descr: Any, weight_format: str, reproduce: Path | None = None) -> dict[str, np.ndarray]:
    """The network output (before post-processing) of ``weight_format`` on the package's preprocessed
    test input, per output; with ``reproduce`` (the package's path, for messages) the post-processed
    output must also match the package's test output (:func:`_check_test_output`)."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import get_test_input_sample, get_test_output_sample

    sample = get_test_input_sample(descr)
    with (
        _jit_deprecation_ignored(),
        create_prediction_pipeline(descr, weight_format=weight_format) as pipeline,  # type: ignore[arg-type]
    ):
        pipeline.apply_preprocessing(sample)  # the test input is whole: no padding, no cropping
        got = pipeline.predict_sample_without_blocking(
            sample,
            skip_preprocessing=True,
            skip_postprocessing=True,
            skip_input_padding=True,
            skip_output_cropping=True,
        )
        raw = {str(m): np.array(t.data, np.float64) for m, t in got.members.items()}
        if reproduce is None:
            return raw
        pipeline.apply_postprocessing(got)
    for member, want in get_test_output_sample(descr).members.items():
        tol = _tolerance(descr, weight_format, str(member))
        a = np.asarray(got.members[member].data, np.float64)
        b = np.asarray(want.data, np.float64)
        close = np.isclose(a, b, tol.relative_tolerance, tol.absolute_tolerance) if a.shape == b.shape else 0
        ppm = 1e6 * (1 - np.mean(close))
        if ppm > tol.mismatched_elements_per_million:
            raise ExportError(
                f"{reproduce}: the {weight_format} weights do not reproduce the test output '{member}' "
                f"({ppm:.0f} mismatched elements per million, {tol.mismatched_elements_per_million} "
                f"allowed; shapes {a.shape} and {b.shape})"
            )
    return raw


def _check_test_output(path: Path, weight_format: str) -> None:
    """Raise :class:`ExportError` unless ``weight_format`` reproduces the package's test output within
    the package's reproducibility tolerance (bioimage.io's default: relative and absolute 1e-3, 100
    mismatched elements per million), as ``test_model`` checks it."""
    from bioimageio.core import load_model_description

    _run_test_input(load_model_description(path, perform_io_checks=False), weight_format, path)


def _tolerance(descr: Any, weight_format: str, member: str) -> Any:
    """The package's reproducibility tolerance for one weight format and output."""
    from bioimageio.spec.model.v0_5 import ReproducibilityTolerance

    for tol in descr.config.bioimageio.reproducibility_tolerance:
        if (not tol.weights_formats or weight_format in tol.weights_formats) and (
            not tol.output_ids or member in tol.output_ids
        ):
            return tol
    return ReproducibilityTolerance()


def _every_size(net: Network) -> tuple[str, ...]:
    """The weight formats ``test_model`` runs at every tile size, as the network says: those whose
    runs take seconds on a CPU (all for 2D U-Nets and classifiers; ONNX only for 3D U-Nets and Mask
    R-CNN, whose PyTorch runs take minutes)."""
    network = describe(net)
    return tuple(f for f in network.formats_at_every_size() if f in network.weight_formats)


def package_bytes(net: Network, onnx_path: Path, mc_path: Path | None, sample: np.ndarray) -> int:
    """About the bytes a package of ``net`` takes: its ONNX graphs, the weights as a state dict and
    as TorchScript (with its code, up to twice the weights for small networks), the test and sample
    tensors (input and output, as float32) and the rest."""
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    graphs = sum(p.stat().st_size for p in (onnx_path, mc_path) if p is not None and p.is_file())
    return graphs + 3 * weights + 8 * 4 * int(np.asarray(sample).size) + PACKAGE_EXTRAS


def export_package(
    net: Network,
    info: ModelInfo,
    onnx_path: Path,
    mc_path: Path | None,
    request: PackageRequest,
    out_path: Path,
) -> Path:
    """Build, validate and atomically write ``out_path`` (a ``.bioimageio.zip``).

    It is built in a hidden folder beside it (``.package-*.part``, removed afterwards, and by the next
    run after a kill), which at its fullest holds the package's files, the zip and the zip unpacked
    for validation: about three packages. A disk without that room is :class:`DiskFull` before
    anything is written (a full disk while PyTorch writes TorchScript aborts the process), and a disk
    that fills up on the way is one as well."""
    from bioimageio.spec import save_bioimageio_package

    out_path.parent.mkdir(parents=True, exist_ok=True)
    net = net.cpu().eval()
    needed = 3 * package_bytes(net, onnx_path, mc_path, request.sample)
    if free_space(out_path.parent) < needed:
        raise DiskFull(out_path, needed)
    full: Exception | None = None
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".package-", suffix=".part") as tmp:
        workdir = Path(tmp)
        try:
            descr = build_description(net, info, onnx_path, mc_path, request, workdir)
            staged = workdir / out_path.name
            # stored, not deflated: deflating shrinks weights by about 7 % (the demo U-Net's package: 6.7
            # MB stored, 6.0 deflated) and took 22 s of a Mask R-CNN package's 77 (its three weight files)
            save_bioimageio_package(descr, output_path=staged, compression=zipfile.ZIP_STORED)
            validation = validate_package(staged, _every_size(net), weight_formats(net))
            staged.replace(out_path)
        except Exception as exc:
            if not (is_disk_full(exc) or free_space(workdir) < NEARLY_FULL):
                raise
            full = exc  # raised once the folder is gone, so that the message counts its space as free
    if full is not None:
        raise DiskFull(out_path, needed) from full
    log.info(
        "wrote %s (bioimage.io test_model: %s; largest difference from the ONNX weights on the test "
        "input: %s)",
        out_path.name,
        validation.status,
        validation.figures(),
    )
    return out_path
