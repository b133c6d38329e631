"""Multi-class (softmax) segmentation of multichannel (YXC) images, trained and evaluated end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.io.images import read_image, write_tiff
from idl.infer.service.load import load_model
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project


def _two_class_project(root: Path) -> Path:
    """Class 1 nuclei glow in channel 0, class 2 nuclei in channel 1; channel 2 is noise."""
    rng = np.random.default_rng(4)
    spec = NucleiSpec(size=64, objects=(4, 8), radius=(4.0, 8.0))
    for split, count in (("train", 10), ("test", 2)):
        for i in range(count):
            a, labels_a = synthetic_nuclei(rng, spec)
            b, labels_b = synthetic_nuclei(rng, spec)
            target = np.where(labels_a > 0, 1, 0).astype(np.uint8)
            target[(labels_b > 0) & (target == 0)] = 2
            noise = rng.integers(90, 110, a.shape).astype(np.uint16)
            write_tiff(root / split / "image" / f"s{i}.tif", np.stack([a, b, noise], axis=-1))
            write_tiff(root / split / "groundtruth" / f"s{i}.tif", target)
    return root


@pytest.mark.slow  # trains for more than ten seconds
def test_multiclass_multichannel_training(tmp_path: Path) -> None:
    project = _two_class_project(tmp_path)
    config = TrainConfig(
        int8=False,
        epochs=40,
        steps_per_epoch=3,
        batch_size=4,
        patience=40,
        learning_rate=5e-3,
        depth=2,
        base_filters=8,
        image_size=64,
        mc_samples=2,
    )
    result = train_project(project, config, progress=False)
    saved = json.loads((project / "model" / "config.json").read_text())
    assert (saved["num_classes"], saved["loss"], saved["axes"]) == (3, "ce", None)  # axes were guessed
    assert load_model(project / "model").info.axes == "yxc"
    mask = read_image(project / "results" / "s0.tif")
    assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 1, 2}
    uncertainty = read_image(project / "results" / "uncertainty" / "s0.tif")
    assert 0 <= uncertainty.min() and uncertainty.max() <= 2 / 3 + 1e-6  # 1 - sum p^2 for 3 classes
    summary = result.summary
    assert summary is not None and summary["num_classes"] == 3
    print(f"3-class test Jaccard {summary['jaccard']:.3f}, accuracy {summary['accuracy']:.3f}")
    assert summary["accuracy"] > 0.85 and summary["jaccard"] > 0.3
