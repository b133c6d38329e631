"""A full disk during idl-train (issue 30, item 8): the file that did not fit, the space it needs and
how to continue, exit status 1 without a traceback; a checkpoint is replaced only once its successor
is complete, so the last good one survives and ``--resume`` completes the run after space is freed.

The disk is a 20 MB tmpfs where the machine lets root mount one (a real ENOSPC from the kernel);
elsewhere the checkpoint writes go to a file object that raises ENOSPC once the disk is "full"."""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from idl.cli import train as train_cli
from idl.export.bioimageio import PackageRequest, export_package, package_bytes
from idl.infer.core.model_info import ModelInfo
from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.infer.io.images import DiskFull, megabytes
from idl.infer.io.places import LEFTOVER
from idl.models import UNet, UNetSpec
from idl.train import checkpoint
from idl.train.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from idl.train.tracking import STORE_ROOM, Tracker

from ..small_disk import SmallDisk, small_disk


class FullDiskFile(io.FileIO):
    """A file on a disk with ``room`` bytes left: writes beyond them raise ENOSPC."""

    def __init__(self, path: Any, mode: str, room: int) -> None:
        super().__init__(path, mode.replace("b", ""))
        self.room = room

    def write(self, data: Any) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return super().write(data)


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    """A 20 MB tmpfs when root may mount one, else checkpoint writes that raise ENOSPC when full."""
    with small_disk(tmp_path / "disk") as small:
        if not small.mounted:
            real_open = open

            def checkpoint_open(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
                if small.full and "w" in mode:
                    return FullDiskFile(path, mode, 1000)
                return real_open(path, mode)

            monkeypatch.setattr(checkpoint, "open", checkpoint_open, raising=False)
        yield small


def _payload(epoch: int, values: int) -> dict[str, Any]:
    return {"state": {"epoch": epoch}, "state_dict": {"w": torch.full((values,), float(epoch))}}


def test_a_checkpoint_that_does_not_fit_leaves_the_previous_one(disk: SmallDisk) -> None:
    last = disk.folder / "model" / "last.pt"
    save_checkpoint(last, _payload(1, 10_000))
    disk.fill(leave=64 * 1024)
    with pytest.raises(DiskFull) as caught:
        save_checkpoint(last, _payload(2, 100_000))  # 400 kB of tensors
    needed = checkpoint_bytes({"format": checkpoint.FORMAT, **_payload(2, 100_000)})
    assert needed == 400_000 + 1 * 300 + 16 * 1024
    assert str(caught.value).startswith(f"No space left on {last} (needs about 0.40 MB, ")
    if disk.mounted:  # found before writing; the free space is the tmpfs's own
        assert str(caught.value).endswith(f"needs about 0.40 MB, {megabytes(disk.free_bytes())} MB free).")
    assert load_checkpoint(last)["state"]["epoch"] == 1  # the last good one, whole
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.pt"]


def test_a_disk_that_fills_during_the_write_leaves_the_previous_one(disk: SmallDisk) -> None:
    """The check before writing passes (the tensors' 48 kB fit), the write does not (3000 tensors
    take 790 kB): PyTorch's RuntimeError becomes the same message, the temporary file is removed."""
    last = disk.folder / "last.pt"
    save_checkpoint(last, _payload(1, 10))
    many = {"state": {"epoch": 2}, "state_dict": {f"w{i}": torch.zeros(4) for i in range(3000)}}
    disk.fill(leave=200 * 1024)
    with pytest.raises(DiskFull) as caught:
        save_checkpoint(last, many)
    needed = checkpoint_bytes({"format": checkpoint.FORMAT, **many})
    assert needed == 3000 * 16 + 3000 * 300 + 16 * 1024  # 0.92 MB; torch.save writes 0.75 MB
    assert str(caught.value).startswith(f"No space left on {last} (needs about 0.92 MB, ")
    assert isinstance(caught.value.__cause__, RuntimeError)  # PyTorch's "unexpected pos"
    assert load_checkpoint(last)["state"]["epoch"] == 1
    assert sorted(p.name for p in disk.folder.iterdir() if p.name != "ballast") == ["last.pt"]


def test_the_estimate_is_about_the_size_torch_writes(tmp_path: Path) -> None:
    net = UNet(UNetSpec(in_channels=1, out_channels=2, depth=3, base_filters=8))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.zeros(1, 1, 32, 32)).sum().backward()
    optimizer.step()  # Adam's two moments per parameter: a last.pt's tensors
    payload = {"state_dict": net.state_dict(), "optimizer": optimizer.state_dict()}
    written = save_checkpoint(tmp_path / "last.pt", payload).stat().st_size
    estimate = checkpoint_bytes({"format": checkpoint.FORMAT, **payload})
    assert written < estimate < 1.15 * written


