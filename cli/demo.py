"""``idl-demo``: write a small synthetic nuclei project to try idl end to end."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import setup_logging, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("project", type=click.Path(file_okay=False, path_type=Path))
@click.option("--n-train", default=40, show_default=True, type=click.IntRange(min=2), help="Training images.")
@click.option("--n-test", default=10, show_default=True, type=click.IntRange(min=1), help="Test images.")
@click.option(
    "--size", default=256, show_default=True, type=click.IntRange(min=32), help="Image side in pixels."
)
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed.")
@click.option(
    "--task",
    default="semantic",
    show_default=True,
    type=click.Choice(["semantic", "instance", "regression", "classification"]),
    help="semantic: nuclei and their masks; instance: touching nuclei and their label images; regression: "
    "in-silico staining (label-free image -> stain); classification: single nuclei, round, elongated or "
    "dividing (32 x 32 px).",
)
@user_errors
def main(project: Path, n_train: int, n_test: int, size: int, seed: int, task: str) -> None:
    """Write PROJECT/{train,test}/{image,groundtruth} with synthetic nuclei: fluorescence images and
    exact masks, (--task instance) label images of partly touching nuclei, (--task regression) label-free
    images and their fluorescence stain, or
    (--task classification) one nucleus per image and groundtruth/groundtruth.csv."""
    setup_logging()
    from idl.infer.core.project import pair_files
    from idl.infer.datasets.synthetic import (
        NucleiSpec,
        write_classification_project,
        write_instance_project,
        write_regression_project,
        write_semantic_project,
    )
    from idl.infer.evaluate.baseline import intensity_pearson, otsu_instance_scores, otsu_jaccard

    if project.exists() and any(project.iterdir()):
        raise click.ClickException(f"{project} is not empty; choose a new folder for the demo project.")
    if task == "classification":
        write_classification_project(project, n_train, n_test, seed, size=min(size, 64))
        baseline = "always answering the most common class scores accuracy 0.33 (3 balanced classes)"
    elif task == "regression":
        write_regression_project(project, n_train, n_test, seed, NucleiSpec(size=size))
        score = intensity_pearson(pair_files(project / "test"))
        baseline = f"the raw intensity scores a median Pearson r of {score:.4f}"
    elif task == "instance":
        write_instance_project(project, n_train, n_test, seed, NucleiSpec(size=size))
        scores = otsu_instance_scores(pair_files(project / "test"))
        baseline = (
            f"Otsu threshold + connected components of the raw test images score ap50 {scores['ap50']:.4f}, "
            f"ap50_95 {scores['ap50_95']:.4f}"
        )
    else:
        write_semantic_project(project, n_train, n_test, seed, NucleiSpec(size=size))
        score = otsu_jaccard(pair_files(project / "test"))
        baseline = f"Otsu threshold of the raw test images scores Jaccard {score:.4f}"
    click.echo(f"wrote {n_train} training and {n_test} test images to {project}")
    click.echo(f"baseline: {baseline}")
    click.echo(f"next: idl-train {project} --task {task}")


if __name__ == "__main__":
    main()
