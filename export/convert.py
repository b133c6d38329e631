"""ONNX weights for a bioimage.io package that has only ``pytorch_state_dict`` or ``torchscript`` weights,
so that ``idl-predict`` (ONNX Runtime, no torch) runs it.

The conversion tries bioimageio.core's weight converters first and falls back to idl's own export
(the TorchScript-based ``torch.onnx.export`` that :mod:`idl.export.onnx` uses, dynamic batch and
spatial axes as the package declares them) when they fail or give a graph that does not pass the
checks. With torch 2.14 and bioimageio.core 0.11, measured on a small U-Net package:

- ``pytorch_state_dict``: bioimageio.core's converter (``torch.export``) works (ONNX Runtime equals torch
  within 1e-8 at every size) but takes about 10 s for a small U-Net where tracing takes under one, and
  stores the weights in a separate ``.onnx.data`` file, which is folded back into the graph here;
- ``torchscript``: its converter fixes the batch size to the test input's (1), so a batch of 2 is
  refused by ONNX Runtime; the fallback keeps the batch free.

Either way the graph is checked against the source weights in torch: on the package's test input
(preprocessed as the package says) and on an input one size step larger with a batch of two, the
largest absolute difference must be at most 1e-4, or the conversion is refused with the figure. The
new package (the source with the ONNX weights added, ``parent`` the source format) must then pass
bioimageio.core's ``test_model`` for its ONNX weights before it is written.

Converting runs the package's code (its architecture file, or its TorchScript program): convert only
packages you trust.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from idl.export.bioimageio import package_path
from idl.export.choices import METHODS
from idl.export.onnx import OPSET, TOLERANCE
from idl.infer.core.errors import ExportError, ModelError
from idl.infer.runtime.package import read_description, weight_formats

log = logging.getLogger("idl")

SOURCES = ("pytorch_state_dict", "torchscript")  # what can be converted, in order of preference


@dataclass(frozen=True)
class Conversion:
    """The written package and how its ONNX weights were made and checked."""

    path: Path
    source_format: str  # the weights converted from
    method: str  # "bioimageio.core" or "idl"
    test_input_diff: float  # largest |ONNX - torch| on the package's test input
    other_size_diff: float | None  # the same on a larger input with a batch of two (None: fixed sizes)
    notes: tuple[str, ...] = field(default_factory=tuple)  # why bioimageio.core's converter was not used

    def summary(self) -> str:
        other = "" if self.other_size_diff is None else f", {self.other_size_diff:.2g} at another size"
        return (
            f"{self.source_format} -> onnx with {self.method}: ONNX Runtime vs torch "
            f"{self.test_input_diff:.2g} on the test input{other}"
        )


def convert_to_onnx(
    source: Path, out_dir: Path, method: str = "auto", tolerance: float = TOLERANCE
) -> Conversion:
    """Add ONNX weights to the package ``source`` (zip, folder or ``rdf.yaml``) and write the result as
    ``out_dir/<name>.bioimageio.zip``. ``method``: ``auto`` (bioimageio.core's converter, ours when it
    fails), ``bioimageio`` or ``idl`` alone. Raises :class:`ModelError` for a package that cannot be
    converted and :class:`ExportError` when the ONNX graph does not reproduce the source weights."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    descr, _ = read_description(source)
    formats = weight_formats(descr)
    if descr.weights.onnx is not None:
        raise ModelError(f"{source}: this package already has ONNX weights; idl-predict runs it as it is.")
    source_format = next((f for f in SOURCES if f in formats), None)
    if source_format is None:
        raise ModelError(
            f"{source}: only pytorch_state_dict and torchscript weights can be converted to ONNX; this "
            f"package has {', '.join(formats) or 'no weights'}."
        )
    out_path = package_path(out_dir, str(descr.name))
    if out_path.resolve() == source.resolve():
        raise ModelError(f"{source}: the converted package would replace it; choose another --out folder.")
    from bioimageio.spec import (
        load_model_description,
        save_bioimageio_package,
        save_bioimageio_package_as_folder,
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".convert-") as tmp:
        folder = save_bioimageio_package_as_folder(descr, output_path=Path(tmp) / "package")
        staged = load_model_description(folder, perform_io_checks=False, format_version="latest")
        module = _torch_module(staged, source_format)
        inputs = _test_inputs(staged)
        onnx_path = next(
            folder / name
            for name in ("weights.onnx", "weights_converted.onnx", f"weights_{tmp[-8:]}.onnx")
            if not (folder / name).exists()  # never a file the package already holds
        )
        notes: list[str] = []
        attempts = ["bioimageio", "idl"] if method == "auto" else [method]
        for attempt in attempts:
            for stale in (onnx_path, onnx_path.with_name(onnx_path.name + ".data")):
                stale.unlink(missing_ok=True)  # a failed attempt's files
            try:
                made_by = _convert(attempt, staged, source_format, module, inputs, onnx_path)
                diffs = _check(module, onnx_path, staged, inputs, tolerance, source)
                break
            except ExportError as exc:
                if attempt == attempts[-1]:
                    raise
                notes.append(f"{attempt}: {exc}")
                log.info("bioimageio.core's converter was not used: %s", exc)
        staged.weights.onnx = _onnx_descr(onnx_path, source_format, made_by)
        package = Path(tmp) / out_path.name
        save_bioimageio_package(staged, output_path=package)
        _test_onnx(package, source)
        package.replace(out_path)
    conversion = Conversion(out_path, source_format, made_by, diffs[0], diffs[1], tuple(notes))
    log.info("wrote %s (%s)", out_path.name, conversion.summary())
    return conversion


