"""The training plan: planned from the data and the device, deterministic, every item overridable."""

from __future__ import annotations

import math

import numpy as np
import pytest

from idl.train.plan import (
    BUDGETS,
    US_PER_VALIDATION_VOXEL,
    Fingerprint,
    Requests,
    class_components,
    learning_rate_at,
    make_plan,
    object_sizes,
    step_cost,
    step_seconds,
    validation_voxels,
)
from idl.train.tasks.classification.plan import make_classification_plan


def _nuclei(side: int = 520, objects: float = 30.0) -> Fingerprint:
    return Fingerprint(dims=2, shapes=((side, 696),) * 12, channels=1, object_size=objects, n_objects=600)


def test_plan_is_a_pure_function_of_data_and_device() -> None:
    a = make_plan(_nuclei(), Requests(), "cpu")
    b = make_plan(_nuclei(), Requests(), "cpu")
    assert a == b and a.to_json() == b.to_json()
    # small objects: the shallowest U-Net whose receptive field (12 * 2**depth) spans 3 of them
    assert (a.depth, a.patch, a.batch_size) == (3, (128, 128), 4)
    # the budget: the CPU's seconds at the measured cost per pixel, in epochs of 50 steps
    steps = BUDGETS["cpu"].seconds["2d"] * 1e6 / (step_cost(2, 3) * 4 * 128 * 128)
    assert a.steps_per_epoch == 50 and a.epochs == round(steps / 50) == 18
    assert a.patience == 10 and a.warmup_steps == round(0.05 * a.total_steps)
    # a GPU affords larger batches and a far longer run
    gpu = make_plan(_nuclei(), Requests(), "cuda")
    assert gpu.batch_size > a.batch_size and gpu.total_steps > 10 * a.total_steps


def test_the_budget_does_not_depend_on_the_number_of_images() -> None:
    few = make_plan(Fingerprint(2, ((512, 512),) * 3, 1, object_size=20), Requests(), "cpu")
    many = make_plan(Fingerprint(2, ((512, 512),) * 300, 1, object_size=20), Requests(), "cpu")
    assert few.total_steps == many.total_steps and few.batch_size == many.batch_size


def test_larger_objects_get_a_deeper_network_within_the_image_size() -> None:
    assert make_plan(_nuclei(objects=60), Requests(), "cpu").depth == 4
    assert make_plan(_nuclei(objects=200), Requests(), "cpu").depth == 5
    assert make_plan(_nuclei(objects=None), Requests(), "cpu").depth == 4
    # 64 px images keep at least 8 px at the deepest level: depth 3
    small = Fingerprint(2, ((64, 64),) * 4, 1, object_size=200)
    plan = make_plan(small, Requests(), "cpu")
    assert plan.depth == 3 and plan.patch == (64, 64)
    assert plan.sources["depth"].endswith("at most depth 3 fits the images (64 x 64 px)")


def test_every_item_can_be_set() -> None:
    wanted = Requests(
        patch_side=96, batch_size=3, depth=2, steps_per_epoch=7, epochs=5, patience=2, learning_rate=3e-4
    )
    plan = make_plan(_nuclei(), wanted, "cpu")
    assert (plan.patch, plan.batch_size, plan.depth, plan.steps_per_epoch, plan.epochs) == (
        (96, 96),
        3,
        2,
        7,
        5,
    )
    assert (plan.patience, plan.learning_rate) == (2, 3e-4)
    assert {plan.sources[k] for k in ("patch", "batch_size", "depth", "epochs", "patience")} == {"set"}
    # InstantDL's iterations_over_dataset only limits the planned epochs
    assert make_plan(_nuclei(), Requests(epoch_limit=4), "cpu").epochs == 4
    assert make_plan(_nuclei(), Requests(epoch_limit=400), "cpu").epochs == 18


