"""3D: U-Net on volumes, trained on random patches, tiled prediction equal to whole-volume prediction."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from idl.export.onnx import export_onnx
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.project import pair_files
from idl.infer.datasets.synthetic import synthetic_nuclei_3d, write_semantic_project_3d
from idl.infer.evaluate.baseline import otsu_jaccard
from idl.infer.io.images import read_image
from idl.infer.io.record import RECORD_NAME
from idl.infer.service.load import load_model
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling.predict import predict_probabilities
from idl.models import UNet, UNetSpec
from idl.train.config import TrainConfig
from idl.train.pipeline import train_project

# one worker builds this module's trained fixtures (pytest -n 2 --dist loadgroup, as .ci/run)
pytestmark = pytest.mark.xdist_group("test_3d")


@pytest.fixture(scope="module")
def project_3d(tmp_path_factory) -> Path:
    project = write_semantic_project_3d(
        tmp_path_factory.mktemp("p3d"), n_train=8, n_test=2, seed=3, shape=(16, 48, 48)
    )
    config = TrainConfig(
        int8=False,
        dims=3,
        epochs=12,
        steps_per_epoch=6,
        patience=12,
        depth=2,
        base_filters=8,
        image_size=48,
        patch_z=16,
        learning_rate=3e-3,
        mc_samples=2,
        batch_size=2,
    )
    train_project(project, config, progress=False)
    return project


def test_3d_training_beats_otsu(project_3d: Path) -> None:
    summary = json.loads((project_3d / "evaluation" / "summary.json").read_text())
    baseline = otsu_jaccard(pair_files(project_3d / "test"), dims=3)
    print(f"3D test Jaccard: U-Net {summary['jaccard']:.3f}, Otsu {baseline:.3f}")
    assert summary["jaccard"] > baseline
    info = load_model(project_3d / "model").info
    assert (info.dims, info.axes, info.dropout) == (3, "zyx", 0.3)  # InstantDL's 3D dropout
    mask = read_image(project_3d / "results" / "volume_000.tif")
    assert mask.shape == (16, 48, 48) and mask.dtype == np.uint8
    assert read_image(project_3d / "results" / "uncertainty" / "volume_000.tif").shape == (16, 48, 48)
    assert (project_3d / "evaluation" / "volume_000.png").stat().st_size > 10_000  # xy and xz rows


def test_trained_3d_model_tiles_exactly(project_3d: Path) -> None:
    model = load_model(project_3d / "model")
    volume = synthetic_nuclei_3d(np.random.default_rng(9), (70, 90, 80))[0][..., None]
    whole, _ = predict_probabilities(model.runner, volume, model.io, tile_size=128, halo=0)
    tiled, _ = predict_probabilities(model.runner, volume, model.io, tile_size=64, batch_size=2)
    diff = np.abs(tiled - whole).max()
    print(f"3D: 64-voxel tiles (halo {model.io.halo['z']}) vs whole volume: max abs diff {diff:.2e}")
    assert diff <= 1e-3
    assert whole.std() > 0.05


@pytest.mark.parametrize("anisotropic", [False, True])
def test_3d_default_halo_makes_tiling_exact(anisotropic: bool, tmp_path: Path, rng) -> None:
    torch.manual_seed(0)
    spec = UNetSpec(depth=2, base_filters=4, dropout=0.0, dims=3, anisotropic=anisotropic)
    info = ModelInfo(
        "semantic",
        1,
        2,
        spec.size_multiple,
        spec.halo,
        dims=3,
        axes="zyx",
        z_multiple=spec.z_multiple,
        z_halo=spec.z_halo,
    )
    det, _ = export_onnx(UNet(spec).eval(), info, tmp_path)
    runner = load_model(det).runner
    volume = rng.integers(0, 1000, (30, 61, 50, 1)).astype(np.uint16)  # not multiples
    io = io_for_info(info)
    whole, _ = predict_probabilities(runner, volume, io, tile_size=(64, 64, 64), halo=0)
    tiled, _ = predict_probabilities(
        runner,
        volume,
        io,
        tile_size=(2 * spec.z_halo + spec.z_multiple, 2 * spec.halo + 8, 2 * spec.halo + 8),
    )
    assert np.abs(tiled - whole).max() <= 1e-5
    assert spec.multiples == ((4, 4, 4) if not anisotropic else (2, 4, 4))


@pytest.mark.parametrize("mc_samples", [0, 3])
def test_out_of_core_prediction_equals_in_memory(project_3d: Path, tmp_path: Path, mc_samples: int) -> None:
    """A volume stored page by page is read window by window and written into memory-mapped TIFFs."""
    import tifffile

    from idl.infer.tiling.files import predict_files
    from idl.infer.tiling.predict import PredictOptions

    volume = synthetic_nuclei_3d(np.random.default_rng(11), (36, 70, 60))[0]
    tifffile.imwrite(tmp_path / "stack.tif", volume, photometric="minisblack")  # one page per plane
    model = load_model(project_3d / "model")
    results = {}
    for name, limit in (("memory", 2**40), ("streamed", 0)):
        options = PredictOptions(tile_size=56, progress=False, out_of_core_bytes=limit, mc_samples=mc_samples)
        predict_files(model, [tmp_path / "stack.tif"], tmp_path / name, options, save_probabilities=True)
        results[name] = {
            kind: read_image(tmp_path / name / sub / "stack.tif")
            for kind, sub in (("mask", ""), ("probabilities", "probabilities"))
        }
    streamed, memory = results["streamed"]["probabilities"], results["memory"]["probabilities"]
    assert streamed.shape == (36, 70, 60) and memory.shape in ((1, 36, 70, 60), (36, 70, 60))
    if mc_samples == 0:
        np.testing.assert_array_equal(results["streamed"]["mask"], results["memory"]["mask"])
        assert np.abs(streamed - memory.reshape(streamed.shape)).max() <= 1e-6
    else:  # Monte Carlo runs differ by design; both are complete
        unc = read_image(tmp_path / "streamed" / "uncertainty" / "stack.tif")
        assert unc.shape == (36, 70, 60) and unc.max() > 0
        agreement = (results["streamed"]["mask"] == results["memory"]["mask"]).mean()
        assert agreement > 0.95
    # no partial or temporary files left (the record of what idl wrote is neither)
    assert [p.name for p in (tmp_path / "streamed").rglob(".*")] == [RECORD_NAME]


def test_3d_package_describes_volumes_and_predicts_like_the_folder(project_3d: Path) -> None:
    import zipfile

    import yaml

    from idl.infer.tiling.predict import PredictOptions, predict_image

    package = next((project_3d / "model").glob("*-unet3d.bioimageio.zip"))  # validated when written
    rdf = yaml.safe_load(zipfile.ZipFile(package).read("rdf.yaml"))
    axes = rdf["inputs"][0]["axes"]
    assert [a.get("id", a["type"]) for a in axes] == ["batch", "channel", "z", "y", "x"]
    assert axes[2]["size"] == {"min": 52, "step": 4}  # room for the 24-voxel halo of a depth-2 U-Net
    assert [a.get("halo") for a in rdf["outputs"][0]["axes"][2:]] == [24, 24, 24]
    volume = synthetic_nuclei_3d(np.random.default_rng(12), (20, 40, 44))[0][..., None]
    options = PredictOptions(progress=False)
    from_package = predict_image(load_model(package), volume, options)
    from_folder = predict_image(load_model(project_3d / "model"), volume, options)
    np.testing.assert_array_equal(from_package.mask, from_folder.mask)


def test_anisotropy_is_chosen_from_the_voxel_size(tmp_path: Path) -> None:
    import tifffile

    from idl.infer.io.images import voxel_size
    from idl.train.plan import Fingerprint, Requests, make_plan

    volume = np.zeros((8, 64, 64), np.uint16)
    path = tmp_path / "v.tif"

    def plan(**requests):
        fp = Fingerprint(3, ((8, 64, 64),), 1, spacing=voxel_size(path), object_size=10)
        return make_plan(fp, Requests(**requests), "cpu")

    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"spacing": 0.6})
    assert voxel_size(path) == pytest.approx((0.6, 0.2, 0.2))
    assert plan().anisotropic is True  # 3x longer in z
    assert plan(anisotropic=False).anisotropic is False  # the setting wins
    tifffile.imwrite(path, volume, imagej=True, resolution=(1 / 0.2, 1 / 0.2), metadata={"spacing": 0.25})
    assert plan().anisotropic is False
    tifffile.imwrite(path, volume, photometric="minisblack")  # no voxel size recorded
    assert voxel_size(path) is None and plan().anisotropic is False


def test_volumes_are_recognised_without_dims(tmp_path: Path) -> None:
    from idl.infer.io.images import write_tiff
    from idl.train.pipeline import detect_dims

    write_tiff(tmp_path / "train" / "image" / "a.tif", np.zeros((16, 40, 40), np.uint16))
    assert detect_dims(tmp_path, None) == 3  # no axis small enough for channels: a z-stack
    assert detect_dims(tmp_path, "cyx") == 2
    write_tiff(tmp_path / "train" / "image" / "a.tif", np.zeros((40, 40, 3), np.uint8))
    assert detect_dims(tmp_path, None) == 2


def test_idl_evaluate_scores_volumes(project_3d: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from idl.cli import evaluate

    args = [
        str(project_3d / "results"),
        str(project_3d / "test" / "groundtruth"),
        "--dims",
        "3",
        "--out",
        str(tmp_path),
    ]
    result = CliRunner().invoke(evaluate.main, args)
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "summary.json").read_text())
    first = json.loads((project_3d / "evaluation" / "summary.json").read_text())
    assert again["jaccard"] == pytest.approx(first["jaccard"], abs=1e-12)


@pytest.mark.slow  # trains for more than ten seconds
def test_3d_regression_comes_back_in_units(tmp_path: Path) -> None:
    """Regression on volumes: a smooth stain of the nuclei, predicted in the stain's units."""
    from scipy import ndimage

    from idl.infer.io.images import write_tiff

    rng = np.random.default_rng(2)
    for split, count in (("train", 6), ("test", 1)):
        for i in range(count):
            volume, labels = synthetic_nuclei_3d(rng, (16, 32, 32))
            stain = (500.0 * ndimage.gaussian_filter((labels > 0).astype(np.float32), 1.0)).astype(np.float32)
            write_tiff(tmp_path / split / "image" / f"v{i}.tif", volume)
            write_tiff(tmp_path / split / "groundtruth" / f"v{i}.tif", stain)
    config = TrainConfig(
        int8=False,
        task="regression",
        dims=3,
        epochs=6,
        steps_per_epoch=2,
        batch_size=4,
        depth=1,
        base_filters=8,
        image_size=32,
        patch_z=16,
        mc_samples=2,
    )
    train_project(tmp_path, config, progress=False)
    pred = read_image(tmp_path / "results" / "v0.tif")
    gt = read_image(tmp_path / "test" / "groundtruth" / "v0.tif")
    summary = json.loads((tmp_path / "evaluation" / "summary.json").read_text())
    print(
        f"3D regression: Pearson {summary['pearson_median']:.3f}, mean {pred.mean():.1f} vs {gt.mean():.1f}"
    )
    assert pred.shape == gt.shape and pred.dtype == np.float32
    assert 1 / 3 < pred.mean() / gt.mean() < 3 and summary["pearson_median"] > 0.5
    assert read_image(tmp_path / "results" / "uncertainty" / "v0.tif").shape == gt.shape
