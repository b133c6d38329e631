"""Training data and settings a hostile but realistic user gives idl-train (issue 30, items 6, 7, 12):
empty masks, data changed under a resumed run, tiny images, config errors in the user's own keys, a
config file with a byte-order mark, patches clamped to the images and the image that limits the plan
named. Each test asserts the exit code or exception, the message and the files."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from idl.cli import train as train_cli
from idl.infer.core.errors import ConfigError, DataError
from idl.infer.core.normalize import Normalization
from idl.infer.io.images import read_image, write_tiff
from idl.train.checkpoint import save_checkpoint
from idl.train.config import load_config_file, project_of_config, resolve_config
from idl.train.data import load_instance_data, load_semantic_data
from idl.train.fingerprint import DataFingerprint, data_files, differences, fingerprint
from idl.train.pipeline import DATA_KEY, prepare, resolve, train_project
from idl.train.plan import Fingerprint, Requests, make_plan

from .conftest import tiny


def _write_pair(split: Path, name: str, shape: tuple[int, int], foreground: bool, seed: int = 0) -> None:
    """One image with a bright square object and its mask (empty with ``foreground`` False)."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, np.uint8)
    if foreground:
        mask[shape[0] // 4 : shape[0] // 2, shape[1] // 4 : shape[1] // 2] = 1
    image = (rng.normal(100, 5, shape) + 80 * mask).astype(np.float32)
    write_tiff(split / "image" / f"{name}.tif", image)
    write_tiff(split / "groundtruth" / f"{name}.tif", mask)


def _project(root: Path, n: int = 4, with_foreground: int | None = None, side: int = 64) -> Path:
    """``n`` training pairs of ``side`` px; the first ``with_foreground`` masks (default: all) hold an
    object, the others are empty."""
    holding = n if with_foreground is None else with_foreground
    for i in range(n):
        _write_pair(root / "train", f"im{i:02d}", (side, side), i < holding, seed=i)
    return root


def _train(args: list[str]) -> tuple[int, str]:
    result = CliRunner().invoke(train_cli.main, args)
    return result.exit_code, result.output


# --- item 6: masks without foreground ------------------------------------------------------------


def test_masks_that_are_all_zero_are_an_error_before_training(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", n=3, with_foreground=0)
    code, output = _train([str(project), "--task", "semantic", "--device", "cpu"])
    assert code == 1
    assert "found binary masks" not in output  # it used to say so, and train
    assert (
        f"Error: {project / 'train' / 'groundtruth'}: none of the 3 training mask(s) holds foreground "
        "(every pixel is 0), so there is nothing to learn." in output
    )
    assert not (project / "model" / "last.pt").exists()


def test_few_masks_with_foreground_warn_and_naming_them(tmp_path: Path, caplog) -> None:
    """The rule: fewer than 10 % of the training masks with foreground is a warning (1 of 12: 8 %);
    2 of 12 (17 %) is not, since images without objects can be legitimate."""
    split = _project(tmp_path / "few", n=12, with_foreground=1) / "train"
    with caplog.at_level(logging.WARNING, logger="idl"):
        data = load_semantic_data(split, Normalization())
    assert data.num_classes == 2
    assert "only 1 of 12 training mask(s) hold foreground (im00.tif); the other 11 are empty" in caplog.text
    caplog.clear()
    split = _project(tmp_path / "some", n=12, with_foreground=2) / "train"
    with caplog.at_level(logging.WARNING, logger="idl"):
        load_semantic_data(split, Normalization())
    assert "hold foreground" not in caplog.text


def test_label_images_without_objects_are_an_error(tmp_path: Path) -> None:
    split = _project(tmp_path / "p", n=2, with_foreground=0) / "train"
    with pytest.raises(DataError, match=r"none of the 2 training label image\(s\) holds an object"):
        load_instance_data(split, Normalization())


# --- item 12a: tiny images -----------------------------------------------------------------------


def test_a_one_pixel_training_image_is_named(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", n=3)
    write_tiff(project / "train" / "image" / "dot.tif", np.ones((1, 1), np.float32))
    write_tiff(project / "train" / "groundtruth" / "dot.tif", np.ones((1, 1), np.uint8))
    _write_pair(project / "train", "strip", (12, 300), True)
    code, output = _train([str(project), "--task", "semantic", "--device", "cpu", "--quiet"])
    assert code == 1
    assert (
        f"Error: {project / 'train' / 'image' / 'dot.tif'}: the training image is 1 x 1 px (and 1 more, "
        "e.g. strip.tif); training needs images of at least 16 x 16 px (the smallest training patch). "
        "Remove it from the training data (idl-predict predicts images of any size) or use a larger image."
        in output
    )
    assert "image_size must be" not in output


# --- item 12e-12g: config files ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"iterations_over_dataset": -3}, "c.json: 'iterations_over_dataset' must be >= 1, got -3."),
        (
            {"Iterations_Over_Dataset": 0.5},
            "c.json: 'Iterations_Over_Dataset' must be a whole number, got 0.5.",
        ),
        ({"batchsize": "2"}, "c.json: 'batchsize' must be a whole number, got '2'."),
        ({"batchsize": 0}, "c.json: 'batchsize' must be >= 1, got 0."),
        ({"epochs": 0}, "c.json: 'epochs' must be >= 1 (InstantDL's 0 epochs"),
        ({"Image_size": [64, "x", 1]}, "c.json: 'Image_size' must be a whole number or InstantDL's [x, y, "),
        (
            {"lr_schedule": "cosin"},
            "c.json: lr_schedule 'cosin' is not known. Did you mean 'cosine'? Use one of",
        ),
        (
            {"dropout_at": "middle"},
            "c.json: 'dropout_at' must be one of encoder, decoder, last, got 'middle'.",
        ),
    ],
)
def test_config_errors_use_the_files_own_key(tmp_path: Path, settings: dict, message: str) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"use_algorithm": "SemanticSegmentation", **settings}))
    with pytest.raises(ConfigError) as caught:
        resolve_config(cfg)
    assert str(caught.value).startswith(f"{tmp_path}/{message}")
    assert "epoch_limit" not in str(caught.value) and "batch_images" not in str(caught.value)


