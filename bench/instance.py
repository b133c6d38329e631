"""Instance segmentation: Mask R-CNN, the instance U-Net and Otsu + connected components side by side.

One synthetic project with touching nuclei (idl.infer.datasets.synthetic: 24 training and 6 test images of
192 x 192 px, about a third of the nuclei touching a neighbour; the project of the end-to-end test).
Both networks are trained from scratch by idl's own pipeline (no pretrained weights exist here) and
evaluated on the test images through their exported ONNX graphs; the baseline thresholds each test
image with Otsu and labels connected components. Printed per method: ap50, ap50_95 (the DSB2018
score), pixel Jaccard, training time and prediction time per test image.

Then, for the trained Mask R-CNN, tiled against whole-image prediction of a 1024 x 1024 image
(~110 nuclei; a whole 2048 px image would need ~5 GB for its masks): 256-px tiles against one pass,
objects matched at IoU 0.5, and how many objects the tiles doubled.

    python bench/instance.py [--unet-epochs 25] [--maskrcnn-epochs 40] [--out DIR] [--reuse]

``--reuse`` skips training: it re-exports and evaluates the models an earlier run left in ``--out``
(e.g. after a change to the export or the post-processing).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from idl.infer.core.project import pair_files
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei, write_instance_project
from idl.infer.evaluate.baseline import otsu_instance_scores
from idl.infer.evaluate.instance_metrics import instance_scores
from idl.infer.io.images import read_channels_last
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import PredictOptions, predict_image
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project


def train(project: Path, model: str, epochs: int) -> tuple[dict, float, float]:
    """Train ``model`` on ``project`` (fresh), returning the test summary, training seconds and
    prediction seconds per test image."""
    config = TrainConfig(
        task="instance",
        model=model,
        epochs=epochs,
        steps_per_epoch=5,  # one patch per training image (19) in batches of 4, as measured
        batch_size=4,
        patience=epochs,
        image_size=128 if model == "unet" else None,
        uncertainty=False,
        package=False,
        evaluate=True,
    )
    start = time.perf_counter()
    result = train_project(project, config, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    images = pair_files(project / "test")
    loaded = load_model(project / "model")
    start = time.perf_counter()
    for pair in images:
        predict_image(loaded, read_channels_last(pair.image, None, "yx")[0], PredictOptions(progress=False))
    per_image = (time.perf_counter() - start) / len(images)
    assert result.summary is not None
    return result.summary, seconds, per_image


def tiled_against_whole(project: Path) -> str:
    """Mask R-CNN labels of one 1024 px image from 256 px tiles and from one pass, against each other
    and against the image's true labels."""
    model = load_model(project / "model")
    image, truth = synthetic_nuclei(np.random.default_rng(7), NucleiSpec(size=1024, objects=(100, 120)))
    image = image[..., None]
    tiled = predict_image(model, image, PredictOptions(tile_size=256, progress=False)).mask
    whole = predict_image(model, image, PredictOptions(tile_size=1024, progress=False)).mask
    agree = instance_scores(whole, tiled)
    lines = [
        f"Mask R-CNN, 1024 x 1024 px, {len(np.unique(truth)) - 1} true nuclei: {len(np.unique(whole)) - 1} "
        f"objects whole, {len(np.unique(tiled)) - 1} from 256-px tiles; of the whole-image objects "
        f"{agree['recall']:.3f} are found by the tiles at IoU 0.5"
    ]
    for name, labels in (("whole", whole), ("tiled", tiled)):
        s = instance_scores(truth, labels)
        lines.append(
            f"  {name} vs truth: ap50 {s['ap50']:.3f}, ap50_95 {s['ap50_95']:.3f}, precision "
            f"{s['precision']:.3f}, recall {s['recall']:.3f}"
        )
    return "\n".join(lines)


def reevaluate(project: Path, model: str) -> dict:
    """Export the trained checkpoint again with the current code and predict and evaluate the test
    images (no training)."""
    from idl.export.onnx import export_onnx
    from idl.train.checkpoint import load_checkpoint, model_from_checkpoint
    from idl.train.pipeline import predict_and_evaluate

    net, info = model_from_checkpoint(load_checkpoint(project / "model" / "best.pt"))
    export_onnx(net, info, project / "model")
    summary = predict_and_evaluate(
        project, TrainConfig(task="instance", model=model, uncertainty=False), False
    )
    assert summary is not None
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--unet-epochs", type=int, default=25)
    parser.add_argument("--maskrcnn-epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None, help="keep the projects here")
    parser.add_argument(
        "--reuse", action="store_true", help="re-export and evaluate the models an earlier run left in --out"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.out or Path(tempfile.mkdtemp(prefix="idl-instance-bench-"))
    rows = []
    if not args.reuse:
        write_instance_project(root / "otsu", 24, 6, 0, NucleiSpec(size=192))
    baseline = otsu_instance_scores(pair_files(root / "otsu" / "test"))
    rows.append(("Otsu + connected components", baseline, 0.0, float("nan")))
    for model, epochs in (("unet", args.unet_epochs), ("maskrcnn", args.maskrcnn_epochs)):
        if args.reuse:  # the models trained by an earlier run with the same --out
            name = f"{'U-Net' if model == 'unet' else 'Mask R-CNN'} (re-exported)"
            rows.append((name, reevaluate(root / model, model), float("nan"), float("nan")))
            continue
        project = write_instance_project(root / model, 24, 6, 0, NucleiSpec(size=192))
        summary, seconds, per_image = train(project, model, epochs)
        rows.append(
            (f"{'U-Net' if model == 'unet' else 'Mask R-CNN'} ({epochs} epochs)", summary, seconds, per_image)
        )
        (root / f"{model}.json").write_text(json.dumps(summary, indent=2))
    print("| method | ap50 | ap50_95 | Jaccard | training | prediction per image |")
    print("|---|---|---|---|---|---|")
    for name, s, seconds, per_image in rows:
        print(
            f"| {name} | {s['ap50']:.3f} | {s['ap50_95']:.3f} | {s.get('jaccard', float('nan')):.3f} "
            f"| {seconds:.0f} s | {per_image:.2f} s |"
        )
    print(tiled_against_whole(root / "maskrcnn"))


if __name__ == "__main__":
    main()
