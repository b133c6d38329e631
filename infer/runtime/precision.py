"""Which graph of an idl model runs: the float32 graph or its int8 twin (``idl-predict --precision``).

``idl-train`` and ``idl-export`` write, beside ``model.onnx``, a statically quantized graph
``model_int8.onnx`` (and ``model_int8_mc.onnx`` for Monte Carlo dropout) when it agrees with the
float32 graph on the validation images (:mod:`idl.export.quantize`); what was measured is stored in
the model description (:attr:`~idl.infer.core.model_info.ModelInfo.quantized`), also when the graph
was refused. int8 graphs pay off on CPUs with int8 dot-product instructions (x86 VNNI and AMX, ARM's
dot product and matrix multiply): ``auto`` takes the int8 graph there, the float32 graph everywhere
else (GPUs included). Everything here is pure but :func:`cpu_flags` and :func:`choose_graphs`, which
read ``/proc/cpuinfo`` and look for files.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idl.infer.core.errors import ModelError
from idl.infer.runtime.session import choose_providers

log = logging.getLogger("idl")

PRECISIONS = ("auto", "fp32", "int8")
INT8_SUFFIX = "_int8"
# CPU flags (Linux /proc/cpuinfo) of int8 dot-product instructions, with which ONNX Runtime's int8
# convolutions beat float32 ones: x86 AVX512-VNNI, AVX-VNNI and AMX; ARM's dot product and matrix
# multiply. Without them an int8 graph may run slower than its float32 graph.
FAST_INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
# the entries of ModelInfo.quantized for the deterministic and the Monte Carlo graph
DETERMINISTIC, MONTE_CARLO = "deterministic", "monte_carlo"


def int8_path_for(path: Path) -> Path:
    """The int8 twin of a float32 graph: ``model.onnx`` -> ``model_int8.onnx`` (its Monte Carlo
    twin is then :func:`~idl.infer.runtime.model.mc_path_for` of it, ``model_int8_mc.onnx``)."""
    return path.with_name(f"{path.stem}{INT8_SUFFIX}{path.suffix}")


def is_int8_path(path: Path) -> bool:
    """Whether ``path`` is named as an int8 graph (``*_int8.onnx``)."""
    return path.stem.endswith(INT8_SUFFIX) and path.stem != INT8_SUFFIX


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's instruction-set flags: the ``flags`` (x86) or ``Features`` (ARM) lines of
    ``cpuinfo`` (default: ``/proc/cpuinfo``; empty where there is none, as on macOS and Windows)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    found: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            found.update(value.split())
    return frozenset(found)


def fast_int8(flags: Collection[str]) -> bool:
    """Whether a CPU with ``flags`` has int8 dot-product instructions (:data:`FAST_INT8_FLAGS`)."""
    return not FAST_INT8_FLAGS.isdisjoint(flags)


def choose_precision(requested: str, int8_present: bool, on_cpu: bool, flags: Collection[str]) -> str:
    """``fp32`` or ``int8``: what runs for ``--precision requested``. ``auto`` is int8 where the model
    has an int8 graph, the session runs on the CPU and the CPU has fast int8 instructions (``flags``),
    else fp32; ``int8`` and ``fp32`` are themselves (whether an int8 graph exists is checked by
    :func:`choose_graphs`)."""
    if requested not in PRECISIONS:
        raise ModelError(f"unknown precision '{requested}'; use one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    return "int8" if int8_present and on_cpu and fast_int8(flags) else "fp32"


def agreement_text(entry: Mapping[str, Any]) -> str:
    """One graph's agreement as measured at export, e.g. ``fraction of mask pixels differing 0.00021
    (limit 0.001) on 2 validation images``."""
    if "value" not in entry:
        return str(entry.get("reason", "not measured"))
    text = f"{entry.get('measure', 'difference')} {entry['value']:.3g} (limit {entry.get('limit', 0):.3g})"
    if entry.get("noise") is not None:
        text += f"; two float32 runs with other seeds: {entry['noise']:.3g}"
    for extra in entry.get("also", ()):
        text += f"; {agreement_text(extra)}"
    images = entry.get("images")
    return text + (f" on {images} validation image(s)" if images else "")


def describe_quantized(quantized: Mapping[str, Any]) -> list[str]:
    """``--info``'s lines about the int8 graphs: kept or refused, with the agreement measured."""
    if not quantized:
        return ["int8 graph: none (exported without; idl-export writes one)"]
    if quantized.get("skipped"):
        return [f"int8 graph: none ({quantized['skipped']})"]
    lines = []
    for key, title in ((DETERMINISTIC, "int8 graph"), (MONTE_CARLO, "int8 Monte Carlo graph")):
        entry = quantized.get(key)
        if entry is None:
            continue
        verdict = f"kept as {entry.get('file', '?')}" if entry.get("kept") else "refused at export"
        lines.append(f"{title}: {verdict}: {agreement_text(entry)}")
    if quantized.get("scheme"):
        lines.append(
            f"  quantization: {quantized['scheme']}; calibrated on {quantized.get('calibration', '?')}"
        )
    return lines


