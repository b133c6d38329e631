"""--save-augmentations: a grid of augmented samples and their ground truth for every kind of data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imread

from idl.train.augment import resolve
from idl.train.data import PatchDataset, Sample
from idl.train.preview import _target_panel, save_augmentation_grid


def _samples(shape: tuple[int, ...], target_dtype, n: int = 3) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        image = rng.random((*shape, 1)).astype(np.float32)
        target = (image[..., 0] > 0.5).astype(target_dtype)
        out.append(Sample(f"s{i}", image, target))
    return out


@pytest.mark.parametrize("shape", [(40, 48), (6, 40, 48)])
def test_grid_of_segmentation_samples(tmp_path: Path, shape) -> None:
    dataset = PatchDataset(
        _samples(shape, np.uint8),
        shape[-2:] if len(shape) == 2 else (4, 32, 32),
        resolve(("flip", "rotate")),
        0,
        steps=2,
        batch_size=4,
    )
    path = save_augmentation_grid(dataset, tmp_path / "a.png")
    picture = imread(path)
    assert picture.shape[:2] == (460, 1760)  # 2 rows x 8 samples (the first of the epoch) at 100 dpi
    assert picture[..., :3].std() > 10  # something is drawn


def test_ground_truth_panels_of_each_task() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.uint8)
    masks[0, :2], masks[1, 4:] = 1, 1
    labels, title = _target_panel({"masks": masks}, 2)
    assert title == "2 objects" and sorted(np.unique(labels)) == [0, 1, 2] and (labels == 2).sum() == 32
    assert _target_panel(torch.tensor(3), 2) == ("class 3", "label")
    regression = torch.arange(2 * 5 * 4 * 4, dtype=torch.float32).reshape(2, 5, 4, 4)
    plane, _ = _target_panel(regression, 3)  # first target channel, central z plane
    np.testing.assert_array_equal(plane, regression[0, 2].numpy())