def test_a_full_store_is_named_and_a_failed_run_still_ends(
    disk: SmallDisk, caplog: pytest.LogCaptureFixture
) -> None:
    if not disk.mounted:
        pytest.skip("SQLite writes through its own files: needs a real full disk (a tmpfs)")
    tracker = Tracker(disk.folder, None)
    tracker.log_metrics({"loss": 1.0}, step=1)
    disk.fill(leave=0)
    with pytest.raises(DiskFull) as caught:
        tracker.log_metrics({"loss": 0.5}, step=2)
    db = disk.folder / "mlflow.db"
    assert str(caught.value) == (
        f"No space left on {db.resolve()} (needs about {megabytes(STORE_ROOM)} MB, "
        f"{megabytes(disk.free_bytes())} MB free)."
    )
    assert str(caught.value).endswith("(needs about 1.0 MB, 0.00 MB free).")
    tracker.end("FAILED")  # the store is full: a warning, not a second error over the first
    assert f"MLflow run {tracker.run_id} stays RUNNING in sqlite:///{db.resolve()}" in caplog.text
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_package_that_does_not_fit_is_refused_before_anything_is_written(disk: SmallDisk) -> None:
    if not disk.mounted:
        pytest.skip("the package is checked against the free space of a real disk (a tmpfs)")
    net = UNet(UNetSpec(in_channels=1, out_channels=2, depth=2, base_filters=4))
    onnx_path, mc_path = disk.folder / "model.onnx", disk.folder / "model_mc.onnx"
    onnx_path.write_bytes(b"\0" * 40_000)
    mc_path.write_bytes(b"\0" * 50_000)
    sample = np.zeros((96, 96, 1), np.float32)
    out = disk.folder / "p-unet2d.bioimageio.zip"
    disk.fill(leave=1024 * 1024)
    with pytest.raises(DiskFull) as caught:
        info = ModelInfo(task="semantic", in_channels=1, num_classes=2, size_multiple=4, halo=8)
        export_package(net, info, onnx_path, mc_path, PackageRequest(sample=sample), out)
    needed = 3 * package_bytes(net, onnx_path, mc_path, sample)
    weights = sum(t.numel() * t.element_size() for t in net.state_dict().values())
    assert needed == 3 * (90_000 + 3 * weights + 8 * 4 * 96 * 96 + 512 * 1024)
    free = megabytes(disk.free_bytes())
    size = megabytes(needed)
    assert str(caught.value) == f"No space left on {out} (needs about {size} MB, {free} MB free)."
    assert not out.exists() and not [p for p in disk.folder.iterdir() if LEFTOVER.match(p.name)]


def test_a_package_folder_that_fills_up_is_removed_and_named(
    disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills while the package is being built: the hidden folder (a name the next run
    removes after a kill) is gone, and the message names the package."""
    import idl.export.bioimageio as bioimageio

    folders = []

    def fill_up(net: Any, info: Any, onnx_path: Path, mc_path: Any, request: Any, workdir: Path) -> None:
        folders.append(workdir)
        (workdir / "weights.pt").write_bytes(b"\0" * 1000)
        raise RuntimeError("unexpected pos 64 vs 0") from OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bioimageio, "build_description", fill_up)
    net = UNet(UNetSpec(in_channels=1, out_channels=2, depth=2, base_filters=4))
    onnx_path = disk.folder / "model.onnx"
    onnx_path.write_bytes(b"\0" * 40_000)
    out = disk.folder / "p.bioimageio.zip"
    info = ModelInfo(task="semantic", in_channels=1, num_classes=2, size_multiple=4, halo=8)
    request = PackageRequest(sample=np.zeros((32, 32, 1), np.float32))
    with pytest.raises(DiskFull) as caught:
        export_package(net, info, onnx_path, None, request, out)
    needed = 3 * package_bytes(net, onnx_path, None, request.sample)
    assert str(caught.value).startswith(f"No space left on {out} (needs about {megabytes(needed)} MB, ")
    assert LEFTOVER.match(folders[0].name) and not folders[0].exists()


TINY_RUN = ["--task", "semantic", "--epochs", "3", "--steps-per-epoch", "2", "--depth", "2", "--filters", "4"]
TINY_RUN += [
    "--image-size",
    "48",
    "--batch-size",
    "4",
    "--no-uncertainty",
    "--no-package",
    "--no-int8",
    "--quiet",
]


@pytest.mark.slow  # three short epochs, then the resumed run's export and evaluation: about 30 s
def test_a_disk_full_in_training_keeps_last_pt_and_resume_completes(
    disk: SmallDisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_semantic_project(disk.folder / "p", n_train=4, n_test=2, seed=3, spec=NucleiSpec(size=64))
    import idl.train.pipeline as pipeline

    save = pipeline.save_checkpoint

    def fill_before_epoch_2(path: Path, payload: dict[str, Any]) -> Path:
        if payload["state"]["epoch"] == 2 and not disk.full:
            disk.fill(leave=16 * 1024)  # epoch 1 is saved and logged; epoch 2's checkpoints do not fit
        return save(path, payload)

    monkeypatch.setattr(pipeline, "save_checkpoint", fill_before_epoch_2)
    last = project / "model" / "last.pt"
    result = CliRunner().invoke(train_cli.main, [str(project), *TINY_RUN])
    assert result.exit_code == 1, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith(f"Error: No space left on {project / 'model'}/"), message
    assert message.split(" (")[0].endswith(("best.pt", "last.pt")) and " (needs about 0." in message
    assert message.endswith(
        "MB free). Free space there, then: idl-train PROJECT --resume continues from the last finished "
        "epoch (PROJECT/model/last.pt); before the first epoch ends there is none: run the same command "
        "again."
    )
    assert "Traceback" not in result.output
    assert load_checkpoint(last)["state"]["epoch"] == 1  # the last good checkpoint, whole
    assert not [p for p in project.rglob("*") if LEFTOVER.match(p.name)]

    disk.free()
    monkeypatch.setattr(pipeline, "save_checkpoint", save)
    resumed = CliRunner().invoke(train_cli.main, [str(project), "--resume", "--quiet"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(last)["state"]["epoch"] == 3
    assert (project / "model" / "model.onnx").is_file()
    assert (project / "evaluation" / "summary.json").is_file()
