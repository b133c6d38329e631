"""Outputs never replace or impersonate what the user gave to be read: --out apart from the inputs
and the ground truth, "already predicted" only for what idl itself wrote, a --batch-size the memory
cannot hold refused before any work, the same channel rule for every image format, progress per
Monte Carlo sample."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import tifffile
from click.testing import CliRunner
from onnx import TensorProto, helper
from skimage.io import imsave

from idl.cli import predict as predict_cli
from idl.infer.core.model_info import METADATA_KEY, ModelInfo
from idl.infer.io.images import read_image, write_tiff
from idl.infer.io.record import RECORD_NAME, OutputRecord
from idl.infer.service.load import load_model
from idl.infer.tiling import classify, engine
from idl.infer.tiling import predict as tiling
from idl.infer.tiling.files import predict_files
from idl.infer.tiling.predict import PredictOptions


def _run(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(predict_cli.main, [str(a) for a in args])
    return result.exit_code, result.output


def _images(folder: Path, n: int = 3, shape: tuple[int, ...] = (40, 48)) -> Path:
    for i in range(n):
        write_tiff(folder / f"{i}.tif", np.random.default_rng(i).random(shape).astype(np.float32))
    return folder


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# item 1: an --out that is, holds or lies inside an input folder
@pytest.mark.parametrize("overwrite", [True, False])
def test_predicting_into_the_input_folder_is_refused_and_the_inputs_stay(
    identity_model, tmp_path: Path, overwrite: bool
) -> None:
    inout = _images(tmp_path / "inout")
    before = _contents(inout)
    code, output = _run(identity_model(), inout, "--out", inout, *(["--overwrite"] if overwrite else []))
    assert code == 1
    assert f"Error: --out {inout} is an input folder {inout}: outputs written there could replace" in output
    assert _contents(inout) == before  # byte-identical, nothing added
    assert "written to" not in output and "already predicted" not in output


@pytest.mark.parametrize(
    ("out", "relation"), [("images/predictions", "lies inside"), (".", "holds"), ("images", "is")]
)
def test_an_out_inside_or_around_an_input_folder_is_refused(
    identity_model, tmp_path: Path, out: str, relation: str
) -> None:
    images = _images(tmp_path / "images")
    code, output = _run(identity_model(), images, "--out", tmp_path / out)
    assert code == 1 and f"{relation} an input folder {images}" in output
    assert not (tmp_path / "images" / "predictions").exists()


def test_the_folder_of_an_input_file_is_refused_but_a_folder_beside_it_is_not(
    identity_model, tmp_path: Path
) -> None:
    images = _images(tmp_path / "images")
    code, output = _run(identity_model(), images / "0.tif", "--out", images)
    assert code == 1 and f"--out {images} is the folder of the input {images / '0.tif'}" in output
    assert _run(identity_model(), images / "0.tif", "--out", tmp_path / "out", "--quiet")[0] == 0
    assert read_image(tmp_path / "out" / "0.tif").shape == (40, 48)


# item 2: --gt and --out the same folder
def test_ground_truth_as_the_output_folder_is_refused(identity_model, tmp_path: Path) -> None:
    images = _images(tmp_path / "image")
    gt = tmp_path / "gt"
    gt.mkdir()
    for i in range(3):
        write_tiff(gt / f"{i}.tif", (np.random.default_rng(9 + i).random((40, 48)) > 0.5).astype(np.uint8))
    before = _contents(gt)
    code, output = _run(identity_model(), images, "--out", gt, "--gt", gt)
    assert code == 1
    assert f"--out {gt} is the ground-truth folder {gt}" in output and "Jaccard" not in output
    assert _contents(gt) == before


# item 1: "already predicted" only for files idl wrote, from the same input and model
def test_a_file_idl_did_not_write_is_neither_skipped_nor_replaced(identity_model, tmp_path: Path) -> None:
    images, out = _images(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    (out / "1.tif").write_bytes(b"the user's own file")
    code, output = _run(identity_model(), images, "--out", out)
    assert code == 1
    assert f"{out / '1.tif'} exists, but idl did not write it (1 such file(s) in {out})" in output
    assert (out / "1.tif").read_bytes() == b"the user's own file" and not (out / "0.tif").exists()
    code, output = _run(identity_model(), images, "--out", out, "--overwrite", "--quiet")
    assert code == 0 and read_image(out / "1.tif").shape == (40, 48)


def test_a_rerun_skips_only_what_it_recorded_and_redoes_a_changed_input(
    identity_model, tmp_path: Path
) -> None:
    images, out = _images(tmp_path / "in"), tmp_path / "out"
    assert _run(identity_model(), images, "--out", out, "--quiet")[0] == 0
    record = OutputRecord.read(out)
    assert sorted(record.entries) == ["0", "1", "2"] and all(e.complete for e in record.entries.values())
    assert record.entries["0"].outputs == {"0.tif": (out / "0.tif").stat().st_size}
    write_tiff(images / "1.tif", np.random.default_rng(7).random((50, 48)).astype(np.float32))  # changed
    code, output = _run(identity_model(), images, "--out", out)
    assert code == 0
    assert "0.tif: already predicted" in output and "2.tif: already predicted" in output
    assert "1.tif: already predicted" not in output and read_image(out / "1.tif").shape == (50, 48)
    assert "2 of 3 image(s) were predicted by an earlier run and skipped" in output


def test_predictions_of_another_input_folder_are_not_taken_for_these(identity_model, tmp_path: Path) -> None:
    first, out = _images(tmp_path / "first"), tmp_path / "out"
    second = _images(tmp_path / "second", shape=(30, 30))  # the same names, other images
    assert _run(identity_model(), first, "--out", out, "--quiet")[0] == 0
    code, output = _run(identity_model(), second, "--out", out)
    assert code == 1
    assert f"{out}: holds the prediction of 0 from the input {first.resolve() / '0.tif'}" in output
    assert read_image(out / "0.tif").shape == (40, 48)  # the first folder's predictions stay


def test_a_classifier_rerun_keeps_the_rows_of_other_images(mean_classifier, tmp_path: Path) -> None:
    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder, names in ((first, ("x", "y")), (second, ("z",))):
        for i, name in enumerate(names):
            write_tiff(folder / f"{name}.tif", np.full((16, 16), i + 1, np.float32))
    assert _run(mean_classifier, first, "--out", out, "--quiet")[0] == 0
    assert _run(mean_classifier, second, "--out", out, "--quiet")[0] == 0
    rows = (out / "results.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == ["x.tif", "y.tif", "z.tif"]
    code, output = _run(mean_classifier, first, "--out", out)
    assert code == 0 and "lists every image already; skipped" in output


# item 11: a --batch-size the memory cannot hold
def test_a_batch_too_large_for_memory_is_one_error_before_any_work(
    identity_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiling, "available_memory", lambda: 2**30)  # 1 GB: a quarter is 256 MB
    images, out = _images(tmp_path / "in"), tmp_path / "out"
    # the identity network's graph holds its input and output: 8 bytes per pixel, 12 with the arena's
    # share (runtime.footprint.ARENA_FACTOR), so a quarter of 1 GB holds 22369621 one-pixel tiles
    code, output = _run(identity_model(), images, "--out", out, "--batch-size", 2**25)
    assert code == 1
    assert output.count("Error:") == 1 and "not predicted" not in output
    assert (
        "--batch-size 33554432 is too large for this machine: 33554432 tile(s) per call need about 0.4 GB "
        "for the network's activations even at the smallest tile the model allows (1 px), more than a "
        "quarter of the 1.0 GB available. Use --batch-size 22369621 or less." in output
    )
    assert not out.exists() or not [p for p in out.iterdir() if p.name != RECORD_NAME]
    # the advice works: the largest batch it names predicts every image
    assert _run(identity_model(), images, "--out", out, "--batch-size", 22369621, "--quiet")[0] == 0


def test_the_memory_cap_never_shrinks_tiles_below_the_models_smallest() -> None:
    assert tiling.bounded_tile(512, (4000, 4000), 1000, 2**30, minimum=208) == 208
    assert tiling.bounded_tile(512, (4000, 4000), 1, 2**30) == 512


# item 12j: the same channel rule for every format
def _mean_model(folder: Path, channels: int) -> Path:
    """A binary model whose foreground probability is the mean of its ``channels`` normalized inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", channels, "y", "x"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, "y", "x"])
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=1)
    model = helper.make_model(
        helper.make_graph([node], "mean", [x], [y]), opset_imports=[helper.make_opsetid("", 17)]
    )
    info = ModelInfo(
        task="regression", in_channels=channels, num_classes=1, size_multiple=1, halo=0, output="values"
    )
    helper.set_model_props(model, {METADATA_KEY: info.to_json()})
    onnx.save(model, folder / "model.onnx")
    return folder


