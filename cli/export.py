"""``idl-export``: ONNX graphs and a validated bioimage.io package from an idl checkpoint, or ONNX weights
for a bioimage.io package that has only PyTorch (state dict or TorchScript) weights."""

from __future__ import annotations

import json
from pathlib import Path

import click

from idl.cli.common import require_training_extras, setup_logging, user_errors
from idl.export.choices import METHODS


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for model.onnx, model_mc.onnx and <name>.bioimageio.zip (with --to-onnx: the converted "
    "<name>.bioimageio.zip).",
)
@click.option(
    "--to-onnx",
    "to_onnx",
    type=click.Path(exists=True, path_type=Path),
    help="Instead of a checkpoint: a bioimage.io package (.zip, folder or rdf.yaml) with only "
    "pytorch_state_dict or torchscript weights, written to --out with ONNX weights added (checked against "
    "the source weights within 1e-4) so that idl-predict runs it. Runs the package's code: convert only "
    "packages you trust.",
)
@click.option(
    "--converter",
    type=click.Choice(METHODS),
    default="auto",
    show_default=True,
    help="With --to-onnx: bioimageio.core's weight converter, idl's export, or the first that passes the "
    "checks.",
)
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Image for the package's test tensor and cover [default: the first test image of the project "
    "the checkpoint belongs to].",
)
@click.option("--axes", default=None, help="Axis order of --sample, e.g. yx, yxc, cyx [default: guessed].")
@click.option("--author", "authors", multiple=True, help="Author named in the package (repeatable).")
@click.option(
    "--package/--no-package", default=True, show_default=True, help="Write the bioimage.io package."
)
@click.option(
    "--int8/--no-int8",
    default=True,
    show_default=True,
    help="Also write int8 graphs for CPUs (model_int8.onnx, model_int8_mc.onnx; idl-predict --precision), "
    "calibrated on training patches of the project and kept only where they give the float32 graph's "
    "answers on its validation images (the split of the checkpoint's run). Without the project's "
    "training images none is written.",
)
@click.option(
    "--project",
    "project_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="The project whose train/ images calibrate and check the int8 graphs [default: the project the "
    "checkpoint is in, PROJECT/model/best.pt].",
)
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
@user_errors
def main(
    checkpoint: Path | None,
    out_dir: Path,
    sample: Path | None,
    axes: str | None,
    authors: tuple[str, ...],
    package: bool,
    to_onnx: Path | None,
    converter: str,
    int8: bool,
    project_dir: Path | None,
    quiet: bool,
) -> None:
    """Export CHECKPOINT (best.pt or last.pt from idl-train) to ONNX, checked against torch, and to a
    bioimage.io package validated with bioimageio.core; or, with --to-onnx PACKAGE, convert a package's
    PyTorch weights to ONNX."""
    setup_logging(quiet)
    if (checkpoint is None) == (to_onnx is None):
        raise click.UsageError("give either a CHECKPOINT or --to-onnx PACKAGE.")
    require_training_extras("idl-export")
    if to_onnx is not None:
        from idl.export.convert import convert_to_onnx

        conversion = convert_to_onnx(to_onnx, out_dir, method=converter)
        click.echo(f"wrote {conversion.path} ({conversion.summary()}; passed bioimageio.core test_model)")
        return
    from idl.export.bioimageio import PackageRequest, export_package, package_path
    from idl.export.metadata import record_footprints
    from idl.export.onnx import export_onnx
    from idl.infer.core.errors import IdlError
    from idl.infer.io.images import read_channels_last
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint
    from idl.train.config import TrainConfig
    from idl.train.pipeline import sample_image

    payload = load_checkpoint(checkpoint)
    net, info = model_from_checkpoint(payload)
    det, mc = export_onnx(net, info, out_dir)
    info = record_footprints(det, mc, info)
    click.echo(f"wrote {det}" + (f" and {mc}" if mc else ""))
    project = project_dir or checkpoint.resolve().parent.parent  # PROJECT/model/best.pt
    if int8:
        from idl.infer.runtime.model import mc_path_for
        from idl.infer.runtime.precision import int8_path_for
        from idl.train.int8 import quantize_checkpoint

        info = quantize_checkpoint(det, mc, info, payload, checkpoint, project)
        int8 = int8_path_for(det)
        kept = [p for p in (int8, mc_path_for(int8)) if p.is_file()]
        if kept:
            click.echo(f"wrote {' and '.join(map(str, kept))}")
    if not package:
        return
    if sample is not None:
        image = read_channels_last(sample, axes, "zyx"[-info.dims :])[0]
    else:
        try:
            image = sample_image(project, axes or info.axes, "zyx"[-info.dims :])
        except (IdlError, OSError) as exc:
            raise IdlError(
                f"{checkpoint}: no project images next to this checkpoint; pass --sample IMAGE for the "
                "package's test tensor."
            ) from exc
    if image.shape[-1] != info.in_channels:
        raise IdlError(
            f"{sample or 'the sample image'}: has {image.shape[-1]} channel(s) but the model expects "
            f"{info.in_channels}. Pass the right --axes or another --sample."
        )
    summary = project / "evaluation" / "summary.json"
    metrics = json.loads(summary.read_text(encoding="utf-8")) if summary.is_file() else {}
    request = PackageRequest(
        sample=image,
        authors=authors,
        settings=payload.get("config", {}),
        metrics=metrics,
        mc_samples=int(payload.get("config", {}).get("mc_samples", TrainConfig.mc_samples)),
    )
    written = export_package(net, info, det, mc, request, package_path(out_dir, info.name))
    click.echo(f"wrote {written} (passed bioimageio.core test_model)")


if __name__ == "__main__":
    main()
