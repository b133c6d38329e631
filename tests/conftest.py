"""Shared fixtures: a small synthetic project and one model trained on it (once per test session)."""

from __future__ import annotations

import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # .ci/run runs two workers on two cores: one thread each for torch (read when it is first
    # imported, also by the commands tests start), instead of two workers fighting over both cores
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import importlib.util

import numpy as np
import pytest

from idl.infer.datasets.synthetic import NucleiSpec, write_classification_project, write_semantic_project

SMALL = NucleiSpec(size=96, objects=(3, 7), radius=(4.0, 10.0))

# The inference side installs without torch (``pip install .[test]``, no ``[train]``); .ci/run runs
# ``pytest -m "not torch"`` there. Tests that train or export a network need torch: every test of
# these folders, and every test that uses one of the trained fixtures below.
TORCH_FOLDERS = ("train", "models", "export", "test_e2e.py", "test_small_data.py")
TORCH_FIXTURES = {"trained_project", "model_dir", "classified_project"}
# Fixtures that train a network for 20-45 s before their tests run: their tests are slow
# (``-m "not slow"`` leaves them out, with the end-to-end runs)
SLOW_FIXTURES = {"classified_project", "project_3d", "regression_project", "detector_onnx"}
HAS_TORCH = importlib.util.find_spec("torch") is not None
collect_ignore = [] if HAS_TORCH else list(TORCH_FOLDERS)  # their modules import torch


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that need torch (``-m "not torch"`` deselects them) and those whose fixture
    trains for long (``slow``). The tests of one training fixture share an xdist group, so that with
    ``-n 2 --dist loadgroup`` one worker trains it once instead of both workers each once."""
    tests = Path(__file__).parent
    for item in items:
        top = item.path.relative_to(tests).parts[0]
        fixtures = set(getattr(item, "fixturenames", ()))
        if top in TORCH_FOLDERS or TORCH_FIXTURES & fixtures:
            item.add_marker(pytest.mark.torch)
        if SLOW_FIXTURES & fixtures:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.xdist_group(min(SLOW_FIXTURES & fixtures)))
    # the longest first: modules with container installs, then those with end-to-end runs or trained
    # fixtures, then the rest, each module kept together (its fixtures are made once), so that with
    # pytest-xdist (.ci/run: --no-loadscope-reorder keeps this order) no worker is left with a long
    # test while the other one idles at the end
    tier: dict[Path, int] = {}
    for item in items:
        cost = 0 if item.get_closest_marker("containers") else 1 if item.get_closest_marker("slow") else 2
        tier[item.path] = min(cost, tier.get(item.path, 2))
    items.sort(key=lambda item: tier[item.path])


@pytest.fixture(scope="session")
def small_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 training and 3 test images of 96 x 96 px with binary masks."""
    return write_semantic_project(
        tmp_path_factory.mktemp("project"), n_train=12, n_test=3, seed=1, spec=SMALL
    )


@pytest.fixture(scope="session")
def trained_project(small_project: Path) -> Path:
    """``small_project`` after a short ``train_project`` run (depth-3 U-Net, 8 filters, 25 epochs of 4
    steps). Test Jaccard 0.89-0.92 with one or two torch threads and three seeds; 3 steps at a step
    size of 3e-3 gave 0.61 with two threads and 0.39 with one."""
    from idl.train.config import TrainConfig
    from idl.train.pipeline import train_project

    config = TrainConfig(
        epochs=25,
        steps_per_epoch=4,
        patience=25,
        learning_rate=1e-3,
        depth=3,
        base_filters=8,
        image_size=64,
        mc_samples=4,
        batch_size=4,
    )
    train_project(small_project, config, progress=False)
    return small_project


@pytest.fixture(scope="session")
def model_dir(trained_project: Path) -> Path:
    return trained_project / "model"


@pytest.fixture(scope="session")
def classified_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """90 training and 15 test images (3 classes, 32 px) after a short ResNet18 run with a package."""
    from idl.train.config import TrainConfig
    from idl.train.pipeline import train_project

    project = write_classification_project(tmp_path_factory.mktemp("cells"), n_train=90, n_test=15, seed=3)
    config = TrainConfig(
        task="classification",
        model="resnet18",
        epochs=3,
        steps_per_epoch=5,
        batch_size=16,
        mc_samples=6,
        seed=1,
    )
    train_project(project, config, progress=False)
    return project


@pytest.fixture
def randomized_norms():
    """A function that sets a network's batch-norm statistics and affine parameters far from their
    initial identity, so that a wrong folding or ordering of them shows in a comparison."""

    def randomize(net):
        import torch

        with torch.no_grad():
            for module in net.modules():
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    module.running_mean.uniform_(-1, 1)
                    module.running_var.uniform_(0.2, 3)
                    module.weight.uniform_(0.5, 2)
                    module.bias.uniform_(-1, 1)
        return net

    return randomize


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
