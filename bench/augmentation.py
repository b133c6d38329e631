"""Does augmentation help when training data are scarce? Test Jaccard with and without, side by side.

Two synthetic semantic-segmentation experiments, each with a deliberately small training set
(``--n-train``, default 3 images of 192 x 192 px: 2 for training, 1 for validation) and two test sets
of ``--n-test`` images:

- ``nuclei`` (idl.infer.datasets.synthetic nuclei): one test set from the same acquisition, one from a
  noisier, blurrier acquisition with dimmer nuclei (a quarter of the photons, wider blur), as when a model
  meets another microscope;
- ``rods``: rod-shaped cells to segment among round debris of the same brightness. Training rods lie
  within 9 degrees of horizontal (as when cells align in a flow channel); one test set is aligned the
  same way, the other has rods at every angle. Only a model that learned the shape, not the
  orientation, finds the turned rods.

The same U-Net is trained by idl's own pipeline for a fixed number of epochs under each augmentation
setting and several seeds; both test sets are scored through the exported ONNX graph. Printed: test
Jaccard per seed, the mean, and the ratio to no augmentation.

    python bench/augmentation.py [--experiments nuclei,rods] [--n-train 3] [--epochs 200] [--seeds 3]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from idl.infer.core.project import pair_files
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_rods, write_semantic_project
from idl.infer.evaluate.metrics import confusion_matrix, jaccard
from idl.infer.io.images import read_channels_last, read_image, write_tiff
from idl.infer.service.load import load_model
from idl.infer.tiling.predict import PredictOptions, predict_image
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

GEOMETRIC = ("flip", "rot90", "rotate", "zoom", "elastic")
INTENSITY = ("contrast", "brightness", "gamma", "gaussian_noise", "blur", "resample")
ARMS: dict[str, tuple[str, ...]] = {
    "none": (),
    "flip,rot90 (default)": ("flip", "rot90"),
    "geometric": GEOMETRIC,
    "geometric + intensity": GEOMETRIC + INTENSITY,
}
SIZE = 192
OTHER_ACQUISITION = NucleiSpec(size=SIZE, photons=30.0, blur=(2.0, 3.5), brightness=(0.15, 0.6))
ALIGNED = (-np.pi / 20, np.pi / 20)  # rods within 9 degrees of horizontal
ANY_ANGLE = (0.0, np.pi)
EXPERIMENTS = {
    "nuclei": ("same acquisition", "other acquisition"),
    "rods": ("aligned rods", "rods at any angle"),
}


def write_rods(folder: Path, count: int, seed: int, angles: tuple[float, float]) -> None:
    """``count`` rod images with their masks into ``folder/{image,groundtruth}``."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        image, mask = synthetic_rods(rng, angles, NucleiSpec(size=SIZE))
        write_tiff(folder / "image" / f"rods_{i:03d}.tif", image)
        write_tiff(folder / "groundtruth" / f"rods_{i:03d}.tif", mask)


def write_experiment(name: str, root: Path, n_train: int, n_test: int) -> Path:
    """The project of experiment ``name``: ``train/``, ``test/`` (like training) and ``test_other/``."""
    project = root / name
    shutil.rmtree(project, ignore_errors=True)
    if name == "nuclei":
        write_semantic_project(project, n_train=n_train, n_test=n_test, seed=11, spec=NucleiSpec(size=SIZE))
        other = write_semantic_project(
            root / "nuclei_other", n_train=0, n_test=n_test, seed=12, spec=OTHER_ACQUISITION
        )
        shutil.copytree(other / "test", project / "test_other")
        shutil.rmtree(other)
    else:
        write_rods(project / "train", n_train, 21, ALIGNED)
        write_rods(project / "test", n_test, 22, ALIGNED)
        write_rods(project / "test_other", n_test, 23, ANY_ANGLE)
    return project


def jaccard_of(model_dir: Path, test: Path) -> float:
    """Foreground Jaccard over all pixels of the test folder (``image/`` and ``groundtruth/``), from the
    exported ONNX model with its own threshold: the evaluation's pooled score."""
    model = load_model(model_dir)
    total = np.zeros((2, 2), np.int64)
    for pair in pair_files(test):
        image = read_channels_last(pair.image, None, "yx")[0]
        mask = predict_image(model, image, PredictOptions(progress=False)).mask
        truth = (read_image(pair.groundtruth) > 0).astype(np.int64)
        total += confusion_matrix((mask > 0).astype(np.int64), truth, 2)
    return jaccard(total)


def run(project: Path, augment: tuple[str, ...], epochs: int, seed: int) -> tuple[float, float, float]:
    """Train on ``project`` with ``augment`` for ``epochs`` (no early stop); return the test Jaccard on
    ``test/`` and ``test_other/``, and the training seconds."""
    config = TrainConfig(
        task="semantic",
        augment=augment,
        epochs=epochs,
        steps_per_epoch=1,  # one batch of the two training images, as the figures were measured
        batch_size=4,
        patience=epochs,
        image_size=128,
        depth=3,
        seed=seed,
        uncertainty=False,
        evaluate=False,
        package=False,
    )
    start = time.perf_counter()
    train_project(project, config, overwrite=True, progress=False)
    seconds = time.perf_counter() - start
    model = project / "model"
    return jaccard_of(model, project / "test"), jaccard_of(model, project / "test_other"), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default="nuclei,rods", help="comma-separated: nuclei, rods")
    parser.add_argument("--n-train", type=int, default=3)
    parser.add_argument("--n-test", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="idl-augment-bench-"))
    print(
        f"{args.n_train} training images (one held out for validation), {args.n_test} + {args.n_test} test "
        f"images of {SIZE} px; U-Net depth 3, {args.epochs} epochs, seeds 0..{args.seeds - 1}"
    )
    for experiment in args.experiments.split(","):
        if experiment not in EXPERIMENTS:
            parser.error(f"unknown experiment '{experiment}'; use {', '.join(EXPERIMENTS)}")
        project = write_experiment(experiment, out, args.n_train, args.n_test)
        same, other = EXPERIMENTS[experiment]
        print(f"\n{experiment}: test sets '{same}' and '{other}'", flush=True)
        results: dict[str, list[tuple[float, float]]] = {}
        for name, augment in ARMS.items():
            results[name] = []
            for seed in range(args.seeds):
                scores = run(project, augment, args.epochs, seed)
                results[name].append(scores[:2])
                print(
                    f"  {name:24s} seed {seed}: test Jaccard {scores[0]:.3f} {same}, {scores[1]:.3f} {other} "
                    f"({scores[2]:.0f} s)",
                    flush=True,
                )
        print_table(results, same, other)


def print_table(results: dict[str, list[tuple[float, float]]], same: str, other: str) -> None:
    """A Markdown table: per-seed scores, mean and ratio of the mean to no augmentation, per test set."""
    print(
        f"\n| augmentation | {same}: per seed | mean | vs none | {other}: per seed | mean | vs none |"
        "\n|---|---|---|---|---|---|---|"
    )
    base = np.mean(results["none"], axis=0)
    for name, rows in results.items():
        cells = []
        for k in (0, 1):
            scores = [r[k] for r in rows]
            mean = float(np.mean(scores))
            cells += [", ".join(f"{v:.3f}" for v in scores), f"{mean:.3f}", f"{mean / base[k]:.2f}x"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
