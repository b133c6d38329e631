"""bioimage.io model packages (zip, folder or rdf.yaml; spec 0.4 or 0.5) for ONNX Runtime inference.

The package's description is read with bioimageio.spec, offline (``perform_io_checks=False``), and
translated into an :class:`~idl.infer.runtime.iospec.IOSpec`: axes in any order, accepted sizes (minimum and
step), the output halo, and pre- and post-processing as numpy operations. The ONNX weights (and an
idl Monte Carlo dropout attachment, when the package has one) are read into memory; nothing is
downloaded.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
import zipfile
from collections import Counter
from pathlib import Path, PurePath
from typing import Any

from idl.infer.core.errors import ModelError
from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import (
    Binarize,
    Clip,
    EnsureDtype,
    FixedZeroMeanUnitVariance,
    Op,
    ScaleLinear,
    ScaleRange,
    Sigmoid,
    Softmax,
    ZeroMeanUnitVariance,
)
from idl.infer.runtime.iospec import SPACE, IOSpec
from idl.infer.runtime.model import RDF_NAMES, KindOf, LoadedModel
from idl.infer.runtime.session import OnnxRunner
from idl.infer.runtime.tensors import InputTensor, OutputTensor, Tensors, fitted_to_graph

log = logging.getLogger("idl")

MC_CONFIG_HINT = "only packages trained with idl carry one, described under config.idl.mc_dropout"


def _rdf_source(path: Path) -> Path:
    if path.is_dir():
        for name in RDF_NAMES:
            if (path / name).is_file():
                return path / name
        raise ModelError(
            f"{path}: no rdf.yaml or bioimageio.yaml in this folder; it is not a bioimage.io package."
        )
    return path


MAX_MEMBER_MB_VARIABLE = "IDL_MAX_MEMBER_MB"
MAX_MEMBER_MB = 1024  # the largest file a package may unpack to (Mask R-CNN's weights: about 170 MB)
MAX_RATIO = 200  # a member that unpacks to more than 200 times its packed size is a zip bomb


def max_member_bytes() -> int:
    """The size cap of one package member: ``$IDL_MAX_MEMBER_MB`` megabytes, else 1024."""
    text = os.environ.get(MAX_MEMBER_MB_VARIABLE, "")
    try:
        return int(float(text) * 2**20) if text else MAX_MEMBER_MB * 2**20
    except ValueError:
        raise ModelError(f"{MAX_MEMBER_MB_VARIABLE}={text!r} is not a number of megabytes.") from None


def check_zip(path: Path) -> None:
    """Refuse a package file that is not a complete zip archive, or whose members would unpack beyond
    the size cap (:func:`max_member_bytes`) or far beyond their packed size, before anything of it is
    read."""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as file:
            start = file.read(16)
        looks = (
            "an HTML page (an error page saved instead of the file?)"
            if b"<" in start[:2]
            else (
                "cut off (an incomplete download?)"
                if start.startswith(b"PK")
                else f"a file starting {start[:8]!r}"
            )
        )
        raise ModelError(
            f"{path}: not a complete zip archive: it is {looks}. Download the package again (on bioimage.io: "
            "'Download' -> zip) and check its size."
        )
    cap = max_member_bytes()
    with zipfile.ZipFile(path) as archive:
        _refuse_duplicates(path, archive.namelist())
        for member in archive.infolist():
            ratio = member.file_size / max(member.compress_size, 1)
            if member.file_size > cap or (member.file_size > 2**24 and ratio > MAX_RATIO):
                raise ModelError(
                    f"{path}: the member {member.filename} unpacks to {member.file_size / 2**20:.0f} MB "
                    f"({ratio:.0f} times its packed size); packages are refused beyond "
                    f"{cap / 2**20:.0f} MB per file or {MAX_RATIO} times compression. If you trust this "
                    f"package, raise the cap with {MAX_MEMBER_MB_VARIABLE}=<megabytes>."
                )


def _refuse_duplicates(path: Path, names: list[str]) -> None:
    """Refuse an archive that holds two members of the same name: tools disagree on which one they
    read (Python's zipfile takes the last), so the package's meaning would depend on the reader."""
    twice = sorted(name for name, count in Counter(names).items() if count > 1)
    if twice:
        raise ModelError(
            f"{path}: the zip archive holds several members of the same name ({_few(twice)}); which of "
            "them a tool reads is undefined, so the package is refused. Zip the package's files again, each "
            "once."
        )


def _few(names: list[str], shown: int = 3) -> str:
    """A few names, then how many more: error messages stay short for archives of thousands of
    members."""
    text = ", ".join(names[:shown])
    return f"{text} and {len(names) - shown} more" if len(names) > shown else text


# the description's file names bioimageio.spec looks for at the top of a zip (also as 'x.rdf.yaml')
ZIP_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml", "model.yaml")
# what macOS's 'Compress' adds beside the folder it zips
ZIP_CLUTTER = "__MACOSX/"
# flat copies of packages zipped with their folder, per (path, size, mtime); removed at exit
_flat_copies: dict[tuple[str, int, int], Path] = {}


def _is_rdf_name(name: str) -> bool:
    return any(name == rdf or name.endswith("." + rdf) for rdf in ZIP_RDF_NAMES)


def _package_folder(path: Path, names: list[str]) -> str | None:
    """Where the package's files lie in the zip: ``""`` when its description is at the top, the
    folder (``"p0/"``) when the archive's only top-level entry is one folder holding it (a package
    zipped with its folder). Any other layout is refused, naming a few members."""
    names = [n for n in names if not n.startswith(ZIP_CLUTTER)]
    if any(_is_rdf_name(n) for n in names if "/" not in n):
        return ""
    tops = {n.split("/", 1)[0] for n in names}
    folder = f"{next(iter(tops))}/" if len(tops) == 1 else None
    if folder and all(n.startswith(folder) for n in names):
        if any(_is_rdf_name(n[len(folder) :]) for n in names if "/" not in n[len(folder) :]):
            return folder
    deeper = [n for n in names if _is_rdf_name(n.rsplit("/", 1)[-1])]
    where = (
        f" Its description lies at {_few(deeper, 1)}: zip the package's files, not the folder that holds "
        "them."
        if deeper
        else " It is not a bioimage.io package (on bioimage.io: 'Download' -> zip)."
    )
    raise ModelError(
        f"{path}: no rdf.yaml at the top of this zip archive ({len(names)} member(s): "
        f"{_few(sorted(names))}).{where}"
    )


def _flat_copy(path: Path, archive: zipfile.ZipFile, folder: str) -> Path:
    """A copy of the archive with ``folder`` removed from its members' names, which bioimageio.spec
    reads like any package (it resolves a description's files from the top of the zip only). Members
    are stored uncompressed in a temporary folder removed when the process ends; none is copied past
    the size cap, whatever its header claims."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _flat_copies and _flat_copies[key].is_file():
        return _flat_copies[key]
    place = Path(tempfile.mkdtemp(prefix="idl-package-"))
    atexit.register(shutil.rmtree, place, True)
    copy, cap = place / f"{path.stem}.zip", max_member_bytes()
    with zipfile.ZipFile(copy, "w", zipfile.ZIP_STORED) as out:
        for member in archive.infolist():
            name = member.filename[len(folder) :]
            if member.is_dir() or not member.filename.startswith(folder) or not name:
                continue
            large = member.file_size >= zipfile.ZIP64_LIMIT
            with archive.open(member) as source, out.open(name, "w", force_zip64=large) as target:
                _copy_capped(source, target, cap, f"{path}: the member {member.filename}")
    _flat_copies[key] = copy
    log.warning(
        "%s: the package's files lie in the folder %s of the archive; read from there (other bioimage.io "
        "tools need a zip of the files themselves, not of their folder)",
        path,
        folder,
    )
    return copy


def _copy_capped(source: Any, target: Any, cap: int, label: str) -> None:
    """Copy a file object in chunks, refusing to go past ``cap`` bytes."""
    copied = 0
    while chunk := source.read(2**20):
        copied += len(chunk)
        if copied > cap:
            raise ModelError(
                f"{label} is larger than {cap / 2**20:.0f} MB; refused. If you trust this package, raise "
                f"the cap with {MAX_MEMBER_MB_VARIABLE}=<megabytes>."
            )
        target.write(chunk)


def _zip_source(path: Path) -> Path:
    """The zip bioimageio.spec reads for the package file ``path``: itself, or a flat copy when the
    package was zipped with its folder (see :func:`_package_folder`)."""
    with zipfile.ZipFile(path) as archive:
        folder = _package_folder(path, archive.namelist())
        return _flat_copy(path, archive, folder) if folder else path


def read_description(path: Path) -> tuple[Any, str]:
    """The package's model description (converted to spec 0.5) and the spec version it was written
    in, read without network access."""
    from bioimageio.spec import load_model_description

    zipped = path.is_file() and not path.name.endswith((".yaml", ".yml"))
    if zipped:
        check_zip(path)
    try:
        source = _zip_source(path) if zipped else _rdf_source(path)
        original = load_model_description(source, perform_io_checks=False)
        if str(original.format_version).startswith("0.5"):
            return original, str(original.format_version)
        latest = load_model_description(source, format_version="latest", perform_io_checks=False)
        return latest, str(original.format_version)
    except ModelError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        detail = "\n".join(_shortened(line) for line in text[:12])
        raise ModelError(f"{path}: not a valid bioimage.io model package:\n{detail}") from exc


def _shortened(line: str, limit: int = 300) -> str:
    """A line of a validation error, cut at ``limit`` characters (bioimageio.spec may list every member
    of an archive in one line)."""
    return line if len(line) <= limit else f"{line[:limit]} ..."


def _letter(axis: Any, tensor: str) -> str:
    """idl's letter for a bioimage.io axis (batch, channel, or space x/y/z)."""
    kind, name = str(axis.type), str(axis.id)
    if kind == "batch":
        return "b"
    if kind == "channel":
        return "c"
    if kind == "space" and name in SPACE:
        return name
    raise ModelError(
        f"tensor '{tensor}': axis '{name}' of type {kind} is not supported; idl runs networks with batch, "
        "channel and x/y/z space axes."
    )


def _axis_letters(tensor: Any) -> dict[str, str]:
    return {str(a.id): _letter(a, str(tensor.id)) for a in tensor.axes}


def _walk(tensor: Any) -> tuple[str, int, list[tuple[str, Any]]]:
    """A tensor's axis letters, its channel count and its space axes as ``(letter, axis)``."""
    axes, channels, space = "", 1, []
    for axis in tensor.axes:
        letter = _letter(axis, str(tensor.id))
        axes += letter
        if letter == "c":
            channels = len(axis.channel_names)
        elif letter in SPACE:
            space.append((letter, axis))
    return axes, channels, space


def _input_layout(tensor: Any) -> tuple[str, int, dict[str, AxisSize]]:
    """``(axes, channels, sizes per space axis)`` of the input tensor."""
    axes, channels, space = _walk(tensor)
    return axes, channels, {letter: _input_layout_size(axis) for letter, axis in space}


def _input_layout_size(axis: Any) -> AxisSize:
    """The sizes an input space axis accepts: fixed, or min + k * step."""
    from bioimageio.spec.model import v0_5

    if isinstance(axis.size, int):
        return AxisSize(axis.size, 0)
    if isinstance(axis.size, v0_5.ParameterizedSize):
        return AxisSize(axis.size.min, axis.size.step)
    raise ModelError(f"input axis '{axis.id}': size {axis.size!r} is not supported (use fixed or min/step).")


def _output_layout(tensor: Any, source: Any) -> tuple[str, int, dict[str, int]]:
    """``(axes, channels, halo per space axis)``; output space axes must match the input's."""
    axes, channels, space = _walk(tensor)
    source_axes = {str(a.id): a for a in source.axes}
    halo = {}
    for letter, axis in space:
        ref = source_axes.get(str(getattr(axis.size, "axis_id", None)))
        same = ref is not None and _letter(ref, str(source.id)) == letter
        same = same and getattr(axis.size, "offset", 0) == 0 and float(axis.scale) == float(ref.scale)
        fixed = isinstance(axis.size, int) and _fixed_size(_axis_named(source, letter)) == axis.size
        same = same or fixed
        if not same:
            raise ModelError(
                f"output axis '{axis.id}': its size is not the input's (size {axis.size!r}, scale "
                f"{axis.scale}); idl tiles networks whose output pixels match the input pixels."
            )
        halo[letter] = int(getattr(axis, "halo", 0) or 0)
    return axes, channels, halo


def _axis_named(tensor: Any, letter: str) -> Any | None:
    """The axis of ``tensor`` that idl calls ``letter``."""
    return next((a for a in tensor.axes if _letter(a, str(tensor.id)) == letter), None)


def _fixed_size(axis: Any | None) -> int | None:
    return axis.size if axis is not None and isinstance(axis.size, int) else None


def _batch_limit(tensor: Any) -> int:
    """How many tiles the network takes per call: 1 without a batch axis or with a fixed batch of 1."""
    axis = next((a for a in tensor.axes if str(a.type) == "batch"), None)
    if axis is None:
        return 1
    return int(axis.size) if isinstance(getattr(axis, "size", None), int) else 0


def _letters(ids: Any, letters: dict[str, str]) -> str | None:
    if ids is None:
        return None
    return "".join(letters[str(i)] for i in ids if str(i) in letters)


def _processing(step: Any, letters: dict[str, str], tensor: str) -> Op:
    """One bioimage.io processing step as an idl :class:`Op`."""
    name, kw = str(step.id), getattr(step, "kwargs", None)
    axis = letters.get(str(getattr(kw, "axis", None)))
    if name == "ensure_dtype":
        return EnsureDtype(str(kw.dtype))
    if name == "sigmoid":
        return Sigmoid()
    if name == "softmax":
        return Softmax(letters.get(str(kw.axis), "c"))
    if name == "binarize":
        return Binarize(_values(kw.threshold), axis)
    if name == "clip":
        if getattr(kw, "min_percentile", None) is not None or getattr(kw, "max_percentile", None) is not None:
            raise ModelError(f"tensor '{tensor}': clip by percentiles is not supported.")
        return Clip(kw.min, kw.max)
    if name == "scale_linear":
        return ScaleLinear(_values(kw.gain), _values(kw.offset), axis)
    if name == "fixed_zero_mean_unit_variance":
        return FixedZeroMeanUnitVariance(_values(kw.mean), _values(kw.std), axis, kw.eps)
    if name == "zero_mean_unit_variance":
        return ZeroMeanUnitVariance(_letters(kw.axes, letters), kw.eps)
    if name == "scale_range":
        if kw.reference_tensor is not None and str(kw.reference_tensor) != tensor:
            raise ModelError(
                f"tensor '{tensor}': scale_range with the statistics of tensor '{kw.reference_tensor}' is "
                "not supported."
            )
        return ScaleRange(_letters(kw.axes, letters), kw.min_percentile, kw.max_percentile, kw.eps)
    raise ModelError(
        f"tensor '{tensor}': processing step '{name}' is not supported by idl-predict (supported: "
        "zero_mean_unit_variance, fixed_zero_mean_unit_variance, scale_range, scale_linear, clip, sigmoid, "
        "softmax, binarize, ensure_dtype)."
    )


def _values(value: Any) -> float | tuple[float, ...]:
    return tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else float(value)


def read_member(descr: Any, label: str) -> bytes:
    """The bytes of a file in the package; files named by URL are refused (idl never downloads)."""
    if str(descr.source).startswith(("http://", "https://", "ftp://")):
        raise ModelError(
            f"{label}: the package refers to {descr.source} instead of holding the file. idl never "
            "downloads: get the complete package as a .zip (on bioimage.io: 'Download' -> zip)."
        )
    source = descr.source
    if isinstance(source, PurePath) and not _inside(Path(source), Path(label)):
        raise ModelError(
            f"{label}: the package names {source}, a file outside the package; idl runs only files a "
            "package holds. Get the complete package as a .zip."
        )
    cap = max_member_bytes()
    try:
        data = descr.get_reader().read(cap + 1)  # never more than the cap, whatever a header claims
    except Exception as exc:
        raise ModelError(f"{label}: cannot read {descr.source} from the package ({exc}).") from exc
    if len(data) > cap:
        raise ModelError(
            f"{label}: {descr.source} is larger than {cap / 2**20:.0f} MB; refused. If you trust this "
            f"package, raise the cap with {MAX_MEMBER_MB_VARIABLE}=<megabytes>."
        )
    return data


def _inside(source: Path, package: Path) -> bool:
    """Whether a local file named by a package lies within the package's folder."""
    root = package if package.is_dir() else package.parent
    try:
        source.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _attachment(descr: Any, name: str) -> Any | None:
    for item in descr.attachments or ():
        if Path(str(item.source)).name == name:
            return item
    return None


def _padding(tensor: Any) -> tuple[str, float]:
    """How bioimage.io tools pad an input by the halo: numpy mode (symmetric unless the tensor says)
    and the constant value."""
    pad = getattr(tensor, "pad", None)
    return str(getattr(pad, "mode", "symmetric")), float(getattr(pad, "value", 0.0) or 0.0)


def tensors_from_description(descr: Any, pad_input: bool = True) -> Tensors:
    """Translate a model description (spec 0.5, or 0.4 converted by bioimageio.spec) with any number
    of inputs and outputs into :class:`Tensors`, the one description idl runs. Input sizes may refer
    to other inputs (same grid); output sizes refer to an input axis, scaled (``scale`` of the input
    axis over the output's) and offset. An output without space axes is a classifier's (one value per
    class of a fixed-size image). With ``pad_input`` the inputs are padded by the outputs' halo (the
    tensor's ``pad`` mode, symmetric by default) before preprocessing, as bioimage.io tools do."""
    from bioimageio.spec.model import v0_5

    by_id = {str(t.id): t for t in descr.inputs}
    _, _, input_space = _walk(descr.inputs[0])
    outputs = []
    for target in descr.outputs:
        axes, channels, space = _walk(target)
        if not space and all(isinstance(a.size, int) for _, a in input_space):
            outputs.append(_value_output(target, axes, channels))
            continue
        missing = sorted({letter for letter, _ in input_space} - {letter for letter, _ in space})
        if missing:
            raise ModelError(
                f"the output '{target.id}' lacks the input's space axes {', '.join(missing)}; idl-predict "
                "runs image-to-image networks and classifiers of fixed-size images (a classifier with a "
                "variable input size is not supported)."
            )
        scale, offset, halo = {}, {}, {}
        for letter, axis in space:
            size = axis.size
            if isinstance(size, v0_5.SizeReference) and str(size.tensor_id) in by_id:
                source = by_id[str(size.tensor_id)]
                ref = next((a for a in source.axes if str(a.id) == str(size.axis_id)), None)
                if ref is None or _letter(ref, str(source.id)) != letter:
                    raise ModelError(
                        f"output '{target.id}': axis '{axis.id}' refers to axis '{size.axis_id}' of "
                        f"'{size.tensor_id}'; idl needs each output space axis to follow the same input axis."
                    )
                scale[letter] = float(ref.scale) / float(axis.scale)
                offset[letter] = int(size.offset or 0)
            elif isinstance(size, int) and (fixed := _fixed_size(_axis_named(descr.inputs[0], letter))):
                scale[letter], offset[letter] = size / fixed, 0
            else:
                raise ModelError(
                    f"output '{target.id}': the size of axis '{axis.id}' ({size!r}) does not follow an input "
                    "axis; idl runs outputs whose size is an input's, scaled and offset."
                )
            halo[letter] = int(getattr(axis, "halo", 0) or 0)
        letters = _axis_letters(target)
        outputs.append(
            OutputTensor(
                id=str(target.id),
                axes=axes,
                channels=channels,
                scale=scale,
                offset=offset,
                halo=halo,
                postprocessing=tuple(_processing(p, letters, str(target.id)) for p in target.postprocessing),
                dtype=str(target.dtype),
            )
        )
    padded = pad_input and any(any(o.halo.values()) for o in outputs)
    inputs = tuple(_input_tensor(t, by_id, padded) for t in descr.inputs)
    spatial = {a for a in inputs[0].io.input_axes if a in SPACE}
    for tensor in (*inputs, *outputs):
        axes = tensor.io.input_axes if isinstance(tensor, InputTensor) else tensor.axes
        values = isinstance(tensor, OutputTensor) and not any(a in SPACE for a in axes)
        if not values and {a for a in axes if a in SPACE} != spatial:
            raise ModelError(
                f"tensor '{tensor.id}' has space axes {axes}, the input '{inputs[0].id}' "
                f"{inputs[0].io.input_axes}; idl runs tensors that share their space axes."
            )
    limits = [n for n in map(_batch_limit, descr.inputs) if n]
    return Tensors(inputs, tuple(outputs), min(limits) if limits else 0)


def _value_output(target: Any, axes: str, channels: int) -> OutputTensor:
    """A classifier's output: one value per class, no space axes."""
    letters = _axis_letters(target)
    return OutputTensor(
        id=str(target.id),
        axes=axes,
        channels=channels,
        postprocessing=tuple(_processing(p, letters, str(target.id)) for p in target.postprocessing),
        dtype=str(target.dtype),
    )


def _input_tensor(tensor: Any, by_id: dict[str, Any], pad: bool) -> InputTensor:
    """One input tensor as an :class:`InputTensor`; sizes that refer to another input take its rule."""
    from bioimageio.spec.model import v0_5

    axes, channels, space = _walk(tensor)
    sizes = {}
    for letter, axis in space:
        size = axis.size
        if isinstance(size, v0_5.SizeReference) and str(size.tensor_id) in by_id:
            _, _, others = _input_layout(by_id[str(size.tensor_id)])
            if letter not in others or size.offset:
                raise ModelError(f"input '{tensor.id}': axis '{axis.id}' refers to {size!r}; not supported.")
            sizes[letter] = others[letter]
        else:
            sizes[letter] = _input_layout_size(axis)
    letters = _axis_letters(tensor)
    pad_mode, pad_value = _padding(tensor)
    io = IOSpec(
        input_axes=axes,
        output_axes=axes,
        in_channels=channels,
        out_channels=channels,
        sizes=sizes,
        preprocessing=tuple(_processing(p, letters, str(tensor.id)) for p in tensor.preprocessing),
        input_pad=pad_mode if pad else None,
        input_pad_value=pad_value,
        max_batch=_batch_limit(tensor),
    )
    return InputTensor(str(tensor.id), io)


WEIGHT_FORMATS = (
    "onnx",
    "pytorch_state_dict",
    "torchscript",
    "keras_hdf5",
    "keras_v3",
    "tensorflow_saved_model_bundle",
    "tensorflow_js",
)


def weight_formats(descr: Any) -> list[str]:
    """The weight formats a package ships."""
    return [f for f in WEIGHT_FORMATS if getattr(descr.weights, f, None) is not None]


def package_details(descr: Any, idl: dict[str, Any]) -> dict[str, Any]:
    """What ``idl-predict --info`` shows about a package."""
    return {
        "name": str(descr.name),
        "description": str(descr.description),
        "authors": [str(a.name) for a in descr.authors],
        "license": str(descr.license),
        "weights": weight_formats(descr),
        "test_metrics": idl.get("test_metrics", {}),
        "training": idl.get("model_info", {}).get("training", {}),
        "channel_names": _output_channel_names(descr),
    }


def _output_channel_names(descr: Any) -> list[str]:
    """Names of the first output's channels (a classifier's classes), if it has a channel axis."""
    axis = (
        next((a for a in descr.outputs[0].axes if str(a.type) == "channel"), None) if descr.outputs else None
    )
    return [str(n) for n in getattr(axis, "channel_names", None) or []]


def _model_info(idl: dict[str, Any], path: Path) -> ModelInfo | None:
    """The :class:`ModelInfo` of a package written by idl (``config.idl.model_info``), or ``None``."""
    if "model_info" not in idl:
        return None
    try:
        return ModelInfo.from_json(json.dumps(idl["model_info"]))
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"{path}: config.idl.model_info is malformed ({exc}); re-export the package."
        ) from exc


