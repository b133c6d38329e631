"""Monte Carlo prediction that a user can repeat: the same idl-predict command with --mc-samples
writes the same files, bit for bit; another --seed draws other samples; the mask is the
deterministic prediction's with --mc-answer deterministic; a semantic model's samples are drawn under
the mirrors and turns by default. Test-time augmentation of a U-Net, tiled."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from click.testing import CliRunner

from idl.cli.predict import main as predict_main
from idl.export.onnx import export_onnx
from idl.infer.datasets.synthetic import NucleiSpec, synthetic_nuclei
from idl.infer.io.formats.tiff import write_tiff
from tests.export.conftest import fresh_unet


def _predict(model: Path, images: Path, out: Path, *args: str) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(predict_main, [str(model), str(images), "--out", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    return {str(p.relative_to(out)): tifffile.imread(p) for p in sorted(out.rglob("*.tif"))}


def test_the_same_command_writes_the_same_files(tmp_path: Path) -> None:
    net, info = fresh_unet(3)
    export_onnx(net, info, tmp_path / "model")
    rng = np.random.default_rng(0)
    for i in range(2):
        write_tiff(tmp_path / "in" / f"n{i}.tif", synthetic_nuclei(rng, NucleiSpec(size=150))[0])
    args = ("--mc-samples", "10", "--tile-size", "96")
    first = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "a", *args)
    again = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "b", *args)
    assert sorted(first) == ["n0.tif", "n1.tif", "uncertainty/n0.tif", "uncertainty/n1.tif"]
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    other = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "c", *args, "--seed", "1")
    assert np.abs(other["uncertainty/n0.tif"] - first["uncertainty/n0.tif"]).max() > 1e-4
    # one image alone gets the samples it got among others (each image starts from the seed)
    alone = _predict(tmp_path / "model", tmp_path / "in" / "n1.tif", tmp_path / "d", *args)
    np.testing.assert_array_equal(alone["uncertainty/n1.tif"], first["uncertainty/n1.tif"])
    plain = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "e", "--tile-size", "96")
    det = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "f", *args, "--mc-answer", "deterministic")
    np.testing.assert_array_equal(plain["n0.tif"], det["n0.tif"])  # the deterministic answer
    # the same samples without the mirrors and turns the default draws them under (--tta auto: d4 for
    # a semantic model whose answer is the samples' mean)
    untransformed = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "g", *args, "--tta", "off")
    np.testing.assert_array_equal(det["uncertainty/n0.tif"], untransformed["uncertainty/n0.tif"])
    d4 = _predict(tmp_path / "model", tmp_path / "in", tmp_path / "h", *args, "--tta", "d4")
    for name in first:
        np.testing.assert_array_equal(d4[name], first[name])
    assert np.abs(untransformed["uncertainty/n0.tif"] - first["uncertainty/n0.tif"]).max() > 1e-4


def test_tta_of_a_unet_tiles_exactly_and_combines_with_monte_carlo(tmp_path: Path) -> None:
    """d4 TTA of a U-Net (not symmetric): tiles with the halo give the whole image's average and
    spread within 1e-5; it differs from the plain prediction; with Monte Carlo samples each sample
    is drawn under the next transform, and the command writes the uncertainty."""
    from idl.infer.service.load import load_model
    from idl.infer.tiling.predict import PredictOptions, predict_image

    net, info = fresh_unet(5)
    export_onnx(net, info, tmp_path / "model")
    model = load_model(tmp_path / "model")
    image = synthetic_nuclei(np.random.default_rng(2), NucleiSpec(size=140))[0][..., None]
    whole = predict_image(model, image, PredictOptions(tile_size=256, tta="d4"))
    tiled = predict_image(model, image, PredictOptions(tile_size=64, tta="d4"))
    plain = predict_image(model, image, PredictOptions(tile_size=256))
    assert np.abs(tiled.probabilities - whole.probabilities).max() <= 1e-5
    assert np.abs(tiled.uncertainty - whole.uncertainty).max() <= 1e-5
    assert np.abs(whole.probabilities - plain.probabilities).max() > 1e-3
    both = predict_image(model, image, PredictOptions(tile_size=64, tta="flips", mc_samples=8))
    assert both.uncertainty.mean() > whole.uncertainty.mean() * 0.5 and both.mask.shape == (140, 140)
    written = _predict(tmp_path / "model", _image(tmp_path, image), tmp_path / "o", "--tta", "flips")
    assert sorted(written) == ["im.tif", "uncertainty/im.tif"]


def _image(tmp_path: Path, image: np.ndarray) -> Path:
    write_tiff(tmp_path / "im" / "im.tif", image[..., 0])
    return tmp_path / "im"
