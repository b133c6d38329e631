"""Classification with Monte Carlo uncertainty: accuracy, AUC, and how informative the uncertainty is.

Two projects, each trained by idl's own pipeline (ResNet, MC dropout, ONNX, prediction via ONNX
Runtime):

- ``digits``: scikit-learn's bundled handwritten digits (1797 images of 8 x 8 px, 10 classes),
  upscaled to 32 x 32 and written as a project (80 % training, 20 % test, stratified). No
  augmentation: flips and rotations would turn a 6 into a 9.
- ``cells``: idl's synthetic single-nucleus images (round, elongated, dividing; 32 x 32), with flips
  and rotations.

For each: test accuracy and AUC, then the AUROC of the uncertainty for telling wrong from right
test predictions, and for telling out-of-distribution images from the in-distribution test images.
Out-of-distribution sets: uniform noise images, and "another data set" (the digits model sees the
synthetic cells; the cells model sees the digits), all at 32 x 32. Each uncertainty is compared with
the deterministic network's own score, 1 - max softmax probability, and with idl's input check, the
atypicality of the image's statistics (idl.infer.post.typicality).

    python bench/classify.py [--epochs 15] [--model resnet50] [--only digits|cells] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from idl.infer.datasets.synthetic import CELL_CLASSES, synthetic_cell, write_classification_project
from idl.infer.evaluate.calibration import auroc
from idl.infer.io.images import write_tiff
from idl.infer.service.load import load_model
from idl.infer.tiling.classify import Classify, classify_files
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

N_OOD = 200


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as uint8 32 x 32 images (0..16 scaled to 0..255, bilinear upscaling)."""
    from skimage.transform import resize
    from sklearn.datasets import load_digits

    digits = load_digits()
    big = [resize(im / 16.0, (32, 32), order=1, anti_aliasing=False) for im in digits.images]
    return (np.clip(np.stack(big), 0, 1) * 255).round().astype(np.uint8), digits.target


def write_digits_project(root: Path, seed: int = 0) -> Path:
    """``root/{train,test}/image/digit_XXXX.tif`` and ``groundtruth/groundtruth.csv`` (labels 0-9)."""
    from sklearn.model_selection import train_test_split

    images, labels = digit_images()
    train, test = train_test_split(np.arange(len(labels)), test_size=0.2, stratify=labels, random_state=seed)
    for split, indices in (("train", train), ("test", test)):
        rows = ["filename,groundtruth"]
        for i in indices:
            name = f"digit_{i:04d}.tif"
            write_tiff(root / split / "image" / name, images[i])
            rows.append(f"{name},{labels[i]}")
        (root / split / "groundtruth").mkdir(parents=True, exist_ok=True)
        (root / split / "groundtruth" / "groundtruth.csv").write_text("\n".join(rows) + "\n")
    return root


def write_images(folder: Path, images: list[np.ndarray]) -> list[Path]:
    paths = []
    for i, image in enumerate(images):
        paths.append(write_tiff(folder / f"ood_{i:04d}.tif", image))
    return paths


def ood_sets(root: Path, project: str, seed: int = 1) -> dict[str, list[Path]]:
    """Noise images and the other project's kind of images, 32 x 32."""
    rng = np.random.default_rng(seed)
    if project == "digits":
        noise = [rng.integers(0, 256, (32, 32), dtype=np.uint8) for _ in range(N_OOD)]
        other = [synthetic_cell(rng, CELL_CLASSES[i % 3]) for i in range(N_OOD)]
        other_name = "synthetic cells"
    else:
        noise = [rng.poisson(130, (32, 32)).astype(np.uint16) for _ in range(N_OOD)]
        digits, _ = digit_images()
        other = list(digits[rng.choice(len(digits), N_OOD, replace=False)])
        other_name = "digits"
    return {
        "noise": write_images(root / "ood_noise", noise),
        other_name: write_images(root / "ood_other", other),
    }


def uncertainty_scores(model, files: list[Path], mc: int) -> dict[str, np.ndarray]:
    _, scores = classify_files(model, files, Classify(mc_samples=mc))
    return {
        "MC entropy of mean": scores.uncertainty,
        "MC mean entropy (InstantDL)": scores.uncertainty_instantdl,
        "1 - max softmax (no MC)": 1.0 - scores.probabilities.max(axis=1),
        "atypicality (input statistics)": scores.atypicality,
    }


