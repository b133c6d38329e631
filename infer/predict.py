"""Tiled prediction with ONNX Runtime: probabilities, masks and Monte Carlo uncertainty.

Memory stays bounded by the tile batch plus the output arrays: the image is normalized tile by tile
with whole-image percentiles, and each tile writes only the region it owns (see :mod:`idl.infer.tiling`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from idl.infer.axes import read_yxc
from idl.infer.errors import DataError, IdlError
from idl.infer.io import IMAGE_SUFFIXES, is_image_file, write_tiff
from idl.infer.model import LoadedModel
from idl.infer.normalize import Normalization, apply_range, percentile_range
from idl.infer.postprocess import to_mask
from idl.infer.project import PROBABILITY_DIR, UNCERTAINTY_DIR
from idl.infer.tiling import Tile, read_window, round_up, smallest_tile, tile_grid
from idl.infer.uncertainty import SampleMoments

log = logging.getLogger("idl")

Runner = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class PredictOptions:
    """How to run a model over images (defaults suit a CPU lab PC)."""

    tile_size: int = 512
    overlap: float | None = None  # fraction of a tile shared with each neighbour; None: the model's halo
    batch_size: int = 1
    mc_samples: int = 0
    threshold: str | float = "otsu"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.tile_size < 1 or self.batch_size < 1 or self.mc_samples < 0:
            raise ValueError("tile size and batch size must be >= 1 and mc samples >= 0")
        if self.mc_samples == 1:
            raise ValueError("Monte Carlo dropout needs at least 2 samples (or 0 to switch it off)")

    def halo(self, model_halo: int) -> int:
        """Context kept on each side of a tile's owned region, in pixels.

        ``overlap`` is the fraction of a tile shared with its neighbour, i.e. twice the halo; by default
        the halo the model recommends (its effective receptive field) is used.
        """
        if self.overlap is None:
            return model_halo
        return round(self.overlap * self.tile_size / 2)


@dataclass
class Prediction:
    """Result for one image: ``(K, Y, X)`` probabilities, a class map and optional uncertainty."""

    probabilities: np.ndarray
    mask: np.ndarray
    uncertainty: np.ndarray | None
    threshold: float | None


def _batched(items: Sequence[Tile], size: int) -> Iterable[list[Tile]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _tile_input(image: np.ndarray, tile: Tile, lo: np.ndarray, hi: np.ndarray, eps: float) -> np.ndarray:
    """Normalized ``(C, T, T)`` float32 network input for one tile of a channels-last raw image."""
    crop = apply_range(read_window(image, tile.window), lo, hi, eps)
    return np.ascontiguousarray(np.moveaxis(crop, -1, 0))


def predict_probabilities(
    run: Runner,
    image: np.ndarray,
    norm: Normalization,
    out_channels: int,
    multiple: int,
    tile_size: int,
    halo: int,
    batch_size: int = 1,
    samples: int = 0,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Run ``run`` over a raw channels-last 2D image, tile by tile.

    Returns ``(probabilities (K, Y, X), uncertainty (Y, X) or None)``. With ``samples >= 2`` every tile
    is predicted ``samples`` times (``run`` must be a Monte Carlo graph) and the mean and InstantDL's
    uncertainty are returned; batches then hold copies of one tile.
    """
    height, width = image.shape[:2]
    lo, hi = percentile_range(image, norm)
    tiles = tile_grid((height, width), (tile_size, tile_size), (halo, halo), multiple)
    probabilities = np.empty((out_channels, height, width), np.float32)
    uncertainty = np.empty((height, width), np.float32) if samples else None
    bar = tqdm(total=len(tiles), unit="tile", disable=not progress, leave=False)
    if not samples:
        for chunk in _batched(tiles, batch_size):
            out = run(np.stack([_tile_input(image, t, lo, hi, norm.eps) for t in chunk]))
            for tile, tile_out in zip(chunk, out, strict=False):
                probabilities[(slice(None), *tile.owned)] = tile_out[(slice(None), *tile.owned_in_tile)]
            bar.update(len(chunk))
    else:
        for tile in tiles:
            x = _tile_input(image, tile, lo, hi, norm.eps)
            owned = (slice(None), slice(None), *tile.owned_in_tile)
            moments: SampleMoments | None = None
            for start in range(0, samples, batch_size):
                n = min(batch_size, samples - start)
                out = run(np.repeat(x[np.newaxis], n, axis=0))[owned]
                if moments is None:
                    moments = SampleMoments.zeros(out.shape[1:])
                moments.add(out)
            assert moments is not None and uncertainty is not None
            probabilities[(slice(None), *tile.owned)] = moments.mean()
            uncertainty[tile.owned] = moments.uncertainty()
            bar.update(1)
    bar.close()
    return probabilities, uncertainty


