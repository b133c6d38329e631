"""``idl-predict``: run a trained model over images with ONNX Runtime (no torch needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from idl.cli.common import (
    RegisteredChoice,
    interruptible,
    parse_memory_option,
    parse_threshold_option,
    setup_logging,
    user_errors,
)
from idl.infer.core.nonfinite import POLICIES
from idl.infer.io.formats import output_formats
from idl.infer.post.uncertainty import MAPS, MC_ANSWERS
from idl.infer.runtime.precision import PRECISIONS
from idl.infer.runtime.session import DEVICES, THREADS_VARIABLE
from idl.infer.tiling.empty import DEFAULT_THRESHOLD
from idl.infer.tiling.tta import TTA_AUTO, TTA_SETTINGS

if TYPE_CHECKING:
    from idl.infer.runtime.model import LoadedModel


EXAMPLES = """Examples:

\b
  idl-predict PROJECT/model images/ --out results/
  idl-predict model.bioimageio.zip scan.tif --out results/ --mc-samples 10
  idl-predict PROJECT/model images/ --out results/ --gt groundtruth/     # and evaluate
  idl-predict affable-shark images/ --out results/    # a bioimage.io model zoo id
  idl-predict PROJECT/model image.tif --activations   # the network's layers
  idl-predict PROJECT/model images/ --out results/ --shard auto   # a task of a Slurm job array
  idl-predict PROJECT/model volume.tif --out results/ --out-format zarr --dask local:4
  idl-predict --status results/     # what a run (or job array) has done and what is left
