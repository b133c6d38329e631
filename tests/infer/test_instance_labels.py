"""Label images from binary masks (touching objects split) and the DSB2018 importer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk
from skimage.io import imsave

from idl.infer.core.errors import DataError
from idl.infer.datasets.dsb2018 import import_dsb2018
from idl.infer.evaluate.instance_metrics import instance_scores
from idl.infer.io.images import read_image
from idl.infer.post.instance_labels import binary_to_labels


def _touching_pair() -> tuple[np.ndarray, np.ndarray]:
    truth = np.zeros((40, 60), np.uint16)
    truth[disk((20, 18), 10, shape=truth.shape)] = 1
    truth[disk((20, 37), 10, shape=truth.shape)] = 2  # overlapping discs: one touching blob
    truth[disk((5, 55), 3, shape=truth.shape)] = 3  # a small separate one
    return truth, truth > 0


def test_connected_components_merge_touching_objects_and_the_watershed_splits_them() -> None:
    truth, mask = _touching_pair()
    merged = binary_to_labels(mask)
    assert merged.dtype == np.uint16 and merged.max() == 2
    split = binary_to_labels(mask, split_touching=True)
    assert split.max() == 3
    assert instance_scores(truth, merged)["ap50"] == pytest.approx(1 / 4)  # 1 TP, 1 FP, 2 FN
    assert instance_scores(truth, split)["ap50"] == 1.0
    assert (split > 0).sum() == mask.sum()  # every foreground pixel keeps a label
    assert binary_to_labels(np.zeros((5, 5)), split_touching=True).max() == 0


def _dsb_sample(root: Path, name: str, masks: list[np.ndarray] | None) -> None:
    (root / name / "images").mkdir(parents=True)
    imsave(root / name / "images" / f"{name}.png", np.full((16, 16, 4), 200, np.uint8), check_contrast=False)
    for i, mask in enumerate(masks or []):
        (root / name / "masks").mkdir(exist_ok=True)
        imsave(root / name / "masks" / f"m{i}.png", (mask * 255).astype(np.uint8), check_contrast=False)


def test_dsb2018_import(tmp_path: Path) -> None:
    a, b = np.zeros((16, 16), bool), np.zeros((16, 16), bool)
    a[2:6, 2:6], b[8:12, 8:14] = True, True
    _dsb_sample(tmp_path / "dsb", "abc", [a, b])
    _dsb_sample(tmp_path / "dsb", "def", None)  # a test sample: no masks
    assert import_dsb2018(tmp_path / "dsb", tmp_path / "project") == 2
    labels = read_image(tmp_path / "project" / "train" / "groundtruth" / "abc.tif")
    assert labels.dtype == np.uint16 and sorted(np.unique(labels)) == [0, 1, 2]
    assert (labels == 1).sum() == 16 and (labels == 2).sum() == 24
    assert sorted(p.name for p in (tmp_path / "project" / "train" / "image").iterdir()) == [
        "abc.png",
        "def.png",
    ]
    assert not (tmp_path / "project" / "train" / "groundtruth" / "def.tif").exists()
    with pytest.raises(DataError, match="no sample folders. The DSB2018 layout is <id>/images/<id>.png"):
        import_dsb2018(tmp_path / "empty", tmp_path / "p2")


def test_labels_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from idl.cli import labels as labels_cli
    from idl.infer.io.images import write_tiff

    _, mask = _touching_pair()
    write_tiff(tmp_path / "masks" / "pair.tif", mask.astype(np.uint8))
    result = CliRunner().invoke(
        labels_cli.main,
        ["from-masks", str(tmp_path / "masks"), "--out", str(tmp_path / "out"), "--split-touching"],
    )
    assert result.exit_code == 0, result.output
    assert "pair.tif: 3 object(s)" in result.output
    assert read_image(tmp_path / "out" / "pair.tif").max() == 3


def test_instance_target_and_back() -> None:
    from idl.infer.post.instance_labels import instance_target, labels_from_probabilities, objects_table

    truth, _ = _touching_pair()
    target = instance_target(truth)
    assert set(np.unique(target)) == {0, 1, 2}
    # where the two discs touch, a boundary separates their interiors
    interiors = binary_to_labels(target == 1)
    assert interiors.max() == 3
    # a perfect network: one-hot probabilities of the target give the objects back
    p = np.stack([(target == k).astype(np.float32) for k in range(3)])
    labels = labels_from_probabilities(p)
    assert instance_scores(truth, labels)["ap50_95"] == 1.0 and (labels > 0).sum() == (truth > 0).sum()
    uncertainty = np.where(truth == 2, 0.5, 0.1).astype(np.float32)
    table = objects_table(labels, uncertainty)
    assert list(table.columns) == ["label", "area", "centroid_y", "centroid_x", "uncertainty_mean"]
    row = table.set_index("label").loc[labels[20, 45]]  # the object truth labels 2
    assert row["uncertainty_mean"] == pytest.approx(0.5) and row["area"] == (truth == 2).sum()


def test_the_watershed_thresholds_of_the_model_description_make_the_labels() -> None:
    """A U-Net model whose description carries fitted thresholds: idl-predict's labels (whole image
    and by blocks) use them, the package says them, --info shows them; without, the defaults."""
    from dataclasses import replace

    from idl.infer.core.model_info import ModelInfo
    from idl.infer.post.instance_labels import instance_target, labels_from_probabilities
    from idl.infer.tasks.registry import kind_of
    from idl.infer.tiling.predict import PredictOptions

    truth, _ = _touching_pair()
    target = instance_target(truth)
    p = np.stack([(target == k).astype(np.float32) for k in range(3)])
    p[:, target == 2] = np.array([0.65, 0.05, 0.3], np.float32)[:, None]  # edges read as background
    fitted = {"foreground_threshold": 0.3, "seed_threshold": 0.5}
    info = ModelInfo(
        task="instance",
        num_classes=3,
        dims=2,
        in_channels=1,
        size_multiple=16,
        halo=16,
        postprocessing=fitted,
    )
    task = kind_of(info)
    labels = task.outputs(info).finish(p, None, PredictOptions()).mask
    np.testing.assert_array_equal(labels, labels_from_probabilities(p, **fitted))
    assert instance_scores(truth, labels)["ap50_95"] == 1.0
    by_blocks, foreground, _ = task.outputs(info).block_labels(p)
    np.testing.assert_array_equal(by_blocks, labels)
    np.testing.assert_array_equal(foreground, truth > 0)
    default = task.outputs(replace(info, postprocessing={})).finish(p, None, PredictOptions())
    assert (default.mask > 0).sum() == (target == 1).sum() < (truth > 0).sum()  # the edges lost
    text = task.package_text(info)
    assert text.postprocessing is not None and text.postprocessing["foreground_threshold"] == 0.3
    assert "1 - background probability > 0.3" in text.use and "chosen on the validation images" in text.use
    assert "  labels: foreground_threshold 0.3, seed_threshold 0.5 (fitted on the validation images)" in (
        task.describe(info)
    )
    maxima = replace(info, postprocessing={**fitted, "seed_dynamic": 0.3})
    assert "  seeds: the interior probability's maxima that rise at least 0.3 (h-maxima)" in task.describe(
        maxima
    )
    assert "(h-maxima, within each foreground component)" in task.package_text(maxima).use
    assert task.package_text(maxima).postprocessing["seed_dynamic"] == 0.3
    labels = task.outputs(maxima).finish(p, None, PredictOptions()).mask
    np.testing.assert_array_equal(labels, labels_from_probabilities(p, **maxima.postprocessing))
    np.testing.assert_array_equal(task.outputs(maxima).block_labels(p)[0], labels)


def _two_bumps(
    shape: tuple[int, ...] = (40, 60),
    peaks: tuple[float, float] = (0.98, 0.95),
    saddle: float = 0.56,
    flat: float = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of two touching discs (the truth: labels 1 and 2, radius 10, centres 19 px apart)
    whose interior probability is ``peaks`` within ``flat`` px of their centres and falls to
    ``saddle`` where they meet. By default the interiors are connected above 0.5, and the lower peak
    rises 0.39 over the saddle (about 0.33 once smoothed)."""
    truth = np.zeros(shape, np.uint16)
    yy, xx = np.indices(shape)
    interior = np.full(shape, 0.02)
    for index, ((y, x), peak) in enumerate(zip(((20, 18), (20, 37)), peaks, strict=True), start=1):
        distance = np.hypot(yy - y, xx - x)
        inside = (distance <= 10) & (truth == 0)
        truth[inside] = index
        interior[inside] = peak - (peak - saddle) * np.clip((distance[inside] - flat) / (9.5 - flat), 0, 1)
    background = np.where(truth > 0, 0.02, 0.96)
    return np.stack([background, interior, 1 - background - interior]).astype(np.float32), truth


