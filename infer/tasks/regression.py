"""Pixel-wise regression on the inference side: values in ground-truth units (the network's output
mapped back with the training targets' mean and standard deviation), evaluated by Pearson r and the
absolute and squared errors."""

from __future__ import annotations

from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register


class Regression(PixelTask):
    kind = "regression"
    task = "regression"

    def headline(self, summary: Summary) -> str:
        return (
            f"Pearson median {summary['pearson_median']:.4f} (mean {summary['pearson_mean']:.4f}), "
            f"MAE {summary['mae']:.4g}, MSE {summary['mse']:.4g}, "
            f"mean relative error {summary['mean_relative_error']:.4f}"
        ) + extras(summary)

    def score(self, s: Scoring) -> Summary:
        from idl.infer.evaluate.regression import evaluate_regression

        return evaluate_regression(s.items, s.out_dir, axes=s.axes, progress=s.progress, dims=s.dims)


register(Regression())
