"""Instance segmentation on the inference side: label images (0 background, 1..N objects) and a table
of the objects per image, evaluated by average precision over IoU thresholds (AP50:95).

Two kinds of network serve the task: the U-Net (``instance``: background, interior and boundary
probabilities, turned into labels by a watershed) and Mask R-CNN (``detection``: its graph outputs
labels and each object's score)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import SPACE
from idl.infer.runtime.iospec import DETECTOR_MIN_SIZE, IOSpec, image_io
from idl.infer.tasks.base import Summary, extras
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register
from idl.infer.tiling.predict import Outputs, Prediction, PredictOptions

if TYPE_CHECKING:
    from idl.infer.runtime.model import LoadedModel


class Labels(Outputs):
    """Label images from the U-Net's background, interior and boundary probabilities (a watershed of
    the whole map), with a table of the objects."""

    whole_image = "instance labels are made from the whole probability map"
    objects = True

    def finish(
        self, output: np.ndarray, uncertainty: np.ndarray | None, options: PredictOptions
    ) -> Prediction:
        from idl.infer.post.instance_labels import labels_from_probabilities

        return Prediction(output, labels_from_probabilities(output), uncertainty, None)


class Detections(Labels):
    """Mask R-CNN's labels, tiled so that every object is kept once (:mod:`idl.infer.tiling.objects`)."""

    def predict(
        self, model: LoadedModel, image: Any, options: PredictOptions, tile: int, halos: tuple[int, ...]
    ) -> Prediction:
        from idl.infer.tiling.objects import predict_instance_tiles

        if options.mc_samples:
            model.session(mc=True)  # raises: Mask R-CNN has no Monte Carlo graph
        labels, scores = predict_instance_tiles(
            model.network(), image, model.io, tile, halos[0], options.progress
        )
        return Prediction(scores[np.newaxis], labels, None, None, scores)


class Instance(PixelTask):
    kind = "instance"
    task = "instance"

    def outputs(self, info: ModelInfo) -> Outputs:
        return Labels()

    def headline(self, summary: Summary) -> str:
        return (
            f"ap50 {summary['ap50']:.4f}, ap50_95 {summary['ap50_95']:.4f} (median per image "
            f"{summary['ap50_95_median']:.4f}), Jaccard {summary['jaccard']:.4f}"
        ) + extras(summary)

    def score(self, s: Scoring) -> Summary:
        from idl.infer.evaluate.instance import evaluate_instance

        return evaluate_instance(s.items, s.out_dir, axes=s.axes, progress=s.progress, dims=s.dims)


class Detection(Instance):
    kind = "detection"

    def outputs(self, info: ModelInfo) -> Outputs:
        return Detections()

    def out_channels(self, info: ModelInfo) -> int:
        return 2  # labels and the score of the object that owns the pixel

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """One image of any size in (at least :data:`DETECTOR_MIN_SIZE`), labels and scores out."""
        sizes = {a: AxisSize(DETECTOR_MIN_SIZE, 1) for a in SPACE[-info.dims :]}
        return replace(image_io(info, 2, (), "probability"), sizes=sizes, max_batch=1)

    def mc_missing(self, info: ModelInfo, mc: Path) -> str:
        return "Mask R-CNN has no dropout; train with --model unet for Monte Carlo uncertainty"

    def describe(self, info: ModelInfo) -> list[str]:
        return [
            f"task: instance (Mask R-CNN), {info.dims}D, trained on axes {info.axes}",
            "  output channels: labels (0 background, 1..N objects) and the score of the owning object; "
            "writes label images and objects/<name>.csv with each object's score",
        ]


register(Instance())
register(Detection())
