"""int8 graphs for CPUs: static quantization of the exported graphs, kept only where the int8 graph
gives the users' answers of the float32 graph on the validation images.

How: ONNX Runtime's ``quantize_static`` in QDQ form (QuantizeLinear/DequantizeLinear pairs around each
quantized operator, which ONNX Runtime's CPU provider fuses into int8 kernels), weights int8 per
output channel, activations uint8 per tensor with min/max ranges measured on a few dozen normalized
training patches (:data:`CALIBRATION_PATCHES`: the inputs the network was trained on). The first
and the last weighted layer (a U-Net's first convolution and 1x1 head, a classifier's stem and
fully connected layer) stay in float32: they hold little of the work, and on the demo U-Net keeping
them halved the mask pixels that changed (0.041 % -> 0.021 %) at the same speed. uint8 activations:
the int8 x uint8 dot products of VNNI, measured 1.7x faster than int8 activations on an AVX512-VNNI
CPU (a 1024 x 1024 image, depth-4 U-Net: 0.52 s against 0.90 s; float32 1.19 s).

Check (:func:`quantize_model`): the float32 and the int8 graph predict the validation images as
idl-predict does (the tiled engine and the task's post-processing: masks, labels, values, classes;
:meth:`Task.answers <idl.infer.tasks.base.Task.answers>`), and the int8 graph is kept only where the
task's measure holds (:meth:`Task.agreement <idl.infer.tasks.base.Task.agreement>`, the measures in
:mod:`idl.infer.evaluate.agreement`): at most 0.1 % of the mask pixels differ (semantic), at most
0.1 % of the pixels lie in another object (instance), the values differ by at most 2 % of their
standard deviation on average (regression), at least 99.5 % of the images get the same class
(classification).

The Monte Carlo graph is quantized and checked likewise, with the answer taken from the samples'
mean. Two sessions draw other dropout masks (quantizing the graph changes the order its random
operators are seeded in), so the samples differ by chance alone: the int8 graph's answer and
uncertainty map may differ from the float32 graph's as much as the task's limit or
:data:`NOISE_MARGIN` times as much as two float32 runs with different seeds differ, whichever is
larger. It is made only beside a kept deterministic int8 graph.

A graph that fails its check is removed; what was measured is stored in the model description
(:attr:`~idl.infer.core.model_info.ModelInfo.quantized`) either way, and ``idl-predict --info`` shows
it. Mask R-CNN graphs are not quantized (no measure of detections; their loops and sorting gain
nothing). bioimage.io packages hold the float32 graphs only.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from idl.export.metadata import write_metadata
from idl.infer.core.model_info import ModelInfo
from idl.infer.evaluate.agreement import Agreement, spread_difference
from idl.infer.io.images import atomic_path
from idl.infer.runtime.model import MC_SAMPLES_INPUT, LoadedModel, load_onnx_model, mc_path_for
from idl.infer.runtime.precision import (
    DETERMINISTIC,
    MONTE_CARLO,
    describe_quantized,
    int8_path_for,
    is_int8_path,
)
from idl.infer.tasks.registry import kind_of, task_named
from idl.infer.tiling.predict import PredictOptions

log = logging.getLogger("idl")

# calibration: at most this many training patches, and at most this many input voxels in all (3D
# patches are large); 16 or 32 patches changed the same demo mask pixels, 16 in less time
CALIBRATION_PATCHES = 16
CALIBRATION_VOXELS = 2**23
# the Monte Carlo check predicts its images three times with every sample: at most this many voxels
MC_CHECK_VOXELS = 2**22
# how far the int8 Monte Carlo graph may differ from the float32 one, as a multiple of how far two
# float32 runs with different seeds differ (chance alone)
NOISE_MARGIN = 1.5
# the uncertainty maps' relative difference always allowed, however closely two float32 runs agree
SPREAD_LIMIT = 0.01
# the layers quantized (with QDQ ONNX Runtime quantizes these and the operators between them)
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SCHEME = (
    "ONNX Runtime static quantization (QDQ): int8 weights per output channel, uint8 activations with "
    "min/max ranges; the first and last weighted layer in float32"
)


@dataclass(frozen=True)
class QuantizationData:
    """What quantization needs of a project: ``calibration``, normalized network inputs ``(1, C,
    *spatial)`` (training patches, or a classifier's training images), and ``images``, the
    validation images the graphs are compared on: normalized channels-last images for the U-Net
    tasks (predicted whole, tile by tile as idl-predict does, in tiles of ``tile_size``), network
    inputs ``(C, H, W)`` for classifiers. ``mc_samples``: samples per image of the Monte Carlo check."""

    calibration: list[np.ndarray]
    images: list[np.ndarray]
    tile_size: int = 512
    mc_samples: int = 10

    def calibration_text(self) -> str:
        """E.g. ``32 training patches of 192 x 192 px``."""
        if not self.calibration:
            return "nothing"
        shape = " x ".join(map(str, self.calibration[0].shape[2:]))
        return f"{len(self.calibration)} training patches of {shape} px"


def rule_for(info: ModelInfo) -> Agreement | None:
    """The agreement the model's task holds an int8 graph to (:meth:`Task.agreement
    <idl.infer.tasks.base.Task.agreement>`), or None where the task's graphs are not quantized."""
    return task_named(info.kind).agreement(info)


class _Feed:
    """ONNX Runtime's calibration data reader over ``patches`` (with a sample count of one for a
    Monte Carlo graph that takes one)."""

    def __init__(self, patches: Sequence[np.ndarray], names: Sequence[str], batch: int = 8) -> None:
        self.names = list(names)
        self.items: Iterator[np.ndarray] = iter(_batches(patches, batch))

    def get_next(self) -> dict[str, np.ndarray] | None:
        patch = next(self.items, None)
        if patch is None:
            return None
        feed = {self.names[0]: np.ascontiguousarray(patch, np.float32)}
        if MC_SAMPLES_INPUT in self.names[1:]:
            feed[MC_SAMPLES_INPUT] = np.zeros(1, np.float32)
        return feed

    def rewind(self) -> None:  # the reader's interface; calibration reads the patches once
        pass


def _batches(patches: Sequence[np.ndarray], size: int) -> list[np.ndarray]:
    """Batches of one to ``size`` patches ``(1, C, *spatial)`` of one shape each (the min/max ranges
    are the same; fewer, larger calls run faster)."""
    batches: list[list[np.ndarray]] = []
    for patch in patches:
        if batches and len(batches[-1]) < size and batches[-1][0].shape == patch.shape:
            batches[-1].append(patch)
        else:
            batches.append([patch])
    return [np.concatenate(group) for group in batches]


def calibration_patches(patches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """At most :data:`CALIBRATION_PATCHES` patches and :data:`CALIBRATION_VOXELS` voxels of
    ``patches`` (at least one), each as a batch of one."""
    chosen: list[np.ndarray] = []
    voxels = 0
    for patch in patches[:CALIBRATION_PATCHES]:
        batch = patch if patch.ndim >= 4 and patch.shape[0] == 1 else patch[np.newaxis]
        if chosen and voxels + batch.size > CALIBRATION_VOXELS:
            break
        chosen.append(np.ascontiguousarray(batch, np.float32))
        voxels += batch.size
    return chosen


def quantize_graph(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> None:
    """Write the int8 graph of the ONNX graph ``source`` to ``target`` (see the module docstring for
    the scheme), calibrated on ``calibration`` (normalized network inputs ``(1, C, *spatial)``).
    ONNX Runtime's pre-processing (shape inference, graph optimization) runs first, as its
    quantization tools recommend; the idl metadata is carried over."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="idl-quantize-") as work:
        prepared = Path(work) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        proto = onnx.load(str(prepared))
        for index, node in enumerate(proto.graph.node):
            if not node.name:  # nodes are excluded by name
                node.name = f"{node.op_type}_{index}"
        onnx.save(proto, str(prepared))
        weighted = [n.name for n in proto.graph.node if n.op_type in WEIGHTED]
        names = [i.name for i in proto.graph.input]
        with atomic_path(target) as tmp, warnings.catch_warnings(), _quiet_root_logger():
            warnings.simplefilter("ignore")
            quantize_static(
                str(prepared),
                str(tmp),
                _Feed(calibration, names),  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=sorted({weighted[0], weighted[-1]}) if weighted else [],
            )


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """The root logger at ERROR for a while: ONNX Runtime's quantization tools log their advice on
    pre-processing (done here already) through it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def answers(
    model: LoadedModel, info: ModelInfo, images: Sequence[np.ndarray], options: PredictOptions
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """What idl-predict answers for each validation image, and its uncertainty map, as the model's
    task finds them (:meth:`Task.answers <idl.infer.tasks.base.Task.answers>`)."""
    return task_named(info.kind).answers(model, images, options)


def _open(path: Path) -> LoadedModel:
    """An idl graph (float32, or the int8 graph itself) opened on the CPU as idl-predict opens it."""
    return load_onnx_model(path, kind_of, "cpu", "int8" if is_int8_path(path) else "fp32")


def check_deterministic(
    fp32: Path, int8: Path, info: ModelInfo, data: QuantizationData, rule: Agreement
) -> dict[str, Any]:
    """The agreement of the int8 graph ``int8`` with ``fp32`` on the validation images (the record
    :attr:`ModelInfo.quantized` keeps under ``deterministic``)."""
    options = PredictOptions(tile_size=data.tile_size, progress=False, tta=None)
    reference, _ = answers(_open(fp32), info, data.images, options)
    found, _ = answers(_open(int8), info, data.images, options)
    value = float(rule.compare(reference, found))
    return {
        "file": int8.name,
        "kept": bool(value <= rule.limit),
        "measure": rule.measure,
        "value": value,
        "limit": rule.limit,
        "images": len(data.images),
    }


def _within(images: Sequence[np.ndarray], voxels: int) -> list[np.ndarray]:
    """The first of ``images`` up to ``voxels`` voxels in all (at least one)."""
    chosen, total = [], 0
    for image in images:
        if chosen and total + image.size > voxels:
            break
        chosen.append(image)
        total += image.size
    return chosen


def check_monte_carlo(
    fp32: Path, int8: Path, info: ModelInfo, data: QuantizationData, rule: Agreement
) -> dict[str, Any]:
    """The agreement of the int8 Monte Carlo graph (beside the int8 graph ``int8``) with the float32
    one (beside ``fp32``): the answer from the samples' mean and the uncertainty map, each against
    the task's limit or :data:`NOISE_MARGIN` times the difference two float32 runs with other seeds
    show (see the module docstring). The record kept under ``monte_carlo``."""
    images = _within(data.images, MC_CHECK_VOXELS)
    options = PredictOptions(
        tile_size=data.tile_size,
        progress=False,
        tta=None,
        mc_samples=max(2, data.mc_samples),
        mc_answer="mean",
    )
    plain, quantized = _open(fp32), _open(int8)
    reference, reference_spread = answers(plain, info, images, options)
    found, found_spread = answers(quantized, info, images, options)
    other, other_spread = answers(plain, info, images, replace(options, seed=options.seed + 1))
    value, noise = float(rule.compare(reference, found)), float(rule.compare(reference, other))
    spread, spread_noise = (
        float(spread_difference(reference_spread, found_spread)),
        float(spread_difference(reference_spread, other_spread)),
    )
    limit, spread_limit = (
        max(rule.limit, NOISE_MARGIN * noise),
        max(SPREAD_LIMIT, NOISE_MARGIN * spread_noise),
    )
    return {
        "file": mc_path_for(int8).name,
        "kept": bool(value <= limit and spread <= spread_limit),
        "measure": f"{rule.measure} (the samples' mean)",
        "value": value,
        "limit": limit,
        "noise": noise,
        "images": len(images),
        "samples": options.mc_samples,
        "also": [
            {
                "measure": "relative difference of the uncertainty maps",
                "value": spread,
                "limit": spread_limit,
                "noise": spread_noise,
            }
        ],
    }


def quantize_model(
    det_path: Path,
    mc_path: Path | None,
    info: ModelInfo,
    data: QuantizationData,
    rule: Agreement | None = None,
) -> ModelInfo:
    """Write the int8 twins of the exported graphs ``det_path`` and ``mc_path`` (``model_int8.onnx``,
    ``model_int8_mc.onnx``), keep each only where it agrees with its float32 graph on ``data``'s
    validation images by the task's ``rule`` (default: :func:`rule_for`), and store what was measured
    in the model description of every graph; returns that description. A failing quantization
    (ONNX Runtime cannot quantize some graph) is logged and recorded, never raised: the float32
    graphs are the model."""
    started = time.perf_counter()
    rule = rule if rule is not None else rule_for(info)
    int8, int8_mc = int8_path_for(det_path), mc_path_for(int8_path_for(det_path))
    for stale in (int8, int8_mc):
        stale.unlink(missing_ok=True)
    record: dict[str, Any]
    if rule is None:
        record = {"skipped": f"no agreement rule for {info.kind} models: their graphs are not quantized"}
    elif not data.images or not data.calibration:
        missing = "validation images to check" if not data.images else "training patches to calibrate"
        record = {"skipped": f"no {missing} an int8 graph on"}
    else:
        record = {"scheme": SCHEME, "calibration": data.calibration_text()}
        try:
            record.update(_quantize_and_check(det_path, mc_path, info, data, rule))
        except Exception as exc:  # ONNX Runtime's quantization tools on a graph they do not handle
            for path in (int8, int8_mc):
                path.unlink(missing_ok=True)
            log.warning("no int8 graph: quantizing %s failed (%s)", det_path.name, exc)
            record = {
                "skipped": f"quantization failed: {str(exc).splitlines()[0][:200] if str(exc) else exc!r}"
            }
        record["seconds"] = round(time.perf_counter() - started, 1)
    return _store(det_path, mc_path, info, record)


def skip_quantization(det_path: Path, mc_path: Path | None, info: ModelInfo, reason: str) -> ModelInfo:
    """Record in the exported graphs' model description that no int8 graph was made, and why (the
    message of ``--precision int8``)."""
    for stale in (int8_path_for(det_path), mc_path_for(int8_path_for(det_path))):
        stale.unlink(missing_ok=True)
    return _store(det_path, mc_path, info, {"skipped": reason})


def _store(det_path: Path, mc_path: Path | None, info: ModelInfo, record: dict[str, Any]) -> ModelInfo:
    """``info`` with ``record`` as its int8 record, written into every graph of the model."""
    info = replace(info, quantized=record)
    int8 = int8_path_for(det_path)
    for path in (det_path, mc_path, int8, mc_path_for(int8)):
        if path is not None and path.is_file():
            write_metadata(path, info)
    _log(record)
    return info


def _quantize_and_check(
    det_path: Path, mc_path: Path | None, info: ModelInfo, data: QuantizationData, rule: Agreement
) -> dict[str, Any]:
    """Quantize and check the deterministic graph, then (beside a kept one) the Monte Carlo graph;
    refused graphs are removed. The records of both."""
    int8, int8_mc = int8_path_for(det_path), mc_path_for(int8_path_for(det_path))
    calibration = calibration_patches(data.calibration)
    quantize_graph(det_path, int8, calibration)
    record: dict[str, Any] = {DETERMINISTIC: check_deterministic(det_path, int8, info, data, rule)}
    if not record[DETERMINISTIC]["kept"]:
        int8.unlink(missing_ok=True)
        return record
    if mc_path is not None and mc_path.is_file():
        quantize_graph(mc_path, int8_mc, calibration)
        record[MONTE_CARLO] = check_monte_carlo(det_path, int8, info, data, rule)
        if not record[MONTE_CARLO]["kept"]:
            int8_mc.unlink(missing_ok=True)
    return record


def _log(record: dict[str, Any]) -> None:
    lines = describe_quantized(record)
    refused = any(not record.get(k, {}).get("kept", True) for k in (DETERMINISTIC, MONTE_CARLO))
    took = f" ({record['seconds']:.1f} s)" if "seconds" in record else ""
    (log.warning if refused else log.info)("%s%s", "\n".join(lines), took)
