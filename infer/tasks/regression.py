"""Pixel-wise regression on the inference side: values in ground-truth units (the network's output
mapped back with the training targets' mean and standard deviation), evaluated by Pearson r and the
absolute and squared errors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask
from idl.infer.tasks.registry import register

if TYPE_CHECKING:
    from idl.infer.evaluate.semantic import EvalItem


class Regression(PixelTask):
    kind = "regression"
    task = "regression"

    def headline(self, summary: Summary) -> str:
        return (
            f"Pearson median {summary['pearson_median']:.4f} (mean {summary['pearson_mean']:.4f}), "
            f"MAE {summary['mae']:.4g}, MSE {summary['mse']:.4g}, "
            f"mean relative error {summary['mean_relative_error']:.4f}"
        ) + extras(summary)

    def score(
        self,
        items: list[EvalItem],
        out_dir: Path,
        num_classes: int | None,
        axes: str | None,
        progress: bool,
        dims: int,
    ) -> Summary:
        from idl.infer.evaluate.regression import evaluate_regression

        return evaluate_regression(items, out_dir, axes=axes, progress=progress, dims=dims)


register(Regression())