def load_input(path: Path, axes: str | None, in_channels: int) -> np.ndarray:
    """Read an image as channels-last ``(Y, X, C)``, checking it fits the model's channel count."""
    image, resolved, guessed = read_yxc(path, axes)
    if guessed:
        log.info("%s: guessed axes '%s' (pass --axes to set them)", path.name, resolved)
    if image.shape[-1] != in_channels:
        raise DataError(
            f"{path}: has {image.shape[-1]} channel(s) (axes '{resolved}') but the model "
            f"expects {in_channels}. Pass the right --axes or convert the image."
        )
    return image


def predict_image(model: LoadedModel, image: np.ndarray, options: PredictOptions) -> Prediction:
    """Predict one channels-last image with a loaded model."""
    info = model.info
    halo = options.halo(info.halo)
    m = info.size_multiple
    length = max(m, options.tile_size // m * m)  # the tile size axis_tiles will use
    smallest = smallest_tile(halo, m)
    if length < smallest and length < round_up(max(image.shape[:2]), m):
        raise IdlError(
            f"--tile-size {options.tile_size} is too small: each tile needs {halo} px of context on "
            f"both sides. Use --tile-size {smallest} or more, or a smaller --overlap."
        )
    run = model.mc_runner if options.mc_samples else model.runner
    probabilities, uncertainty = predict_probabilities(
        run,
        image,
        info.normalization,
        info.out_channels,
        info.size_multiple,
        options.tile_size,
        halo,
        options.batch_size,
        options.mc_samples,
        options.progress,
    )
    mask, threshold = to_mask(probabilities, options.threshold)
    return Prediction(probabilities, mask, uncertainty, threshold)


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files with unique names."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if is_image_file(p))
            if not found:
                raise DataError(f"{item}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder.")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder.")
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(
                f"{f} and {stems[f.stem]} would both be written as {f.stem}.tif; rename one of them."
            )
        stems[f.stem] = f
    return files


def predict_files(
    model: LoadedModel,
    inputs: Sequence[Path],
    out_dir: Path,
    options: PredictOptions,
    axes: str | None = None,
    save_probabilities: bool = False,
) -> list[Path]:
    """Predict every input file and write ``out_dir/<name>.tif`` (+ uncertainty, probabilities)."""
    written = []
    for path in tqdm(inputs, unit="image", disable=not options.progress or len(inputs) < 2):
        image = load_input(path, axes, model.info.in_channels)
        result = predict_image(model, image, options)
        written.append(write_tiff(out_dir / f"{path.stem}.tif", result.mask))
        if result.uncertainty is not None:
            write_tiff(out_dir / UNCERTAINTY_DIR / f"{path.stem}.tif", result.uncertainty)
        if save_probabilities:
            write_tiff(out_dir / PROBABILITY_DIR / f"{path.stem}.tif", result.probabilities)
        log.info(
            "%s -> %s%s",
            path.name,
            written[-1].name,
            f" (threshold {result.threshold:.3f})" if result.threshold is not None else "",
        )
    return written
