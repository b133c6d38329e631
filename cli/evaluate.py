"""``idl-evaluate``: score a folder of predictions against ground truth (no torch needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from idl.cli.common import digits, parse_task_option, parse_threshold_option, setup_logging, user_errors
from idl.infer.core.axes import DIMS
from idl.infer.core.errors import DataError
from idl.infer.core.nonfinite import POLICIES


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("pred_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("gt_dir", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--task",
    default="semantic",
    show_default=True,
    callback=parse_task_option,
    help="Task of the predictions.",
)
@click.option(
    "--images",
    "image_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder with the input images (shown in the figures).",
)
@click.option(
    "--out",
    "out_dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to write the evaluation [default: PRED_DIR/evaluation].",
)
@click.option(
    "--num-classes",
    default=None,
    type=click.IntRange(min=2),
    help="Number of classes including background [default: from the ground truth].",
)
@click.option("--axes", default=None, help="Axis order of the images, e.g. yx, yxc, cyx, zyx.")
@click.option(
    "--dims", type=click.Choice(digits(DIMS)), default="2", show_default=True, help="2D images or 3D volumes."
)
@click.option(
    "--threshold",
    default="otsu",
    show_default=True,
    callback=parse_threshold_option,
    help="Predictions that hold probabilities (0..1) instead of masks: 'otsu' or a probability in (0, 1), "
    "as idl-predict makes masks of them (said in a warning).",
)
@click.option(
    "--on-nonfinite",
    type=click.Choice(POLICIES),
    default="replace",
    show_default=True,
    help="NaN or inf in predictions: replace (their pixels are left out of the scores, with a warning) or "
    "error (refuse the prediction). See docs/robustness.md.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Ground truth without a prediction is an error (by default a warning, and the count is in the "
    "summary).",
)
@click.option(
    "--run",
    "run_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The model folder of the idl-train run that made the predictions (PROJECT/model): the report "
    "also shows its settings, data, plan and training curves.",
)
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
@user_errors
def main(
    pred_dir: Path,
    gt_dir: Path,
    task: str,
    image_dir: Path | None,
    out_dir: Path | None,
    num_classes: int | None,
    axes: str | None,
    dims: str,
    threshold: str | float,
    on_nonfinite: str,
    strict: bool,
    run_dir: Path | None,
    quiet: bool,
) -> None:
    """Evaluate predictions in PRED_DIR against ground truth in GT_DIR (matched by file name).

    Classification: PRED_DIR holds results.csv (from idl-predict) and GT_DIR is groundtruth.csv or the
    folder holding it. Nothing is ever written into GT_DIR."""
    setup_logging(quiet)
    from idl.infer.evaluate.checks import coverage_note
    from idl.infer.io.places import check_apart, writable_folder
    from idl.infer.tasks.base import Folders
    from idl.infer.tasks.registry import task_named

    check_order(pred_dir, gt_dir)
    out = out_dir or pred_dir / "evaluation"
    role = "--out" if out_dir is not None else "the evaluation folder"
    check_apart(out, [image_dir] if image_dir is not None else [], gt_dir, role)
    created = not out.exists()
    writable_folder(out, "evaluation")
    folders = Folders(
        pred_dir,
        gt_dir,
        out,
        image_dir,
        num_classes,
        axes,
        int(dims),
        progress=not quiet,
        threshold=threshold,
        on_nonfinite=on_nonfinite,
        strict=strict,
    )
    try:
        summary = task_named(task).evaluate_folder(folders)
    except BaseException:
        if created:  # a refused evaluation leaves no folder of its own behind (nor figures in it)
            shutil.rmtree(out, ignore_errors=True)
        raise
    if run_dir is not None:
        from idl.infer.service.load import load_model
        from idl.infer.service.run import report_run

        if not report_run(out, load_model(run_dir)):
            raise DataError(
                f"--run {run_dir}: not a model folder written by idl-train (no config.json next to "
                "model.onnx). Give the PROJECT/model folder of the run that made the predictions."
            )
    click.echo(f"{task_named(task).headline(summary)}{coverage_note(summary)}; report: {out / 'report.html'}")


def check_order(pred_dir: Path, gt_dir: Path) -> None:
    """Refuse arguments that are surely not PRED_DIR GT_DIR, before anything is written: one folder
    given as both, or predictions given as ground truth (the folder holds idl-predict's record of its
    outputs and PRED_DIR does not) or a project's ground truth given as predictions. Swapped, the
    evaluation would be written into the ground truth and its scores be those of the wrong way round."""
    from idl.infer.core.project import GT_DIR, IMAGE_DIR
    from idl.infer.io.record import RECORD_NAME, is_prediction_folder

    order = "The order is idl-evaluate PRED_DIR GT_DIR; nothing was written."
    if pred_dir.resolve() == gt_dir.resolve():
        raise DataError(
            f"{pred_dir} is given as both PRED_DIR and GT_DIR: every prediction would be scored against "
            f"itself. {order}"
        )
    if is_prediction_folder(pred_dir):
        return
    if is_prediction_folder(gt_dir):
        raise DataError(
            f"{gt_dir} (GT_DIR) holds idl-predict's predictions (its record {RECORD_NAME}) and {pred_dir} "
            f"(PRED_DIR) does not: the arguments look swapped. {order}"
        )
    if pred_dir.name == GT_DIR and (pred_dir.parent / IMAGE_DIR).is_dir():
        images = pred_dir.parent / IMAGE_DIR
        raise DataError(
            f"{pred_dir} (PRED_DIR) is a project's ground-truth folder (next to {images}): the arguments "
            f"look swapped. {order}"
        )


if __name__ == "__main__":
    main()
