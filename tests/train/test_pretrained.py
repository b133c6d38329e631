"""Transfer learning: weights from a checkpoint or a bioimage.io package, a frozen encoder."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from idl.infer.core.errors import ModelError
from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.models import UNet2D, UNetSpec
from idl.train.checkpoint import load_checkpoint, model_from_checkpoint
from idl.train.config import ConfigError, TrainConfig
from idl.train.pipeline import train_project
from idl.train.pretrained import read_pretrained, transfer


def test_transfer_loads_matching_tensors_and_reports_the_rest(model_dir: Path) -> None:
    pretrained = read_pretrained(model_dir / "best.pt")
    assert pretrained.architecture["depth"] == 3 and pretrained.architecture["base_filters"] == 8
    net = UNet2D(UNetSpec(in_channels=2, depth=3, base_filters=8))  # a second input channel
    report = transfer(net, pretrained.state_dict)
    skipped = dict(report.skipped)
    assert list(skipped) == ["encoder.0.body.0.weight"]
    assert (
        "shape (8, 1, 3, 3) in the pretrained weights, (8, 2, 3, 3) here"
        in skipped["encoder.0.body.0.weight"]
    )
    assert len(report.loaded) == len(net.state_dict()) - 1
    torch.testing.assert_close(net.state_dict()["head.weight"], pretrained.state_dict["head.weight"])
    assert any(
        line.startswith("encoder.0.body.0.weight ") and line.split()[1] == "skipped:"
        for line in report.table().splitlines()
    )


def test_package_and_checkpoint_hold_the_same_weights(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = next(model_dir.glob("*.bioimageio.zip"))
    from_package, from_checkpoint = read_pretrained(package), read_pretrained(model_dir)
    # a bioimage.io id is taken from the model cache, as idl-predict takes it
    monkeypatch.setenv("IDL_MODEL_CACHE", str(tmp_path))
    shutil.copy(package, tmp_path / "cached-unet.zip")
    assert read_pretrained("cached-unet").state_dict.keys() == from_package.state_dict.keys()
    assert from_package.architecture == from_checkpoint.architecture
    assert from_package.state_dict.keys() == from_checkpoint.state_dict.keys()
    for name, tensor in from_package.state_dict.items():
        torch.testing.assert_close(tensor, from_checkpoint.state_dict[name])


def test_frozen_encoder_keeps_weights_and_batch_norm_statistics() -> None:
    torch.manual_seed(0)
    net = UNet2D(UNetSpec(depth=2, base_filters=4))
    frozen = net.freeze_encoder()
    assert frozen == sum(p.numel() for p in [*net.encoder.parameters(), *net.bottleneck.parameters()])
    before = {k: v.clone() for k, v in net.state_dict().items()}
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    net.train()
    for _ in range(3):
        optimizer.zero_grad()
        net(torch.rand(2, 1, 32, 32)).mean().backward()
        optimizer.step()
    after = net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("decoder", "up", "head")) for k in changed)
    assert "encoder.0.body.1.running_mean" not in changed  # batch-norm statistics stay too


def test_tensors_missing_from_the_pretrained_weights_stay_trainable() -> None:
    net = UNet2D(UNetSpec(depth=2, base_filters=4))
    net.freeze_encoder(keep_trainable={"encoder.0.body.0.weight"})
    assert net.encoder[0].body[0].weight.requires_grad
    assert not net.encoder[0].body[3].weight.requires_grad and not net.bottleneck.body[0].weight.requires_grad
    net.train()
    assert not net.encoder[0].body[1].training  # frozen batch norm keeps its statistics
    assert net.decoder[0].body[1].training


def test_fine_tuning_from_a_package_adopts_its_architecture(model_dir: Path, tmp_path: Path) -> None:
    package = next(model_dir.glob("*.bioimageio.zip"))
    project = write_semantic_project(tmp_path / "p", n_train=6, n_test=1, seed=5, spec=NucleiSpec(size=64))
    config = TrainConfig(
        int8=False,
        epochs=2,
        steps_per_epoch=2,
        batch_size=4,
        image_size=64,
        pretrained=str(package),
        freeze_encoder=True,
        uncertainty=False,
        package=False,
    )
    train_project(project, config, progress=False)
    net, _ = model_from_checkpoint(load_checkpoint(project / "model" / "best.pt"))
    assert (net.spec.depth, net.spec.base_filters) == (3, 8)  # taken from the package, not the defaults
    source = read_pretrained(package).state_dict
    for name, tensor in net.state_dict().items():
        if name.startswith("encoder"):
            torch.testing.assert_close(tensor, source[name])  # frozen: still the package's weights
    assert not torch.equal(net.state_dict()["head.weight"], source["head.weight"])
    report = (project / "model" / "pretrained.txt").read_text()
    assert "head.weight" in report and "loaded" in report
    # start again from this project's own model: --overwrite must not delete it before it is read
    again = replace(config, pretrained=str(project / "model"), epochs=1)
    train_project(project, again, overwrite=True, progress=False)
    assert (project / "model" / "best.pt").is_file()


def test_pretrained_errors_are_clear(model_dir: Path, small_project: Path) -> None:
    with pytest.raises(ConfigError, match="--freeze-encoder keeps pretrained encoder weights"):
        train_project(
            small_project,
            replace(
                TrainConfig(
                    int8=False,
                ),
                freeze_encoder=True,
            ),
            progress=False,
        )
    with pytest.raises(ModelError, match="ONNX graphs cannot be fine-tuned"):
        read_pretrained(model_dir / "model.onnx")
    with pytest.raises(ModelError, match="no such file or folder"):
        read_pretrained(model_dir / "nothing.zip")
