"""``idl-train``: train, export, predict the test set through ONNX Runtime and evaluate."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import (
    digits,
    interruptible,
    parse_task_option,
    require_training_extras,
    setup_logging,
    user_errors,
)
from idl.infer.core.axes import DIMS
from idl.infer.core.model_info import DROPOUT_PLACES
from idl.infer.core.nonfinite import POLICIES
from idl.infer.runtime.session import DEVICES
from idl.infer.tiling.tta import TTA_SETTINGS
from idl.train.choices import AMP_CHOICES
from idl.train.plan import SCHEDULES


def _list_option(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if value.strip().lower() in ("", "none"):
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


EXAMPLES = """Examples:

\b
  idl-train PROJECT --task semantic            # masks in PROJECT/train/groundtruth
  idl-train PROJECT --task instance            # label images, one value per object
  idl-train PROJECT --task classification      # PROJECT/train/groundtruth.csv
  idl-train --config instantdl_config.json     # an InstantDL config file as it is
  idl-train PROJECT --task semantic --resume   # continue a stopped run
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.argument("project", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--task",
    callback=parse_task_option,
    help="semantic, instance, regression or classification (InstantDL spellings work too).",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="JSON config (ours or InstantDL's); flags override it.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=1),
    help="Training budget in epochs of --steps-per-epoch optimizer steps [default: planned from the data "
    "and the device].",
)
@click.option(
    "--steps-per-epoch",
    type=click.IntRange(min=1),
    help="Optimizer steps between two validations [default: 50 on CPU, 250 on GPU].",
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    help="Share of the training images held out to validate (one image: a block of it) [default: 0.2]; "
    "0 trains the whole budget without validation.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Patches (images for classification) per step [default: planned; classification 32].",
)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Adam step size [default: 1e-3; 1e-4 for Mask R-CNN].",
)
@click.option(
    "--lr-schedule",
    type=click.Choice(SCHEDULES),
    help="After a linear warm-up: trapezoid (constant, then linearly to zero over the last 40 % of the "
    "steps), cosine, or constant [default: trapezoid].",
)
@click.option(
    "--patience",
    type=click.IntRange(min=1),
    help="Stop after this many epochs without a better validation score [default: half the epochs, at "
    "least 10].",
)
@click.option(
    "--budget-cap",
    type=click.FloatRange(min=1),
    help="A run whose validation score still rises where its learning rate would start to decay gets "
    "half its planned epochs more, again and again, and one no better than the answer without training "
    "(e.g. Otsu's threshold) starts again, within this many times the planned epochs; 1: never "
    "[default: 3 for a planned budget, 1 when --epochs is set].",
)
@click.option("--seed", type=int, help="Random seed [default: 42].")
@click.option(
    "--pretrained",
    help="Start from a bioimage.io package (zip, folder, rdf.yaml, or a bioimage.io id, DOI or URL, "
    "fetched into the model cache once) or an idl checkpoint / model folder.",
)
@click.option(
    "--freeze-encoder/--no-freeze-encoder",
    default=None,
    help="With --pretrained: train only the decoder and head [default: off].",
)
@click.option(
    "--package/--no-package",
    default=None,
    help="Also write a validated bioimage.io package to PROJECT/model [default: on].",
)
@click.option(
    "--save-augmentations",
    is_flag=True,
    default=None,
    help="Write PROJECT/model/augmentations.png (augmented training samples and their ground truth) "
    "before training, to check the augmentations.",
)
@click.option(
    "--author",
    "authors",
    multiple=True,
    callback=lambda ctx, param, value: tuple(value) or None,
    help="Author named in the bioimage.io package (repeatable) [default: none named].",
)
@click.option(
    "--augment",
    callback=_list_option,
    help="Comma-separated augmentations, or 'none': flip, hflip, vflip, rot90, rotate, zoom, shift, elastic, "
    "threshold_background, resample, blur, contrast, brightness, gamma, gaussian_noise, poisson_noise, "
    "feature_scaling, std_normalization [default: flip,rot90; classification: shift,contrast,brightness, "
    "with flips and quarter turns added when the data shows they keep the classes]. Probabilities and "
    "ranges: in the config file (augment_settings).",
)
@click.option(
    "--loss",
    help="bce, dice, bce+dice, focal, tversky (binary); ce, dice, ce+dice, focal, tversky (multi-class); "
    "mse, mae, huber (regression). InstantDL's names work too (binary_crossentropy, dice_loss, ...).",
)
@click.option(
    "--num-classes", type=click.IntRange(min=2), help="Classes incl. background [default: from the masks]."
)
@click.option(
    "--image-size",
    type=click.IntRange(min=8),
    help="Training patch side in pixels [default: planned]; classification: resize every image to this side "
    "[default: the images' own size].",
)
@click.option(
    "--model",
    help="Network: unet or segnet (semantic, 2D); unet (regression); unet, flows, stardist or maskrcnn "
    "(instance); resnet18, resnet34, resnet50 or resnet101 (classification) [default: unet; "
    "classification: resnet18 on a CPU, resnet50 on a GPU].",
)
@click.option(
    "--class-weights",
    help="Classification: 'balanced' (inverse class frequency) or one weight per class, e.g. 1,4 "
    "[default: equal].",
)
@click.option(
    "--dims", type=click.Choice(digits(DIMS)), help="Spatial dimensions [default: 3 for volumes, else 2]."
)
@click.option(
    "--axes", help="Axis order of the images, e.g. yx, yxc, cyx, zyx, czyx [default: guessed and logged]."
)
@click.option(
    "--depth", type=click.IntRange(1, 6), help="U-Net levels [default: planned from the object sizes]."
)
@click.option(
    "--filters", "base_filters", type=click.IntRange(min=1), help="Filters of the first level [default: 16]."
)
@click.option(
    "--dropout",
    type=click.FloatRange(0, 1, max_open=True),
    help="Dropout rate [default: 0.2 in 2D, 0.3 in 3D].",
)
@click.option(
    "--dropout-at",
    type=click.Choice(DROPOUT_PLACES),
    help="U-Net: where the dropout sits: after every encoder level (InstantDL), after the bottleneck "
    "and every decoder level (the encoder then runs once for all Monte Carlo samples of a tile) or "
    "before the last 1x1 layer only (samples cost little, but flagged errors worse on real nuclei: "
    "docs/benchmarks.md) [default: encoder].",
)
@click.option(
    "--anisotropic/--isotropic",
    default=None,
    help="3D: first level pools in-plane only, for voxels long in z [default: from the TIFF voxel size].",
)
@click.option(
    "--patch-z", type=click.IntRange(min=1), help="3D: depth of the training patches [default: planned]."
)
@click.option(
    "--uncertainty/--no-uncertainty", default=None, help="Monte Carlo dropout on the test set [default: on]."
)
@click.option("--mc-samples", type=click.IntRange(min=2), help="Monte Carlo samples [default: 10].")
@click.option(
    "--tta",
    type=click.Choice(TTA_SETTINGS),
    help="Test-time augmentation of the test set's prediction (as idl-predict --tta) [default: auto: "
    "d4 with the Monte Carlo samples of semantic segmentation, else off].",
)
@click.option("--evaluate/--no-evaluate", default=None, help="Evaluate the test set [default: on].")
@click.option(
    "--calibrate/--no-calibrate",
    default=None,
    help="Fit a temperature on the validation images so the probabilities mean what they say "
    "(semantic, classification), or a factor of the Monte Carlo standard deviation (regression) "
    "[default: on].",
)
@click.option(
    "--int8/--no-int8",
    default=None,
    help="Also write int8 graphs for CPUs (model_int8.onnx, model_int8_mc.onnx; idl-predict --precision), "
    "calibrated on training patches and kept only where they give the float32 graph's answers on the "
    "validation images (mask pixels within 0.1 %, values within 1 % of their spread, classes of 99.5 % "
    "of the images) [default: on].",
)
@click.option(
    "--tracking-uri", help="MLflow store [default: sqlite:///PROJECT/mlflow.db or $MLFLOW_TRACKING_URI]."
)
@click.option(
    "--on-nonfinite",
    type=click.Choice(POLICIES),
    help="NaN or inf pixels in images: replace (ignored by the normalization, 0 for the network, with a "
    "warning) or error (refuse) [default: replace]. See docs/robustness.md.",
)
@click.option("--device", type=click.Choice(DEVICES), help="Training device [default: auto].")
@click.option(
    "--amp",
    type=click.Choice(AMP_CHOICES),
    help="Mixed precision on a CUDA GPU: bf16 where the GPU has it, else fp16 with a gradient scaler; "
    "a CPU trains in float32 [default: auto].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    help="Data-loader worker processes [default: up to 4 with a GPU (pinned memory), 0 on a CPU].",
)
@click.option(
    "--registered-model",
    help="Name under which the validated package is registered in MLflow's model registry "
    "[default: the model's name, e.g. PROJECT-unet2d].",
)
@click.option("--resume", is_flag=True, help="Continue the training saved in PROJECT/model/last.pt.")
@click.option("--overwrite", is_flag=True, help="Replace a model already trained in PROJECT/model.")
@click.option("--quiet", is_flag=True, help="Only warnings and errors, no progress bars.")
@user_errors
@interruptible(
    "idl-train PROJECT --resume continues from the last finished epoch (PROJECT/model/last.pt); "
    "before the first epoch ends there is none: run the same command again."
)
def main(
    project: Path | None,
    config_file: Path | None,
    resume: bool,
    overwrite: bool,
    quiet: bool,
    dims: str | None,
    **options: object,
) -> None:
    """Train a model on PROJECT/train, then predict and evaluate PROJECT/test with the exported ONNX model.

    PROJECT may be left out when the --config file names it in 'path' (as InstantDL's files do).

    Several processes (GPUs, machines) train together when torchrun starts idl-train:
    torchrun --nproc_per_node 2 $(which idl-train) PROJECT --task semantic"""
    require_training_extras("idl-train")
    from idl.train.distributed import from_environment

    main_rank = from_environment().main
    setup_logging(quiet or not main_rank)  # one process speaks for all
    from idl.train.config import ConfigError, project_of_config, resolve_config
    from idl.train.pipeline import train_project

    if project is None:
        if config_file is None:
            raise ConfigError("give the PROJECT folder (or a --config file whose 'path' names it)")
        project = project_of_config(config_file)

    saved = project / "model" / "config.json"
    if resume and config_file is None and saved.is_file():
        config_file = saved  # resume with the settings the run started with; flags still override
    if options.get("task") is None and config_file is None:
        raise ConfigError(
            "name the task: --task semantic, instance, regression or classification (or give a --config "
            "file with use_algorithm / task)"
        )
    config = resolve_config(config_file, dims=int(dims) if dims else None, **options)
    result = train_project(project, config, resume=resume, overwrite=overwrite, progress=not quiet)
    if not main_rank:
        return
    from idl.infer.runtime.model import mc_path_for
    from idl.infer.runtime.precision import int8_path_for

    int8 = int8_path_for(result.onnx)
    graphs = [
        p.name
        for p in (result.onnx, result.onnx_mc, int8, mc_path_for(int8))
        if p is not None and p.is_file()
    ]
    click.echo(
        f"model: {result.model_dir} (best epoch {result.state.best_epoch} of {result.state.epoch}; "
        f"{', '.join(graphs)})"
    )
    if result.package is not None:
        click.echo(f"bioimage.io package (validated): {result.package}")
    if result.summary:
        from idl.infer.tasks.registry import task_named

        click.echo(f"test: {task_named(config.task).headline(result.summary)}")
        click.echo(f"report: {project / 'evaluation' / 'report.html'}")
    click.echo(f"MLflow run {result.run_id}")


if __name__ == "__main__":
    main()
