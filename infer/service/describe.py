"""A readable summary of a model: what ``idl-predict --info`` prints."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

from idl.infer.core.processing import Op
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.precision import describe_quantized
from idl.infer.tasks.registry import task_for

AXIS_NAMES = {"b": "batch", "c": "channel", "z": "z", "y": "y", "x": "x"}


def _op(op: Op) -> str:
    args = ", ".join(f"{f.name}={getattr(op, f.name)!r}" for f in fields(op))
    name = "".join("_" + ch.lower() if ch.isupper() else ch for ch in type(op).__name__).lstrip("_")
    return f"{name}({args})"


def _metrics(model: LoadedModel) -> dict[str, Any]:
    """Test metrics stored in a package, or in PROJECT/evaluation next to a PROJECT/model folder."""
    stored = {
        k: v for k, v in (model.details.get("test_metrics") or {}).items() if isinstance(v, (int, float))
    }
    if stored:
        return stored
    summary = Path(model.label).parent.parent / "evaluation" / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text(encoding="utf-8"))
        return {k: v for k, v in data.items() if isinstance(v, (int, float))}
    return {}


def _tensor_lines(title: str, io: IOSpec, axes: str) -> list[str]:
    """An input's axes, channels, accepted sizes and preprocessing."""
    sizes = ", ".join(
        f"{a}: {s.minimum}" + (f" + k*{s.step}" if s.step else " (fixed)") for a, s in io.sizes.items()
    )
    return [
        f"{title}: axes {axes} ({', '.join(AXIS_NAMES[a] for a in axes)}), {io.in_channels} channel(s); "
        f"sizes {sizes}",
        "  preprocessing: " + ("; ".join(_op(o) for o in io.preprocessing) or "none"),
    ]


def _output_lines(title: str, io: IOSpec) -> list[str]:
    return [
        f"{title}: axes {io.output_axes}, {io.out_channels} channel(s), {io.output_dtype}; halo "
        + (", ".join(f"{a}: {h}" for a, h in io.halo.items()) or "none"),
        "  postprocessing: " + ("; ".join(_op(o) for o in io.postprocessing) or "none"),
    ]


def describe(model: LoadedModel) -> str:
    """Inputs, outputs, processing, training summary, test metrics and Monte Carlo availability."""
    io, info, details = model.io, model.info, model.details
    lines = [f"model: {details.get('name', Path(model.label).name)}", f"source: {model.label}"]
    for key in ("description", "authors", "license", "weights"):
        if details.get(key):
            value = details[key]
            lines.append(f"{key}: {', '.join(value) if isinstance(value, list) else value}")
    if model.tensors.simple:
        lines += _tensor_lines("input", io, io.input_axes) + _output_lines("output", io)
    else:
        for tensor in model.tensors.inputs:
            lines += _tensor_lines(f"input '{tensor.id}'", tensor.io, tensor.io.input_axes)
        for out in model.tensors.outputs:
            size = ", ".join(
                f"{a}: x{out.scale.get(a, 1.0):g}" + (f" {out.offset[a]:+d}" if out.offset.get(a) else "")
                for a in model.tensors.spatial
            )
            lines += [
                f"output '{out.id}': axes {out.axes}, {out.channels} channel(s), {out.dtype}; size {size}; "
                + "halo "
                + (", ".join(f"{a}: {h}" for a, h in out.halo.items()) or "none"),
                "  postprocessing: " + ("; ".join(_op(o) for o in out.postprocessing) or "none"),
            ]
        names = " ".join(f"--input {t.id}=PATH" for t in model.tensors.inputs)
        lines.append(f"predict with: idl-predict MODEL {names} --out DIR (outputs in DIR/<output name>/)")
    if info is not None:
        lines += task_for(model).describe(info)
        if info.training:
            lines.append("training: " + ", ".join(f"{k} {v}" for k, v in info.training.items()))
    metrics = _metrics(model)
    if metrics:
        lines.append("test metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())))
    lines += _precision_lines(model)
    if model.has_mc:
        dropout = info.dropout if info is not None else "?"
        lines.append(f"Monte Carlo dropout: available (p = {dropout}); use --mc-samples N (e.g. 10)")
    else:
        lines.append(f"Monte Carlo dropout: not available ({model.mc_missing})")
    return "\n".join(lines)


def _precision_lines(model: LoadedModel) -> list[str]:
    """Which graph runs (``--precision``) and how the int8 graphs agreed with the float32 ones when
    they were exported (an idl model folder or ``.onnx`` file; packages hold float32 graphs only)."""
    if isinstance(model.weights, bytes):
        return ["precision: float32 (bioimage.io packages hold no int8 graph)"]
    runs = f"precision: {'int8' if model.precision == 'int8' else 'float32'}, {Path(model.weights).name}"
    lines = [runs + (f" ({model.precision_note})" if model.precision_note else "")]
    if model.info is not None:
        lines += describe_quantized(model.info.quantized)
    return lines
