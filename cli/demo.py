"""``idl-demo``: write a small synthetic nuclei project to try idl end to end."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import setup_logging, user_errors
from idl.infer.tasks.registry import task_named, task_names


def demo_tasks() -> list[str]:
    """The tasks with a synthetic demo project."""
    return [name for name in task_names() if task_named(name).demo]


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
    type=click.Choice(demo_tasks()),
    help="; ".join(f"{name}: {task_named(name).demo}" for name in demo_tasks()) + ".",
)
@user_errors
def main(project: Path, n_train: int, n_test: int, size: int, seed: int, task: str) -> None:
    """Write PROJECT/{train,test}/{image,groundtruth} with synthetic nuclei: fluorescence images and
    exact masks, (--task instance) label images of partly touching nuclei, (--task regression) label-free
    images and their fluorescence stain, or
    (--task classification) one nucleus per image and groundtruth/groundtruth.csv."""
    setup_logging()
    if project.exists() and any(project.iterdir()):
        raise click.ClickException(f"{project} is not empty; choose a new folder for the demo project.")
    baseline = task_named(task).write_demo(project, n_train, n_test, seed, size)
    click.echo(f"wrote {n_train} training and {n_test} test images to {project}")
    click.echo(f"baseline: {baseline}")
    click.echo(f"next: idl-train {project} --task {task}")


if __name__ == "__main__":
    main()
