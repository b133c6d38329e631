"""``idl-export``: ONNX graphs (deterministic and Monte Carlo) from an idl checkpoint."""

from __future__ import annotations

from pathlib import Path

import click

from idl.cli.common import setup_logging, user_errors


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for model.onnx and model_mc.onnx.",
)
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
@user_errors
def main(checkpoint: Path, out_dir: Path, quiet: bool) -> None:
    """Export CHECKPOINT (best.pt or last.pt from idl-train) to ONNX, checked against torch."""
    setup_logging(quiet)
    from idl.export.onnx import export_onnx
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(checkpoint))
    det, mc = export_onnx(net, info, out_dir)
    click.echo(f"wrote {det}" + (f" and {mc}" if mc else ""))


if __name__ == "__main__":
    main()
