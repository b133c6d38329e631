"""Instance segmentation on the inference side: label images (0 background, 1..N objects) and a table
of the objects per image, evaluated by average precision over IoU thresholds (AP50:95).

Two kinds of network serve the task: the U-Net (``instance``: background, interior and boundary
probabilities, turned into labels by a watershed) and Mask R-CNN (``detection``: its graph outputs
labels and each object's score)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.core.errors import NothingToShow
from idl.infer.core.grid import AxisSize
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import SPACE
from idl.infer.evaluate.agreement import LABEL_LIMIT, Agreement, label_disagreement
from idl.infer.runtime.iospec import DETECTOR_MIN_SIZE, IOSpec, image_io
from idl.infer.tasks.base import (
    CELLPOSE_CITATION,
    MASK_RCNN_CITATION,
    STARDIST_CITATION,
    UNET_CITATION,
    PackageText,
    Summary,
    extras,
)
from idl.infer.tasks.pixels import PixelTask, Scoring
from idl.infer.tasks.registry import register
from idl.infer.tiling.engine import Layout
from idl.infer.tiling.mergers import MadeObjects, Merger, Objects
from idl.infer.tiling.predict import Outputs, Prediction, PredictOptions

if TYPE_CHECKING:
    from idl.infer.runtime.model import LoadedModel


class Labels(Outputs):
    """Label images from the U-Net's background, interior and boundary probabilities (a watershed of
    the whole map), with a table of the objects."""

    whole_image = "instance labels are made from the whole probability map"
    objects = True
    labels_by_blocks = True  # the watershed's labels depend on each foreground component alone

    def __init__(self, thresholds: dict[str, float] | None = None) -> None:
        # the watershed's thresholds fitted at training (ModelInfo.postprocessing); none: the defaults
        self.thresholds = dict(thresholds or {})

    def finish(
        self, output: np.ndarray, uncertainty: np.ndarray | None, options: PredictOptions
    ) -> Prediction:
        from idl.infer.post.instance_labels import labels_from_probabilities

        # each pixel's foreground probability: the objects table's score is its mean over the object
        # (the confidence the evaluation's reliability diagram of objects reads)
        foreground = (1.0 - output[0]).astype(np.float32)
        labels = labels_from_probabilities(output, **self.thresholds)
        return Prediction(output, labels, uncertainty, None, foreground)

    def block_labels(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        from idl.infer.post.instance_labels import (
            FOREGROUND_THRESHOLD,
            foreground_of,
            labels_from_probabilities,
        )

        threshold = self.thresholds.get("foreground_threshold", FOREGROUND_THRESHOLD)
        labels = labels_from_probabilities(values, **self.thresholds)
        return labels, foreground_of(values, threshold), (1.0 - values[0]).astype(np.float32)

    def collect(self, merged: Any, options: PredictOptions) -> Prediction:
        """What an :class:`~idl.infer.tiling.mergers.Objects` merger's labels and scores become."""
        labels, scores = merged
        return Prediction(scores[np.newaxis], labels, None, None, scores)


class Detections(Labels):
    """Mask R-CNN's labels, tiled so that every object is kept once: the tile loop with the
    :class:`idl.infer.tiling.mergers.Objects` merger."""

    # its 512-px tiles: a detector's memory does not grow with the tile as the graph's probe says, and sized
    # by memory its end-to-end test's prediction ran for over 10 minutes
    sized_by_memory = False

    labels_by_blocks = False  # a detector's objects are not components of a foreground

    def merger(self, model: LoadedModel, where: Layout, options: PredictOptions) -> Merger | None:
        if options.mc_samples:
            model.session(mc=True)  # raises: Mask R-CNN has no Monte Carlo graph
        return Objects(where.shape)