def test_idl_train_reports_the_files_key_with_exit_code_1(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", n=2)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"use_algorithm": "SemanticSegmentation", "iterations_over_dataset": -3}))
    code, output = _train([str(project), "--config", str(cfg), "--quiet"])
    assert code == 1
    assert f"Error: {cfg}: 'iterations_over_dataset' must be >= 1, got -3." in output
    assert not (project / "model").exists()


def test_a_command_line_value_is_not_blamed_on_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"task": "semantic", "epochs": 5}))
    assert resolve_config(cfg, epochs=2).epochs == 2
    with pytest.raises(ConfigError, match=r"^steps_per_epoch must be >= 1$"):
        resolve_config(cfg, steps_per_epoch=0)


def test_config_path_naming_a_file_says_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"use_algorithm": "SemanticSegmentation", "path": "notes.txt"}))
    with pytest.raises(ConfigError) as caught:
        project_of_config(cfg)
    assert str(caught.value) == (
        f"{cfg}: 'path' names {tmp_path / 'notes.txt'}, which is a file, not a folder; 'path' must name the "
        "project folder (the one holding train/ and test/). Correct it or give the PROJECT folder."
    )
    code, output = _train(["--config", str(cfg), "--quiet"])
    assert code == 1 and "which is a file, not a folder" in output and "found neither" not in output


def test_a_config_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    cfg = tmp_path / "c.json"
    cfg.write_bytes(b"\xef\xbb\xbf" + json.dumps({"use_algorithm": "Regression", "batchsize": 3}).encode())
    assert load_config_file(cfg) == {"task": "regression", "batch_images": 3}
    # through idl-train: the file is read (its value checked), not refused as invalid JSON
    cfg.write_bytes(b"\xef\xbb\xbf" + json.dumps({"task": "semantic", "epochs": 0}).encode())
    code, output = _train([str(_project(tmp_path / "p", n=2)), "--config", str(cfg), "--quiet"])
    assert code == 1 and f"Error: {cfg}: 'epochs' must be >= 1" in output and "JSON" not in output