def _torch_module(descr: Any, source_format: str) -> torch.nn.Module:
    """The source weights as a torch module on the CPU, in evaluation mode."""
    weights = getattr(descr.weights, source_format)
    try:
        with _quiet():
            if source_format == "torchscript":
                module = torch.jit.load(io.BytesIO(weights.get_reader().read()), map_location="cpu")
            else:
                from bioimageio.core.backends.pytorch_backend import load_torch_model

                module = load_torch_model(weights, load_state=True, devices=["cpu"])
    except Exception as exc:
        raise ModelError(f"cannot load the package's {source_format} weights in torch ({exc}).") from exc
    return module.eval()


def _test_inputs(descr: Any) -> list[np.ndarray]:
    """The package's test inputs, preprocessed as the package says (what the network is given)."""
    from bioimageio.core.digest_spec import get_member_id, get_test_input_sample
    from bioimageio.core.proc_setup import get_pre_and_postprocessing

    sample = get_test_input_sample(descr)
    get_pre_and_postprocessing(descr, dataset_for_initial_statistics=[sample]).pre(sample)
    return [np.ascontiguousarray(sample.members[get_member_id(d)].data.data) for d in descr.inputs]


def _convert(
    method: str, descr: Any, source_format: str, module: torch.nn.Module, inputs: list[np.ndarray], path: Path
) -> str:
    """Write ``path`` with ``method``; return its name for the package's description."""
    if method == "bioimageio":
        try:
            with _quiet():
                if source_format == "torchscript":
                    from bioimageio.core.weight_converters.torchscript_to_onnx import convert
                else:
                    from bioimageio.core.weight_converters.pytorch_to_onnx import convert
                convert(descr, path, opset_version=OPSET, devices=["cpu"])
            _inline_external_data(path)
        except Exception as exc:  # any failure of the converter: ours may still work
            raise ExportError(f"bioimageio.core's converter failed ({type(exc).__name__}: {exc})") from exc
        return "bioimageio.core"
    dynamic = {}
    for tensor in (*descr.inputs, *descr.outputs):
        axes = {i: str(a.id) for i, a in enumerate(tensor.axes) if not isinstance(a.size, int)}
        if axes:
            dynamic[str(tensor.id)] = axes
    try:
        with _quiet():
            torch.onnx.export(
                module,
                tuple(torch.from_numpy(x) for x in inputs),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=[str(t.id) for t in descr.inputs],
                output_names=[str(t.id) for t in descr.outputs],
                dynamic_axes=dynamic,
            )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed ({type(exc).__name__}: {exc})") from exc
    return "idl"


def _inline_external_data(path: Path) -> None:
    """Fold weights stored beside the graph (``<name>.data``) into the one file idl-predict reads."""
    import onnx

    proto = onnx.load(str(path))  # reads the external data next to it
    onnx.save(proto, str(path), save_as_external_data=False)
    for data in path.parent.glob(path.name + ".data"):
        data.unlink()


