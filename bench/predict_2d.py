"""Benchmark 2D prediction: idl-predict against whole-image ONNX Runtime, torch eager and
bioimageio.core (the same model as a bioimage.io package, predicted in 512-px blocks).

All read the same 4096 x 4096 uint16 TIFF, normalize it the same way, predict with the same trained
U-Net weights, threshold with Otsu and write a mask; each runs as its own process, measured side by
side in one run (wall time and peak RSS of the whole process).

    python bench/predict_2d.py                       # trains a quick depth-4 U-Net first
    python bench/predict_2d.py --model PROJECT/model # or uses a trained one

Targets (issue 2): idl-predict <= 1.2 x raw ONNX Runtime time, with <= 400 MB peak RSS.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _measure import Measurement, measure  # noqa: E402

TIME_TARGET = 1.2
MEMORY_TARGET_MB = 400


def _child_onnxruntime(model_dir: Path, image_path: Path, out: Path) -> None:
    """Whole image in one ONNX Runtime call: the reference for speed."""
    import onnxruntime as ort
    import tifffile

    from idl.infer.core.normalize import normalize
    from idl.infer.core.processing import apply_ops
    from idl.infer.post.postprocess import to_mask
    from idl.infer.service.load import load_model

    model = load_model(model_dir)
    image = tifffile.imread(image_path)[..., None]
    x = np.ascontiguousarray(np.moveaxis(normalize(image, model.info.normalization), -1, 0)[None])
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    p = apply_ops(model.io.postprocessing, logits, "bcyx")[0]  # sigmoid
    tifffile.imwrite(out, to_mask(p, "otsu")[0])


def _child_bioimageio(model_dir: Path, image_path: Path, out: Path) -> None:
    """bioimageio.core's own prediction of the package, in 512-px blocks (its halo handling)."""
    import tifffile
    from bioimageio.core import Tensor, predict
    from bioimageio.spec import load_model_description

    from idl.infer.post.postprocess import to_mask

    package = next(model_dir.glob("*.bioimageio.zip"))
    descr = load_model_description(package, perform_io_checks=False)
    size = descr.inputs[0].axes[2].size  # min + n * step
    n = max(0, (512 - size.min) // size.step)
    image = tifffile.imread(image_path)[None, None]
    sample = predict(
        model=descr,
        inputs={"input": Tensor.from_numpy(image, dims=["batch", "channel", "y", "x"])},
        blocksize_parameter=n,
    )
    p = sample.members["probabilities"].data.values[0]
    tifffile.imwrite(out, to_mask(p, "otsu")[0])


def _child_torch(model_dir: Path, image_path: Path, out: Path) -> None:
    """Whole image through the torch model in eager mode."""
    import tifffile
    import torch

    from idl.infer.core.normalize import normalize
    from idl.infer.post.postprocess import to_mask
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint

    net, info = model_from_checkpoint(load_checkpoint(model_dir / "best.pt"))
    image = tifffile.imread(image_path)[..., None]
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(normalize(image, info.normalization), -1, 0)[None]))
    with torch.no_grad():
        p = torch.sigmoid(net(x))[0].numpy()
    tifffile.imwrite(out, to_mask(p, "otsu")[0])


