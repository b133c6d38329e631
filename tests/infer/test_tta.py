"""Test-time augmentation: the transforms and their inverses, a network symmetric by construction
whose TTA equals its plain prediction, tiled TTA equal to whole-image TTA, and its spread as an
uncertainty."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from idl.infer.core.model_info import ModelInfo
from idl.infer.core.normalize import Normalization, normalize
from idl.infer.tasks.registry import io_for_info
from idl.infer.tiling.predict import predict_probabilities
from idl.infer.tiling.tta import apply, invert, transforms, tta_sampler

SYMMETRIC = np.array([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], np.float32) / 16  # D4-invariant


def _io(halo: int = 8, dims: int = 2):
    return io_for_info(
        ModelInfo(task="semantic", in_channels=1, num_classes=2, size_multiple=1, halo=halo, dims=dims)
    )


def symmetric_net(batch: np.ndarray) -> np.ndarray:
    """Twice the D4-symmetric blur (zero padding, like a convolution's): turning or mirroring the
    input turns or mirrors the output the same way."""
    out = np.empty_like(batch)
    for index in np.ndindex(batch.shape[:2]):
        once = ndimage.convolve(batch[index], SYMMETRIC, mode="constant")
        out[index] = ndimage.convolve(once, SYMMETRIC, mode="constant")
    return out


def lopsided_net(batch: np.ndarray) -> np.ndarray:
    """A network that looks one pixel to the left (zero beyond the tile): not symmetric."""
    left = np.zeros_like(batch)
    left[..., 1:] = batch[..., :-1]
    return left - 0.5 * batch


def test_each_transform_is_undone_by_its_inverse(rng) -> None:
    plane, volume = rng.random((2, 1, 6, 8)), rng.random((1, 1, 4, 6, 8))
    assert len(transforms("flips", 2)) == 4 and len(transforms("d4", 2)) == 8
    assert len(transforms("d4", 3)) == 16 and len(transforms("d4", 3, isotropic=False)) == 8
    seen = set()
    for t in transforms("d4", 3):
        np.testing.assert_array_equal(invert(apply(volume, t), t), volume)
        seen.add(apply(volume, t).tobytes())
    assert len(seen) == 16  # sixteen different copies
    flipped = {apply(plane, t).tobytes() for t in transforms("flips", 2)}
    assert flipped == {
        plane.tobytes(),
        plane[..., ::-1].tobytes(),
        plane[..., ::-1, :].tobytes(),
        plane[..., ::-1, ::-1].tobytes(),
    }
    with pytest.raises(ValueError, match="tta must be one of flips, d4"):
        transforms("rot", 2)


def _tta(run, image, tile: int, name: str = "d4", halo: int = 8):
    chosen = transforms(name, 2)
    return predict_probabilities(
        run, image, _io(halo), tile, halo, len(chosen), len(chosen), sample=tta_sampler(run, chosen)
    )


def test_a_symmetric_network_gains_nothing_and_a_lopsided_one_is_averaged(rng) -> None:
    image = rng.random((70, 90, 1)).astype(np.float32)
    plain, _ = predict_probabilities(symmetric_net, image, _io(), 256, 8)
    mean, spread = _tta(symmetric_net, image, 256)
    assert np.abs(mean - plain).max() <= 1e-5  # equal to the plain prediction
    assert spread is not None and spread.shape == (70, 90)
    lopsided, _ = predict_probabilities(lopsided_net, image, _io(), 256, 8)
    averaged, _ = _tta(lopsided_net, image, 256)
    assert np.abs(averaged - lopsided).max() > 0.1  # the transforms disagree and are averaged
    # the eight copies look left, right, up and down twice each, at the input as normalized for the
    # network; the task's sigmoid comes per copy
    x = normalize(image, Normalization())[..., 0]
    looks = [np.roll(x, 1, 1), np.roll(x, -1, 1), np.roll(x, 1, 0), np.roll(x, -1, 0)]
    expected = np.mean([1 / (1 + np.exp(-(n - 0.5 * x))) for n in looks], axis=0)
    inner = (slice(2, -2), slice(2, -2))
    assert np.abs(averaged[0][inner] - expected[inner]).max() < 1e-5


def test_tiled_tta_equals_whole_image_tta(rng) -> None:
    image = rng.random((150, 203, 1)).astype(np.float32)
    whole, whole_spread = _tta(lopsided_net, image, 512)
    for name in ("flips", "d4"):
        whole, whole_spread = _tta(lopsided_net, image, 512, name)
        tiled, tiled_spread = _tta(lopsided_net, image, 48, name)  # many non-square edge tiles
        assert np.abs(tiled - whole).max() <= 1e-5
        assert np.abs(tiled_spread - whole_spread).max() <= 1e-5
