"""Tiled prediction with ONNX Runtime: probabilities, masks and Monte Carlo uncertainty.

Memory stays bounded by the tile batch plus the output arrays: the image is normalized tile by tile
with whole-image percentiles, and each tile writes only the region it owns (see :mod:`idl.infer.core.grid`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from idl.infer.core.axes import match_channels, resolve_axes, to_channels_last
from idl.infer.core.errors import DataError, IdlError
from idl.infer.core.grid import AxisSize, read_window, smallest_tile
from idl.infer.core.nonfinite import POLICIES, has_floats
from idl.infer.core.project import (
    IMAGE_SUFFIXES,
    is_image_file,
)
from idl.infer.core.shard import Shard
from idl.infer.io.formats import output_format, write_image
from idl.infer.io.images import read_channels_last, read_image
from idl.infer.io.lazy import is_lazy, match_channels_lazily, open_channels_last
from idl.infer.io.omezarr import image_stem, is_zarr
from idl.infer.io.scenes import read_scene
from idl.infer.io.sinks import Discarded
from idl.infer.post.uncertainty import MAPS, MC_ANSWERS
from idl.infer.runtime.footprint import Footprint
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.model import LoadedModel
from idl.infer.runtime.session import Runner, Sampler
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.empty import EmptyTiles
from idl.infer.tiling.engine import Layout, finish, layout, needs_whole_output, run_sample
from idl.infer.tiling.memory import (
    MEMORY_CEILING,
    MEMORY_SHARE,
    TileChoice,
    cgroup_available,
    choose_tile,
    default_budget,
    grown_budget,
    output_bytes,
    recomputed,
    resident_bytes,
)
from idl.infer.tiling.mergers import Merger, MonteCarlo, NonFinite, Objects, Placed
from idl.infer.tiling.tta import TTA_AUTO, TTA_CHOICES, TTA_SETTINGS, transforms, tta_sampler

log = logging.getLogger("idl")

_GUESSED: set[str] = set()  # the axes guessed in this run, said once each

DEFAULT_TILE = {2: 512, 3: 128}
# activation memory per input pixel of idl's depth-4, 16-filter 2D U-Net in ONNX Runtime, from the
# 8.6 GB reported for one 6000 x 6000 tile; tiles are capped so that an estimate with it stays within a
# quarter of the memory available
BYTES_PER_PIXEL = 256


def available_memory() -> int | None:
    """Bytes of memory available now without swapping (Linux's MemAvailable: free memory and the page
    cache that can be dropped; reading a large volume fills the cache, which free memory alone would
    count as used), at most what the process's control group still allows (a Slurm job's or a
    container's limit, :func:`~idl.infer.tiling.memory.cgroup_available`), or ``None`` where the
    system does not say."""
    limit = cgroup_available()
    machine = _machine_available()
    if limit is None or machine is None:
        return machine if limit is None else limit
    return min(machine, limit)


def _machine_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def bounded_tile(
    tile: int, shape: Sequence[int], batch: int, available: int | None, minimum: int = 64
) -> int:
    """``tile``, or the largest side whose estimated activation memory (``BYTES_PER_PIXEL`` per
    pixel of a batch of tiles, each no larger than the image) fits ``MEMORY_SHARE`` of ``available``
    bytes, with a warning; a huge ``--tile-size`` would otherwise exhaust memory or ONNX Runtime.
    Never below ``minimum`` (the smallest tile the model's halo allows: :func:`check_batch` has
    refused a batch that does not fit even there)."""
    if available is None:
        return tile
    budget = MEMORY_SHARE * available
    need = batch * BYTES_PER_PIXEL * math.prod(min(tile, n) for n in shape)
    if need <= budget:
        return tile
    side = max(minimum, 64, int((budget / (batch * BYTES_PER_PIXEL)) ** (1 / len(shape))))
    if side >= tile:
        return tile
    log.warning(
        "--tile-size %d would need about %.1f GB for the network's activations, more than a quarter of "
        "the %.1f GB available: predicting in tiles of %d px instead",
        tile,
        need / 2**30,
        available / 2**30,
        side,
    )
    return side


@dataclass(frozen=True)
class PredictOptions:
    """How to run a model over images (defaults suit a CPU lab PC)."""

    tile_size: int | None = None  # None: the largest tile max_memory allows (tiling.memory)
    overlap: float | None = None  # fraction of a tile shared with each neighbour; None: the model's halo
    batch_size: int = 1
    mc_samples: int = 0
    threshold: str | float = "otsu"
    progress: bool = True
    # images larger than this are predicted out of core: read window by window (when the file allows
    # it) and written tile by tile into memory-mapped TIFFs; smaller ones are predicted in memory
    out_of_core_bytes: int = 64 * 2**20
    out_format: str = "tif"  # a writing format of idl.infer.io.formats: "tif", "npy", "zarr" (OME-Zarr), ...
    on_nonfinite: str = "replace"  # NaN/inf pixels: "replace" (see core.nonfinite) or "error"
    overwrite: bool = False  # predict again inputs whose outputs exist (else they are skipped)
    uncertainty: str | None = None  # Monte Carlo map (post.uncertainty.MAPS); None: the task's own
    # a tile stops drawing Monte Carlo samples once its map's estimated relative error is below this
    # (post.uncertainty.SplitHalves); 0: every tile draws all mc_samples (docs/benchmarks.md: the
    # AUROC and the samples drawn per tolerance)
    mc_tolerance: float = 0.0
    # tiles whose input's contrast is at most this many noise units are not run (tiling.empty); None: all run
    skip_empty: float | None = None
    seed: int = 0  # Monte Carlo samples are drawn from it: the same command writes the same files
    # test-time augmentation (tiling.tta.TTA_SETTINGS): "flips" or "d4"; "auto": the task's choice with
    # Monte Carlo samples (Outputs.mc_tta, measured in docs/benchmarks.md), none without; None or "off": none
    tta: str | None = TTA_AUTO
    # with Monte Carlo samples, where the mask, labels or values come from: "deterministic" (the
    # network without dropout; the samples give the uncertainty only) or "mean" (the samples' mean);
    # None: the task's choice (Outputs.mc_answer, measured in docs/benchmarks.md)
    mc_answer: str | None = None
    # the part of the inputs this process predicts (--shard I/N, job arrays): of the files, or of the
    # blocks of one volume written to OME-Zarr; None: all of them
    shard: Shard | None = None
    # one volume written to OME-Zarr is predicted block by block (tiling.blocks) with blocks of about
    # this side (a multiple of the output's chunks); None: the default, and blocks only for volumes
    # predicted out of core or shared by shards or Dask
    block_size: int | None = None
    # bytes the prediction may use (--max-memory); None: tiling.memory.default_budget of what is available
    max_memory: int | None = None

    @property
    def sampled(self) -> bool:
        """Whether each tile is predicted several times (Monte Carlo, test-time augmentation): then an
        uncertainty map is written."""
        return self.mc_samples > 0 or self.tta in TTA_CHOICES

    def tta_for(self, outputs: Outputs) -> str | None:
        """The test-time augmentation a model's prediction draws (``tta`` resolved for the task's
        ``outputs``): ``auto`` is the task's choice when samples are drawn and their mean is the
        answer, else none."""
        if self.tta in TTA_CHOICES:
            return self.tta
        if self.tta == TTA_AUTO and self.mc_samples and (self.mc_answer or outputs.mc_answer) == "mean":
            return outputs.mc_tta
        return None

    @property
    def suffix(self) -> str:
        """File name ending of the outputs."""
        return output_format(self.out_format).suffix

    def __post_init__(self) -> None:
        if self.overlap is not None and not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if self.max_memory is not None and self.max_memory < 1:
            raise ValueError(f"max_memory must be a number of bytes >= 1, got {self.max_memory}")
        if (self.tile_size is not None and self.tile_size < 1) or self.batch_size < 1 or self.mc_samples < 0:
            raise ValueError("tile size and batch size must be >= 1 and mc samples >= 0")
        if self.mc_samples == 1:
            raise ValueError("Monte Carlo dropout needs at least 2 samples (or 0 to switch it off)")
        if not 0.0 <= self.mc_tolerance < 1.0:
            raise ValueError(f"mc_tolerance must be in [0, 1), got {self.mc_tolerance}")
        if self.tta not in (None, *TTA_SETTINGS):
            raise ValueError(f"tta must be one of {', '.join(TTA_SETTINGS)}, got {self.tta}")
        if self.mc_answer not in (None, *MC_ANSWERS):
            raise ValueError(f"mc_answer must be one of {', '.join(MC_ANSWERS)}, got {self.mc_answer}")
        if self.skip_empty is not None and not self.skip_empty >= 0:
            raise ValueError(f"skip_empty must be a contrast >= 0 (noise units), got {self.skip_empty}")
        output_format(self.out_format)  # ValueError naming the formats that write
        if self.uncertainty is not None and self.uncertainty not in MAPS:
            raise ValueError(f"uncertainty must be one of {', '.join(MAPS)}, got {self.uncertainty}")
        if self.on_nonfinite not in POLICIES:
            raise ValueError(f"on_nonfinite must be one of {', '.join(POLICIES)}, got {self.on_nonfinite}")

    def batch_for(self, io: IOSpec) -> int:
        """Tiles per network call: ``batch_size``, within what the network accepts."""
        return min(self.batch_size, io.max_batch) if io.max_batch else self.batch_size

    def memory_batch(self, io: IOSpec) -> int:
        """Tiles held at once in a network call: the batch, or with Monte Carlo sampling the samples
        of one tile drawn per call."""
        batch = self.batch_for(io)
        return min(batch, self.mc_samples) if self.mc_samples else batch

    def bounded_tile(self, io: IOSpec, shape: Sequence[int], minimum: int = 64) -> int:
        """The tile side for an image of ``shape``, capped by the memory available
        (:func:`bounded_tile`), never below ``minimum`` (the smallest tile the model's halo allows).
        The default tile grows to ``minimum`` where the halo needs more (a 3D U-Net of depth 4 has a
        96-voxel halo: 128-voxel tiles would leave it no owned region); a ``--tile-size`` the user gave
        too small is refused by :func:`_check_tiles` instead, saying what it needs."""
        tile = self.tile_for(len(io.spatial))
        if self.tile_size is None:
            tile = max(tile, minimum)
        return bounded_tile(tile, shape, self.memory_batch(io), available_memory(), minimum)

    def tile_for(self, dims: int) -> int:
        """Tile side for 2D or 3D images."""
        return self.tile_size if self.tile_size is not None else DEFAULT_TILE.get(dims, 512)

    def budget(self, available: int | None) -> int:
        """Bytes the prediction may use: ``max_memory``, or the share of the ``available`` memory
        (:func:`available_memory`, read by the caller; :func:`~idl.infer.tiling.memory.default_budget`)."""
        return self.max_memory if self.max_memory is not None else default_budget(available)

    def halo(self, model_halo: int, tile: int) -> int:
        """Context kept on each side of a tile's owned region, in pixels.

        ``overlap`` is the fraction of a tile shared with its neighbour, i.e. twice the halo; by default
        the halo the model recommends (its effective receptive field) is used.
        """
        if self.overlap is None:
            return model_halo
        return round(self.overlap * tile / 2)


@dataclass
class Prediction:
    """Result for one image: ``(K, *spatial)`` probabilities (or a package's output), a class map
    (idl segmentation models only) and optional uncertainty."""

    probabilities: np.ndarray
    mask: np.ndarray | None
    uncertainty: np.ndarray | None
    threshold: float | None
    # instance models: the score of the object owning each pixel (Mask R-CNN's detection score, the
    # star-convex network's object probability) or each pixel's foreground probability (U-Net)
    scores: np.ndarray | None = None


def _per_axis(value: int | Sequence[int], n: int) -> tuple[int, ...]:
    return (value,) * n if isinstance(value, int) else tuple(value)


def predict_probabilities(
    run: Runner,
    image: np.ndarray,
    io: IOSpec,
    tile_size: int | Sequence[int],
    halo: int | Sequence[int] | None = None,
    batch_size: int = 1,
    samples: int = 0,
    progress: bool = False,
    output: Any = None,
    uncertainty_out: Any = None,
    mark_nonfinite: bool = False,
    uncertainty_map: str | None = None,
    sample: Sampler | None = None,
    tolerance: float = 0.0,
    drawn: list[int] | None = None,
    skip: EmptyTiles | None = None,
    deterministic: Runner | None = None,
    sigma_scale: float | None = None,
    fitted: Mapping[str, tuple[Any, ...]] | None = None,
) -> tuple[Any, Any]:
    """Run a one-input, one-output network over a raw channels-last image (``io.image_axes``), tile
    by tile, through the tile loop (:mod:`idl.infer.tiling.engine`).

    ``image`` may be read lazily (see :mod:`idl.infer.io.lazy`); ``output`` and ``uncertainty_out``
    may be given as array-likes to write into (e.g. TIFF sinks) instead of new arrays.

    ``run`` maps a ``(N, C, *spatial)`` batch to the network's raw ``(N, K, *spatial)`` output. Tiles
    are pre-processed with statistics of the whole image; outputs are post-processed per tile (and per
    Monte Carlo sample) as far as that is pointwise, the rest on the assembled output. ``halo``
    defaults to the network's own. Returns ``(output (K, *spatial), uncertainty (*spatial) or None)``.
    With ``samples >= 2`` every tile is predicted ``samples`` times (``run`` must be a Monte Carlo
    graph) and the mean and the uncertainty map are returned; batches then hold samples of one tile.
    With ``mark_nonfinite`` the outputs are NaN where an input pixel is not finite (the network saw 0
    there, see :mod:`idl.infer.core.nonfinite`). ``uncertainty_map`` names the Monte Carlo map
    (:data:`idl.infer.post.uncertainty.MAPS`; default: ``std`` for regression, else InstantDL's).
    ``sample`` (a Monte Carlo graph with a sample count, :meth:`LoadedModel.sampler`) draws
    ``batch_size`` samples of a tile per call, running the part before the first dropout once per call;
    without it ``run`` is called on ``batch_size`` copies of the tile. More samples per call are faster
    but hold that many copies of the activations (a U-Net with encoder dropout on a 2048 x 2048 image:
    10 per call took 0.84x the time and 4.7x the memory of 1, docs/benchmarks.md). With a
    ``tolerance`` a tile stops early once its map's estimated relative error is within it
    (:class:`idl.infer.post.uncertainty.SplitHalves`); ``drawn`` collects the samples of every tile.
    ``skip`` (:class:`~idl.infer.tiling.empty.EmptyTiles`) leaves out tiles of background alone.
    With ``samples`` and a ``deterministic`` runner (the network without dropout), the output is that
    runner's and the samples give the uncertainty alone (their mean is not kept). ``sigma_scale``
    multiplies a ``std`` map (default: the model's calibration, ``io.sigma_scale``). ``fitted``: the
    input's pre-processing fitted on a larger image of which ``image`` is a part (a block of a volume).
    """
    if samples and deterministic is not None:
        values, _ = predict_probabilities(
            deterministic,
            image,
            io,
            tile_size,
            halo,
            batch_size,
            0,
            progress,
            output,
            None,
            mark_nonfinite,
            skip=skip,
            fitted=fitted,
        )
        # the samples' mean is not kept: in memory it would be a second whole-image array
        discard = Discarded(tuple(output.shape) if output is not None else (1, *image.shape[:-1]))
        sampled_skip = None if skip is None else EmptyTiles(skip.threshold)
        _, uncertainty = predict_probabilities(
            run,
            image,
            io,
            tile_size,
            halo,
            batch_size,
            samples,
            progress,
            discard,
            uncertainty_out,
            mark_nonfinite,
            uncertainty_map,
            sample,
            tolerance,
            drawn,
            sampled_skip,
            sigma_scale=sigma_scale,
            fitted=fitted,
        )
        return values, uncertainty
    tensors = Tensors.single(io)
    spatial = io.spatial
    if image.ndim - 1 != len(spatial):
        raise DataError(
            f"the network expects {len(spatial)}D images ({io.image_axes}), got shape {image.shape}"
        )
    tile = _per_axis(tile_size, len(spatial))
    where = layout(tensors, image.shape[:-1], tile, None if halo is None else _per_axis(halo, len(spatial)))
    if output is not None and needs_whole_output(tensors):
        raise IdlError(
            "this package post-processes with statistics of the whole output; that needs the image in "
            "memory, but it is read lazily. Save it as a compressed TIFF to predict it."
        )
    spread_name = uncertainty_map or ("std" if io.uncertainty == "std" else "instantdl")
    if samples and io.uncertainty == "std" and spread_name != "std":
        raise IdlError(
            f"the {spread_name} uncertainty is one of class probabilities; this model predicts values, whose "
            "Monte Carlo uncertainty is their standard deviation (--uncertainty std)."
        )

    def forward(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
        x = inputs["input"]
        if samples and sample is not None:
            return {"output": sample(x, draws)}
        return {"output": run(np.repeat(x, draws, axis=0) if draws > 1 else x)}

    grid = where.grid(tensors, "output")

    def placer(target: Any, channels: bool = True) -> Placed | NonFinite:
        placed = Placed(grid, target, channels)
        if not mark_nonfinite:
            return placed
        return NonFinite(placed, lambda region: ~np.isfinite(read_window(image, region)).all(axis=-1))

    # a target without a channel axis (a one-channel output's sink) takes channel 0
    channels = output is None or len(getattr(output, "shape", (0, *spatial))) > len(spatial)
    merger: Merger
    if samples:
        spread_target = uncertainty_out if uncertainty_out is not None else np.empty(grid.length, np.float32)
        merger = MonteCarlo(
            placer(output, channels),
            placer(spread_target, False),
            spread_name,
            tolerance,
            io.sigma_scale if sigma_scale is None else sigma_scale,
        )
    else:
        merger = placer(output, channels)
    result = run_sample(
        tensors,
        {"input": image},
        forward,
        where,
        {"output": merger},
        batch_size,
        samples,
        progress,
        skip,
        fitted,
    )["output"]
    if samples and drawn is not None:
        assert isinstance(merger, MonteCarlo)
        drawn.extend(merger.drawn)
    values, uncertainty = result if samples else (result, None)
    if output is None:
        values = finish(tensors, {"output": values})["output"]
    return values, uncertainty


def predict_objects(
    run: Runner, image: Any, io: IOSpec, tile_size: int, halo: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Label image and per-pixel score of a raw channels-last image from a network that outputs
    labels (0 background) and the score of the object owning each pixel (Mask R-CNN), tile by tile,
    each object kept by the tile that owns its centre (:class:`idl.infer.tiling.mergers.Objects`).
    Returns ``(labels (*spatial) uint16/uint32, scores (*spatial) float32)``."""
    tensors = Tensors.single(io)
    where = layout(
        tensors, image.shape[:-1], _per_axis(tile_size, len(io.spatial)), (halo,) * len(io.spatial)
    )

    def forward(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
        return {"output": run(inputs["input"])}

    merger = Objects(where.shape)
    result = run_sample(tensors, {"input": image}, forward, where, {"output": merger}, 1, 0, progress)
    return result["output"]


def sampling(model: LoadedModel, options: PredictOptions, outputs: Outputs) -> dict[str, Any]:
    """The arguments of :func:`predict_probabilities` that say how a model's image is sampled:
    Monte Carlo dropout (``--mc-samples``), test-time augmentation (``--tta``, :mod:`.tta`: its copies
    are the samples, all of a tile in one call) or both, the network that runs it and where the
    answer comes from (:meth:`Outputs.deterministic`)."""
    mc = options.mc_samples > 0
    run = model.network(mc=mc)
    common = {"run": run, "uncertainty_map": options.uncertainty, "tolerance": options.mc_tolerance}
    tta = options.tta_for(outputs)
    if tta is None:
        return {
            **common,
            "batch_size": options.batch_for(model.io),
            "samples": options.mc_samples,
            "sample": model.sampler() if mc else None,
            "deterministic": outputs.deterministic(model, options),
        }
    info = model.info
    dims = len(model.io.spatial)
    isotropic = info is not None and info.z_multiple in (0, info.size_multiple)  # packages: in-plane only
    chosen = transforms(tta, dims, isotropic)
    count = options.mc_samples or len(chosen)
    drawn = model.sampler() if mc else None  # a sample-count graph draws one sample per call
    if drawn is not None:
        run = partial(drawn, count=1)
    return {
        **common,
        "batch_size": count,
        "samples": count,
        "sample": tta_sampler(run, chosen),
        "tolerance": 0.0,
        # a regression model's sigma factor was fitted to Monte Carlo dropout alone: the transforms'
        # spread is left as it is
        "sigma_scale": 1.0,
    }


def empty_tiles(options: PredictOptions) -> EmptyTiles | None:
    """What decides which tiles are skipped (``--skip-empty``), or None when all run."""
    return None if options.skip_empty is None else EmptyTiles(options.skip_empty)


def report_skipped(skip: EmptyTiles | None) -> None:
    """Log how many tiles ``--skip-empty`` left out."""
    if skip is not None:
        total = skip.skipped + skip.run
        log.info("--skip-empty: %d of %d tile(s) were background and not run", skip.skipped, total)


def load_input(path: Path, axes: str | None, io: IOSpec, lazy: bool = False, scene: int | None = None) -> Any:
    """Read an image as channels-last (``io.image_axes``), checking it fits the network's channels.

    With ``lazy``, files that can be read window by window (uncompressed or multi-page TIFF, .npy)
    are opened without loading them. A 2D image given to a 3D network works when the network takes
    single planes (z fixed at 1); otherwise the error says that the network wants a volume.
    """
    try:
        if scene is not None:  # one image of a file of several (idl.infer.io.scenes), read whole
            raw, recorded = read_scene(path, scene)
            resolved, guessed = resolve_axes(raw.shape, axes or recorded, str(path), io.spatial)
            image = to_channels_last(raw, resolved, io.spatial)
        else:
            reader = open_channels_last if lazy else read_channels_last
            image, resolved, guessed = reader(path, axes, io.spatial)
    except DataError:
        if io.spatial != "zyx" or (axes is not None and "z" in axes.lower()):
            raise
        image, resolved, guessed = read_channels_last(path, axes, "yx")  # a plane?
        if io.sizes["z"] != AxisSize(1, 0):
            raise DataError(
                f"{path}: the model is 3D (zyx) and needs a volume, but this is a 2D image "
                f"(shape {read_image(path).shape}). Pass a z-stack, or --axes if the axes were misread."
            ) from None
        image = image[np.newaxis]
    if guessed:
        if resolved not in _GUESSED:  # once per axes and run, not once per image
            _GUESSED.add(resolved)
            log.info(
                "%s: guessed axes '%s', and for every image like it (pass --axes to set them)",
                path.name,
                resolved,
            )
    if image.shape[-1] != io.in_channels:
        match = match_channels_lazily if is_lazy(image) else match_channels
        matched = match(image, io.in_channels)
        if matched.shape[-1] == io.in_channels:
            log.info(
                "%s: %d channel(s) given to a model of %d: %s",
                path.name,
                image.shape[-1],
                io.in_channels,
                "the grey image is repeated"
                if io.in_channels == 3
                else "its equal channels are taken as one",
            )
            image = matched
    if image.shape[-1] != io.in_channels:
        raise DataError(
            f"{path}: has {image.shape[-1]} channel(s) (axes '{resolved}') but the model "
            f"expects {io.in_channels}. Pass the right --axes or convert the image."
        )
    return image


def _check_tiles(io: IOSpec, shape: tuple[int, ...], tiles: Sequence[int], halos: tuple[int, ...]) -> None:
    """Refuse tiles too small for the halo with advice (instead of the tiler's bare error)."""
    for axis, size, halo, tile in zip(io.spatial, shape, halos, tiles, strict=True):
        rule = io.sizes[axis]
        padded = size + (2 * io.halo_of(axis) if io.input_pad else 0)
        length = min(rule.at_most(tile), rule.at_least(padded))
        smallest = smallest_tile(halo, rule)
        if length >= smallest or length >= rule.at_least(padded):
            continue
        if rule.step == 0:
            raise IdlError(
                f"the model takes a fixed size of {rule.minimum} along {axis}, which leaves no room for "
                f"{halo} px of context on both sides; use --overlap 0 or a smaller --overlap."
            )
        raise IdlError(
            f"--tile-size {tile} is too small along {axis}: each tile needs {halo} px of context on "
            f"both sides. Use --tile-size {smallest} or more, or a smaller --overlap."
        )


def _halos(model: LoadedModel, options: PredictOptions, tiles: int | Sequence[int]) -> tuple[int, ...]:
    """Tile halos: the model's own, or ``--overlap``; a package that declares no halo still gets an
    eighth of the tile, so tiles never meet without context (whole-image results need it)."""
    io = model.io
    declared = [io.halo_of(a) for a in io.spatial]
    tiles = _per_axis(tiles, len(declared))
    tile = max(tiles)
    if options.overlap is None and model.info is None and not any(declared):
        fallback = max(io.sizes[a].align for a in io.spatial) * max(
            1, tile // 8 // max(io.sizes[a].align for a in io.spatial)
        )
        log.info(
            "the package declares no halo: tiles overlap by %d px (set --overlap to change)", 2 * fallback
        )
        return tuple(fallback for _ in io.spatial)
    return tuple(options.halo(h, t) for h, t in zip(declared, tiles, strict=True))


def smallest_tile_for(model: LoadedModel, options: PredictOptions) -> int:
    """The smallest tile side (halo on both sides of an owned region) the model allows on every
    axis, with the halos of the default tile."""
    io = model.io
    halos = _halos(model, options, options.tile_for(len(io.spatial)))
    return max(smallest_tile(h, io.sizes[a]) for a, h in zip(io.spatial, halos, strict=True))


def check_batch(model: LoadedModel, options: PredictOptions, available: int | None = None) -> None:
    """Before any work: refuse a ``--batch-size`` whose tiles do not fit the memory even at the
    smallest tile the model allows (else every image would fail, one by one, with advice about
    the tile size that the memory cap then undoes)."""
    available = available_memory() if available is None else available
    if available is None:
        return
    io, batch = model.io, options.memory_batch(model.io)
    side = smallest_tile_for(model, options)
    cost = model.footprint(mc=options.mc_samples > 0)  # the network's own, where its graph says
    tile = (side,) * len(io.spatial)
    per_tile = cost.bytes_for(tile) if cost is not None else BYTES_PER_PIXEL * math.prod(tile)
    budget = MEMORY_SHARE * available
    if batch * per_tile <= budget:
        return
    fits = int(budget // per_tile)
    if fits < 1:  # not even one tile: a smaller batch cannot help
        raise IdlError(
            f"not enough memory: one tile of the smallest size the model allows ({side} px) needs about "
            f"{per_tile / 2**30:.1f} GB for the network's activations, more than a quarter of the "
            f"{available / 2**30:.1f} GB available now. Close other programs (or jobs sharing this "
            "machine), or use a smaller --overlap."
        )
    raise IdlError(
        f"--batch-size {options.batch_size} is too large for this machine: {batch} tile(s) per call need "
        f"about {batch * per_tile / 2**30:.1f} GB for the network's activations even at the smallest "
        f"tile the model allows ({side} px), more than a quarter of the {available / 2**30:.1f} GB "
        f"available. Use --batch-size {fits} or less."
    )


def tile_shape(
    model: LoadedModel,
    options: PredictOptions,
    shape: Sequence[int],
    outputs_in_memory: bool = False,
    grow: bool = True,
) -> tuple[int, ...]:
    """The tile (per spatial axis, halo included) for an image of spatial ``shape``: ``--tile-size``
    where given (capped by the memory available, :func:`bounded_tile`), else the largest tile whose
    activations fit what ``--max-memory`` leaves (:mod:`idl.infer.tiling.memory`): the budget less
    the process's memory now and, with ``outputs_in_memory``, the image's output arrays. Networks
    whose graph cannot be measured get the fixed default tile, as before. ``grow`` False: the default
    budget never grows past its cap (:func:`~idl.infer.tiling.memory.grown_budget`), for tiles that
    several processes of one machine run at once."""
    io = model.io
    dims = len(io.spatial)
    smallest = smallest_tile_for(model, options)
    sized = options.tile_size is None and outputs_of(model).sized_by_memory
    cost = model.footprint(mc=options.mc_samples > 0) if sized else None
    model.expected = None  # sessions in their own arenas unless the tile's cost is known
    if cost is None:
        return (options.bounded_tile(io, shape, smallest),) * dims
    if options.sampled:
        cost = sampled_cost(cost, io.out_channels, options, outputs_of(model))
    available = available_memory() if options.max_memory is None else None  # read once, used twice
    allowed = options.budget(available)
    taken = resident_bytes()
    if outputs_in_memory:
        taken += output_bytes(math.prod(shape), io.out_channels, options.sampled)
    rules = [io.sizes[a] for a in io.spatial]
    halos = [io.halo_of(a) if options.overlap is None else 0 for a in io.spatial]
    least = [max(smallest_tile(h, r), r.at_least(64)) for h, r in zip(halos, rules, strict=True)]
    aligns, batch = [r.align for r in rules], options.memory_batch(io)

    def choose(budget: float) -> TileChoice:
        return choose_tile(cost, budget - taken, shape, halos, aligns, least, batch)

    if available is None or not grow:
        choice = choose(allowed)
    else:  # the default grows where the cap's tiles would mostly recompute halos (tiling.memory)
        waste = partial(recomputed, shape, halos=halos, rules=rules)
        choice, grown = grown_budget(choose, waste, allowed, MEMORY_CEILING * available)
        if grown > allowed and choice.tile not in _REPORTED:  # said once per tile, as the tile is
            log.info(
                "the model's halo (%s px) would leave tiles within %.0f MB mostly halo: the memory "
                "budget grows to %.0f MB (at most half the memory available; --max-memory sets it)",
                " x ".join(map(str, halos)),
                allowed / 2**20,
                grown / 2**20,
            )
        allowed = int(grown)
    _report_tile(choice, allowed)
    model.expected = choice.expected  # a call's: the batch of tiles runs in one
    return choice.tile


def sampled_cost(cost: Footprint, channels: int, options: PredictOptions, outputs: Outputs) -> Footprint:
    """``cost`` with what a sampled tile holds beside the network: the running moments of its samples
    (two halves of float64 means and squares: 32 bytes per channel and pixel, :class:`MonteCarlo`) and,
    with test-time augmentation, all its samples at once (their outputs and the stacked copy)."""
    draws = 0
    tta = options.tta_for(outputs)
    if tta is not None:
        draws = options.mc_samples or 16  # the most copies test-time augmentation makes (d4 in 3D)
    return replace(cost, per_pixel=cost.per_pixel + 32 * channels + 8 * channels * draws)


_REPORTED: set[tuple[int, ...]] = set()  # the tiles said in this run, once each


def _report_tile(choice: TileChoice, allowed: int) -> None:
    """Say the chosen tile and its expected memory once per tile shape (a warning where even the
    smallest tile exceeds the budget)."""
    if choice.tile in _REPORTED:
        return
    _REPORTED.add(choice.tile)
    text = " x ".join(map(str, choice.tile))
    budget = allowed / 2**20
    if not choice.fits:
        log.warning(
            "--max-memory %.0f MB leaves too little for even the smallest tile the model allows (%s px, "
            "about %.0f MB for the network): predicting with it anyway; give more with --max-memory",
            budget,
            text,
            choice.expected / 2**20,
        )
        return
    log.info(
        "tiles of %s px (halo included): about %.0f MB for the network, within --max-memory %.0f MB",
        text,
        choice.expected / 2**20,
        budget,
    )


class Outputs:
    """What the tiled runner makes of a network's output and writes: by default the output as it is
    (a package's post-processed output, regression values). A task replaces it (see
    :mod:`idl.infer.tasks`) to turn probabilities into masks or labels, or to merge tiles its own way
    (:meth:`merger`); loaders attach the task's to the model (``LoadedModel.outputs``)."""

    whole_image: str = ""  # why images are predicted in memory (empty: out of core is fine)
    objects: bool = False  # also write objects/<name>.csv (one row per labelled object)
    makes_mask: bool = False  # out of core: the values are written first, then made a mask
    # with Monte Carlo samples, where the answer comes from unless --mc-answer says (MC_ANSWERS): the
    # deterministic pass, unless a task measured the samples' mean better (semantic segmentation)
    mc_answer: str = "deterministic"
    # with Monte Carlo samples whose mean is the answer and --tta auto: the transforms each sample is
    # drawn under (tiling.tta), or None; a task sets what it measured better
    mc_tta: str | None = None
    # whether the tiles are the largest --max-memory allows (the network's memory grows with its tile);
    # False: the fixed default tile (a detector, whose proposals and masks do not grow that way)
    sized_by_memory: bool = True

    @property
    def saves_probabilities(self) -> bool:
        """Whether ``--save-probabilities`` writes the network's values beside the prediction: for a
        mask or labels made from them (a regression's values are the prediction itself)."""
        return self.makes_mask or self.objects

    def deterministic(self, model: LoadedModel, options: PredictOptions) -> Runner | None:
        """The network without dropout, when a Monte Carlo prediction takes its answer from it."""
        if options.mc_samples and (options.mc_answer or self.mc_answer) == "deterministic":
            return model.network(mc=False)
        return None

    def merger(self, model: LoadedModel, where: Layout, options: PredictOptions) -> Merger | None:
        """A merger of the task's own for the network's output on an image laid out as ``where``
        (:mod:`idl.infer.tiling.mergers`), whose result :meth:`collect` makes a prediction; None (the
        default): the values are placed as they are, or as Monte Carlo statistics."""
        return None

    def collect(self, merged: Any, options: PredictOptions) -> Prediction:
        """What the result of :meth:`merger`'s merger becomes."""
        raise NotImplementedError

    def predict(
        self,
        model: LoadedModel,
        image: Any,
        options: PredictOptions,
        tile: tuple[int, ...],
        halos: tuple[int, ...],
    ) -> Prediction:
        """The network's output over a whole image, tile by tile through the one tile loop, merged by
        the task's :meth:`merger` and :meth:`collect`, or placed and :meth:`finish` ed."""
        tensors = Tensors.single(model.io)
        where = layout(tensors, image.shape[:-1], tile, halos)
        merger = self.merger(model, where, options)
        skip = empty_tiles(options)
        if merger is not None:
            run = model.network()

            def forward(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
                return {"output": run(inputs["input"])}

            batch, mergers = options.batch_for(model.io), {"output": merger}
            merged = run_sample(
                tensors, {"input": image}, forward, where, mergers, batch, 0, options.progress, skip
            )
            report_skipped(skip)
            return self.collect(merged["output"], options)
        try:
            output, uncertainty = predict_probabilities(
                image=image,
                io=model.io,
                tile_size=tile,
                halo=halos,
                progress=options.progress,
                skip=skip,
                **sampling(model, options, self),
            )
        except ValueError as exc:  # tiling arithmetic the checks did not foresee
            raise IdlError(f"cannot tile this image for the model: {exc}") from exc
        report_skipped(skip)
        return self.finish(output, uncertainty, options)

    def finish(
        self, output: np.ndarray, uncertainty: np.ndarray | None, options: PredictOptions
    ) -> Prediction:
        """What the assembled output of a whole image becomes."""
        return Prediction(output, None, uncertainty, None)

    # a volume predicted by blocks is labelled block by block (block_labels; whole_image is for images)
    labels_by_blocks: bool = False

    def block_labels(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels of a window of a volume predicted by blocks, from its ``(K, ...)`` values: the
        labels, the foreground they were made within (each label must depend only on the connected
        component of the foreground it lies in: :mod:`idl.infer.post.block_labels`), and the map whose
        mean per object is the objects table's score."""
        raise NotImplementedError

    def block_summary(self, values: np.ndarray, options: PredictOptions) -> np.ndarray | None:
        """What :meth:`mask_blocks` needs of one block of a volume predicted by blocks (``(K, ...)``
        values), computed where the block is predicted, so the last step reads the values once: the
        semantic mask's histogram for Otsu's threshold; None (the default): nothing."""
        return None

    def mask_blocks(self, values: Any, mask: Any, options: PredictOptions) -> float | None:
        """Out of core (``makes_mask``): write ``mask`` from ``values`` (sinks of the whole image,
        read block by block); returns the threshold used, if any."""
        raise NotImplementedError

    def block_threshold(
        self, options: PredictOptions, summaries: Sequence[np.ndarray] | None
    ) -> float | None:
        """The threshold of a volume predicted by blocks (``makes_mask``), from every block's
        :meth:`block_summary`; None: the mask takes no threshold (arg-max)."""
        raise NotImplementedError

    def block_mask(self, values: np.ndarray, threshold: float | None) -> np.ndarray:
        """The mask of one block's ``(K, ...)`` values (``makes_mask``)."""
        raise NotImplementedError


AS_IT_IS = Outputs()


def outputs_of(model: LoadedModel) -> Outputs:
    """The model's task's outputs, or the output as it is (a package made elsewhere)."""
    outputs = model.outputs
    return outputs if isinstance(outputs, Outputs) else AS_IT_IS


def predict_image(model: LoadedModel, image: np.ndarray, options: PredictOptions) -> Prediction:
    """Predict one channels-last image with a loaded model.

    idl models give what their task makes (class masks by Otsu or a fixed threshold, or arg-max;
    instance labels); other packages give their post-processed output, and ``mask`` is ``None``.
    """
    io = model.io
    tile = tile_shape(model, options, image.shape[:-1], outputs_in_memory=True)
    halos = _halos(model, options, tile)
    _check_tiles(io, image.shape[:-1], tile, halos)
    if options.mc_samples:  # every image's samples from the seed: the same image, the same samples
        model.reseed(options.seed)
    result = outputs_of(model).predict(model, image, options, tile, halos)
    finite = np.isfinite(image) if has_floats(image) else None  # one pass for both rules below
    if finite is not None:
        _mark_nonfinite(result, ~finite.all(axis=-1))
    empty_if_constant(result, image, finite)
    return result


def empty_if_constant(result: Prediction, image: np.ndarray, finite: np.ndarray | None = None) -> None:
    """A constant image (all zero, say) holds nothing to segment: its mask or labels are emptied,
    with a warning. The network's output on it is flat up to its borders, and Otsu's threshold
    would split that noise into objects (6 % foreground for an all-zero image). ``finite``: the
    image's ``np.isfinite`` when it was computed already."""
    if result.mask is None or not result.mask.any():
        return
    if finite is None and has_floats(image):
        finite = np.isfinite(image)
    values = image if finite is None else image[finite]
    if values.size and values.min() == values.max():
        log.warning(
            "a constant image (every pixel %g): nothing to segment, its mask is empty", values.flat[0]
        )
        result.mask[...] = 0


def _mark_nonfinite(result: Prediction, bad: np.ndarray) -> None:
    """NaN in the probabilities, scores and uncertainty and 0 in the mask where the input pixel was
    not finite (the rule of :mod:`idl.infer.core.nonfinite`)."""
    if not bad.any():
        return
    result.probabilities = result.probabilities.astype(np.float32, copy=False)
    result.probabilities[:, bad] = np.nan
    for array in (result.uncertainty, result.scores):
        if array is not None:
            array[bad] = np.nan
    if result.mask is not None:
        result.mask[bad] = 0


def collect_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted list of image files with unique names."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if is_zarr(item):
            files.append(item)
        elif item.is_dir():
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
        stem = image_stem(f)
        if stem in stems:
            raise DataError(f"{f} and {stems[stem]} would both be written as {stem}; rename one of them.")
        stems[stem] = f
    return files


def write_output(
    path: Path,
    array: np.ndarray,
    options: PredictOptions,
    io: IOSpec,
    scale: Mapping[str, float] | None = None,
) -> Path:
    """Write one output in the chosen format (axes: the spatial ones, c first if present), with the
    input's pixel sizes ``scale`` where the format records them (OME-TIFF, OME-Zarr)."""
    axes = ("c" if array.ndim > len(io.spatial) else "") + io.spatial
    return write_image(path, array, options.out_format, axes, scale)
