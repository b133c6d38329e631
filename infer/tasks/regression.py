"""Pixel-wise regression on the inference side: values in ground-truth units (the network's output
mapped back with the training targets' mean and standard deviation), evaluated by Pearson r and the
absolute and squared errors."""

from __future__ import annotations

from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import ScaleLinear
from idl.infer.runtime.iospec import IOSpec, image_io
from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register


class Regression(PixelTask):
    kind = "regression"
    task = "regression"

    def out_channels(self, info: ModelInfo) -> int:
        return max(1, len(info.target_mean))  # one linear output per target channel

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """Values mapped back to ground-truth units with the training targets' mean and standard
        deviation; Monte Carlo uncertainty as the samples' standard deviation."""
        back = (ScaleLinear(info.target_std or 1.0, info.target_mean or 0.0, "c"),)
        return image_io(info, self.out_channels(info), back, "std")

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
