"""Small real projects as a lab has them: a few annotated images, one image, one volume.

The real images are the bundled BBBC039 crops (tests/data/bbbc039-crops, CC0). Budgets are set
small for the suite's time; the defaults' figures on the full real data sets are in
docs/benchmarks.md (bench/real_data.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from idl.infer.core.project import pair_files
from idl.infer.evaluate.baseline import otsu_instance_scores, otsu_jaccard
from idl.infer.io.images import read_image, write_tiff
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

CROPS = Path(__file__).parent / "data" / "bbbc039-crops"


def _copy(tmp_path: Path, train: tuple[str, ...] | None = None, binary: bool = False) -> Path:
    project = tmp_path / "bbbc039"
    shutil.copytree(CROPS, project)
    for part in ("image", "groundtruth"):
        for path in (project / "train" / part).iterdir():
            if train is not None and path.name not in train:
                path.unlink()
    if binary:
        for path in project.glob("*/groundtruth/*.tif"):
            write_tiff(path, (read_image(path) > 0).astype(np.uint8))
    return project


@pytest.mark.slow
def test_a_few_real_images_beat_otsu_and_connected_components(tmp_path: Path) -> None:
    project = _copy(tmp_path)
    config = TrainConfig(
        int8=False, task="instance", epochs=8, steps_per_epoch=25, package=False, uncertainty=False
    )
    result = train_project(project, config, progress=False)
    plan = json.loads((project / "model" / "plan.json").read_text())
    baseline = otsu_instance_scores(pair_files(project / "test"))
    summary = result.summary
    assert summary is not None
    print(f"AP50:95 U-Net {summary['ap50_95']:.3f}, Otsu + connected components {baseline['ap50_95']:.3f}")
    # the plan from the data: nuclei of 33 px (box side, by area) need a receptive field of 99 px ->
    # depth 4 (192 px), patches of 192 px in batches of 2 (65 k px per step)
    assert (plan["depth"], plan["patch"], plan["batch_size"]) == (4, [192, 192], 2)
    assert plan["validation"].startswith("1 of 5 images")
    assert summary["ap50_95"] > baseline["ap50_95"] + 0.1


@pytest.mark.slow
def test_one_image_trains_on_one_part_and_validates_on_another(tmp_path: Path) -> None:
    project = _copy(tmp_path, train=("A02.tif",), binary=True)
    config = TrainConfig(
        int8=False, task="semantic", epochs=6, steps_per_epoch=25, package=False, mc_samples=3
    )
    result = train_project(project, config, progress=False)
    plan = json.loads((project / "model" / "plan.json").read_text())
    # 256 x 256 px: y >= 205 validates (51 px); half the image stays for training (y < 128), which
    # leaves a gap of 77 px of the 96 px the depth-4 U-Net's halo asks for
    assert plan["validation"] == (
        "one training image: y >= 205 of A02 (51 of 256 px), 77 px away from the training region (y < 128)"
    )
    assert (plan["patch"], plan["batch_size"]) == ([128, 128], 4)  # shrunk to the training region
    history = result.state.history
    assert len(history) == 6 and all(0.5 < h["val_jaccard"] <= 1 for h in history[2:])
    summary = result.summary
    baseline = otsu_jaccard(pair_files(project / "test"))
    print(f"one image: test Jaccard {summary['jaccard']:.3f}, Otsu {baseline:.3f}")
    assert summary["jaccard"] > 0.8 and len(list((project / "results" / "uncertainty").glob("*.tif"))) == 3


@pytest.mark.slow
def test_one_volume_trains_validates_on_a_block_and_predicts(tmp_path: Path) -> None:
    from idl.infer.datasets.synthetic import synthetic_nuclei_3d

    rng = np.random.default_rng(5)
    for split in ("train", "test"):
        volume, labels = synthetic_nuclei_3d(rng, (16, 64, 112))
        write_tiff(tmp_path / split / "image" / "v.tif", volume)
        write_tiff(tmp_path / split / "groundtruth" / "v.tif", (labels > 0).astype(np.uint8))
    config = TrainConfig(
        int8=False, task="semantic", epochs=8, steps_per_epoch=10, package=False, mc_samples=2
    )
    result = train_project(tmp_path, config, progress=False)  # no dims: the volume says 3D
    plan = json.loads((tmp_path / "model" / "plan.json").read_text())
    assert plan["dims"] == 3 and plan["validation"].startswith("one training image: x >= 90 of v")
    summary = result.summary
    baseline = otsu_jaccard(pair_files(tmp_path / "test"), dims=3)
    print(f"one volume: test Jaccard {summary['jaccard']:.3f}, Otsu {baseline:.3f}")
    assert summary["jaccard"] > baseline
    assert read_image(tmp_path / "results" / "v.tif").shape == (16, 64, 112)

    # --val-fraction 0: the whole volume trains for the fixed budget and the last epoch is kept
    again = train_project(
        tmp_path,
        TrainConfig(
            int8=False,
            task="semantic",
            epochs=3,
            steps_per_epoch=5,
            val_fraction=0.0,
            package=False,
            uncertainty=False,
        ),
        overwrite=True,
        progress=False,
    )
    plan = json.loads((tmp_path / "model" / "plan.json").read_text())
    assert plan["validation"].startswith("none") and again.state.best_epoch == 3
    assert [set(h) for h in again.state.history] == [{"epoch", "train_loss"}] * 3
