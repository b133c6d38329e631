"""Damaged checkpoints (issue 30, item 9): an empty, overwritten or cut-off ``last.pt`` given to
``--resume`` (or ``best.pt`` to idl-export) is named as not a complete idl checkpoint, with the other
checkpoint to use, instead of "cannot read this checkpoint ()", PyTorch's advice to load it with
``weights_only=False`` (unsafe) or a bare file name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from idl.cli import export as export_cli
from idl.cli import train as train_cli
from idl.infer.datasets.synthetic import NucleiSpec, write_semantic_project
from idl.infer.io.images import write_tiff
from idl.train.checkpoint import load_checkpoint, save_checkpoint

from .conftest import tiny


def _damage(path: Path, how: str, whole: bytes) -> None:
    """Replace ``path`` by an empty file, noise, the first half of ``whole``, or ``whole`` with one
    byte of a tensor flipped."""
    if how == "empty":
        path.write_bytes(b"")
    elif how == "garbage":
        path.write_bytes(bytes(range(256)) * 40)
    elif how == "cut off":
        path.write_bytes(whole[: len(whole) // 2])
    else:  # a flipped bit in the weights: a whole archive, but a tensor's CRC fails
        flipped = bytearray(whole)
        start = whole.index(b"\x00\x00\x80\x3f")  # 1.0 as float32, the first weight
        flipped[start + 3] ^= 0x01
        path.write_bytes(bytes(flipped))


def _model_folder(project: Path) -> Path:
    """``project/model`` as a run leaves it: config.json, best.pt and last.pt (plain values)."""
    model = project / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(tiny().to_dict()))
    payload = {"state": {"epoch": 3}, "state_dict": {"w": torch.ones(64)}}
    save_checkpoint(model / "best.pt", payload)
    save_checkpoint(model / "last.pt", {**payload, "optimizer": {}})
    return model


@pytest.mark.parametrize("how", ["empty", "garbage", "cut off", "flipped byte"])
def test_resume_from_a_damaged_last_pt_names_it_and_the_other_checkpoint(tmp_path: Path, how: str) -> None:
    project = tmp_path / "p"
    write_tiff(project / "train" / "image" / "a.tif", torch.zeros(16, 16).numpy())
    model = _model_folder(project)
    _damage(model / "last.pt", how, (model / "last.pt").read_bytes())
    result = CliRunner().invoke(train_cli.main, [str(project), "--resume"])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {model / 'last.pt'} is not a complete idl checkpoint (corrupt or cut off), so its run "
        f"cannot be resumed; use the other checkpoint: idl-train {project} --config {model / 'config.json'} "
        f"--overwrite --pretrained {model / 'best.pt'} trains anew from its weights (without --pretrained: "
        "from the start)."
    )
    assert "weights_only" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("how", ["empty", "garbage", "cut off"])
def test_a_damaged_best_pt_names_last_pt(tmp_path: Path, how: str) -> None:
    model = _model_folder(tmp_path / "p")
    best = model / "best.pt"
    _damage(best, how, best.read_bytes())
    result = CliRunner().invoke(export_cli.main, [str(best), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.output.strip() == (
        f"Error: {best} is not a complete idl checkpoint (corrupt or cut off); use the other checkpoint "
        f"({model / 'last.pt'}) or train anew (idl-train --overwrite)."
    )
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_checkpoint_with_python_objects_is_not_unpickled(tmp_path: Path) -> None:
    """A whole archive whose pickle needs more than weights_only allows: foreign, never loaded."""
    path = tmp_path / "other.pt"
    torch.save({"optimizer": torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1)}, path)
    with pytest.raises(Exception) as caught:
        load_checkpoint(path)
    assert str(caught.value) == (
        f"{path}: not an idl checkpoint: it holds Python objects beyond tensors and plain values, which idl "
        "does not load (loading them could run code). idl-train writes best.pt and last.pt."
    )


def test_resume_without_last_pt_says_there_is_nothing_to_resume(tmp_path: Path) -> None:
    project = tmp_path / "p"
    model = _model_folder(project)
    (model / "last.pt").unlink()  # a run that stopped before its first epoch ended
    result = CliRunner().invoke(train_cli.main, [str(project), "--resume"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"Error: {model / 'last.pt'}: checkpoint not found: no training epoch has finished in {model}, so "
        "there is nothing to resume. Run the same idl-train command without --resume to train from the start."
    )


TINY_RUN = ["--epochs", "2", "--steps-per-epoch", "2", "--depth", "2", "--filters", "4", "--image-size", "48"]
TINY_RUN += ["--batch-size", "4", "--no-uncertainty", "--no-package", "--no-int8", "--quiet"]


@pytest.mark.slow  # two short trainings with their export and evaluation: about 40 s
def test_the_advice_for_a_damaged_last_pt_trains_from_best_pt(tmp_path: Path) -> None:
    project = write_semantic_project(tmp_path / "p", n_train=4, n_test=2, seed=3, spec=NucleiSpec(size=64))
    first = CliRunner().invoke(train_cli.main, [str(project), "--task", "semantic", *TINY_RUN])
    assert first.exit_code == 0, first.output
    model = project / "model"
    last = model / "last.pt"
    _damage(last, "cut off", last.read_bytes())
    resumed = CliRunner().invoke(train_cli.main, [str(project), "--resume"])
    assert resumed.exit_code == 1 and "is not a complete idl checkpoint" in resumed.output
    advice = resumed.output.split("use the other checkpoint: ")[1].split(" trains anew")[0]
    assert advice.startswith("idl-train ")
    again = CliRunner().invoke(train_cli.main, [*advice.split()[1:], "--quiet"])
    assert again.exit_code == 0, again.output
    assert load_checkpoint(last)["state"]["epoch"] == 2  # a whole last.pt again
    report = (model / "pretrained.txt").read_text().splitlines()[1:]  # every tensor of the same network
    assert report and all("  loaded (" in line for line in report)
