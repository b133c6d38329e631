"""Pixel-wise regression on the inference side: values in ground-truth units (the network's output
mapped back with the training targets' mean and standard deviation), evaluated by Pearson r and the
absolute and squared errors."""

from __future__ import annotations

from pathlib import Path

from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import ScaleLinear
from idl.infer.evaluate.agreement import REGRESSION_LIMIT, Agreement, relative_error
from idl.infer.runtime.iospec import IOSpec, image_io
from idl.infer.tasks.base import PackageText, Summary, extras
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register


class Regression(PixelTask):
    kind = "regression"
    task = "regression"
    demo = "in-silico staining (label-free image -> stain)"

    def write_demo(self, project: Path, n_train: int, n_test: int, seed: int, size: int) -> str:
        from idl.infer.core.project import pair_files
        from idl.infer.datasets.synthetic import NucleiSpec, write_regression_project
        from idl.infer.evaluate.baseline import intensity_pearson

        write_regression_project(project, n_train, n_test, seed, NucleiSpec(size=size))
        score = intensity_pearson(pair_files(project / "test"))
        return f"the raw intensity scores a median Pearson r of {score:.4f}"

    def out_channels(self, info: ModelInfo) -> int:
        return max(1, len(info.target_mean))  # one linear output per target channel

    def agreement(self, info: ModelInfo) -> Agreement:
        return Agreement(
            "mean |int8 - float32| / std of the float32 values", REGRESSION_LIMIT, relative_error
        )

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """Values mapped back to ground-truth units with the training targets' mean and standard
        deviation; Monte Carlo uncertainty as the samples' standard deviation, times the factor fitted
        on the validation images (``sigma_scale``, :mod:`idl.train.calibrate`)."""
        back = (ScaleLinear(info.target_std or 1.0, info.target_mean or 0.0, "c"),)
        return image_io(info, self.out_channels(info), back, "std", info.sigma_scale)

    def package_text(self, info: ModelInfo) -> PackageText:
        training = info.training
        return PackageText(
            title="pixel-wise regression",
            network=f"{info.dims}D U-Net",
            tags=("unet", "pixel-regression", "image-restoration"),
            tensor="prediction",
            output="per-pixel prediction in ground-truth units",
            channels=tuple(f"target{i}" for i in range(self.out_channels(info))),
            value_range=(None, None),
            use="per-pixel predictions in the units of the training ground truth (the network's output is "
            "mapped back with the training targets' mean and standard deviation, `scale_linear`)."
            + (
                " The Monte Carlo graph's samples' standard deviation is multiplied by "
                f"{info.sigma_scale:.4g} (fitted on the validation images so that the residuals are "
                "standard normal in its units; "
                "`config.idl` `sigma_scale`)."
                if info.sigma_scale != 1.0
                else ""
            ),
            targets=f"- targets: {len(info.target_mean)} channel(s), mean {list(info.target_mean)}, "
            f"standard deviation {list(info.target_std)}",
            inputs=f"- training patches: {training.get('patch', '?')} px, loss: {training.get('loss', '?')}",
        )

    def headline(self, summary: Summary) -> str:
        return (
            f"Pearson median {summary['pearson_median']:.4f} (mean {summary['pearson_mean']:.4f}), "
            f"MAE {summary['mae']:.4g}, MSE {summary['mse']:.4g}, "
            f"mean relative error {summary['mean_relative_error']:.4f}"
        ) + extras(summary)

    def score(self, s: Scoring) -> Summary:
        from idl.infer.evaluate.regression import evaluate_regression

        return evaluate_regression(
            s.items,
            s.out_dir,
            axes=s.axes,
            progress=s.progress,
            dims=s.dims,
            on_nonfinite=s.on_nonfinite,
            notes=s.notes,
        )


register(Regression())
