"""Test-time augmentation (``idl-predict --tta flips|d4``): each tile is predicted as it is and
mirrored or turned, every output is turned back, and the copies are averaged; their spread is an
uncertainty like the Monte Carlo samples' one.

The transforms act on the in-plane axes (y, x) of a tile, its halo included, and on z too for
``d4`` of a volume (isotropic volumes only: an anisotropic network is not symmetric in z). A tile is
a whole number of the network's size multiples, so its pooling windows line up after a mirror or a
turn as before, and a fully convolutional network's tiles give what the whole image would: tiled
TTA equals whole-image TTA. The copies go through the Monte Carlo machinery of the tile loop as
samples (:func:`tta_sampler`): with ``--mc-samples`` each sample is drawn under the next transform in
turn, so the uncertainty holds both the dropout's and the transforms' disagreement.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

TTA_CHOICES = ("flips", "d4")
# --tta also takes "off" and "auto": the transforms a task measured worth drawing its Monte Carlo
# samples under (Outputs.mc_tta; semantic segmentation: d4), and none without samples
TTA_AUTO, TTA_OFF = "auto", "off"
TTA_SETTINGS = (TTA_AUTO, TTA_OFF, *TTA_CHOICES)

# a transform: (turns by 90 degrees in the y-x plane, mirror x, mirror z)
Transform = tuple[int, bool, bool]


def transforms(name: str, dims: int, isotropic: bool = True) -> list[Transform]:
    """The transforms of ``name``: ``flips`` the identity and the mirrors of y, x and both (4);
    ``d4`` the 8 symmetries of the square (turns and mirrors), times a mirror of z for an isotropic
    volume (16)."""
    if name not in TTA_CHOICES:
        raise ValueError(f"tta must be one of {', '.join(TTA_CHOICES)}, got {name!r}")
    if name == "flips":  # identity, x mirrored, y mirrored (= x mirrored, turned twice), both
        return [(0, False, False), (0, True, False), (2, True, False), (2, False, False)]
    plane = [(k, m, False) for m in (False, True) for k in range(4)]
    return plane + [(k, m, True) for k, m, _ in plane] if dims == 3 and isotropic else plane


def apply(x: np.ndarray, t: Transform) -> np.ndarray:
    """Transform ``x`` ``(..., [Z,] Y, X)``: mirror x, turn ``k`` times, mirror z (for volumes)."""
    turns, mirror_x, mirror_z = t
    if mirror_x:
        x = x[..., ::-1]
    x = np.rot90(x, turns, axes=(-2, -1))
    if mirror_z:
        x = x[..., ::-1, :, :]
    return np.ascontiguousarray(x)


def invert(y: np.ndarray, t: Transform) -> np.ndarray:
    """Undo :func:`apply` on an output ``(..., [Z,] Y, X)``."""
    turns, mirror_x, mirror_z = t
    if mirror_z:
        y = y[..., ::-1, :, :]
    y = np.rot90(y, -turns, axes=(-2, -1))
    if mirror_x:
        y = y[..., ::-1]
    return np.ascontiguousarray(y)


def tta_sampler(run: Callable[[np.ndarray], np.ndarray], chosen: list[Transform]) -> Callable:
    """A sampler ``(batch (N, C, ...), count) -> (N * count, K, ...)`` whose sample ``k`` of a call
    is ``run`` (a Monte Carlo or deterministic network) under transform ``k`` mod the number of
    transforms, turned back; the samples of each input together. The tile loop calls it once per tile
    with all its samples (the transforms then start at the identity for every tile)."""

    def sample(batch: np.ndarray, count: int) -> np.ndarray:
        outputs = [
            invert(run(apply(batch, chosen[k % len(chosen)])), chosen[k % len(chosen)]) for k in range(count)
        ]
        stacked = np.stack(outputs, axis=1)  # (N, count, K, ...)
        return stacked.reshape(-1, *stacked.shape[2:])

    return sample
