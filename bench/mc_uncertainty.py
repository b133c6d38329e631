"""Monte Carlo uncertainty: how well each map flags prediction errors, against the number of samples.

For trained segmentation models (PROJECT/model folders; their PROJECT/test split with ground truth)
this draws S Monte Carlo passes over every test image (each pass: the whole image, tiled as
idl-predict tiles it, through the model's Monte Carlo graph), and for each S of ``--samples``:

- the Jaccard of the mask of the mean probability (thresholded as idl-predict does) and its pixel errors
  against the ground truth (binary: labels > 0; several classes: the pooled Jaccard of the classes
  other than 0, and a pixel is wrong when its class is);
- the pixel AUROC of each uncertainty map (InstantDL's, the samples' standard deviation, the mutual
  information) for telling wrong pixels from right ones, pooled over all test pixels;
- the cost of S samples in deterministic passes: the time of idl-predict's Monte Carlo prediction with
  S samples (tiled, in this process) over that of one deterministic prediction, on the same images.

    python bench/mc_uncertainty.py PROJECT [PROJECT ...] [--samples 2,5,10,20] [--tile 512] [--seed 0]
                                   [--no-cost]

Every model sees the same images and the same numbers of samples; run it on models trained with
different dropout placements to compare them (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from idl.infer.core.project import pair_files
from idl.infer.io.images import read_image
from idl.infer.post.uncertainty import MAPS, SampleMoments
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import (
    PredictOptions,
    load_input,
    outputs_of,
    predict_image,
    predict_probabilities,
)


def _draws(model, image: np.ndarray, options: PredictOptions, count: int) -> np.ndarray:
    """``count`` Monte Carlo samples of the whole image, each tiled as idl-predict tiles it."""
    tile = options.bounded_tile(model.io, image.shape[:-1])
    halos = tuple(model.io.halo_of(a) for a in model.io.spatial)
    sampler = model.sampler()
    run = (lambda batch: sampler(batch, 1)) if sampler is not None else model.network(mc=True)
    return np.stack([predict_probabilities(run, image, model.io, tile, halos)[0] for _ in range(count)])


def _seconds(model, image: np.ndarray, options: PredictOptions) -> float:
    start = time.perf_counter()
    predict_image(model, image, options)
    return time.perf_counter() - start


def evaluate(
    project: Path, samples: list[int], options: PredictOptions, cost: bool = True
) -> list[dict[str, float]]:
    """One row per number of samples: Jaccard, error rate, AUROC per map, cost in passes."""
    model = load_model(project / "model")
    finish = outputs_of(model).finish
    multiclass = model.info.num_classes > 2  # compare class labels, else masks (labels > 0)
    pairs = pair_files(project / "test")
    most = max(samples)
    det_time, mc_time = 0.0, dict.fromkeys(samples, 0.0)
    per_image = []
    for pair in pairs:
        image = load_input(pair.image, None, model.io)
        truth = read_image(pair.groundtruth)
        truth = truth if multiclass else truth > 0
        if cost:
            det_time += _seconds(model, image, options)
            for n in samples:
                mc_time[n] += _seconds(model, image, replace(options, mc_samples=n))
        per_image.append((truth, _draws(model, image, options, most)))
    rows = []
    for n in samples:
        truths, wrongs, maps = [], [], {name: [] for name in MAPS}
        inter = union = 0
        for truth, draws in per_image:
            moments = SampleMoments.zeros(draws.shape[1:], entropy=True)
            moments.add(draws[:n])
            mask = finish(moments.mean(), None, options).mask
            mask = mask if multiclass else mask > 0
            for label in range(1, model.info.num_classes) if multiclass else [True]:
                inter += int(((mask == label) & (truth == label)).sum())
                union += int(((mask == label) | (truth == label)).sum())
            wrongs.append((mask != truth).ravel())
            for name in MAPS:
                maps[name].append(moments.map(name).ravel())
            truths.append(truth.ravel())
        wrong = np.concatenate(wrongs)
        row = {"samples": n, "jaccard": inter / max(union, 1), "error_rate": float(wrong.mean())}
        for name in MAPS:
            row[f"auroc_{name}"] = float(roc_auc_score(wrong, np.concatenate(maps[name])))
        row["cost_passes"] = mc_time[n] / det_time if cost else float("nan")
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("projects", nargs="+", type=Path)
    parser.add_argument("--samples", default="2,5,10,20")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-cost", action="store_true", help="skip the timing (AUROCs only)")
    args = parser.parse_args()
    samples = sorted(int(s) for s in args.samples.split(","))
    options = PredictOptions(tile_size=args.tile, progress=False)
    print("| model | samples | Jaccard | error rate | AUROC instantdl | AUROC std | AUROC MI | cost |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for project in args.projects:
        np.random.seed(args.seed)
        for row in evaluate(project, samples, options, cost=not args.no_cost):
            print(
                f"| {project.name} | {row['samples']} | {row['jaccard']:.4f} | {row['error_rate']:.4f} | "
                f"{row['auroc_instantdl']:.3f} | {row['auroc_std']:.3f} | "
                f"{row['auroc_mutual-information']:.3f} | {row['cost_passes']:.1f}x |",
                flush=True,
            )


if __name__ == "__main__":
    main()