"""


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.argument("model", required=False)
@click.argument("inputs", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--input",
    "named_inputs",
    multiple=True,
    metavar="NAME=PATH",
    help="An input of a package with several inputs: its tensor name and an image or folder (repeat for "
    "each input; images of one sample share their name). See --info for the names.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the predictions (<image name>.tif); required to predict (not for --info, --test, "
    "--download or --list-cached).",
)
@click.option(
    "--info", "show_info", is_flag=True, help="Describe MODEL (inputs, outputs, metrics, MC) and exit."
)
@click.option(
    "--download",
    is_flag=True,
    help="Fetch MODEL (a bioimage.io id, DOI or URL) into the model cache, anew if cached, and exit.",
)
@click.option("--list-cached", is_flag=True, help="List the packages in the model cache and exit.")
@click.option(
    "--cache",
    "cache_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model cache folder for bioimage.io ids, DOIs and URLs [default: $IDL_MODEL_CACHE, else "
    "~/.cache/idl/models].",
)
@click.option(
    "--test",
    "run_test",
    is_flag=True,
    help="Run a bioimage.io package on its own test input and compare with its test output; exit 1 when "
    "they differ by more than --tolerance.",
)
@click.option(
    "--tolerance",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Largest absolute difference --test accepts.",
)
@click.option(
    "--mc-samples",
    default=0,
    show_default=True,
    type=click.IntRange(min=0),
    help="Monte Carlo dropout samples; >= 2 also writes uncertainty/<image name>.tif.",
)
@click.option(
    "--uncertainty",
    "uncertainty_map",
    type=click.Choice(MAPS),
    default=None,
    help="The Monte Carlo uncertainty map, for every task: InstantDL's (mean p(1-p) + variance; high where "
    "unsure or where samples disagree), the samples' standard deviation, the mutual information "
    "(disagreement alone, in bits) or the entropy of the mean prediction (0..1) [default: instantdl; std "
    "for regression; entropy for classification].",
)
@click.option(
    "--mc-tolerance",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Stop drawing Monte Carlo samples for a tile (after at least 6) once its uncertainty map's "
    "estimated relative error is below this, e.g. 0.3: tiles whose samples agree (background) stop "
    "early, unsure ones draw all --mc-samples. 0: every tile draws all.",
)
@click.option(
    "--tile-size",
    default=None,
    type=click.IntRange(min=8),
    help="Side of the tiles fed to the model, halo included [default: the largest tile --max-memory "
    "allows, measured from the network's graph; sides follow the halos, so 3D tiles are as deep as the z "
    "halo needs].",
)
@click.option(
    "--max-memory",
    default=None,
    callback=parse_memory_option,
    help="Memory the prediction may use, e.g. 1.5G or 800M: the tiles are the largest whose network "
    "activations fit in it beside the images (the chosen tile and its expected memory are logged) "
    "[default: a quarter of the memory available, at most 1.5G].",
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
    type=RegisteredChoice(output_formats),
    default="tif",
    show_default=True,
    help="tif: TIFF files; npy: NumPy arrays; zarr: OME-Zarr folders (<image name>.ome.zarr) for napari "
    "and other OME-Zarr tools (and any format registered in idl.infer.io.formats that writes).",
)
@click.option(
    "--on-nonfinite",
    type=click.Choice(POLICIES),
    default="replace",
    show_default=True,
    help="NaN or inf pixels: replace (ignored by the normalization, 0 for the network, NaN in the outputs, "
    "with a warning) or error (refuse the image). See docs/robustness.md.",
)
@click.option(
    "--overwrite",
    is_flag=True,
    help="Predict again images whose outputs exist in --out (by default they are skipped, so a run that "
    "stopped continues where it stopped).",
)
@click.option(
    "--device",
    default="auto",
    show_default=True,
    type=click.Choice(DEVICES),
    help="auto: the CUDA provider when ONNX Runtime has it (the [gpu] extra), else the CPU; the provider "
    "used is printed.",
)
@click.option(
    "--precision",
    default="auto",
    show_default=True,
    type=click.Choice(PRECISIONS),
    help="The model's graph: fp32, or int8 (the quantized graph idl-train and idl-export write beside it "
    "when it agrees with the float32 one on the validation images; CPU only). auto: int8 where the model "
    "has it and the CPU has fast int8 instructions (VNNI, AMX, ARM dot product), else fp32. --info shows "
    "the agreement measured at export.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="CPU threads ONNX Runtime uses [default: $IDL_THREADS, else one per core].",
)
@click.option(
    "--tracking-uri",
    default=None,
    help="MLflow server for models:/NAME/VERSION [default: $MLFLOW_TRACKING_URI].",
)
@click.option(
    "--tta",
    type=click.Choice(TTA_SETTINGS),
    default=TTA_AUTO,
    show_default=True,
    help="Test-time augmentation: predict every tile mirrored (flips: 4 copies) or mirrored and turned "
    "(d4: 8; 16 for isotropic volumes), turn each back and average; their spread is written as the "
    "uncertainty. With --mc-samples each sample is drawn under the next transform. auto: d4 for "
    "semantic segmentation models with --mc-samples (the same cost, measured better), else off.",
)
@click.option(
    "--mc-answer",
    type=click.Choice(MC_ANSWERS),
    default=None,
    help="With --mc-samples: take the mask, labels or values from the network without dropout "
    "(deterministic; the samples give the uncertainty) or from the samples' mean [default: mean for "
    "semantic segmentation, deterministic for the other tasks, as measured on real sets].",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Random seed of the Monte Carlo samples: the same command with the same seed writes the same files.",
)
@click.option(
    "--skip-empty",
    type=click.FloatRange(min=0),
    is_flag=False,
    flag_value=DEFAULT_THRESHOLD,
    default=None,
    metavar="[CONTRAST]",
    help="Do not run tiles that hold only background: those whose input ranges over at most CONTRAST "
    f"noise levels (4 px block means) [flag alone: {DEFAULT_THRESHOLD:g}]; they get the network's output "
    "for plain background. For sparse images; see docs/deployment.md.",
)
@click.option(
    "--activations",
    is_flag=False,
    flag_value="",
    default=None,
    metavar="[LAYER,...]",
    help="Look inside the network: alone (after the images), list its layers with their shapes for the "
    "first image; with layer names, write per image a figure of each layer's first --maps feature maps "
    "and the maps as TIFF stacks to --out (instead of predicting).",
)
@click.option(
    "--maps",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Feature maps per layer in the --activations figure.",
)
@click.option(
    "--plane",
    type=click.IntRange(min=0),
    default=None,
    help="Volumes: the z plane (of the input) the --activations figure shows [default: the middle].",
)
@click.option(
    "--shard",
    "shard_text",
    default=None,
    metavar="I/N|auto",
    help="Predict the I-th of N parts (for job arrays): every N-th input file, or, for one volume written "
    "with --out-format zarr, every N-th block. auto: from Slurm's SLURM_ARRAY_TASK_ID and the array's "
    "size. The shards share --out; each skips what is finished, so a re-submitted task continues.",
)
@click.option(
    "--dask",
    "dask_address",
    default=None,
    metavar="local[:N]|ADDRESS",
    help="Predict the blocks of one volume (--out-format zarr) on Dask workers: local:N starts N worker "
    "processes of one thread here; an address (tcp://host:8786) or scheduler file uses a running cluster "
    "(dask-jobqueue's SLURMCluster, ...). Needs the [dask] extra. See docs/cluster.md.",
)
@click.option(
    "--block-size",
    type=click.IntRange(min=8),
    default=None,
    help="Side of the blocks one volume written to OME-Zarr is predicted in (rounded up to whole zarr "
    "chunks; each block is one task of --shard or --dask) [default: 256 voxels in 3D, 2048 px in 2D].",
)
@click.option(
    "--status",
    "status_dir",
    default=None,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Say what a prediction into this --out folder (all its shards, a volume's blocks) has done and "
    "what is left, and exit.",
)
@click.option("--quiet", is_flag=True, help="Only warnings and errors.")
@user_errors
@interruptible(
    "Finished images are kept in --out; the same command continues with the rest (--overwrite redoes all)."
)
def main(
    model: str | None,
    inputs: tuple[Path, ...],
    named_inputs: tuple[str, ...],
    out_dir: Path | None,
    show_info: bool,
    download: bool,
    list_cached: bool,
    cache_dir: Path | None,
    run_test: bool,
    tolerance: float,
    mc_samples: int,
    uncertainty_map: str | None,
    mc_tolerance: float,
    tile_size: int | None,
    max_memory: int | None,
    overlap: float | None,
    batch_size: int,
    threshold: str | float,
    axes: str | None,
    gt_dir: Path | None,
    save_probabilities: bool,
    out_format: str,
    on_nonfinite: str,
    overwrite: bool,
    device: str,
    precision: str,
    threads: int | None,
    tracking_uri: str | None,
    tta: str | None,
    mc_answer: str | None,
    seed: int,
    skip_empty: float | None,
    activations: str | None,
    maps: int,
    plane: int | None,
    shard_text: str | None,
    dask_address: str | None,
    block_size: int | None,
    status_dir: Path | None,
    quiet: bool,
) -> None:
    """Predict INPUT images or folders with MODEL: a PROJECT/model folder, a .onnx file, a
    bioimage.io package (.zip, folder or rdf.yaml) with ONNX weights, ours or anyone's, or a
    bioimage.io id, DOI or URL (downloaded into the model cache once, then run offline), or a version
    in an MLflow model registry, models:/NAME/VERSION."""
    setup_logging(quiet)
    if threads is not None:
        os.environ[THREADS_VARIABLE] = str(threads)
    if tracking_uri is not None:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    from idl.cli.registry import registry_download
    from idl.infer.service.load import load_model, locate
    from idl.infer.tiling.predict import PredictOptions, collect_inputs

    if list_cached:
        click.echo(_cache_listing(cache_dir))
        return
    if status_dir is not None:
        from idl.infer.io.status import describe, folder_status

        click.echo(describe(status_dir, folder_status(status_dir)))
        return
    if model is None:
        raise click.UsageError("give a MODEL (or --list-cached)")
    if download:
        if Path(model).exists():
            raise click.UsageError(
                f"{model} is a local file or folder; --download takes a bioimage.io id, DOI or URL"
            )
        click.echo(f"{model}: cached as {locate(model, cache_dir, True, registry_download())}")
        return
    path = locate(model, cache_dir, registry=registry_download())
    if show_info:
        from idl.infer.service.describe import describe

        click.echo(describe(load_model(path, device, precision=precision)))
        return
    if run_test:
        from idl.infer.service.selfcheck import check_test_tensors

        results = check_test_tensors(path, load_model(path, device, precision=precision))
        failed = False
        for result in results:
            verdict = "passed" if result.max_abs_diff <= tolerance else "FAILED"
            failed = failed or verdict == "FAILED"
            click.echo(
                f"test output '{result.output}' {result.shape}: max abs diff {result.max_abs_diff:.3g} "
                f"(tolerance {tolerance:g}): {verdict}"
            )
        if failed:
            raise click.exceptions.Exit(1)
        return
    if activations is not None:
        # the float32 graph's layers unless int8 is asked for (auto would show the int8 graph's on some CPUs)
        loaded = load_model(path, device, precision="int8" if precision == "int8" else "fp32")
        _explore(loaded, inputs, activations, out_dir, maps, plane, axes)
        return
    named = _named_inputs(named_inputs)
    if not inputs and not named:
        raise click.UsageError("give at least one INPUT image or folder (or --info to describe MODEL)")
    if out_dir is None:
        raise click.UsageError("--out DIR is required to predict")
    if mc_samples == 1:
        raise click.BadParameter("use 0 (off) or at least 2 samples", param_hint="--mc-samples")
    from idl.infer.core.shard import parse_shard

    shard = parse_shard(shard_text, os.environ) if shard_text is not None else None
    if shard is not None and gt_dir is not None:
        raise click.UsageError(
            "--gt with --shard: a shard sees only its part; once every shard is done, evaluate the whole "
            "folder with idl-evaluate OUT GT_DIR"
        )
    if shard is not None and dask_address is not None:
        raise click.UsageError("--shard and --dask each share the work: give one of them")
    runner = None
    if dask_address is not None:
        from idl.infer.service.cluster import DaskBlocks, parse_address

        runner = DaskBlocks(
            parse_address(dask_address), str(path), device, threads or 1, not quiet, precision=precision
        )
    from idl.infer.io.places import check_apart
    from idl.infer.service.run import predict_and_evaluate
    from idl.infer.tasks.base import Request
    from idl.infer.tasks.registry import task_for

    given = [*inputs, *(p for paths in named.values() for p in paths)]
    check_apart(out_dir, given, gt_dir)  # before the model is even opened
    loaded = load_model(path, device, precision=precision)
    if named and loaded.tensors.simple:
        raise click.UsageError("this model has one input: give its images as INPUT, not --input NAME=PATH")
    if len(loaded.tensors.inputs) > 1 and inputs:
        names = ", ".join(t.id for t in loaded.tensors.inputs)
        raise click.UsageError(f"this model has the inputs {names}: give each as --input NAME=PATH")
    options = PredictOptions(
        tile_size,
        overlap,
        batch_size,
        mc_samples,
        threshold,
        progress=not quiet,
        out_format=out_format,
        on_nonfinite=on_nonfinite,
        overwrite=overwrite,
        uncertainty=uncertainty_map,
        mc_tolerance=mc_tolerance,
        skip_empty=skip_empty,
        seed=seed,
        mc_answer=mc_answer,
        tta=tta,
        shard=shard,
        block_size=block_size,
        max_memory=max_memory,
    )
    files = collect_inputs(inputs) if inputs else collect_inputs(next(iter(named.values())))
    request = Request(
        loaded,
        files,
        out_dir,
        options,
        axes,
        save_probabilities,
        gt_dir,
        named_inputs={name: collect_inputs(paths) for name, paths in named.items()},
        blocks=runner,
    )
    if runner is not None:
        runner.start()  # the workers start while the volume's store is prepared
    try:
        predictions, summary = predict_and_evaluate(request)
    finally:
        if runner is not None:
            runner.close()
    click.echo(task_for(loaded).done(request, predictions))
    if summary is not None:
        click.echo(f"{task_for(loaded).headline(summary)}; report: {request.evaluation / 'report.html'}")


def _named_inputs(items: tuple[str, ...]) -> dict[str, list[Path]]:
    """``--input NAME=PATH`` options as tensor name -> paths (a name may be repeated)."""
    named: dict[str, list[Path]] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise click.BadParameter(f"'{item}' is not NAME=PATH", param_hint="--input")
        named.setdefault(name.strip(), []).append(Path(path))
    return named


def _cache_listing(cache_dir: Path | None) -> str:
    """The ``--list-cached`` table: one line per cached package."""
    from idl.infer.runtime.zoo import cache_folder, cached_models

    cache = cache_folder(cache_dir)
    found = cached_models(cache)
    if not found:
        return f"the model cache {cache} is empty (fill it with: idl-predict MODEL --download)"
    lines = [f"model cache {cache}: {len(found)} package(s)"]
    for item in found:
        what = " ".join(part for part in (item.name, item.version and f"v{item.version}") if part)
        lines.append(
            f"  {item.source:<32} {what or '-'}  {item.megabytes:.1f} MB  {item.downloaded}  {item.path.name}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()


def _explore(
    loaded: LoadedModel,
    inputs: tuple[Path, ...],
    layers: str,
    out_dir: Path | None,
    maps: int,
    plane: int | None,
    axes: str | None,
) -> None:
    """``--activations``: list the layers (no names) or write the named layers' maps."""
    from idl.infer.service.activations import explore, layer_table, layers_for, read_for
    from idl.infer.tiling.predict import collect_inputs

    if not inputs:
        raise click.UsageError("give an IMAGE to look at: idl-predict MODEL IMAGE --activations [LAYER,...]")
    files = collect_inputs(inputs)
    names = [name.strip() for name in layers.split(",") if name.strip()]
    if not names:
        click.echo(layer_table(layers_for(loaded, read_for(loaded, files[0], axes))))
        return
    if out_dir is None:
        raise click.UsageError("--out DIR is required to write the activations")
    written = explore(loaded, files, names, out_dir, maps, plane, axes)
    figures = [p for p in written if p.suffix == ".png"]
    click.echo(f"wrote {len(figures)} figure(s) and {len(written) - len(figures)} TIFF stack(s) to {out_dir}")