def run(name: str, root: Path, epochs: int, model_name: str, mc: int) -> dict:
    project = root / name
    if name == "digits":
        write_digits_project(project)
        augment: tuple[str, ...] = ()
    else:
        write_classification_project(project, n_train=600, n_test=150, seed=0)
        augment = ("flip", "rot90")
    config = TrainConfig(
        task="classification",
        model=model_name,
        epochs=epochs,
        steps_per_epoch=36 if name == "digits" else 15,  # one pass over the training images, as measured
        augment=augment,
        mc_samples=mc,
        package=False,
        tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
    )
    start = time.perf_counter()
    result = train_project(project, config, progress=False)
    train_seconds = time.perf_counter() - start
    summary = result.summary or {}
    model = load_model(project / "model")
    test_files = sorted((project / "test" / "image").iterdir())
    in_dist = uncertainty_scores(model, test_files, mc)
    out = {
        "project": name,
        "model": model_name,
        "epochs_run": result.state.epoch,
        "best_epoch": result.state.best_epoch,
        "train_seconds": round(train_seconds, 1),
        "n_test": len(test_files),
        **{k: summary.get(k) for k in ("accuracy", "auc", "accuracy_mc", "ece", "ece_mc")},
        "wrong_vs_right": {
            "MC entropy of mean": summary.get("uncertainty_auroc"),
            "MC mean entropy (InstantDL)": summary.get("uncertainty_instantdl_auroc"),
        },
        "ood": {},
    }
    # the deterministic score's own wrong-vs-right AUROC, on its own predictions
    import pandas as pd

    table = pd.read_csv(project / "results" / "results.csv", dtype=str)
    wrong_det = (table["prediction"] != table["groundtruth"]).to_numpy()
    probs = table[[c for c in table if c.startswith("probability_")]].astype(float).to_numpy()
    out["wrong_vs_right"]["1 - max softmax (no MC)"] = auroc(1 - probs.max(axis=1), wrong_det)
    out["wrong_vs_right"]["atypicality (input statistics)"] = auroc(
        table["atypicality"].astype(float), wrong_det
    )
    out["atypicality_test"] = {
        "median": float(np.median(in_dist["atypicality (input statistics)"])),
        "max": float(np.max(in_dist["atypicality (input statistics)"])),
    }
    for ood_name, files in ood_sets(root / f"{name}_ood", name).items():
        scores = uncertainty_scores(model, files, mc)
        out.setdefault("atypicality_ood_median", {})[ood_name] = float(
            np.median(scores["atypicality (input statistics)"])
        )
        out["ood"][ood_name] = {
            key: auroc(
                np.concatenate([in_dist[key], scores[key]]),
                np.r_[np.zeros(len(test_files)), np.ones(len(files))],
            )
            for key in in_dist
        }
    return out


def report(result: dict) -> None:
    print(
        f"\n== {result['project']} ({result['model']}, {result['epochs_run']} epochs, best "
        f"{result['best_epoch']}, training + test prediction {result['train_seconds']} s)"
    )
    print(
        f"test images {result['n_test']}: accuracy {result['accuracy']:.4f}, AUC {result['auc']:.4f}, "
        f"MC accuracy {result['accuracy_mc']:.4f}, ECE {result['ece']:.4f} (MC {result['ece_mc']:.4f})"
    )
    typical = result["atypicality_test"]
    print(f"atypicality of the test images: median {typical['median']:.2f}, max {typical['max']:.2f}")
    header = ["score", "wrong vs right", *[f"OOD: {k}" for k in result["ood"]]]
    print(" | ".join(header))
    for key in result["wrong_vs_right"]:
        cells = [key, f"{result['wrong_vs_right'][key]:.3f}"]
        cells += [f"{result['ood'][k][key]:.3f}" for k in result["ood"]]
        print(" | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--mc-samples", type=int, default=20)
    parser.add_argument("--only", choices=["digits", "cells"], default=None)
    parser.add_argument("--out", type=Path, default=None, help="working folder [default: a temporary one]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.out or Path(tempfile.mkdtemp(prefix="idl-classify-"))
    results = []
    for name in [args.only] if args.only else ["digits", "cells"]:
        results.append(run(name, root, args.epochs, args.model, args.mc_samples))
        report(results[-1])
    (root / "classify.json").write_text(json.dumps(results, indent=2))
    print(f"\nresults: {root / 'classify.json'}")


if __name__ == "__main__":
    main()
