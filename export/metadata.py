"""The model description inside an exported ONNX graph (torch-free: quantization rewrites it too)."""

from __future__ import annotations

import shutil
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
