"""Evaluation of an idl model's predictions, whichever its task."""

from __future__ import annotations

from pathlib import Path

from idl.infer.evaluate.instance import evaluate_instance
from idl.infer.evaluate.regression import evaluate_regression
from idl.infer.evaluate.semantic import EvalItem, evaluate_semantic


def evaluate_task(
    task: str,
    items: list[EvalItem],
    out_dir: Path,
    num_classes: int | None = None,
    axes: str | None = None,
    progress: bool = True,
    dims: int = 2,
) -> dict[str, float | int]:
    """Evaluate predictions of an idl model of ``task`` (semantic, instance or regression), 2D or 3D."""
    if task == "regression":
        return evaluate_regression(items, out_dir, axes=axes, progress=progress, dims=dims)
    if task == "instance":
        return evaluate_instance(items, out_dir, axes=axes, progress=progress, dims=dims)
    return evaluate_semantic(items, out_dir, num_classes, axes=axes, progress=progress, dims=dims)