def test_validation_is_counted_into_the_budget() -> None:
    """Validation time comes out of the same seconds; expensive validation makes epochs longer so it
    stays within a fifth of each."""
    free = make_plan(_nuclei(), Requests(), "cpu")
    step = step_seconds(2, 3, 4, (128, 128))  # 0.26 s
    # two 520 x 696 images: a validation of 0.7 M px costs 1.4 s, as long as 5 steps
    cheap = make_plan(_nuclei(), Requests(), "cpu", validation_voxels=2 * 520 * 696)
    val = 2 * 520 * 696 * US_PER_VALIDATION_VOXEL[2] / 1e6
    assert cheap.steps_per_epoch == 50
    assert cheap.epochs == round(BUDGETS["cpu"].seconds["2d"] / (50 * step + val)) < free.epochs
    # 20 M px (a 3 x 2048^2 validation set with its tile overlaps): 38 s, 145 steps -> epochs of 580
    costly = make_plan(_nuclei(), Requests(), "cpu", validation_voxels=20_000_000)
    val = 20_000_000 * US_PER_VALIDATION_VOXEL[2] / 1e6
    assert costly.steps_per_epoch == math.ceil(val / step * 4)
    assert val <= 0.2 * (costly.steps_per_epoch * step + val) + 1e-9
    seconds = costly.epochs * (costly.steps_per_epoch * step + val)
    assert abs(seconds - BUDGETS["cpu"].seconds["2d"]) <= 0.5 * (costly.steps_per_epoch * step + val)
    assert "validation" in costly.sources["steps_per_epoch"] and "validation" in costly.sources["epochs"]
    # what is set stays set
    fixed = make_plan(_nuclei(), Requests(steps_per_epoch=50, epochs=3), "cpu", validation_voxels=20_000_000)
    assert (fixed.steps_per_epoch, fixed.epochs) == (50, 3)


def test_volumes_anisotropy_from_the_voxel_size() -> None:
    volume = Fingerprint(3, ((60, 128, 128),) * 3, 1, spacing=(0.29, 0.26, 0.26), object_size=25)
    plan = make_plan(volume, Requests(), "cpu")
    assert not plan.anisotropic and plan.patch == (16, 64, 64) and plan.batch_size == 2
    long_z = Fingerprint(3, ((30, 256, 256),) * 2, 1, spacing=(1.0, 0.2, 0.2), object_size=25)
    plan = make_plan(long_z, Requests(), "cpu")
    assert plan.anisotropic and plan.patch[0] == 8
    assert make_plan(long_z, Requests(anisotropic=False), "cpu").anisotropic is False
    steps = BUDGETS["cpu"].seconds["3d"] * 1e6 / (step_cost(3, 3) * plan.batch_size * math.prod(plan.patch))
    assert plan.epochs == round(steps / 50)


def test_costs_the_voxel_rate_does_not_cover() -> None:
    # a 3D batch of one (InstantDL's configs) costs 4.7x its voxels' share (measured), so half the
    # batch buys 2 / 4.7 of the steps, not twice as many
    volume = Fingerprint(3, ((60, 128, 128),) * 3, 1, object_size=25)
    two, one = make_plan(volume, Requests(), "cpu"), make_plan(volume, Requests(batch_size=1), "cpu")
    assert one.total_steps / two.total_steps == pytest.approx(2 / 4.7, rel=0.1)
    # a classifier step costs at least 0.18 s however small the images: 140 s buy 778 steps of 28 px
    plan = make_classification_plan((28, 28), "resnet18", True, Requests(batch_size=2), "cpu")
    assert plan.total_steps == pytest.approx(140 / 0.18, rel=0.05)


def test_instantdl_batchsize_is_at_least_two_patches() -> None:
    """InstantDL's examples ask for a batch of 1, with which batch norm does not hold: 2 patches; our
    own batch_size is taken as given."""
    slices = Fingerprint(2, ((512, 512),) * 10, 1, object_size=200)
    plan = make_plan(slices, Requests(batch_images=1), "cpu")
    assert plan.batch_size == 2 and plan.sources["batch_size"] == "InstantDL's batchsize 1, at least 2"
    assert make_plan(slices, Requests(batch_images=3), "cpu").batch_size == 3
    assert make_plan(slices, Requests(batch_images=1, batch_size=1), "cpu").batch_size == 1
    cls = make_classification_plan((28, 28), "resnet18", True, Requests(batch_images=8), "cpu")
    assert cls.batch_size == 8


