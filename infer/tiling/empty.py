"""Skipping tiles that hold only background (``idl-predict --skip-empty [THRESHOLD]``).

On a sparse image (a slide scan, a mosaic of a few fields, a volume with cells in a corner) most
tiles hold nothing but background, and the network's answer there is known without running it. A
tile's input (as the network would get it: pre-processed, halo included) is *empty* when its
:func:`contrast` is at most ``threshold``: the range of its 4 x 4 (x 4) block means in units of its
pixel noise. Block means keep objects of a few pixels and more at their full contrast while averaging
the noise down (the range of noise alone stays near 2 noise units for 512 x 512 tiles), so the test
does not depend on the tile's size the way a pixel range would, and one bright object anywhere in the
tile, halo included, keeps the tile.

An empty tile's output is the network's output for a constant tile at the background level (each
channel's median of the first empty tile), computed once per tile shape and cached: what the network
says of pure background, probabilities near 0 for a segmentation, the background prediction of a
regression, Monte Carlo samples and their uncertainty as for that constant input. The mergers get it
like any tile's output, so in-memory, out-of-core and Monte Carlo prediction all skip the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

BLOCK = 4  # px per axis averaged before the range is taken
NOISE_PER_DIFFERENCE = 1.4826 / np.sqrt(2)  # MAD -> standard deviation, of a difference of two pixels
# noise units: the largest of the thresholds measured (2, 3, 4, 5, 6, 8...) that skipped windows of at
# most 0.1 % of the ground-truth foreground of four real sets (bench/skip_empty.py, docs/benchmarks.md)
DEFAULT_THRESHOLD = 4.0

# inputs id -> one tile (N, C, *spatial), draws -> outputs id -> (N * draws, K, *spatial)
Forward = Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]


def noise_level(channel: np.ndarray) -> float:
    """The standard deviation of pixel noise in one channel ``(*spatial)``, from the median absolute
    difference of neighbours along the last axis (edges of objects are few, so they barely move it)."""
    differences = np.abs(np.diff(channel.astype(np.float32, copy=False), axis=-1))
    return float(np.median(differences)) * NOISE_PER_DIFFERENCE


def block_means(channel: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Means over ``block``-sized cubes of one channel ``(*spatial)`` (the remainder cut off; axes
    shorter than a block are kept whole)."""
    sizes = [max(1, n // block) * min(block, n) for n in channel.shape]
    cut = channel[tuple(slice(0, n) for n in sizes)].astype(np.float32, copy=False)
    shape = []
    for n in sizes:
        step = min(block, n)
        shape += [n // step, step]
    return cut.reshape(shape).mean(axis=tuple(range(1, 2 * len(sizes), 2)))


def contrast(tile: np.ndarray) -> float:
    """The largest over channels of ``(max - min)`` of a tile's block means, in units of its pixel
    noise (:func:`noise_level`); ``tile`` is ``(C, *spatial)``. A flat, noise-free tile gives 0, a
    noise-free tile with anything in it infinity."""
    worst = 0.0
    for channel in tile:
        means = block_means(channel)
        spread = float(means.max() - means.min())
        if spread <= 0:
            continue
        noise = noise_level(channel)
        worst = max(worst, spread / noise if noise > 0 else float("inf"))
    return worst


@dataclass
class EmptyTiles:
    """Which tiles to skip (:meth:`empty`) and what they output instead (:meth:`output`); counts the
    tiles skipped and run."""

    threshold: float = DEFAULT_THRESHOLD
    skipped: int = 0
    run: int = 0
    _level: dict[str, np.ndarray] | None = None
    _cache: dict[tuple, dict[str, np.ndarray]] = field(default_factory=dict)

    def empty(self, inputs: dict[str, np.ndarray]) -> bool:
        """Whether a tile (input id -> ``(C, *spatial)``) is background in every input."""
        found = all(contrast(x) <= self.threshold for x in inputs.values())
        if found and self._level is None:  # the background level: the first empty tile's medians
            axes = tuple(range(1, next(iter(inputs.values())).ndim))
            self._level = {k: np.median(x, axis=axes, keepdims=True) for k, x in inputs.items()}
        self.skipped += found
        self.run += not found
        return found

    def output(self, inputs: dict[str, np.ndarray], forward: Forward, draws: int) -> dict[str, np.ndarray]:
        """The outputs of one empty tile (inputs of one tile, ``(C, *spatial)``): the network's for a
        constant tile of its shape at the background level, each computed once."""
        assert self._level is not None
        key = (tuple((k, x.shape) for k, x in inputs.items()), draws)
        if key not in self._cache:
            level = self._level
            constant = {
                k: np.broadcast_to(level[k], x.shape)[np.newaxis].astype(x.dtype) for k, x in inputs.items()
            }
            self._cache[key] = forward(constant, draws)
        return self._cache[key]
