"""``idl-evaluate``: score a folder of predictions against ground truth (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import parse_task_option, setup_logging, user_errors


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
    "--dims", type=click.Choice(["2", "3"]), default="2", show_default=True, help="2D images or 3D volumes."
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
    quiet: bool,
) -> None:
    """Evaluate predictions in PRED_DIR against ground truth in GT_DIR (matched by file name).

    Classification: PRED_DIR holds results.csv (from idl-predict) and GT_DIR is groundtruth.csv or the
    folder holding it."""
    setup_logging(quiet)
    from idl.infer.io.places import writable_folder
    from idl.infer.tasks.base import Folders
    from idl.infer.tasks.registry import task_named

    out = writable_folder(out_dir or pred_dir / "evaluation", "evaluation")
    folders = Folders(pred_dir, gt_dir, out, image_dir, num_classes, axes, int(dims), progress=not quiet)
    summary = task_named(task).evaluate_folder(folders)
    click.echo(f"{task_named(task).headline(summary)}; report: {out / 'report.html'}")


if __name__ == "__main__":
    main()