def test_object_sizes_and_class_components() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[2:12, 2:7] = 1  # 10 x 5: side sqrt(50)
    labels[20:36, 20:36] = 2
    sizes, areas = object_sizes(labels)
    np.testing.assert_allclose(sizes, [math.sqrt(50), 16.0])
    np.testing.assert_array_equal(areas, [50, 256])
    # a thin network (membranes): as large as it is thick, not as its box
    grid = np.zeros((200, 200), np.int32)
    grid[::40, :] = grid[1::40, :] = grid[:, ::40] = grid[:, 1::40] = 1
    sizes, _ = object_sizes(grid)
    assert sizes[0] < 3
    classes = np.zeros((20, 20), np.uint8)
    classes[:5, :5] = 1
    classes[10:, 10:] = 1  # two components of class 1
    classes[:5, 10:] = 2
    components = class_components(classes)
    assert components.max() == 3 and len(np.unique(components[classes == 1])) == 2
    volume = np.zeros((4, 10, 10), np.int32)
    volume[1:3, 2:6, 2:4] = 1
    np.testing.assert_allclose(object_sizes(volume)[0], [math.sqrt(8)])


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    cosine = [learning_rate_at(step, 100, 1e-3, 10, "cosine") for step in range(100)]
    np.testing.assert_allclose(cosine[:10], np.arange(1, 11) * 1e-4)
    assert all(a >= b for a, b in zip(cosine[10:], cosine[11:], strict=False))
    assert cosine[55] == pytest.approx(0.5e-3, rel=0.02) and cosine[-1] < 1e-6
    # trapezoid: flat to 64 (the last 40 % of the 90 steps after the warm-up decay), then linear to 0
    trapezoid = [learning_rate_at(step, 100, 1e-3, 10) for step in range(100)]
    np.testing.assert_allclose(trapezoid[:10], np.arange(1, 11) * 1e-4)
    assert set(trapezoid[10:64]) == {1e-3}
    np.testing.assert_allclose(trapezoid[64:], 1e-3 * (100 - np.arange(64, 100)) / 36)
    assert [learning_rate_at(s, 100, 1e-3, 10, "constant") for s in (10, 99)] == [1e-3, 1e-3]


def test_thin_volumes_limit_the_depth() -> None:
    thin = Fingerprint(3, ((6, 256, 256),) * 2, 1, object_size=100)
    plan = make_plan(thin, Requests(), "cpu")
    assert plan.depth == 2 and plan.patch[0] == 4  # 2 halvings fit in 6 planes
    long_z = Fingerprint(3, ((6, 256, 256),) * 2, 1, spacing=(1.0, 0.1, 0.1), object_size=100)
    assert make_plan(long_z, Requests(), "cpu").depth == 3  # the first level keeps z


def test_gpu_batches_grow_with_its_memory() -> None:
    small = make_plan(_nuclei(), Requests(), "cuda", memory_gb=4)
    large = make_plan(_nuclei(), Requests(), "cuda", memory_gb=24)
    assert large.batch_size == 6 * small.batch_size  # 3x and 0.5x the 8 GB reference
    assert make_plan(_nuclei(), Requests(), "cpu", memory_gb=24) == make_plan(_nuclei(), Requests(), "cpu")


def test_several_processes_share_a_global_batch() -> None:
    one = make_plan(_nuclei(), Requests(), "cuda", memory_gb=8)
    four = make_plan(_nuclei(), Requests(), "cuda", memory_gb=8, processes=4)
    assert four.batch_size == 4 * one.batch_size  # every GPU fills its memory
    # on CPUs the batch stays the single process's, rounded up to a multiple of the processes
    cpu = make_plan(_nuclei(), Requests(), "cpu")
    assert make_plan(_nuclei(), Requests(), "cpu", processes=2).batch_size == cpu.batch_size == 4
    three = make_plan(_nuclei(), Requests(), "cpu", processes=3)
    assert three.batch_size == 6 and "a multiple of 3 processes" in three.table()
    assert make_plan(_nuclei(), Requests(batch_size=5), "cpu", processes=3).batch_size == 5  # set: kept


def test_the_typical_object_is_where_the_foreground_pixels_are() -> None:
    from idl.train.plan import typical_size

    specks_and_a_tree = np.array([1.0] * 50 + [2.0] * 10 + [12.0])
    pixels = np.array([1.0] * 50 + [4.0] * 10 + [3000.0])  # a tree 12 px thick holds most pixels
    assert np.median(specks_and_a_tree) == 1.0 and typical_size(specks_and_a_tree, pixels) == 12.0
    nuclei = np.array([18.0, 20, 22, 25, 30])
    assert typical_size(nuclei) == 25.0 and typical_size(np.zeros(0)) is None


def test_validation_voxels_count_the_tile_overlaps() -> None:
    # one tile covers a 400 x 400 image: its voxels once
    assert validation_voxels([(400, 400)], (512, 512), (48, 48), (8, 8)) == 400 * 400
    # a 1024 px axis in 512 px tiles with a 48 px halo needs 3 tiles: 3 x 3 tiles of up to 512 px
    many = validation_voxels([(1024, 1024)], (512, 512), (48, 48), (8, 8))
    assert 1024 * 1024 < many <= 9 * 512 * 512
