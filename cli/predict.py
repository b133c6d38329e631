"""``idl-predict``: run a trained model over images with ONNX Runtime (no torch needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from idl.cli.common import parse_threshold_option, setup_logging, summary_line, user_errors
from idl.infer.core.errors import DataError
from idl.infer.runtime.session import DEVICES

if TYPE_CHECKING:
    from idl.infer.runtime.model import LoadedModel


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("model")
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the predictions (<image name>.tif); required unless --info.",
)
@click.option(
    "--info", "show_info", is_flag=True, help="Describe MODEL (inputs, outputs, metrics, MC) and exit."
)
@click.option(
    "--mc-samples",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Monte Carlo dropout samples; >= 2 also writes uncertainty/<image name>.tif.",
)
@click.option(
    "--tile-size",
    default=None,
    type=click.IntRange(min=8),
    help="Side of the tiles fed to the model (bounds memory) [default: 512 px in 2D, 128 voxels in 3D].",
)
@click.option(
    "--overlap",
    default=None,
    type=click.FloatRange(0, 1, max_open=True),
    help="Fraction of a tile shared with each neighbour [default: the model's own halo].",
)
@click.option(
    "--batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Tiles (or Monte Carlo samples) per ONNX Runtime call.",
)
@click.option(
    "--threshold",
    default="otsu",
    show_default=True,
    callback=parse_threshold_option,
    help="Binary segmentation: 'otsu' or a probability in (0, 1).",
)
@click.option(
    "--axes", default=None, help="Axis order of the inputs, e.g. yx, yxc, cyx, zyx, czyx [default: guessed]."
)
@click.option(
    "--gt",
    "gt_dir",
    default=None,
    type=click.Path(exists=True, path_type=Path),
    help="Ground-truth folder (classification: groundtruth.csv or its folder): also evaluate into "
    "OUT/evaluation.",
)
@click.option("--save-probabilities", is_flag=True, help="Also write probabilities/<image name>.tif.")
@click.option(
    "--out-format",
    type=click.Choice(["tif", "zarr"]),
    default="tif",
    show_default=True,
    help="TIFF files, or OME-Zarr folders (<image name>.ome.zarr) for napari and other OME-Zarr tools.",
)
@click.option("--device", default="auto", show_default=True, type=click.Choice(DEVICES))
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
@user_errors
def main(
    model: str,
    inputs: tuple[Path, ...],
    out_dir: Path | None,
    show_info: bool,
    mc_samples: int,
    tile_size: int | None,
    overlap: float | None,
    batch_size: int,
    threshold: str | float,
    axes: str | None,
    gt_dir: Path | None,
    save_probabilities: bool,
    out_format: str,
    device: str,
    quiet: bool,
) -> None:
    """Predict INPUT images or folders with MODEL: a PROJECT/model folder, a .onnx file, or a
    bioimage.io package (.zip, folder or rdf.yaml) with ONNX weights, ours or anyone's."""
    setup_logging(quiet)
    from idl.infer.runtime.load import load_model
    from idl.infer.tiling.predict import PredictOptions, collect_inputs, predict_files

    if show_info:
        from idl.infer.runtime.describe import describe

        click.echo(describe(load_model(model, device)))
        return
    if not inputs:
        raise click.UsageError("give at least one INPUT image or folder (or --info to describe MODEL)")
    if out_dir is None:
        raise click.UsageError("--out DIR is required to predict")
    if mc_samples == 1:
        raise click.BadParameter("use 0 (off) or at least 2 samples", param_hint="--mc-samples")
    loaded = load_model(model, device)
    files = collect_inputs(inputs)
    from idl.infer.tasks.classify import is_classifier

    if is_classifier(loaded):
        _classify(loaded, files, out_dir, mc_samples, axes, gt_dir, batch_size, quiet)
        return
    if gt_dir is not None and not gt_dir.is_dir():
        raise click.BadParameter(f"{gt_dir} is a file; give the ground-truth folder", param_hint="--gt")
    options = PredictOptions(
        tile_size, overlap, batch_size, mc_samples, threshold, progress=not quiet, out_format=out_format
    )
    predict_files(loaded, files, out_dir, options, axes, save_probabilities)
    click.echo(f"{len(files)} prediction(s) written to {out_dir}")
    if gt_dir is None:
        return
    if loaded.info is None:
        click.echo("--gt: this package was not made by idl, so its task is unknown; skipping evaluation.")
        return
    from idl.infer.evaluate.by_task import evaluate_task  # pandas etc.: only now
    from idl.infer.evaluate.semantic import items_for_predictions

    items = items_for_predictions(out_dir, files, gt_dir, uncertainty=mc_samples > 0, suffix=options.suffix)
    info = loaded.info
    summary = evaluate_task(
        info.task,
        items,
        out_dir / "evaluation",
        info.num_classes,
        axes=axes,
        progress=not quiet,
        dims=info.dims,
    )
    click.echo(f"{summary_line(summary)}; report: {out_dir / 'evaluation' / 'report.html'}")


def _classify(
    model: LoadedModel,
    files: list[Path],
    out_dir: Path,
    mc_samples: int,
    axes: str | None,
    gt: Path | None,
    batch_size: int,
    quiet: bool,
) -> None:
    """Classification: OUT/results.csv, and with --gt (groundtruth.csv) the evaluation."""
    from idl.infer.io.omezarr import image_stem
    from idl.infer.tasks.classes import label_csv_for, read_labels
    from idl.infer.tasks.classify import predict_classes

    labels = None
    if gt is not None:
        labels = read_labels(gt)
        missing = [f for f in files if image_stem(f) not in labels]
        if missing:
            raise DataError(
                f"{label_csv_for(gt)}: no row for {missing[0].name} ({len(missing)} image(s) without "
                "one); add 'file name,class' rows for every image."
            )
    results = predict_classes(model, files, out_dir, mc_samples, axes, labels, batch_size, not quiet)
    click.echo(f"{len(files)} image(s) classified: {results}")
    if labels is None:
        return
    from idl.infer.evaluate.classification import evaluate_classification
    from idl.infer.tasks.classify import class_names_for

    summary = evaluate_classification(
        results,
        labels,
        class_names_for(model),
        out_dir / "evaluation",
        images={image_stem(f): f for f in files},
        axes=axes,
        labels_source=str(label_csv_for(gt)),
    )
    click.echo(f"{summary_line(summary)}; report: {out_dir / 'evaluation' / 'report.html'}")


if __name__ == "__main__":
    main()
