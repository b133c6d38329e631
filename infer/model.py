"""Loading a trained idl model for inference: a PROJECT/model folder or a ``.onnx`` file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

from idl.infer.errors import ModelError
from idl.infer.model_info import METADATA_KEY, ModelInfo
from idl.infer.session import OnnxRunner, choose_providers

DETERMINISTIC_NAME = "model.onnx"


def mc_path_for(path: Path) -> Path:
    """Where the Monte Carlo graph of a deterministic graph lives: ``model.onnx`` -> ``model_mc.onnx``."""
    return path.with_name(f"{path.stem}_mc{path.suffix}")


@dataclass
class LoadedModel:
    """A deterministic ONNX graph plus its optional Monte Carlo twin; sessions open on first use,
    so Monte Carlo prediction does not also hold the deterministic session in memory."""

    info: ModelInfo
    path: Path
    mc_path: Path | None
    device: str = "auto"
    _runner: OnnxRunner | None = field(default=None, repr=False)
    _mc_runner: OnnxRunner | None = field(default=None, repr=False)

    @property
    def runner(self) -> OnnxRunner:
        """The deterministic (eval-mode) session."""
        if self._runner is None:
            self._runner = OnnxRunner(self.path, self.device)
        return self._runner

    @property
    def mc_runner(self) -> OnnxRunner:
        """The Monte Carlo dropout session; raises :class:`ModelError` when the model has none."""
        if self.mc_path is None:
            raise ModelError(
                f"{self.path}: this model has no Monte Carlo dropout graph (expected "
                f"{mc_path_for(self.path).name} next to it). Predict without --mc-samples, or "
                "re-export the model with idl-export."
            )
        if self._mc_runner is None:
            self._mc_runner = OnnxRunner(self.mc_path, self.device)
        return self._mc_runner


def resolve_model_path(path: Path) -> Path:
    """The deterministic ``.onnx`` file behind a model folder or file path."""
    if path.is_dir():
        candidate = path / DETERMINISTIC_NAME
        if not candidate.is_file():
            raise ModelError(
                f"{path}: no {DETERMINISTIC_NAME} in this folder. Pass a trained PROJECT/model folder or a "
                ".onnx file; export one from a checkpoint with idl-export."
            )
        return candidate
    if path.suffix.lower() == ".onnx" and path.is_file():
        return path
    if not path.exists():
        raise ModelError(f"{path}: no such file or folder.")
    raise ModelError(f"{path}: not a model. Pass a PROJECT/model folder or a .onnx file.")


def load_model(path: str | Path, device: str = "auto") -> LoadedModel:
    """Open a trained model for prediction, reading its :class:`ModelInfo` from the ONNX metadata."""
    onnx_path = resolve_model_path(Path(path))
    meta = OnnxRunner(onnx_path, "cpu").metadata.get(METADATA_KEY)  # this session is dropped again
    if meta is None:
        raise ModelError(
            f"{onnx_path}: this ONNX file has no idl metadata, so its task, normalization and tiling "
            "needs are unknown. Use a model trained with idl-train (or exported with idl-export)."
        )
    info = ModelInfo.from_json(meta)
    mc = mc_path_for(onnx_path)
    choose_providers(device, ort.get_available_providers())  # fail early on an unavailable --device
    return LoadedModel(info=info, path=onnx_path, mc_path=mc if mc.is_file() else None, device=device)