class MadeLabels(Labels):
    """Label images made from a network's outputs in numpy by ``make`` (output ``(C, ...)`` ->
    labels and scores): the star-convex polygon network's probability and distances
    (:mod:`idl.infer.post.stardist`), or the flow-field network's probability and flows
    (:mod:`idl.infer.post.flows`). Tile by tile, each object kept by the tile that owns its centre
    (:class:`~idl.infer.tiling.mergers.MadeObjects`); with Monte Carlo samples from the whole stitched
    map of their means, as the U-Net's labels are."""

    whole_image = "instance labels are made from the whole map of the network's outputs"
    labels_by_blocks = False  # made from polygons or flows, not from components of a foreground

    def __init__(self, make: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]) -> None:
        self.make = make

    def merger(self, model: LoadedModel, where: Layout, options: PredictOptions) -> Merger | None:
        return None if options.mc_samples else MadeObjects(where.shape, make=self.make)

    def finish(
        self, output: np.ndarray, uncertainty: np.ndarray | None, options: PredictOptions
    ) -> Prediction:
        from idl.infer.post.instance_labels import label_dtype

        labels, scores = self.make(output)
        return Prediction(
            output[:1], labels.astype(label_dtype(int(labels.max()))), uncertainty, None, scores
        )


class Instance(PixelTask):
    kind = "instance"
    task = "instance"

    demo = "touching nuclei and their label images"

    def outputs(self, info: ModelInfo) -> Outputs:
        return Labels(info.postprocessing)

    def agreement(self, info: ModelInfo) -> Agreement | None:
        return Agreement("fraction of pixels in another object", LABEL_LIMIT, label_disagreement)

    def package_text(self, info: ModelInfo) -> PackageText:
        """The U-Net's class probabilities and the watershed that makes labels of them, with the
        thresholds it uses (fitted on the validation images, or the defaults)."""
        from idl.infer.post.instance_labels import FOREGROUND_THRESHOLD, SEED_DYNAMIC, SEED_THRESHOLD

        foreground = info.postprocessing.get("foreground_threshold", FOREGROUND_THRESHOLD)
        seed = info.postprocessing.get("seed_threshold", SEED_THRESHOLD)
        dynamic = info.postprocessing.get("seed_dynamic", SEED_DYNAMIC)
        chosen = "chosen on the validation images" if info.postprocessing else "the defaults"
        if dynamic > 0:
            seeds = (
                "seeds are the maxima of the interior probability (smoothed by a 1-px Gaussian) above "
                f"{seed} that rise at least {dynamic} over every path to a higher one (h-maxima, within each "
                "foreground component), grown by a watershed of the smoothed interior probability"
            )
        else:
            seeds = (
                f"seeds are the connected pixels of interior probability > {seed} (at least 4 px), grown by "
                "a watershed of the interior probability"
            )
        use = (
            "per-pixel probabilities of background, object interior and object boundary (softmax). "
            f"Labels: {seeds} over the pixels of 1 - background probability > {foreground} "
            f"(idl.infer.post.instance_labels, scikit-image and SciPy; the settings are {chosen})."
        )
        return replace(
            super().package_text(info),
            use=use,
            postprocessing={
                "method": "seeded watershed",
                "seed_threshold": seed,
                "seed_dynamic": dynamic,
                "foreground_threshold": foreground,
                "min_size": 4,
                "function": "idl.infer.post.instance_labels.labels_from_probabilities",
            },
        )

    def describe(self, info: ModelInfo) -> list[str]:
        lines = super().describe(info)
        if info.postprocessing:
            fitted = ", ".join(f"{k} {v:g}" for k, v in sorted(info.postprocessing.items()))
            lines.append(f"  labels: {fitted} (fitted on the validation images)")
        dynamic = info.postprocessing.get("seed_dynamic")
        if dynamic is not None:  # the U-Net's watershed since its seeds' kind is fitted
            lines.append(
                f"  seeds: the interior probability's maxima that rise at least {dynamic:g} (h-maxima)"
                if dynamic > 0
                else "  seeds: the connected interiors"
            )
        return lines

    def write_demo(self, project: Path, n_train: int, n_test: int, seed: int, size: int) -> str:
        from idl.infer.core.project import pair_files
        from idl.infer.datasets.synthetic import NucleiSpec, write_instance_project
        from idl.infer.evaluate.baseline import otsu_instance_scores

        write_instance_project(project, n_train, n_test, seed, NucleiSpec(size=size))
        scores = otsu_instance_scores(pair_files(project / "test"))
        return (
            f"Otsu threshold + connected components of the raw test images score ap50 {scores['ap50']:.4f}, "
            f"ap50_95 {scores['ap50_95']:.4f}"
        )

    def headline(self, summary: Summary) -> str:
        return (
            f"ap50 {summary['ap50']:.4f}, ap50_95 {summary['ap50_95']:.4f} (median per image "
            f"{summary['ap50_95_median']:.4f}), Jaccard {summary['jaccard']:.4f}"
        ) + extras(summary)

    def score(self, s: Scoring) -> Summary:
        from idl.infer.evaluate.instance import evaluate_instance

        return evaluate_instance(
            s.items,
            s.out_dir,
            axes=s.axes,
            progress=s.progress,
            dims=s.dims,
            on_nonfinite=s.on_nonfinite,
            notes=s.notes,
        )


