"""Transfer learning from a bioimage.io package: epochs to a target validation loss, fine-tuned vs
from scratch, on a related synthetic task.

Source task: 40 synthetic nuclei images (the demo's look). A U-Net is trained on it by idl-train and
shipped as a bioimage.io package. Target task: a *related* but different look (larger, dimmer
nuclei, stronger blur and a brighter, noisier background) with only 8 training images. The same
training run is made twice on the target task, from scratch and with ``--pretrained PACKAGE``; the
validation loss per epoch is printed side by side, and the number of epochs each run needs to reach
the target (the worse of the two runs' best validation losses, plus 5%, i.e. a level both reach).

    python bench/transfer.py [--epochs 25] [--source-epochs 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

SOURCE = NucleiSpec(size=192)
TARGET = NucleiSpec(
    size=192,
    objects=(5, 14),
    radius=(8.0, 18.0),
    brightness=(0.15, 0.6),
    blur=(1.8, 3.0),
    background=(0.2, 0.6),
    photons=60.0,
)


def epochs_to(history: list[dict[str, float]], target: float) -> int | None:
    """First epoch whose validation loss is at or below ``target``."""
    return next((h["epoch"] for h in history if h["val_loss"] <= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=25, help="epochs of each target-task run")
    parser.add_argument("--source-epochs", type=int, default=30)
    parser.add_argument("--out", type=Path, default=None, help="working folder [default: a temporary one]")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.out or Path(tempfile.mkdtemp(prefix="idl-transfer-"))
    base = TrainConfig(
        depth=3,
        base_filters=16,
        image_size=128,
        batch_size=4,
        steps_per_epoch=8,  # one patch per training image (32) in batches of 4, as measured
        learning_rate=2e-3,
        evaluate=False,
        uncertainty=False,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
    )

    source = write_semantic_project(root / "source", n_train=40, n_test=2, seed=11, spec=SOURCE)
    start = time.perf_counter()
    result = train_project(
        source, replace(base, epochs=args.source_epochs, patience=args.source_epochs), progress=False
    )
    print(
        f"source task: {args.source_epochs} epochs in {time.perf_counter() - start:.0f} s "
        f"-> {result.package.name if result.package else '(no package)'}"
    )

    runs = {}
    for name, pretrained in (("scratch", None), ("fine-tuned", str(result.package))):
        project = write_semantic_project(root / f"target-{name}", n_train=8, n_test=2, seed=23, spec=TARGET)
        config = replace(base, epochs=args.epochs, patience=args.epochs, pretrained=pretrained, package=False)
        start = time.perf_counter()
        runs[name] = train_project(project, config, progress=False).state.history
        print(f"target task, {name}: {time.perf_counter() - start:.0f} s")

    target = max(min(h["val_loss"] for h in hist) for hist in runs.values()) * 1.05
    print(f"\n{'epoch':>5}{'scratch val_loss':>18}{'fine-tuned val_loss':>21}")
    for a, b in zip(runs["scratch"], runs["fine-tuned"], strict=False):
        print(f"{a['epoch']:>5}{a['val_loss']:>18.4f}{b['val_loss']:>21.4f}")
    reached = {name: epochs_to(hist, target) for name, hist in runs.items()}
    print(f"\ntarget validation loss {target:.4f} (the worse run's best + 5%)")
    for name, epoch in reached.items():
        best = min(h["val_loss"] for h in runs[name])
        print(f"{name:>11}: reached at epoch {epoch}; best val_loss {best:.4f}")
    if reached["scratch"] and reached["fine-tuned"]:
        print(f"fine-tuning needs {reached['fine-tuned'] / reached['scratch']:.2f}x the epochs of scratch")


if __name__ == "__main__":
    main()