# --- item 12h, 12i: the plan says what limits it -------------------------------------------------


def test_a_patch_side_larger_than_the_images_is_reported_clamped() -> None:
    fp = Fingerprint(
        2, ((256, 256), (130, 140), (300, 256)), 1, object_size=20, names=("a.tif", "b.tif", "c.tif")
    )
    plan = make_plan(fp, Requests(patch_side=100000, depth=3), "cpu")
    assert plan.patch == (128, 128)
    assert plan.sources["patch"] == "set to 100000, clamped to fit the smallest image, b.tif (130 x 140 px)"
    assert "patch          128 x 128 px   [set to 100000, clamped to fit the smallest image" in plan.table()
    assert plan.notes == (
        "the patch size set, 100000 px, is larger than the smallest image, b.tif (130 x 140 px): training "
        "on patches of 128 x 128 px",
    )
    assert "notes" not in plan.to_dict()  # the log's; the sources say it in plan.json
    # a side that only needs rounding to the U-Net's multiple says so, without a warning
    rounded = make_plan(fp, Requests(patch_side=100, depth=3), "cpu")
    assert rounded.patch == (96, 96) and rounded.notes == ()
    assert rounded.sources["patch"] == "set to 100, rounded down to the U-Net's size multiple"


def test_the_image_that_limits_the_plan_is_named_and_no_false_cover() -> None:
    fp = Fingerprint(2, ((256, 256),) * 3 + ((77, 33),), 1, object_size=20, names=("a", "b", "c", "odd.tif"))
    plan = make_plan(fp, Requests(depth=2), "cpu")
    assert plan.patch == (32, 32)
    assert plan.sources["patch"] == (
        "fits the smallest image, odd.tif (77 x 33 px), less than the receptive field of 48 px"
    )
    assert "covers" not in plan.table()
    assert plan.notes == (
        "training patches of 32 x 32 px fit the smallest image, odd.tif (77 x 33 px), less than the "
        "network's receptive field of 48 px; if that image is an outlier, remove it from the training images",
    )
    # the planned depth names it too
    deep = make_plan(Fingerprint(2, fp.shapes, 1, object_size=60, names=fp.names), Requests(), "cpu")
    assert deep.depth == 2
    assert deep.sources["depth"].endswith("; at most depth 2 fits the smallest image, odd.tif (77 x 33 px)")
    # images all of one size limit the patch without a warning: nothing to remove
    same = make_plan(Fingerprint(2, ((64, 64),) * 4, 1, object_size=20), Requests(depth=3), "cpu")
    assert same.sources["patch"] == "fits the images (64 x 64 px), less than the receptive field of 96 px"
    assert same.notes == ()
    # a 256 px patch of a depth-5 U-Net does not cover its 384 px receptive field either
    wide = make_plan(Fingerprint(2, ((512, 512),) * 2, 1, object_size=20), Requests(depth=5), "cpu")
    assert wide.sources["patch"] == "at most 256 px, less than the receptive field of 384 px"


def test_the_prepared_run_logs_the_clamped_patch_and_the_limiting_image(tmp_path: Path, caplog) -> None:
    project = _project(tmp_path / "p", n=3)
    _write_pair(project / "train", "odd", (77, 33), True)
    config = tiny(image_size=100000, device="cpu", val_fraction=0.0)
    with caplog.at_level(logging.INFO, logger="idl"):
        run = prepare(resolve(project, config, resume=False, overwrite=False), progress=False)
    assert run.plan.patch == (32, 32)
    assert (
        "patch          32 x 32 px   [set to 100000, clamped to fit the smallest image, odd.tif (77 x 33 px)]"
        in (caplog.text)
    )
    assert (
        "the patch size set, 100000 px, is larger than the smallest image, odd.tif (77 x 33 px): training on "
        "patches of 32 x 32 px" in caplog.text
    )
    saved = json.loads((project / "model" / "plan.json").read_text())
    assert (
        saved["sources"]["patch"] == "set to 100000, clamped to fit the smallest image, odd.tif (77 x 33 px)"
    )