def load_package(path: Path, kind_of: KindOf, device: str = "auto") -> LoadedModel:
    """Open a bioimage.io package with ONNX weights for tiled prediction."""
    descr, version = read_description(path)
    if descr.weights.onnx is None:
        formats = weight_formats(descr)
        raise ModelError(
            f"{path}: this package has no ONNX weights (it has {', '.join(formats)}). idl-predict runs ONNX "
            "only: convert the weights first with 'idl-export --to-onnx PACKAGE --out DIR' "
            "(pytorch_state_dict or torchscript weights; needs pip install 'idl-toolkit[train]'), or ask "
            "the author for an ONNX export."
        )
    idl = dict(getattr(descr.config, "idl", None) or {})
    info = _model_info(idl, path)
    # idl's own packages run exactly as the model folder they came from (same sizes, no halo padding);
    # other packages as bioimage.io tools run them: bioimageio.core pads the input of spec 0.5 models
    # by the halo before preprocessing, and does not pad 0.4 ones.
    kind = kind_of(info) if info is not None else None
    weights = read_member(descr.weights.onnx, str(path))
    runners = {}
    if kind is not None:
        io = kind.io_spec(info)
        tensors = Tensors.single(io)
    else:  # someone else's package: its graph may fix sizes its description does not
        runner = OnnxRunner(weights, device, label=str(path))
        runners[False] = runner  # opened once: prediction runs it
        described = tensors_from_description(descr, version.startswith("0.5"))
        tensors = fitted_to_graph(described, runner.input_shapes, str(path))
        io = summary_io(tensors)
    mc_weights, missing = None, f"this package has no Monte Carlo dropout graph; {MC_CONFIG_HINT}"
    mc = idl.get("mc_dropout")
    if mc:
        item = _attachment(descr, str(mc.get("file", "")))
        if item is None:
            missing = f"config.idl.mc_dropout names '{mc.get('file')}', but no such attachment exists"
        else:
            mc_weights = read_member(item, str(path))
    return LoadedModel(
        io=io,
        weights=weights,
        label=str(path),
        info=info,
        mc_weights=mc_weights,
        mc_missing=missing,
        outputs=kind.outputs(info) if kind is not None else None,
        tensors=tensors,
        details={**package_details(descr, idl), "source": str(path), "mc_dropout": mc or None},
        device=device,
        _runners=runners,
    )


def summary_io(tensors: Tensors) -> IOSpec:
    """The first input and output of a network as one IOSpec: the whole description of a network
    with one input and one output of its size (what the tasks of such networks read), and what
    ``--info`` shows first of others."""
    first, out = tensors.inputs[0].io, tensors.outputs[0]
    return IOSpec(
        input_axes=first.input_axes,
        output_axes=out.axes,
        in_channels=first.in_channels,
        out_channels=out.channels,
        sizes=first.sizes,
        halo=out.halo,
        preprocessing=first.preprocessing,
        postprocessing=out.postprocessing,
        output_dtype=out.dtype,
        input_pad=first.input_pad,
        input_pad_value=first.input_pad_value,
        max_batch=tensors.max_batch,
    )