@pytest.mark.parametrize("compressed", [False, True])
def test_grey_16_bit_tiffs_go_to_colour_models_and_equal_colour_to_grey_ones(
    tmp_path: Path, compressed: bool
) -> None:
    grey = np.random.default_rng(0).integers(0, 60000, (40, 48), dtype=np.uint16)
    options = {"compression": "zlib"} if compressed else {}
    folders = {name: tmp_path / name for name in ("grey", "colour", "reference")}
    for folder in folders.values():
        folder.mkdir()
    tifffile.imwrite(folders["grey"] / "a.tif", grey, **options)
    tifffile.imwrite(folders["colour"] / "a.tif", np.stack([grey] * 3, -1), photometric="rgb", **options)
    shutil.copy(folders["colour"] / "a.tif", folders["reference"] / "a.tif")
    rgb, one = _mean_model(tmp_path / "rgb", 3), _mean_model(tmp_path / "one", 1)
    runs = {
        "grey to rgb": (rgb, "grey"),
        "rgb reference": (rgb, "reference"),
        "rgb to grey": (one, "colour"),
        "grey reference": (one, "grey"),
    }
    results = {}
    for name, (model, folder) in runs.items():
        code, output = _run(model, folders[folder], "--out", tmp_path / name.replace(" ", "-"))
        assert code == 0, output
        results[name] = read_image(tmp_path / name.replace(" ", "-") / "a.tif")
    np.testing.assert_array_equal(results["grey to rgb"], results["rgb reference"])
    np.testing.assert_array_equal(results["rgb to grey"], results["grey reference"])
    assert results["grey to rgb"].shape == (40, 48) and np.ptp(results["grey to rgb"]) > 0.5