def test_a_single_image_whose_patch_shrinks_says_why(tmp_path: Path) -> None:
    project = tmp_path / "one"
    _write_pair(project / "train", "only", (100, 110), True)
    config = tiny(device="cpu", image_size=None, depth=3)
    run = prepare(resolve(project, config, False, False), progress=False)
    # x: 110 px less a validation block of 22 px and the gap (the halo, shrunk to 32 px) leaves 56
    assert run.plan.patch == (56, 56)
    assert run.plan.sources["patch"] == (
        "shrunk from 96 x 96 px to fit the training region of only.tif (100 x 56 px; the rest is held out "
        "for validation), less than the receptive field of 96 px"
    )


# --- item 7: the training data's fingerprint -----------------------------------------------------


def test_the_fingerprint_lists_removed_added_and_changed_files(tmp_path: Path) -> None:
    project = _project(tmp_path / "p", n=5)
    (project / "train" / ".DS_Store").write_bytes(b"x")  # hidden and other files do not count
    (project / "train" / "notes.txt").write_text("x")
    before = fingerprint(project)
    assert sorted(before.files)[:2] == ["train/groundtruth/im00.tif", "train/groundtruth/im01.tif"]
    assert len(before.files) == 10
    assert DataFingerprint.from_dict(before.to_dict()) == before
    mask = project / "train" / "groundtruth" / "im01.tif"
    write_tiff(mask, (1 - read_image(mask)).astype(np.uint8))  # inverted: same size, other content
    assert mask.stat().st_size == before.files["train/groundtruth/im01.tif"][0]
    (project / "train" / "image" / "im04.tif").unlink()
    (project / "train" / "groundtruth" / "im04.tif").unlink()
    _write_pair(project / "train", "new", (64, 64), True)
    assert differences(before, fingerprint(project)) == [
        "2 file(s) removed (train/groundtruth/im04.tif, train/image/im04.tif)",
        "2 file(s) added (train/groundtruth/new.tif, train/image/new.tif)",
        "1 file(s) changed (train/groundtruth/im01.tif)",
    ]
    assert differences(before, before) == []


def test_the_fingerprint_covers_every_layout(tmp_path: Path) -> None:
    (tmp_path / "train" / "s1" / "image").mkdir(parents=True)  # InstantDL's per-sample folders
    (tmp_path / "train" / "s1" / "image" / "s1.png").write_bytes(b"png")
    (tmp_path / "train" / "s1" / "mask").mkdir()
    (tmp_path / "train" / "s1" / "mask" / "m1.PNG").write_bytes(b"png")
    (tmp_path / "train" / "groundtruth.csv").write_text("filename,groundtruth\n")
    (tmp_path / "train" / "big.zarr" / "c").mkdir(parents=True)
    (tmp_path / "train" / "big.zarr" / "c" / "0").write_bytes(b"chunk")
    names = [p.relative_to(tmp_path).as_posix() for p in data_files(tmp_path / "train")]
    assert names == [
        "train/big.zarr/c/0",
        "train/groundtruth.csv",
        "train/s1/image/s1.png",
        "train/s1/mask/m1.PNG",
    ]


def test_resolve_checks_the_checkpoints_fingerprint_before_reading_the_data(tmp_path: Path, caplog) -> None:
    """The check in the pipeline's first stage, on a checkpoint holding only what it needs (fast; the
    whole command is the slow test below)."""
    project = _project(tmp_path / "p", n=2)
    checkpoint = project / "model" / "last.pt"
    save_checkpoint(checkpoint, {DATA_KEY: fingerprint(project).to_dict()})
    assert resolve(project, tiny(device="cpu"), resume=True, overwrite=False).data == fingerprint(project)
    (project / "train" / "image" / "im01.tif").write_bytes(b"not the image it was")
    with pytest.raises(
        DataError,
        match=r"changed since .*last\.pt was written: 1 file\(s\) changed \("
        r"train/image/im01\.tif\)\. Resuming would continue the training on other data",
    ):
        resolve(project, tiny(device="cpu"), resume=True, overwrite=False)
    save_checkpoint(checkpoint, {})  # written before the fingerprint was stored
    with caplog.at_level(logging.WARNING, logger="idl"):
        resolve(project, tiny(device="cpu"), resume=True, overwrite=False)
    assert f"{checkpoint} was written before idl stored the training data's fingerprint" in caplog.text