def test_maxima_seeds_split_touching_objects_whose_interiors_meet() -> None:
    """Connected interiors (p > 0.5) are one seed for both discs, so one object; the interior's
    maxima of dynamic 0.3 are two, and the labels match the truth."""
    from idl.infer.post.instance_labels import labels_from_probabilities

    probabilities, truth = _two_bumps()
    merged = labels_from_probabilities(probabilities)
    # the merged object overlaps the first disc at IoU just over 0.5: 1 match, 1 disc missed
    assert merged.max() == 1 and instance_scores(truth, merged)["ap50"] == 0.5
    assert instance_scores(truth, merged)["ap50_95"] == pytest.approx(0.05)
    split = labels_from_probabilities(probabilities, seed_dynamic=0.3)
    assert split.max() == 2 and instance_scores(truth, split)["ap50_95"] == pytest.approx(1.0)
    # a dynamic above the lower peak's rise keeps one maximum, a floor above the peaks none
    assert labels_from_probabilities(probabilities, seed_dynamic=0.45).max() == 1
    assert labels_from_probabilities(probabilities, seed_threshold=0.96, seed_dynamic=0.3).max() == 0


def test_maxima_seeds_depend_on_the_component_alone() -> None:
    """The labels of a component are the same in a crop that holds it whole as in the whole image
    (what labels by blocks rely on), in 2D and 3D, and ids follow the components."""
    from idl.infer.post.instance_labels import labels_from_probabilities

    probabilities, _ = _two_bumps((40, 120))
    probabilities[:, :, 60:] = probabilities[:, :, :60]  # a second pair beside the first
    whole = labels_from_probabilities(probabilities, seed_dynamic=0.3)
    assert whole.max() == 4
    crop = labels_from_probabilities(probabilities[:, 5:35, 2:58], seed_dynamic=0.3)
    np.testing.assert_array_equal(crop, whole[5:35, 2:58])
    volume = np.repeat(probabilities[:, None, :, :60], 5, axis=1)  # 5 planes of one pair
    labels = labels_from_probabilities(volume, seed_dynamic=0.3)
    assert labels.max() == 2 and all((labels[z] == labels[2]).all() for z in (1, 2, 3))
