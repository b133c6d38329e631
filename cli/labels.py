"""``idl-labels``: instance ground truth from the DSB2018 layout or from binary masks (no torch)."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import setup_logging, user_errors
from idl.infer.core.project import SPLITS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Make label images (0 background, 1..N objects) for instance segmentation."""
    setup_logging()


@main.command("dsb2018")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("project", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--split",
    default="train",
    show_default=True,
    type=click.Choice(SPLITS),
    help="The project split the samples go to.",
)
@user_errors
def dsb2018(source: Path, project: Path, split: str) -> None:
    """Import SOURCE/<id>/images/<id>.png and SOURCE/<id>/masks/*.png into PROJECT/<split>."""
    from idl.infer.datasets.dsb2018 import import_dsb2018

    count = import_dsb2018(source, project, split)
    click.echo(f"{count} sample(s) written to {project / split}")


@main.command("from-masks")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the label images (<mask name>.tif).",
)
@click.option("--split-touching", is_flag=True, help="Cut touching objects along distance-transform valleys.")
@click.option(
    "--min-distance",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="With --split-touching: pixels between object centres at least.",
)
@user_errors
def from_masks(inputs: tuple[Path, ...], out_dir: Path, split_touching: bool, min_distance: int) -> None:
    """Label images (OUT/<name>.tif, uint16) from binary masks: files or folders."""
    from idl.infer.io.images import read_image, write_tiff
    from idl.infer.io.omezarr import image_stem
    from idl.infer.post.instance_labels import binary_to_labels
    from idl.infer.tiling.predict import collect_inputs

    files = collect_inputs(inputs)
    for path in files:
        labels = binary_to_labels(read_image(path), split_touching, min_distance)
        write_tiff(out_dir / f"{image_stem(path)}.tif", labels)
        click.echo(f"{path.name}: {int(labels.max())} object(s)")


if __name__ == "__main__":
    main()