def _larger(descr: Any, inputs: list[np.ndarray]) -> list[np.ndarray] | None:
    """Random inputs one size step larger than the test input on every parameterized axis, with a
    batch of two where the batch is free; ``None`` when no size can change (or several inputs)."""
    from bioimageio.spec.model import v0_5

    if len(inputs) != 1:
        return None
    (tensor,), x = descr.inputs, inputs[0]
    shape, changed = list(x.shape), False
    for i, axis in enumerate(tensor.axes):
        if isinstance(axis, v0_5.BatchAxis) and axis.size is None:
            shape[i], changed = 2, True
        elif isinstance(axis.size, v0_5.ParameterizedSize) and axis.size.step:
            shape[i], changed = shape[i] + axis.size.step, True
    if not changed:
        return None
    low, high = float(np.min(x)), float(np.max(x))
    return [np.random.default_rng(0).uniform(low, high, shape).astype(x.dtype)]


def _run_torch(module: torch.nn.Module, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad(), _quiet():
        out = module(*(torch.from_numpy(x) for x in inputs))
    outs = out if isinstance(out, (tuple, list)) else [out]
    return [o.detach().cpu().numpy() for o in outs]


def _difference(module: torch.nn.Module, onnx_path: Path, inputs: Sequence[np.ndarray]) -> float:
    """Largest |ONNX Runtime - torch| over the outputs; inf when shapes differ."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = session.run(None, dict(zip(names, inputs, strict=True)))
    want = _run_torch(module, inputs)
    worst = 0.0
    for a, b in zip(got, want, strict=False):
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0)))
    return worst


def _check(
    module: torch.nn.Module,
    onnx_path: Path,
    descr: Any,
    inputs: list[np.ndarray],
    tolerance: float,
    source: Path,
) -> tuple[float, float | None]:
    """ONNX Runtime against torch on the test input and on a larger batch of two; raise
    :class:`ExportError` with the figure when either is beyond ``tolerance``."""
    try:
        on_test = _difference(module, onnx_path, inputs)
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot run the converted graph on the test input ({exc})") from exc
    if not on_test <= tolerance:
        raise ExportError(
            f"{source}: the ONNX weights differ from the source weights by {on_test:.3g} on the package's "
            f"test input (> {tolerance:g}); the conversion is refused."
        )
    larger = _larger(descr, inputs)
    if larger is None:
        return on_test, None
    shape = tuple(larger[0].shape)
    try:
        other = _difference(module, onnx_path, larger)
    except Exception as exc:
        raise ExportError(
            f"ONNX Runtime cannot run the converted graph on an input of shape {shape} ({exc})"
        ) from exc
    if not other <= tolerance:
        raise ExportError(
            f"{source}: the ONNX weights differ from the source weights by {other:.3g} on an input of shape "
            f"{shape} (> {tolerance:g}); the conversion is refused."
        )
    return on_test, other


def _onnx_descr(path: Path, source_format: str, made_by: str) -> Any:
    from bioimageio.spec.model import v0_5

    how = (
        "bioimageio.core's weight converter"
        if made_by == "bioimageio.core"
        else "torch.onnx.export (TorchScript-based)"
    )
    return v0_5.OnnxWeightsDescr(
        source=path,
        opset_version=OPSET,
        parent=source_format,
        comment=f"Converted from the {source_format} weights by idl-export --to-onnx with {how}; "
        f"ONNX Runtime equals torch within {TOLERANCE:g} on the test input.",
    )


def _test_onnx(package: Path, source: Path) -> None:
    """bioimageio.core's ``test_model`` for the new ONNX weights (test output, three tile sizes)."""
    from bioimageio.core import test_model

    with _quiet():
        summary = test_model(package, weight_format="onnx")
    if summary.status != "passed":
        raise ExportError(
            f"{source}: the converted ONNX weights fail bioimageio.core's test_model:\n{summary.format()}"
        )


@contextlib.contextmanager
def _quiet() -> Any:
    """Without the exporters' chatter (printed, warned and logged at INFO) and deprecation notes."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(max(previous, logging.INFO))
        try:
            yield
        finally:
            logging.disable(previous)
