"""What the evaluation report shows of the training run that made a model: its settings
(``config.json``), its plan (``plan.json``), its training history (``history.json``, written by
``idl-train`` after every epoch) and the data it was trained on (the model description). All of it is
read from the model folder ``idl-train`` writes (``PROJECT/model``); predictions made elsewhere have
no run, and their report leaves these sections out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idl.infer.core.model_info import ModelInfo

CONFIG_FILE = "config.json"
PLAN_FILE = "plan.json"
HISTORY_FILE = "history.json"

# the settings a reader looks for first, in this order (config.json keys); the rest follow
KEY_SETTINGS = (
    "task",
    "model",
    "dims",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "learning_rate",
    "loss",
    "augment",
    "dropout",
    "mc_samples",
    "tta",
    "calibrate",
    "seed",
)


def history_json(history: list[dict[str, float]], best_epoch: int, metric: str) -> str:
    """``history.json``: the per-epoch losses and validation score, and the epoch that was kept."""
    return json.dumps({"metric": metric, "best_epoch": best_epoch, "epochs": history}, indent=1)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class RunRecord:
    """A training run as the report shows it (empty parts where a file is missing)."""

    folder: Path
    settings: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    metric: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: Path, info: ModelInfo | None = None) -> RunRecord | None:
        """The run of the model folder ``folder``; None when it holds no ``config.json`` (not a
        folder ``idl-train`` wrote)."""
        settings = _read_json(folder / CONFIG_FILE)
        if not isinstance(settings, dict):
            return None
        plan = _read_json(folder / PLAN_FILE)
        history = _read_json(folder / HISTORY_FILE)
        history = history if isinstance(history, dict) else {}
        return cls(
            folder,
            settings,
            plan if isinstance(plan, dict) else {},
            list(history.get("epochs", [])),
            int(history.get("best_epoch", 0)),
            str(history.get("metric", "")),
            data_facts(info) if info is not None else {},
        )

    def ordered_settings(self) -> list[tuple[str, Any]]:
        """The settings, the key ones first."""
        first = [(k, self.settings[k]) for k in KEY_SETTINGS if k in self.settings]
        return first + [(k, v) for k, v in self.settings.items() if k not in KEY_SETTINGS]


def data_facts(info: ModelInfo) -> dict[str, Any]:
    """What the model description says of the training data: counts, patch, channels, classes,
    pixel size and the calibration."""
    training = info.training
    facts: dict[str, Any] = {
        "training images": training.get("n_train"),
        "validation images": training.get("n_val"),
        "validation": training.get("validation"),
        "patch (px)": " x ".join(map(str, training["patch"])) if training.get("patch") else None,
        "input channels": info.in_channels,
        "axes": info.axes,
        "classes": ", ".join(info.class_names) if info.class_names else info.num_classes or None,
        "pixel size (um, " + ",".join(info.axes[-len(info.pixel_size) :]) + ")": ", ".join(
            f"{s:.4g}" for s in info.pixel_size
        )
        if info.pixel_size
        else None,
        "network": training.get("architecture"),
        "training steps": training.get("steps"),
    }
    calibration = training.get("calibration")
    if isinstance(calibration, dict) and "temperature" in calibration:
        before, after = (calibration.get(k, float("nan")) for k in ("ece_before", "ece_after"))
        facts["calibration"] = (
            f"temperature {calibration['temperature']:.3f}; validation ECE {before:.4f} -> {after:.4f}"
        )
    elif isinstance(calibration, dict) and "sigma_scale" in calibration:
        before, after = (
            calibration.get(k, float("nan")) for k in ("coverage_1sigma_before", "coverage_1sigma_after")
        )
        facts["calibration"] = (
            f"Monte Carlo sigma x {calibration['sigma_scale']:.3f}; validation share within ±1 sigma "
            f"{before:.3f} -> {after:.3f} (0.683 when right)"
        )
    return {k: v for k, v in facts.items() if v not in (None, "", [])}


def save_training_curves(path: Path, run: RunRecord) -> Path | None:
    """Training and validation loss per epoch (left) and the validation score (right), the kept
    epoch marked; None without a history."""
    if not run.history:
        return None
    from idl.infer.evaluate.plots import _pyplot, save_figure

    plt = _pyplot()
    epochs = [h["epoch"] for h in run.history]
    fig, (losses, score) = plt.subplots(1, 2, figsize=(9, 3.4))
    losses.plot(epochs, [h.get("train_loss") for h in run.history], "o-", ms=3, label="training loss")
    if any("val_loss" in h for h in run.history):
        losses.plot(epochs, [h.get("val_loss") for h in run.history], "o-", ms=3, label="validation loss")
    losses.set_xlabel("epoch")
    losses.set_ylabel("loss")
    losses.legend(fontsize=8)
    key = f"val_{run.metric}"
    if any(key in h for h in run.history):
        score.plot(epochs, [h.get(key) for h in run.history], "o-", ms=3, color="tab:green")
        score.set_ylabel(f"validation {run.metric}")
    else:
        score.text(0.5, 0.5, "no validation", ha="center", va="center", transform=score.transAxes)
    score.set_xlabel("epoch")
    for ax in (losses, score):
        if run.best_epoch:
            ax.axvline(run.best_epoch, color="tab:red", ls="--", lw=1, label=f"kept: epoch {run.best_epoch}")
    score.legend(fontsize=8)
    fig.suptitle("training", fontsize=10)
    return save_figure(fig, path)
