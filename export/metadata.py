"""The model description inside an exported ONNX graph (torch-free: quantization rewrites it too)."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import atomic_path


def add_metadata(path: Path, info: ModelInfo) -> None:
    """Store ``info`` as the graph's idl metadata (in place of any it had) and name idl its producer."""
    import onnx

    proto = onnx.load(str(path))
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    for key, value in [*kept, (METADATA_KEY, info.to_json())]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "idl"
    onnx.save(proto, str(path))


def write_metadata(path: Path, info: ModelInfo) -> None:
    """Replace the idl metadata of the graph at ``path`` with ``info``; the file is replaced at once,
    never left half written."""
    with atomic_path(path) as tmp:
        shutil.copyfile(path, tmp)
        add_metadata(tmp, info)


def record_footprints(det_path: Path, mc_path: Path | None, info: ModelInfo) -> ModelInfo:
    """``info`` with the memory footprints of the float32 graphs ``det_path`` and ``mc_path``
    (:mod:`idl.infer.runtime.footprint`), written into both: idl-predict then sizes its tiles
    without ONNX's shape inference. A graph it cannot measure gets ``[]`` (tiles of the fixed
    default, without trying again)."""
    from idl.infer.runtime.model import load_onnx_model
    from idl.infer.runtime.precision import DETERMINISTIC, MONTE_CARLO
    from idl.infer.tasks.registry import kind_of

    loaded = load_onnx_model(det_path, kind_of, "cpu", "fp32")
    loaded.info = replace(info, footprint={})  # measured from the graphs, not an earlier record
    measured = {DETERMINISTIC: loaded.footprint(False)}
    if mc_path is not None:
        measured[MONTE_CARLO] = loaded.footprint(True)
    footprint = {key: list(asdict(cost).values()) if cost else [] for key, cost in measured.items()}
    info = replace(info, footprint=footprint)
    for path in (det_path, mc_path):
        if path is not None:
            write_metadata(path, info)
    return info