@pytest.mark.slow  # five idl-train runs of a tiny network: about 20 s
def test_resume_on_changed_data_is_refused_and_unchanged_resumes_quietly(tmp_path: Path, caplog) -> None:
    project = _project(tmp_path / "p", n=6)
    config_first = tiny(
        epochs=1, steps_per_epoch=2, device="cpu", package=False, evaluate=False, image_size=None
    )
    with caplog.at_level(logging.INFO, logger="idl"):
        train_project(project, config_first, progress=False)
    first_plan = json.loads((project / "model" / "plan.json").read_text())
    saved = torch.load(project / "model" / "last.pt", weights_only=True)
    assert sorted(saved[DATA_KEY]["files"]) == sorted(fingerprint(project).to_dict()["files"])
    assert (
        first_plan["sources"]["patch"] == "fits the images (64 x 64 px); covers the receptive field of 48 px"
    )

    # unchanged settings and data: resumed with the original reasons and no "changed settings" line
    caplog.clear()
    code, output = _train([str(project), "--resume"])
    assert code == 0, output
    assert "resuming after epoch 1" in output
    assert "resumed with changed settings" not in output
    assert (
        "patch          64 x 64 px   [fits the images (64 x 64 px); covers the receptive field of 48 px]"
        in output
    )
    assert json.loads((project / "model" / "plan.json").read_text())["sources"] == first_plan["sources"]

    # a checkpoint written before the fingerprint was stored resumes, with a note
    saved = torch.load(project / "model" / "last.pt", weights_only=True)
    del saved[DATA_KEY]
    torch.save(saved, project / "model" / "last.pt")
    code, output = _train([str(project), "--resume", "--epochs", "2"])  # one more epoch: a checkpoint
    assert code == 0, output
    assert (
        f"{project / 'model' / 'last.pt'} was written before idl stored the training data's fingerprint "
        "with it, so the data cannot be checked against the run being resumed" in output
    )
    assert DATA_KEY in torch.load(project / "model" / "last.pt", weights_only=True)  # stored from now on

    # masks inverted, half the images deleted: refused before the data is read, the model kept
    for i in range(3):
        mask = project / "train" / "groundtruth" / f"im{i:02d}.tif"
        write_tiff(mask, (1 - read_image(mask)).astype(np.uint8))
    for i in range(3, 6):
        for folder in ("image", "groundtruth"):
            os.remove(project / "train" / folder / f"im{i:02d}.tif")
    before = (project / "model" / "last.pt").stat().st_mtime_ns
    code, output = _train([str(project), "--resume", "--quiet"])
    assert code == 1
    assert (
        f"Error: {project / 'train'}: the training data changed since {project / 'model' / 'last.pt'} was "
        "written: 6 file(s) removed (train/groundtruth/im03.tif, train/groundtruth/im04.tif, "
        "train/groundtruth/im05.tif and 3 more); 3 file(s) changed (train/groundtruth/im00.tif, "
        "train/groundtruth/im01.tif, train/groundtruth/im02.tif). Resuming would continue the training on "
        f"other data. Restore the data as it was, or train a new model on the data as it is now: idl-train "
        f"{project} --overwrite (instead of --resume)." in " ".join(output.split())
    )
    assert (project / "model" / "last.pt").stat().st_mtime_ns == before
    # the way out it names works
    tiny_flags = ["--depth", "2", "--filters", "4", "--epochs", "1", "--steps-per-epoch", "1", "--no-package"]
    code, output = _train([str(project), "--task", "semantic", "--overwrite", "--quiet", *tiny_flags])
    assert code == 0, output
