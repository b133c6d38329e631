"""Checkpoints: everything needed to rebuild, export, fine-tune or resume a model.

Stored with ``torch.save`` as plain containers and tensors only, so ``torch.load(weights_only=True)``
reads them safely. Writes are atomic (temporary file + rename): an interrupted or failed save never
corrupts the previous checkpoint, which is replaced only once its successor is complete. A disk too
full for the new one is found before writing where possible and is :class:`DiskFull` either way.
A damaged file (empty, cut off, overwritten, a flipped byte) is named as such, with the other
checkpoint to use, and is never unpickled beyond what ``weights_only`` allows.
"""

from __future__ import annotations

import pickle
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from idl.infer.core.errors import ModelError
from idl.infer.core.model_info import ModelInfo
from idl.infer.io.images import DiskFull, atomic_path, free_space
from idl.models.registry import network_name, registered_network

FORMAT = "idl-checkpoint/1"
BEST_NAME = "best.pt"
LAST_NAME = "last.pt"
# a checkpoint's bytes beyond its tensors' (measured: 250-290 per tensor, a few kB in all)
PER_TENSOR = 300  # its zip record's headers, name and 64-byte alignment, its entry in the pickle
OVERHEAD = 16 * 1024  # the pickled containers and values, the zip's directory


def tensor_bytes(value: Any) -> tuple[int, int]:
    """The bytes and the number of the tensors in a checkpoint's (nested) containers."""
    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes(), 1
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    total, count = 0, 0
    for item in items:
        size, n = tensor_bytes(item)
        total, count = total + size, count + n
    return total, count


def checkpoint_bytes(data: dict[str, Any]) -> int:
    """About the bytes ``torch.save`` writes for ``data`` (within 25 % for many small tensors, far
    closer for networks)."""
    size, count = tensor_bytes(data)
    return size + count * PER_TENSOR + OVERHEAD


def save_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Atomically write a checkpoint dictionary (adds the format tag). Raises :class:`DiskFull`
    before writing when the free space cannot hold even its tensors, and when the disk fills up
    during the write; either way the previous file under ``path`` is left as it was."""
    path, data = Path(path), {"format": FORMAT, **payload}
    needed = checkpoint_bytes(data)
    if free_space(path.parent) < tensor_bytes(data)[0]:
        raise DiskFull(path, needed)
    # through a Python file, so that a full disk is an OSError in the chain of PyTorch's RuntimeError
    with atomic_path(path, needed) as tmp, open(tmp, "wb") as stream:
        torch.save(data, stream)
    return path


def _other(path: Path) -> Path | None:
    """The checkpoint beside ``path`` (``best.pt`` for ``last.pt`` and back), or None."""
    names = {BEST_NAME: LAST_NAME, LAST_NAME: BEST_NAME}
    return path.with_name(names[path.name]) if path.name in names else None


def _damaged(path: Path) -> ModelError:
    """A checkpoint that cannot be read whole, and what to use instead: the other checkpoint (for
    ``last.pt``, the command that trains anew from ``best.pt``'s weights) or a new training."""
    other = _other(path)
    damaged = f"{path} is not a complete idl checkpoint (corrupt or cut off)"
    if other is None or not other.is_file():
        return ModelError(f"{damaged}; use another checkpoint or train anew (idl-train --overwrite).")
    if path.name == BEST_NAME:
        return ModelError(
            f"{damaged}; use the other checkpoint ({other}) or train anew (idl-train --overwrite)."
        )
    config = path.parent / "config.json"
    return ModelError(
        f"{damaged}, so its run cannot be resumed; use the other checkpoint: idl-train {path.parent.parent} "
        f"--config {config} --overwrite --pretrained {other} trains anew from its weights (without "
        "--pretrained: from the start)."
    )


def _archive_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole zip archive (``torch.save``'s format), or None: empty, cut off
    (no central directory) or overwritten, or a member whose bytes fail their CRC."""
    if path.stat().st_size == 0:
        return "empty"
    if not zipfile.is_zipfile(path):
        return "not a zip archive"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return str(exc)
    return f"member {bad} is damaged" if bad else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a missing, damaged or foreign file is a
    :class:`ModelError` that says which and what to use instead."""
    path = Path(path)
    if not path.is_file() and path.name == LAST_NAME:
        raise ModelError(
            f"{path}: checkpoint not found: no training epoch has finished in {path.parent}, so there is "
            "nothing to resume. Run the same idl-train command without --resume to train from the start."
        )
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found.")
    if _archive_problem(path) is not None:
        raise _damaged(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a whole archive whose pickle holds more than plain values
        raise ModelError(
            f"{path}: not an idl checkpoint: it holds Python objects beyond tensors and plain values, "
            "which idl does not load (loading them could run code). idl-train writes best.pt and last.pt."
        ) from exc
    except Exception as exc:
        raise _damaged(path) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelError(f"{path}: not an idl checkpoint (expected a best.pt or last.pt from idl-train).")
    return payload


def architecture_name(model: nn.Module) -> str:
    """The checkpoint's architecture tag of a network: the name it is registered under
    (:mod:`idl.models.registry`), or its class name for a network no one registered, which
    :func:`model_from_checkpoint` cannot rebuild."""
    return network_name(model) or type(model).__name__


def model_payload(model: nn.Module, info: ModelInfo) -> dict[str, Any]:
    """The part of a checkpoint that describes and holds the network."""
    return {
        "architecture": architecture_name(model),
        "spec": asdict(model.spec),  # type: ignore[call-overload]
        "info": info.to_json(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def model_from_checkpoint(payload: dict[str, Any]) -> tuple[Any, ModelInfo]:
    """Rebuild the network (eval mode, CPU) and its :class:`ModelInfo` from a checkpoint, by the
    architecture it names (also the names older checkpoints used, such as ``unet2d``)."""
    registered = registered_network(payload.get("architecture"))
    if registered is None:
        raise ModelError(f"unsupported architecture '{payload.get('architecture')}' in checkpoint")
    model = registered.build(payload["spec"])
    model.load_state_dict(payload["state_dict"])
    return model.eval(), ModelInfo.from_json(payload["info"])