class Detection(Instance):
    kind = "detection"
    demo = ""  # the demo of the task is the instance one

    def outputs(self, info: ModelInfo) -> Outputs:
        return Detections()

    def agreement(self, info: ModelInfo) -> Agreement | None:
        return None  # no int8 graph: no measure of detections here, and its loops and sorting gain nothing

    def out_channels(self, info: ModelInfo) -> int:
        return 2  # labels and the score of the object that owns the pixel

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """One image of any size in (at least :data:`DETECTOR_MIN_SIZE`), labels and scores out."""
        sizes = {a: AxisSize(DETECTOR_MIN_SIZE, 1) for a in SPACE[-info.dims :]}
        return replace(image_io(info, 2, (), "probability"), sizes=sizes, max_batch=1)

    def mc_missing(self, info: ModelInfo, mc: Path) -> str:
        return "Mask R-CNN has no dropout; train with --model unet for Monte Carlo uncertainty"

    def package_text(self, info: ModelInfo) -> PackageText:
        meaning = (
            "labels (0 background, 1..N objects) and the detection score of the object owning each pixel"
        )
        return replace(
            super().package_text(info),
            network="Mask R-CNN",
            tags=("maskrcnn", "instance-segmentation", "segmentation"),
            tensor="labels",
            output=meaning,
            channels=("labels", "score"),
            value_range=(0.0, None),
            use=f"{meaning}.",
            postprocessing=None,  # the graph makes the labels
            mismatch_ppm=1000,  # a mask probability within rounding of 0.5 may flip a pixel across formats
            citations=(MASK_RCNN_CITATION,),
        )

    def package_test(
        self, sample: np.ndarray, info: ModelInfo, onnx_path: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        image, output = super().package_test(sample, info, onnx_path)
        if not np.any(output[0, 0]):
            raise NothingToShow(
                f"{info.name}: the model finds no object in the package's test image, and bioimage.io "
                "needs a test output with objects. Train longer (or on more images), then write the "
                "package with idl-export."
            )
        return image, output

    def package_cover(self, image: np.ndarray, output: np.ndarray, info: ModelInfo, path: Path) -> Path:
        from idl.infer.evaluate.covers import labels_cover

        return labels_cover(image, output[0], path)

    def describe(self, info: ModelInfo) -> list[str]:
        return [
            f"task: instance (Mask R-CNN), {info.dims}D, trained on axes {info.axes}",
            "  output channels: labels (0 background, 1..N objects) and the score of the owning object; "
            "writes label images and objects/<name>.csv with each object's score",
        ]


class Stars(Instance):
    """Instance segmentation by star-convex polygons (StarDist): the network's graph outputs the object
    probability and ``num_classes - 1`` distances along rays; labels are made in numpy."""

    kind = "stardist"
    demo = ""

    def outputs(self, info: ModelInfo) -> Outputs:
        from idl.infer.post.stardist import objects_from_output

        return MadeLabels(objects_from_output)

    def out_channels(self, info: ModelInfo) -> int:
        return info.num_classes  # the object probability and one distance per ray

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """Image in; probability (a sigmoid in the graph) and distances out; Monte Carlo: the standard
        deviation over samples (mostly of the distances, in pixels)."""
        return image_io(info, info.num_classes, (), "std")

    def package_text(self, info: ModelInfo) -> PackageText:
        from idl.infer.post.stardist import NMS_THRESHOLD, PROB_THRESHOLD

        rays = info.num_classes - 1
        meaning = f"object probability and distances (px) to the object's edge along {rays} rays (StarDist)"
        use = (
            f"{meaning}: ray k points at angle 2 pi k / {rays}, counter-clockwise from +x (rows grow "
            "downwards). Labels: every pixel with probability >= 0.5 proposes the polygon of its "
            "distances; from the most probable, a proposal is kept unless its centre pixel lies in a "
            "kept polygon or it overlaps one by IoU > 0.4 (idl.infer.post.stardist, numpy and "
            "scikit-image)."
        )
        return replace(
            super().package_text(info),
            network="U-Net (StarDist)",
            tags=("stardist", "unet", "instance-segmentation", "segmentation"),
            citations=(STARDIST_CITATION, UNET_CITATION),
            tensor="stars",
            output=meaning,
            channels=("probability", *(f"distance{k}" for k in range(rays))),
            value_range=(None, None),
            use=use,
            postprocessing={
                "method": "star-convex polygons (StarDist)",
                "rays": rays,
                "probability_threshold": PROB_THRESHOLD,
                "nms_iou_threshold": NMS_THRESHOLD,
                "function": "idl.infer.post.stardist.labels_from_stars",
            },
        )

    def describe(self, info: ModelInfo) -> list[str]:
        return [
            f"task: instance (star-convex polygons, {info.num_classes - 1} rays), {info.dims}D, trained on "
            f"axes {info.axes}",
            "  output channels: object probability and distances along rays; writes label images and "
            "objects/<name>.csv",
        ]


class Flows(Instance):
    """Instance segmentation by flow fields (cellpose): the network's graph outputs the foreground
    probability and each pixel's unit vector towards its object's centre; labels are made in numpy."""

    kind = "flows"
    demo = ""

    def outputs(self, info: ModelInfo) -> Outputs:
        from idl.infer.post.flows import objects_from_output

        return MadeLabels(partial(objects_from_output, **info.postprocessing))

    def out_channels(self, info: ModelInfo) -> int:
        return 1 + info.dims  # the foreground probability and one flow component per axis

    def io_spec(self, info: ModelInfo) -> IOSpec:
        """Image in; probability (a sigmoid in the graph) and flows out; Monte Carlo: the standard
        deviation over samples."""
        return image_io(info, 1 + info.dims, (), "std")

    def package_text(self, info: ModelInfo) -> PackageText:
        from idl.infer.post.flows import FLOW_ERROR, MIN_SIZE, PROB_THRESHOLD, STEPS

        prob_threshold = info.postprocessing.get("prob_threshold", PROB_THRESHOLD)
        flow_error = info.postprocessing.get("flow_error", FLOW_ERROR)
        chosen = "chosen on the validation images" if info.postprocessing else "cellpose's defaults"
        axes = "(dz, dy, dx)" if info.dims == 3 else "(dy, dx)"
        meaning = f"foreground probability and the unit vector {axes} towards the object's centre (cellpose)"
        use = (
            f"{meaning}: rows grow downwards. Labels: every pixel with probability >= {prob_threshold} "
            f"follows the flows for {STEPS} steps; pixels whose paths end at one sink form an object; "
            f"objects whose flows differ from those of their own shape by a mean squared error above "
            f"{flow_error}, or smaller than {MIN_SIZE} px, are dropped (idl.infer.post.flows, numpy and "
            f"scipy; the two thresholds are {chosen})."
        )
        return replace(
            super().package_text(info),
            network="U-Net (flow fields, cellpose)",
            tags=("cellpose", "flows", "unet", "instance-segmentation", "segmentation"),
            citations=(CELLPOSE_CITATION, UNET_CITATION),
            tensor="flows",
            output=meaning,
            channels=("probability", *(f"flow_{a}" for a in "zyx"[-info.dims :])),
            value_range=(None, None),
            use=use,
            postprocessing={
                "method": "flow fields (cellpose)",
                "probability_threshold": prob_threshold,
                "steps": STEPS,
                "flow_error_threshold": flow_error,
                "min_size": MIN_SIZE,
                "function": "idl.infer.post.flows.labels_from_flows",
            },
        )

    def describe(self, info: ModelInfo) -> list[str]:
        components = ", ".join("d" + a for a in "zyx"[-info.dims :])
        return [
            f"task: instance (flow fields), {info.dims}D, trained on axes {info.axes}",
            f"  output channels: foreground probability and flows ({components}); writes label images "
            "and objects/<name>.csv",
            "  labels: "
            + (
                ", ".join(f"{k} {v:g}" for k, v in sorted(info.postprocessing.items()))
                + " (fitted on the validation images)"
                if info.postprocessing
                else "the default thresholds"
            ),
        ]


register(Instance())
register(Detection())
register(Stars())
register(Flows())