def _child_image(size: int, out: Path) -> None:
    """A large synthetic nuclei image (made in a child so the parent stays small: forked children
    start with the parent's resident pages counted in their peak RSS)."""
    import tifffile

    from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei

    spec = NucleiSpec(size=size, objects=(size**2 // 5000, size**2 // 4000))
    tifffile.imwrite(out, synthetic_nuclei(np.random.default_rng(0), spec)[0])


def _train_quick_model(work: Path) -> Path:
    from idl.infer.datasets.synthetic import write_semantic_project

    project = work / "project"
    if not (project / "model" / "model.onnx").is_file():
        write_semantic_project(project, n_train=12, n_test=2, seed=0)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "idl.cli.train",
                str(project),
                "--task",
                "semantic",
                "--epochs",
                "5",
                "--steps-per-epoch",
                "8",
                "--no-uncertainty",
                "--overwrite",
                "--quiet",
            ],
            check=True,
        )
    return project / "model"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="trained PROJECT/model folder (default: train one)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--work", type=Path, default=Path("bench_out/predict_2d"))
    parser.add_argument("--skip-torch", action="store_true")
    parser.add_argument("--mc-samples", type=int, default=0, help="also time Monte Carlo prediction")
    parser.add_argument("--skip-bioimageio", action="store_true")
    parser.add_argument(
        "--child", choices=["onnxruntime", "torch", "bioimageio", "image"], help=argparse.SUPPRESS
    )
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "image":
        _child_image(args.size, args.out)
        return
    if args.child:
        {"onnxruntime": _child_onnxruntime, "torch": _child_torch, "bioimageio": _child_bioimageio}[
            args.child
        ](args.model, args.image, args.out)
        return

    args.work.mkdir(parents=True, exist_ok=True)
    model = args.model or _train_quick_model(args.work)
    image_path = args.work / f"nuclei_{args.size}.tif"
    if not image_path.is_file():
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "image",
            "--size",
            str(args.size),
            "--out",
            str(image_path),
        ]
        subprocess.run(cmd, check=True)
    me = [sys.executable, __file__, "--model", str(model), "--image", str(image_path)]
    predict = [sys.executable, "-m", "idl.cli.predict", str(model), str(image_path), "--quiet", "--out"]
    runs: list[Measurement] = [
        measure("idl-predict (512-px tiles)", [*predict, str(args.work / "idl")]),
        measure(
            "onnxruntime, whole image", [*me, "--child", "onnxruntime", "--out", str(args.work / "ort.tif")]
        ),
    ]
    if not args.skip_torch:
        runs.append(
            measure(
                "torch eager, whole image", [*me, "--child", "torch", "--out", str(args.work / "torch.tif")]
            )
        )

    if not args.skip_bioimageio:
        if not list(model.glob("*.bioimageio.zip")):  # models trained before packages existed
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "idl.cli.export",
                    str(model / "best.pt"),
                    "--out",
                    str(model),
                    "--quiet",
                ],
                check=True,
            )
        package = str(next(model.glob("*.bioimageio.zip")))
        runs.append(
            measure(
                "idl-predict on the package",
                [
                    sys.executable,
                    "-m",
                    "idl.cli.predict",
                    package,
                    str(image_path),
                    "--quiet",
                    "--out",
                    str(args.work / "pkg"),
                ],
            )
        )
        runs.append(
            measure(
                "bioimageio.core, 512 blocks",
                [*me, "--child", "bioimageio", "--out", str(args.work / "bioimageio.tif")],
            )
        )
    if args.mc_samples:
        label = f"idl-predict, {args.mc_samples} MC samples"
        cmd = [*predict, str(args.work / "mc"), "--mc-samples", str(args.mc_samples)]
        runs.append(measure(label, cmd))
    reference = runs[1].seconds
    print(f"\n{args.size} x {args.size} uint16 image, model {model}")
    print(f"{'method':<28}{'time (s)':>10}{'vs ORT':>9}{'peak RSS (MB)':>16}")
    for r in runs:
        print(f"{r.label:<28}{r.seconds:>10.2f}{r.seconds / reference:>8.2f}x{r.peak_mb:>16.0f}")
    import tifffile

    ours = tifffile.imread(args.work / "idl" / image_path.name)
    whole = tifffile.imread(args.work / "ort.tif")
    print(f"mask pixels differing between idl-predict and whole-image ORT: {int((ours != whole).sum())}")
    if not args.skip_bioimageio:
        core = tifffile.imread(args.work / "bioimageio.tif")
        print(f"mask pixels differing between idl-predict and bioimageio.core: {int((ours != core).sum())}")
    ok_time = runs[0].seconds <= TIME_TARGET * reference
    ok_memory = runs[0].peak_mb <= MEMORY_TARGET_MB
    print(
        f"target time <= {TIME_TARGET} x ORT: {'met' if ok_time else 'MISSED'} "
        f"({runs[0].seconds / reference:.2f}x); target peak RSS <= {MEMORY_TARGET_MB} MB: "
        f"{'met' if ok_memory else 'MISSED'} ({runs[0].peak_mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()
