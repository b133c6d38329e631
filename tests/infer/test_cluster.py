"""Prediction shared among processes: shards of files and of a volume's blocks (job arrays), Dask
workers, a killed process or worker, ``--status``, and the refusals of bad shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner

from idl.cli.predict import main as predict_main
from idl.infer.core.errors import IdlError
from idl.infer.core.shard import Shard, parse_shard
from idl.infer.io.blocks import block_stores
from idl.infer.io.formats.ome_zarr import read_ome_zarr
from idl.infer.io.record import OutputRecord
from idl.infer.tiling.blocks import block_grid, block_seed

PREDICT = [sys.executable, "-m", "idl.cli.predict"]


def test_shards_of_a_list_are_disjoint_cover_it_and_follow_slurm() -> None:
    items = list(range(10))
    parts = [Shard(i, 3).part(items) for i in (1, 2, 3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [Shard(2, 3).owns(i) for i in range(5)] == [False, True, False, False, True]
    assert parse_shard(" 2 / 8 ", {}) == Shard(2, 8)
    array = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "7"}
    assert parse_shard("auto", array) == Shard(6, 8)  # --array=0-7: task 5 is the 6th of 8
    array = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert parse_shard("auto", array) == Shard(1, 4)


@pytest.mark.parametrize(
    ("text", "environ", "message"),
    [
        ("4/3", {}, "--shard 4/3: parts are numbered from 1 to 3; give --shard I/3 with 1 <= I <= 3."),
        ("0/3", {}, "--shard 0/3: parts are numbered from 1 to 3"),
        ("1/0", {}, "--shard 1/0: the number of parts must be at least 1"),
        ("two", {}, "--shard two: give the part and the number of parts as I/N (e.g. 2/8), or auto."),
        (
            "auto",
            {},
            "--shard auto: SLURM_ARRAY_TASK_ID is not set, so this is not a task of a Slurm job array",
        ),
        (
            "auto",
            {
                "SLURM_ARRAY_TASK_ID": "5",
                "SLURM_ARRAY_TASK_MIN": "1",
                "SLURM_ARRAY_TASK_MAX": "9",
                "SLURM_ARRAY_TASK_COUNT": "3",
            },
            "the job array's ids are not consecutive",
        ),
    ],
)
def test_bad_shards_are_refused_naming_the_fix(text: str, environ: dict, message: str) -> None:
    with pytest.raises(IdlError) as error:
        parse_shard(text, environ)
    assert message in str(error.value)


def test_bad_shard_on_the_command_line_names_the_fix(tmp_path: Path, volume_model) -> None:
    model = volume_model(dims=2)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.float32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    for shard, message in (
        ("4/3", "parts are numbered from 1 to 3"),
        ("auto", "SLURM_ARRAY_TASK_ID is not set"),
    ):
        result = CliRunner(env=env).invoke(
            predict_main,
            [str(model), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), "--shard", shard],
        )
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_block_grid_owns_whole_chunks_and_windows_hold_the_halo() -> None:
    grid = block_grid((70, 300, 250), 100, (64, 64, 64), (8, 8, 8))
    assert grid.chunk == (64, 64, 64) and grid.block == (70, 128, 128) and grid.counts == (1, 3, 2)
    owned = np.zeros(grid.shape, np.int32)
    for index in range(grid.count):
        region = grid.region(index)
        owned[region] += 1
        assert all(
            r.start % c == 0 for r, c in zip(region, grid.chunk, strict=True)
        )  # each block starts a chunk
        window = grid.window(index, (4, 20, 20), (8, 8, 8))
        for r, w, n in zip(region, window, grid.shape, strict=True):
            assert w.start % 8 == 0 and w.start <= max(0, r.start - 20 if n > 70 else 0)
            assert w.stop >= min(n, r.stop + (20 if n > 70 else 4))
    assert owned.min() == owned.max() == 1  # every voxel owned by exactly one block
    assert block_seed(0, 3) == block_seed(0, 3) != block_seed(0, 4) != block_seed(1, 4)


def _volume(path: Path, shape: tuple[int, ...], seed: int = 0) -> Path:
    tifffile.imwrite(path, np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32))
    return path


def _outputs(folder: Path, name: str) -> dict[str, np.ndarray]:
    found = {}
    for sub in ("", "probabilities/", "uncertainty/"):
        if (folder / sub / name).exists():
            found[sub] = read_ome_zarr(folder / sub / name)
    return found


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], tolerance: float = 1e-6) -> None:
    assert a.keys() == b.keys() and "" in a
    for key in a:
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
        if a[key].dtype == np.uint8:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=tolerance, err_msg=key)


def _kill_after_first(process: subprocess.Popen, done: callable, timeout: float = 120) -> None:
    """SIGKILL ``process`` as soon as ``done()`` is true (it has finished some of its work)."""
    start = time.monotonic()
    while not done():
        assert process.poll() is None, "the shard ended before it could be killed"
        assert time.monotonic() - start < timeout
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def test_shards_of_files_killed_and_rerun_give_the_single_process_output(
    tmp_path: Path, volume_model
) -> None:
    model = volume_model(dims=2)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(15):
        _volume(images / f"img{i:02d}.tif", (700, 700), seed=i)
    common = [str(model), str(images), "--mc-samples", "3", "--quiet"]
    subprocess.run([*PREDICT, *common, "--out", str(tmp_path / "one")], check=True)
    out = tmp_path / "shards"
    procs = [subprocess.Popen([*PREDICT, *common, "--out", str(out), "--shard", f"{i}/3"]) for i in (1, 2, 3)]
    _kill_after_first(
        procs[1], lambda: any('"state": "done"' in line for line in _lines(out / ".idl-outputs.2of3.jsonl"))
    )
    assert procs[0].wait() == 0 and procs[2].wait() == 0
    status = subprocess.run(
        [*PREDICT, "--status", str(out)], capture_output=True, text=True, check=True
    ).stdout
    left = 5 - sum('"state": "done"' in line for line in _lines(out / ".idl-outputs.2of3.jsonl"))
    assert 1 <= left <= 4
    assert f"{15 - left} of 15 input(s) done" in status
    assert (
        "shard 1/3: 5 of 5 done, 0 left" in status
        and f"shard 2/3: {5 - left} of 5 done, {left} left" in status
    )
    subprocess.run([*PREDICT, *common, "--out", str(out), "--shard", "2/3"], check=True)
    status = subprocess.run(
        [*PREDICT, "--status", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "15 of 15 input(s) done" in status and "Nothing is left." in status
    for i in range(15):
        for sub in ("", "uncertainty/"):
            np.testing.assert_array_equal(
                tifffile.imread(out / sub / f"img{i:02d}.tif"),
                tifffile.imread(tmp_path / "one" / sub / f"img{i:02d}.tif"),
            )
    shards = {entry.shard for entry in OutputRecord.read(out).entries.values()}
    assert shards == {"1/3", "2/3", "3/3"}
    assert not [p for p in out.rglob(".*") if ".tmp" in p.name or p.name.endswith(".part")]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def _blocks_done(out: Path) -> dict[str, int]:
    """Blocks of the volume in progress in ``out`` done so far, by shard."""
    by: dict[str, int] = {}
    for store in block_stores(out):
        for path in (store / "done").glob("*.jsonl"):
            for line in _lines(path):
                shard = json.loads(line)["by"]
                by[shard] = by.get(shard, 0) + 1
    return by


def test_shards_of_a_volumes_blocks_killed_and_rerun_give_the_single_process_output(
    tmp_path: Path, volume_model
) -> None:
    model = volume_model()
    volume = _volume(tmp_path / "vol.tif", (48, 256, 256))
    common = [str(model), str(volume), "--out-format", "zarr", "--block-size", "32", "--mc-samples", "3"]
    common += ["--save-probabilities", "--threads", "1", "--quiet"]
    subprocess.run([*PREDICT, *common, "--out", str(tmp_path / "one")], check=True)
    out = tmp_path / "shards"
    # the first shard creates the store (normalization fitted once); the next one is killed
    subprocess.run([*PREDICT, *common, "--out", str(out), "--shard", "1/3"], check=True)
    assert _blocks_done(out) == {"1/3": 43}  # of the 2 x 8 x 8 blocks
    killed = subprocess.Popen([*PREDICT, *common, "--out", str(out), "--shard", "2/3"])
    _kill_after_first(killed, lambda: "2/3" in _blocks_done(out))
    assert not (out / "vol.ome.zarr").exists()
    status = subprocess.run(
        [*PREDICT, "--status", str(out)], capture_output=True, text=True, check=True
    ).stdout
    done = _blocks_done(out)["2/3"]
    assert 1 <= done < 43
    assert f"volume vol.ome.zarr: {43 + done} of 128 block(s) done (43 by 1/3, {done} by 2/3)" in status
    assert f"shard 2/3: {done} of 43 block(s) done, {43 - done} left" in status
    assert "shard 3/3: 0 of 42 block(s) done, 42 left" in status
    for shard in ("3/3", "2/3"):  # the re-run last: it finishes the volume
        subprocess.run([*PREDICT, *common, "--out", str(out), "--shard", shard], check=True)
    _same(_outputs(out, "vol.ome.zarr"), _outputs(tmp_path / "one", "vol.ome.zarr"), 0.0)
    assert not block_stores(out) and not list(out.glob(".vol*"))
    status = subprocess.run(
        [*PREDICT, "--status", str(out)], capture_output=True, text=True, check=True
    ).stdout
    assert "1 of 1 input(s) done" in status and "Nothing is left." in status


def test_blocks_equal_whole_volume_prediction_within_tiling_tolerance(tmp_path: Path, volume_model) -> None:
    """Blocks are tiles with the model's halo: without Monte Carlo they give the values of the volume
    predicted whole (this network's receptive field is within its halo)."""
    model = volume_model("regression")
    volume = _volume(tmp_path / "vol.tif", (30, 80, 70))
    for name, extra in (("whole", []), ("blocks", ["--block-size", "16"])):
        result = CliRunner().invoke(
            predict_main,
            [str(model), str(volume), "--out", str(tmp_path / name), "--out-format", "zarr", *extra],
        )
        assert result.exit_code == 0, result.output
    whole, blocks = (
        _outputs(tmp_path / "whole", "vol.ome.zarr"),
        _outputs(tmp_path / "blocks", "vol.ome.zarr"),
    )
    assert whole[""].shape == (30, 80, 70)
    _same(whole, blocks, 1e-5)


def test_dask_local_2_equals_one_process_exactly(tmp_path: Path, volume_model) -> None:
    model = volume_model()
    volume = _volume(tmp_path / "vol.tif", (24, 64, 80))
    common = [str(model), str(volume), "--out-format", "zarr", "--block-size", "16", "--mc-samples", "3"]
    common += ["--save-probabilities"]
    for name, extra in (("one", []), ("dask", ["--dask", "local:2"])):
        result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    one, dask = _outputs(tmp_path / "one", "vol.ome.zarr"), _outputs(tmp_path / "dask", "vol.ome.zarr")
    assert set(one) == {"", "probabilities/", "uncertainty/"} and one["uncertainty/"].max() > 0.01
    _same(one, dask, 1e-6)


def _dying_task(model, device, threads, job, index, by, precision="fp32"):  # noqa: ANN001, ANN202
    """A Dask task whose worker exits (``os._exit``) the first time it reaches block 5: after some
    blocks are done, mid-run."""
    from idl.infer.service.cluster import predict_block_task

    marker = job.volume.out_dir.parent / "died"
    if index == 5 and not marker.exists():
        marker.write_text("once")
        os._exit(1)
    return predict_block_task(model, device, threads, job, index, by, precision)


def test_a_dask_worker_killed_mid_run_still_gives_the_same_volume(tmp_path: Path, volume_model) -> None:
    import cloudpickle

    from idl.infer.service.cluster import Address, DaskBlocks
    from idl.infer.service.load import load_model
    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import the tests
    model_dir = volume_model()
    volume = _volume(tmp_path / "vol.tif", (24, 64, 80))
    model = load_model(model_dir)
    options = PredictOptions(progress=False, out_format="zarr", block_size=16, mc_samples=3)
    predict_files(model, [volume], tmp_path / "one", options)
    with DaskBlocks(Address(workers=2), str(model_dir), progress=False, task=_dying_task) as runner:
        predict_files(model, [volume], tmp_path / "dask", options, blocks=runner)
    assert (tmp_path / "died").read_text() == "once"  # a worker did exit
    _same(_outputs(tmp_path / "one", "vol.ome.zarr"), _outputs(tmp_path / "dask", "vol.ome.zarr"), 1e-6)
    assert runner.peaks and all(peak > 10 * 2**20 for peak in runner.peaks.values())


def test_dask_without_distributed_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    from idl.infer.service.cluster import Address, DaskBlocks
    from idl.infer.tiling.blocks import BlockJob, Volume, block_grid
    from idl.infer.tiling.predict import PredictOptions

    grid = block_grid((16, 16), 16, (16, 16), (1, 1))
    job = BlockJob(
        tmp_path / "v.tif",
        None,
        Volume("v.ome.zarr", grid, 16, (0, 0), (1, 1), 1, tmp_path),
        PredictOptions(),
    )
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed raises ImportError
    with pytest.raises(IdlError) as error:
        DaskBlocks(Address(workers=1), "m")(job, [0])
    assert "pip install 'idl-toolkit[dask]'" in str(error.value)


def test_a_store_of_other_settings_is_not_continued(tmp_path: Path, volume_model) -> None:
    model = volume_model()
    volume = _volume(tmp_path / "vol.tif", (24, 40, 40))
    common = [
        str(model),
        str(volume),
        "--out",
        str(tmp_path / "o"),
        "--out-format",
        "zarr",
        "--block-size",
        "16",
    ]
    first = subprocess.run([*PREDICT, *common, "--shard", "1/2", "--quiet"], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    plan = json.loads((block_stores(tmp_path / "o")[0] / "plan.json").read_text())
    assert plan["blocks"] == 2 * 3 * 3 and plan["settings"]["seed"] == 0
    other = subprocess.run(
        [*PREDICT, *common, "--shard", "2/2", "--seed", "1"], capture_output=True, text=True
    )
    assert other.returncode != 0
    assert (
        "holds the blocks of another prediction of this volume (it differs in settings)"
        in other.stderr + other.stdout
    )


def test_the_blocks_histograms_give_the_threshold_of_the_whole_map() -> None:
    """The last step of a semantic volume takes Otsu's threshold from the histograms each block's
    process kept: the same threshold and mask as one pass over the whole map (a calibrated model too)."""
    from idl.infer.tasks.semantic import ClassMasks
    from idl.infer.tiling.predict import PredictOptions

    class Sink:  # the array-like of an output written block by block
        def __init__(self, array: np.ndarray) -> None:
            self.array, self.shape = array, array.shape

        def blocks(self):  # noqa: ANN202
            yield from ((slice(i, i + 3), self.array[i : i + 3]) for i in range(0, self.shape[0], 3))

        def __setitem__(self, index, value) -> None:  # noqa: ANN001
            self.array[index] = value

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.beta(0.5, 4, (5, 20, 20)), rng.beta(6, 1, (5, 20, 20))]).astype(np.float32)
    options = PredictOptions()
    for temperature in (1.0, 0.6):
        masks = ClassMasks(temperature)
        summaries = [masks.block_summary(values[np.newaxis, i : i + 4], options) for i in (0, 4, 8)]
        one = Sink(np.zeros(values.shape, np.uint8))
        whole = masks.mask_blocks(Sink(values), one, options)
        by_blocks = masks.block_threshold(options, summaries)
        assert 0.1 < whole < 0.9 and by_blocks == whole
        for start in (0, 4, 8):
            part = values[np.newaxis, start : start + 4]
            np.testing.assert_array_equal(one.array[start : start + 4], masks.block_mask(part, by_blocks))
    assert ClassMasks().block_summary(values[np.newaxis], PredictOptions(threshold=0.5)) is None
    assert ClassMasks().block_threshold(PredictOptions(threshold=0.5), None) == 0.5
    assert ClassMasks().block_threshold(PredictOptions(), None) is None  # several classes: arg-max
    three = rng.random((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(ClassMasks().block_mask(three, None), np.argmax(three, axis=0))


def test_shards_of_several_volumes_each_predict_their_volumes_whole(tmp_path: Path, volume_model) -> None:
    """With several volumes the shards share the files: a shard's volume is predicted in all its
    blocks by that shard (not a shard's share of its blocks, which no other shard would finish)."""
    model = volume_model()
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        _volume(images / f"v{i}.tif", (16, 40, 40), seed=i)
    common = [str(model), str(images), "--out-format", "zarr", "--block-size", "16", "--quiet"]
    for name, extra in (("one", []), ("a", ["--shard", "1/2"]), ("a", ["--shard", "2/2"])):
        result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    for i in range(3):
        _same(_outputs(tmp_path / "a", f"v{i}.ome.zarr"), _outputs(tmp_path / "one", f"v{i}.ome.zarr"), 0.0)
    assert not block_stores(tmp_path / "a")


def _blobs(path: Path, shape: tuple[int, ...], count: int, seed: int = 0) -> Path:
    """Bright balls of radius 2.5-5 (some touching, some across block borders) on a noisy background."""
    rng = np.random.default_rng(seed)
    volume = np.zeros(shape, np.float32)
    grid = np.indices(shape)
    for _ in range(count):
        centre, radius = rng.uniform(0, shape), rng.uniform(2.5, 5)
        volume[sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) < radius**2] = 1
    tifffile.imwrite(path, volume + rng.normal(0, 0.05, shape).astype(np.float32))
    return path


def _same_objects(a: np.ndarray, b: np.ndarray) -> None:
    """The same objects, whatever their numbers: each label of ``a`` is one label of ``b`` and back."""
    np.testing.assert_array_equal(a > 0, b > 0)
    pairs = np.unique(np.stack([a[a > 0], b[b > 0]]), axis=1)
    assert len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


def test_instance_labels_by_blocks_are_the_whole_maps_with_ids_unique_across_blocks(
    tmp_path: Path, volume_model
) -> None:
    """The U-Net's watershed labels of a volume predicted by blocks (one process, and Dask's two
    workers) are those of the whole map predicted in memory, numbered 1..N across the blocks, with the
    objects table of the labels (and their Monte Carlo uncertainty) written."""
    import pandas as pd
    from skimage.measure import regionprops_table

    model = volume_model("instance")
    volume = _blobs(tmp_path / "vol.tif", (32, 96, 112), 60)
    common = [str(model), str(volume), "--quiet", "--mc-samples", "2"]
    blocks = ["--out-format", "zarr", "--block-size", "16", "--save-probabilities"]
    for name, extra in (("whole", []), ("one", blocks), ("dask", [*blocks, "--dask", "local:2"])):
        result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    whole = tifffile.imread(tmp_path / "whole" / "vol.tif")
    one, dask = _outputs(tmp_path / "one", "vol.ome.zarr"), _outputs(tmp_path / "dask", "vol.ome.zarr")
    _same(one, dask, 1e-6)  # bit for bit: the same labels, numbered alike
    labels = one[""]
    assert labels.dtype == np.uint16 and 40 <= labels.max() <= 60
    np.testing.assert_array_equal(np.unique(labels), np.arange(labels.max() + 1))  # 1..N, none twice
    _same_objects(labels, whole)
    # 84 blocks of 16 voxels: most objects cross a block border, and are still one object
    crossing = [
        i for i in range(1, labels.max() + 1) if len({tuple(c // 16) for c in np.argwhere(labels == i)}) > 1
    ]
    assert len(crossing) > labels.max() // 2
    table = pd.read_csv(tmp_path / "one" / "objects" / "vol.csv")
    reference = pd.DataFrame(regionprops_table(labels, properties=["label", "area", "centroid"]))
    np.testing.assert_array_equal(table["label"], reference["label"])
    np.testing.assert_array_equal(table["area"], reference["area"])
    for i, axis in enumerate("zyx"):
        np.testing.assert_allclose(table[f"centroid_{axis}"], reference[f"centroid-{i}"], rtol=1e-5)
    assert table["score"].between(0.5, 1).all() and table["uncertainty_mean"].between(0, 1).all()
    assert table["uncertainty_mean"].max() > 0.001  # the Monte Carlo samples did differ
    assert not block_stores(tmp_path / "one") and not block_stores(tmp_path / "dask")


def test_a_last_step_killed_while_labelling_continues_where_it_stopped(
    tmp_path: Path, volume_model, monkeypatch
) -> None:
    """The labels' first pass is kept block by block: a last step that fails at block 5 and is taken
    again labels only the blocks left, and gives the labels of an uninterrupted run."""
    import idl.infer.tiling.block_labels as block_labels

    model = volume_model("instance")
    volume = _blobs(tmp_path / "vol.tif", (16, 64, 64), 25)
    common = [str(model), str(volume), "--quiet", "--out-format", "zarr", "--block-size", "16"]
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    labelled, original = [], block_labels.label_block

    def failing(labeller, values, uncertainty, plan, index):  # noqa: ANN001, ANN202
        if index == 5 and not labelled.count(5):
            labelled.append(index)
            raise OSError("disk gone")
        labelled.append(index)
        return original(labeller, values, uncertainty, plan, index)

    monkeypatch.setattr(block_labels, "label_block", failing)
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "again")])
    assert result.exit_code != 0 and "disk gone" in str(result.exception)
    assert labelled == [0, 1, 2, 3, 4, 5]
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    assert labelled == [0, 1, 2, 3, 4, 5, *range(5, 16)]  # blocks 0-4 were kept
    _same(_outputs(tmp_path / "one", "vol.ome.zarr"), _outputs(tmp_path / "again", "vol.ome.zarr"), 0)
    assert (tmp_path / "again" / "objects" / "vol.csv").read_text() == (
        tmp_path / "one" / "objects" / "vol.csv"
    ).read_text()


@pytest.mark.parametrize("task", ["semantic", "instance"])
def test_a_last_step_killed_after_moving_the_probabilities_is_finished_by_a_rerun(
    tmp_path: Path, volume_model, monkeypatch, task: str
) -> None:
    """The last step moves the probabilities out of the store before the prediction itself: a step
    that dies between the two moves leaves the mask (or labels) made, and a rerun closes it instead
    of making it again from values that are gone."""
    from idl.infer.io.formats.ome_zarr import ZarrSink

    model = volume_model(task)
    volume = _blobs(tmp_path / "vol.tif", (16, 48, 48), 12)
    common = [str(model), str(volume), "--quiet", "--out-format", "zarr", "--block-size", "16"]
    common += ["--save-probabilities"]
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "one")])
    assert result.exit_code == 0, result.output
    close, died = ZarrSink.close, []

    def dying(sink: ZarrSink) -> Path:
        if sink.path == tmp_path / "again" / "vol.ome.zarr" and not died:
            died.append(sink.path)
            raise OSError("killed")
        return close(sink)

    monkeypatch.setattr(ZarrSink, "close", dying)
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "again")])
    assert result.exit_code != 0 and died
    assert (tmp_path / "again" / "probabilities" / "vol.ome.zarr").is_dir()  # moved before the kill
    result = CliRunner().invoke(predict_main, [*common, "--out", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    _same(_outputs(tmp_path / "one", "vol.ome.zarr"), _outputs(tmp_path / "again", "vol.ome.zarr"), 0)


def test_instance_probabilities_are_outputs_a_rerun_makes_again(tmp_path: Path, volume_model) -> None:
    """``--save-probabilities`` of an instance model writes probabilities/: they are among the image's
    outputs, so a rerun that finds them missing predicts the image again instead of skipping it."""
    model = volume_model("instance", dims=2)
    tifffile.imwrite(tmp_path / "a.tif", np.random.default_rng(0).random((40, 48)).astype(np.float32))
    common = [str(model), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o"), "--save-probabilities"]
    for _ in range(2):
        result = CliRunner().invoke(predict_main, [*common, "--quiet"])
        assert result.exit_code == 0, result.output
        probabilities = tmp_path / "o" / "probabilities" / "a.tif"
        assert tifffile.imread(probabilities).shape == (3, 40, 48)
        probabilities.unlink()
