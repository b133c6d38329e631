"""A task defined in this file alone, both sides registered here: idl-train trains it (its own
network, loss, data and validation score), exports and packages it, evaluates the test set with the
task's own metric, and idl-predict runs the package, without any module of the project naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from torch.utils.data import Dataset

from idl.cli import predict as predict_cli
from idl.cli import train as train_cli
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.normalize import normalize
from idl.infer.core.project import pair_files
from idl.infer.io.images import read_channels_last, read_image, write_text, write_tiff
from idl.infer.tasks import registry as infer_registry
from idl.infer.tasks.base import PackageText, Summary
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.train.losses import make_loss
from idl.train.plan import Plan
from idl.train.prepare import model_name
from idl.train.setup import Setup, data_summary
from idl.train.tasks import registry as train_registry
from idl.train.tasks.base import LossChoice, Start, Trainer

TASK = "toy-threshold"
SIDE = 32


class ToyThreshold(PixelTask):
    """Inference side: the network's sigmoid is written as it is; scored by the share of pixels whose
    thresholded value (> 0.5) agrees with the mask."""

    kind = TASK
    task = TASK

    def package_text(self, info: ModelInfo) -> PackageText:
        return replace(super().package_text(info), network="learned threshold", tags=("threshold", TASK))

    def score(self, scoring: Scoring) -> Summary:
        agree = total = 0
        for item in scoring.items:
            predicted = read_image(item.prediction) > 0.5
            truth = read_image(item.groundtruth) > 0
            agree += int(np.count_nonzero(predicted == truth))
            total += truth.size
        summary: Summary = {"agreement": agree / total, "n_images": len(scoring.items)}
        scoring.out_dir.mkdir(parents=True, exist_ok=True)
        write_text(scoring.out_dir / "summary.json", json.dumps(summary))
        return summary


@dataclass(frozen=True)
class ToySpec:
    in_channels: int = 1


class ToyNet(nn.Module):
    """A learned threshold: one 1 x 1 convolution, a logit ``w * x + b`` per pixel."""

    def __init__(self, spec: ToySpec) -> None:
        super().__init__()
        self.spec = spec
        self.conv = nn.Conv2d(spec.in_channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Pixels(Dataset):
    """Whole images and their class maps; ``length`` images drawn at random per epoch."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, length: int | None = None) -> None:
        self.images, self.masks, self.length, self.epoch = images, masks, length, 0

    def __len__(self) -> int:
        return self.length or len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.length:
            index = int(np.random.default_rng((self.epoch, index)).integers(len(self.images)))
        return torch.from_numpy(self.images[index]), torch.from_numpy(self.masks[index])


class ToyTrainer(Trainer):
    """Training side: the learned threshold with bce, validated by pixel accuracy."""

    task = TASK
    models = ("threshold",)
    loss_names = ("bce",)
    dims = 2
    metric = "accuracy"

    def losses(self, num_classes: int) -> LossChoice:
        return LossChoice("bce", self.loss_names, "a threshold")

    def prepare(self, project: Path, config, start: Start) -> Setup:
        pairs = pair_files(project / "train")
        images = np.stack(
            [
                np.moveaxis(
                    normalize(read_channels_last(p.image, None, "yx")[0], config.normalization), -1, 0
                )
                for p in pairs
            ]
        ).astype(np.float32)
        masks = np.stack([(read_image(p.groundtruth) > 0).astype(np.int64) for p in pairs])
        plan = Plan(
            dims=2,
            patch=(SIDE, SIDE),
            batch_size=2,
            depth=0,
            anisotropic=False,
            steps_per_epoch=10,
            epochs=config.epochs or 6,
            patience=100,
            learning_rate=0.1,
            warmup_steps=0,
            validation="the training images",
            network="1 x 1 convolution",
        )
        config = replace(
            config.with_plan(plan), model="threshold", loss="bce", dropout=0.0, uncertainty=False
        )
        info = ModelInfo(
            task=TASK,
            in_channels=1,
            num_classes=2,
            size_multiple=1,
            halo=0,
            normalization=config.normalization,
            name=model_name(project, 2, "threshold"),
            training={"n_train": len(pairs), "n_val": len(pairs)},
        )
        return Setup(
            config=config,
            model=ToyNet(ToySpec()),
            spec=ToySpec(),
            info=info,
            train_set=Pixels(images, masks, plan.steps_per_epoch * plan.batch_size),
            val_set=Pixels(images, masks),
            loss=make_loss("bce", 2),
            num_classes=2,
            summary=f"{data_summary(len(pairs), len(pairs), 1)}, a learned threshold",
            plan=plan,
        )


@pytest.fixture
def toy_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both sides of the toy task, registered for this test only."""
    monkeypatch.setattr(infer_registry, "_TASKS", dict(infer_registry._TASKS))
    monkeypatch.setattr(train_registry, "_TRAINERS", dict(train_registry._TRAINERS))
    infer_registry.register(ToyThreshold())
    train_registry.register(ToyTrainer())


def _project(root: Path) -> tuple[Path, float]:
    """Dim squares on a darker, noisy background: 6 training and 2 test images; returns the project
    and the agreement of answering 'background' everywhere."""
    rng = np.random.default_rng(0)
    foreground = []
    for split, n in (("train", 6), ("test", 2)):
        for i in range(n):
            mask = np.zeros((SIDE, SIDE), np.uint8)
            y, x = rng.integers(2, 14, size=2)
            mask[y : y + 14, x : x + 14] = 1
            image = 100 + 40 * mask + rng.normal(0, 4, mask.shape)
            write_tiff(root / split / "image" / f"{split}{i}.tif", image.astype(np.float32))
            write_tiff(root / split / "groundtruth" / f"{split}{i}.tif", mask)
            if split == "test":
                foreground.append(mask.mean())
    return root, 1 - float(np.mean(foreground))


@pytest.mark.slow
def test_a_task_registered_here_trains_predicts_and_evaluates(toy_task: None, tmp_path: Path) -> None:
    project, all_background = _project(tmp_path / "toy")
    result = CliRunner().invoke(train_cli.main, [str(project), "--task", TASK, "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((project / "evaluation" / "summary.json").read_text())
    assert summary["n_images"] == 2
    assert summary["agreement"] > 0.97 > all_background + 0.1  # a threshold learned, not "all background"
    assert f"agreement {summary['agreement']:.4g}" in result.output

    package = next((project / "model").glob("*.bioimageio.zip"))
    out = tmp_path / "from-package"
    args = [
        str(package),
        str(project / "test" / "image"),
        "--out",
        str(out),
        "--gt",
        str(project / "test" / "groundtruth"),
        "--quiet",
    ]
    again = CliRunner().invoke(predict_cli.main, args)
    assert again.exit_code == 0, again.output
    from_package = json.loads((out / "evaluation" / "summary.json").read_text())["agreement"]
    assert from_package == pytest.approx(summary["agreement"], abs=1e-9)
    np.testing.assert_allclose(
        read_image(out / "test0.tif"), read_image(project / "results" / "test0.tif"), atol=1e-6
    )