def test_unequal_colour_channels_are_refused_for_a_grey_model_out_of_core_too(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    folder = tmp_path / "in"
    folder.mkdir()
    tifffile.imwrite(folder / "equal.tif", np.repeat(rng.random((64, 64, 1), np.float32), 3, -1))
    colour = rng.random((64, 64, 3), np.float32)
    tifffile.imwrite(folder / "colour.tif", colour)
    model = load_model(_mean_model(tmp_path / "one", 1))
    options = PredictOptions(out_of_core_bytes=0, progress=False)  # every image window by window
    with pytest.raises(Exception, match="1 of 2 input") as error:
        predict_files(model, sorted(folder.iterdir()), tmp_path / "out", options)
    assert "colour.tif: has 3 channel(s) (axes 'yxc') but the model expects 1" in str(error.value)
    assert read_image(tmp_path / "out" / "equal.tif").shape == (64, 64)


def test_a_png_and_a_tiff_of_the_same_grey_image_give_the_same_colour_prediction(tmp_path: Path) -> None:
    grey = np.random.default_rng(2).integers(0, 255, (32, 40), dtype=np.uint8)
    for suffix in ("png", "tif"):
        (tmp_path / suffix).mkdir()
        path = tmp_path / suffix / f"a.{suffix}"
        imsave(path, grey, check_contrast=False) if suffix == "png" else tifffile.imwrite(path, grey)
    rgb = _mean_model(tmp_path / "rgb", 3)
    for suffix in ("png", "tif"):
        assert _run(rgb, tmp_path / suffix, "--out", tmp_path / f"out-{suffix}", "--quiet")[0] == 0
    np.testing.assert_array_equal(
        read_image(tmp_path / "out-png" / "a.tif"), read_image(tmp_path / "out-tif" / "a.tif")
    )


# item 12m: many Monte Carlo samples show progress per sample
class _Bar:
    """Records what a progress bar is told."""

    made: list[_Bar] = []

    def __init__(self, iterable=None, total=None, unit="it", disable=False, **_) -> None:
        self.iterable, self.total, self.unit, self.count = iterable, total, unit, 0
        _Bar.made.append(self)

    def __iter__(self):
        return iter(self.iterable)

    def update(self, n: int = 1) -> None:
        self.count += n

    def close(self) -> None:
        pass


@pytest.mark.parametrize("tolerance", [0.0, 0.9])
def test_monte_carlo_progress_counts_samples(
    identity_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tolerance: float
) -> None:
    folder = identity_model()
    shutil.copy(folder / "model.onnx", folder / "model_mc.onnx")  # a "sampling" graph without dropout
    monkeypatch.setattr(engine, "tqdm", _Bar)
    _Bar.made = []
    model = load_model(folder)
    image = np.random.default_rng(0).random((100, 90, 1)).astype(np.float32)
    tiling.predict_probabilities(
        model.network(mc=True), image, model.io, 48, 8, batch_size=3, samples=25, tolerance=tolerance
    )
    (bar,) = _Bar.made
    tiles = 3 * 3  # 100 x 90 px in tiles owning 32 px
    assert (bar.unit, bar.total, bar.count) == ("sample", tiles * 25, tiles * 25)


def test_classifier_monte_carlo_progress_counts_samples_and_calls_hold_one_batch(
    mean_classifier, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mean_classifier / "model.onnx", mean_classifier / "model_mc.onnx")
    monkeypatch.setattr(classify, "tqdm", _Bar)
    _Bar.made = []
    model = load_model(mean_classifier)
    rows: list[int] = []
    network = model.network

    def spy(mc: bool = False):
        run = network(mc)
        return lambda x: (rows.append(len(x)), run(x))[1]

    monkeypatch.setattr(model, "network", spy)
    files = []
    for i in range(5):
        write_tiff(tmp_path / f"{i}.tif", np.full((16, 16), i, np.float32))
        files.append(tmp_path / f"{i}.tif")
    names, scores = classify.classify_files(
        model, files, classify.Classify(mc_samples=1000, batch_size=4, progress=True)
    )
    (bar,) = _Bar.made
    assert (bar.unit, bar.total, bar.count) == ("sample", 5000, 5000)
    # the deterministic pass, then the samples, never more rows per call than one batch (256 images
    # of 16 x 16 px: BATCH_BYTES caps it by the input's size), not 1000 copies of each image at once
    assert classify.batch_size(model.io, 4) == 256
    assert max(rows) == 256 and sum(rows) == 5 + 5000
    np.testing.assert_allclose(scores.probabilities.sum(axis=1), 1.0, atol=1e-6)
