"""Validation on whole images, tiled exactly as at inference, scored as the user will be judged.

Training patches are small; the user's images are not. So every epoch each validation image (or the
held-out block of a single image) is predicted whole, tile by tile with the network's halo as
``idl-predict`` tiles it, and scored with the task's own measure after the task's own
post-processing: Jaccard of the Otsu-thresholded (binary) or arg-max (multi-class) mask, AP50:95 of
the watershed labels (instance), Pearson's r (regression). The loss of the whole image is reported
next to it. Model selection follows the score.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from idl.infer.core.grid import AxisSize
from idl.infer.core.processing import SPACE
from idl.infer.runtime.iospec import IOSpec
from idl.infer.runtime.tensors import Tensors
from idl.infer.tiling.engine import layout, run_sample
from idl.infer.tiling.mergers import Placed
from idl.infer.tiling.predict import DEFAULT_TILE
from idl.train.data import Sample
from idl.train.loop import to_device
from idl.train.losses import LossFn

Validator = Callable[[nn.Module, torch.device], tuple[float, float]]


class ImageScore(Protocol):
    """A task's validation score, summed up over whole images (one object per validation)."""

    def add(self, logits: np.ndarray, sample: Sample) -> None:
        """Take one image's raw output ``(K, *spatial)`` against its sample's target."""

    def result(self) -> float:
        """The score over every image added."""


VALIDATION_TILE_3D = (DEFAULT_TILE[3], 256)  # voxels per axis: at least idl-predict's default


def validation_tile(
    dims: int, tile_size: int, halo: Sequence[int], multiples: Sequence[int]
) -> tuple[int, ...]:
    """The tile of validation: the user's tile size in 2D; in 3D four halos per axis (within
    :data:`VALIDATION_TILE_3D`), so that overlaps do not dominate: 128-voxel tiles with a 48-voxel
    halo predicted 6.25 times a 64 x 256 x 256 volume's voxels (60 s per validation), 256-voxel
    tiles once (docs/benchmarks.md)."""
    if dims == 2:
        return (tile_size, tile_size)
    low, high = VALIDATION_TILE_3D
    return tuple(
        int(np.clip(-(-4 * h // m) * m, low, high // m * m)) for h, m in zip(halo, multiples, strict=True)
    )


def predict_logits(
    model: nn.Module,
    image: np.ndarray,
    tile: Sequence[int],
    halo: Sequence[int],
    multiples: Sequence[int],
    device: torch.device,
) -> np.ndarray:
    """``(K, *spatial)`` raw network output for a normalized channels-last image, tile by tile through
    the inference side's tile loop (:mod:`idl.infer.tiling.engine`) with the module's forward handed
    in, so it equals ``idl-predict``'s (before post-processing) up to float rounding."""
    spatial = SPACE[-len(tile) :]
    io = IOSpec(
        input_axes="bc" + spatial,
        output_axes="bc" + spatial,
        in_channels=image.shape[-1],
        out_channels=0,  # whatever the module gives
        sizes={a: AxisSize(m, m) for a, m in zip(spatial, multiples, strict=True)},
        halo=dict(zip(spatial, halo, strict=True)),
    )
    tensors = Tensors.single(io)

    def forward(inputs: dict[str, np.ndarray], draws: int) -> dict[str, np.ndarray]:
        x = to_device(torch.from_numpy(inputs["input"]), device)
        return {"output": model(x).float().cpu().numpy()}

    where = layout(tensors, image.shape[:-1], tuple(tile), tuple(halo))
    with torch.no_grad():
        result = run_sample(
            tensors, {"input": image}, forward, where, {"output": Placed(where.grid(tensors, "output"))}
        )
    return result["output"]


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Sigmoid of one channel, else the softmax over channels (as the inference side applies)."""
    if logits.shape[0] == 1:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return shifted / shifted.sum(axis=0, keepdims=True)


class WholeImageValidation:
    """A :data:`Validator` for the U-Net tasks over whole validation images."""

    def __init__(
        self,
        samples: list[Sample],
        score: Callable[[], ImageScore],
        loss_fn: LossFn,
        tile: Sequence[int],
        halo: Sequence[int],
        multiples: Sequence[int],
    ) -> None:
        """``score`` makes a fresh :class:`ImageScore` for each validation."""
        self.samples, self.new_score, self.loss_fn = samples, score, loss_fn
        self.tile, self.halo, self.multiples = tuple(tile), tuple(halo), tuple(multiples)

    def _loss(self, logits: np.ndarray, target: np.ndarray, device: torch.device) -> float:
        out = torch.from_numpy(logits)[None].to(device)
        if target.dtype == np.float32:  # regression: channels-last -> channels-first
            y = torch.from_numpy(np.ascontiguousarray(np.moveaxis(target, -1, 0)))[None]
        else:
            y = torch.from_numpy(target.astype(np.int64))[None]
        with torch.no_grad():
            return float(self.loss_fn(out, y.to(device)))

    def logits(self, model: nn.Module, device: torch.device) -> Iterator[tuple[np.ndarray, Sample]]:
        """Each validation image's raw output ``(K, *spatial)``, as :meth:`__call__` scores it."""
        model.eval()
        for sample in self.samples:
            yield predict_logits(model, sample.image, self.tile, self.halo, self.multiples, device), sample

    def monte_carlo(
        self, model: nn.Module, device: torch.device, draws: int, seed: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray, Sample]]:
        """Each validation image's deterministic output ``(K, *spatial)`` and ``draws`` Monte Carlo
        samples ``(draws, K, *spatial)`` of the network with its dropout on (seeded by ``seed``)."""
        from idl.models import set_mc_dropout

        model.eval()
        torch.manual_seed(seed)
        try:
            for sample in self.samples:
                set_mc_dropout(model, False)
                plain = predict_logits(model, sample.image, self.tile, self.halo, self.multiples, device)
                set_mc_dropout(model, True)
                drawn = [
                    predict_logits(model, sample.image, self.tile, self.halo, self.multiples, device)
                    for _ in range(draws)
                ]
                yield plain, np.stack(drawn), sample
        finally:
            set_mc_dropout(model, False)

    def __call__(self, model: nn.Module, device: torch.device) -> tuple[float, float]:
        """Mean loss per image and the score over all validation images."""
        losses, score = [], self.new_score()
        for logits, sample in self.logits(model, device):
            losses.append(self._loss(logits, sample.target, device))
            score.add(logits, sample)
        return float(np.mean(losses)), score.result()