def missing_int8(path: Path, quantized: Mapping[str, Any]) -> str:
    """Why the model at ``path`` (its float32 graph) has no int8 graph beside it, and what to do."""
    target = int8_path_for(path)
    entry = quantized.get(DETERMINISTIC) or {}
    if entry and not entry.get("kept"):
        why = (
            f"it was refused at export because it did not agree with the float32 graph on the validation "
            f"images ({agreement_text(entry)})"
        )
    elif entry:
        why = "the model description says it was written, but the file is missing (copy it beside it)"
    elif quantized.get("skipped"):
        why = f"none was written: {quantized['skipped']}"
    else:
        why = (
            "none was written (exported with --no-int8, or by an idl version before int8 graphs); write one "
            "with idl-export PROJECT/model/best.pt --out FOLDER"
        )
    return f"{target}: no int8 graph: {why}. Predict with --precision fp32 (or auto)."


@dataclass(frozen=True)
class Graphs:
    """The graphs a model runs at the precision chosen, and the device their sessions use."""

    weights: Path
    mc_weights: Path | None
    precision: str  # "fp32" or "int8"
    device: str
    note: str = ""  # why, for the log and --info


def _on_cpu(device: str) -> bool:
    import onnxruntime as ort

    return choose_providers(device, ort.get_available_providers()) == ["CPUExecutionProvider"]


def choose_graphs(
    path: Path,
    mc_path: Path | None,
    int8_mc_path: Path | None,
    quantized: Mapping[str, Any],
    requested: str,
    device: str,
    flags: Collection[str] | None = None,
) -> Graphs:
    """The graphs of the idl model whose float32 graph is ``path`` (Monte Carlo twin ``mc_path``, None
    when there is none) for ``--precision requested``: its int8 twin (:func:`int8_path_for`) and the
    int8 Monte Carlo graph ``int8_mc_path`` (where it exists) for ``int8``, and for ``auto``
    where :func:`choose_precision` says so. An int8 Monte Carlo graph that was refused (or not written)
    leaves the float32 one in its place. int8 graphs run on the CPU: ``--device cuda`` with ``int8`` is
    refused, ``--device auto`` runs them on the CPU. ``path`` itself an int8 graph (``model_int8.onnx``
    given as the model) runs as it is, except for ``fp32``, which is refused (the float32 graph is
    ``model.onnx``). ``flags``: the CPU's (default: :func:`cpu_flags`)."""
    if requested not in PRECISIONS:
        raise ModelError(f"unknown precision '{requested}'; use one of {', '.join(PRECISIONS)}")
    if is_int8_path(path):
        if requested == "fp32":
            plain = path.with_name(f"{path.stem[: -len(INT8_SUFFIX)]}{path.suffix}")
            raise ModelError(
                f"{path}: this is the int8 graph of an idl model; for --precision fp32 pass its float32 "
                f"graph {plain} or the model folder {path.parent}."
            )
        return Graphs(path, mc_path, "int8", device)
    int8 = int8_path_for(path)
    int8_mc = int8_mc_path if int8_mc_path is not None and int8_mc_path.is_file() else None
    if requested == "fp32":
        return Graphs(path, mc_path, "fp32", device)
    cpu = requested == "int8" or _on_cpu(device)
    flags = cpu_flags() if flags is None else flags
    chosen = choose_precision(requested, int8.is_file(), cpu, flags)
    if chosen == "fp32":
        if not int8.is_file():
            why = "no int8 graph"
        elif not cpu:
            why = "the model runs on a GPU"
        else:
            why = "this CPU has no fast int8 instructions (VNNI, AMX, ARM dot product)"
        return Graphs(path, mc_path, "fp32", device, f"auto: {why}")
    if not int8.is_file():
        raise ModelError(missing_int8(path, quantized))
    if device == "cuda":
        raise ModelError(
            f"{int8}: int8 graphs are made for CPUs; use --device cpu with --precision int8, or "
            "--precision fp32 (or auto) on the GPU."
        )
    if requested == "int8" and not fast_int8(flags):
        log.warning(
            "--precision int8: this CPU has no fast int8 instructions (VNNI, AMX, ARM dot product); the "
            "int8 graph may run slower than the float32 one"
        )
    found = ", ".join(sorted(FAST_INT8_FLAGS.intersection(flags))) or "none"
    note = "--precision int8"
    if requested == "auto":
        note = f"auto: this CPU has fast int8 instructions ({found})"
    if mc_path is not None and int8_mc is None:
        note += "; Monte Carlo samples from the float32 graph (no int8 Monte Carlo graph was kept)"
    return Graphs(int8, int8_mc or mc_path, "int8", "cpu", note)
