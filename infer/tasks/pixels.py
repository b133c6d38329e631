"""What the pixel tasks share: one output image per input, written by the tiled runner, evaluated
image by image against ground-truth images of the same name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from idl.infer.core.errors import DataError
from idl.infer.core.grid import AxisSize, read_window, smallest_tile
from idl.infer.core.model_info import ModelInfo
from idl.infer.core.processing import SPACE
from idl.infer.core.project import UNCERTAINTY_DIR, pair_files
from idl.infer.io.omezarr import image_stem
from idl.infer.runtime.session import OnnxRunner
from idl.infer.tasks.base import (
    SEGNET_CITATION,
    UNET_CITATION,
    Folders,
    PackageText,
    Request,
    Summary,
    Task,
)
from idl.infer.tiling.files import predict_files
from idl.infer.tiling.predict import predict_probabilities

if TYPE_CHECKING:  # evaluation modules (pandas, matplotlib) load only when something is evaluated
    from idl.infer.evaluate.semantic import EvalItem


TEST_TENSOR_MAX = 256  # px per side of a package's test tensor (keeps it and its validation small)


def package_crop(sample: np.ndarray, rules: list[AxisSize]) -> np.ndarray:
    """A channels-last crop of ``sample`` with an accepted size: at
    most 256 px per side in 2D, the minimum size in 3D (volumes are costly to validate)."""
    caps = [TEST_TENSOR_MAX if len(rules) == 2 else r.minimum for r in rules]
    sides = [
        r.at_most(min(max(n, r.minimum), cap)) for r, n, cap in zip(rules, sample.shape, caps, strict=False)
    ]
    return np.ascontiguousarray(read_window(sample, tuple(slice(0, s) for s in sides)))


@dataclass(frozen=True)
class Scoring:
    """Prediction and ground-truth files matched by image name, and how to evaluate them:
    ``threshold`` for predictions that hold probabilities, ``on_nonfinite`` for NaN or inf in them
    (:mod:`idl.infer.evaluate.checks`), and ``notes`` (counts for the summary, e.g. the ground truth
    without a prediction)."""

    items: list[EvalItem]
    out_dir: Path
    num_classes: int | None = None
    axes: str | None = None
    progress: bool = True
    dims: int = 2
    threshold: str | float = "otsu"
    on_nonfinite: str = "replace"
    notes: Mapping[str, int] = field(default_factory=dict)


class PixelTask(Task):
    """A task whose network outputs an image (segmentation, regression, a package's output)."""

    def score(self, scoring: Scoring) -> Summary:
        """The task's evaluation of matched prediction and ground-truth files."""
        raise NotImplementedError

    def _items(self, request: Request, predictions: Path) -> list[EvalItem]:
        from idl.infer.evaluate.semantic import items_for_predictions

        gt = request.groundtruth
        assert gt is not None
        uncertainty = request.options.sampled  # Monte Carlo samples or test-time augmentation
        return items_for_predictions(predictions, request.files, gt, uncertainty, request.options.suffix)

    def package_text(self, info: ModelInfo) -> PackageText:
        """A segmentation network's (U-Net or SegNet): class probabilities per pixel."""
        k = self.out_channels(info)
        names = info.class_names or (("foreground",) if k == 1 else tuple(f"class{i}" for i in range(k)))
        training = info.training
        segnet = training.get("architecture") == "segnet"
        return PackageText(
            title=f"{self.task} segmentation",
            network=f"{info.dims}D {'SegNet' if segnet else 'U-Net'}",
            tags=("segnet" if segnet else "unet", f"{self.task}-segmentation", "segmentation"),
            tensor="probabilities",
            output="per-pixel class probabilities",
            channels=tuple(names),
            value_range=(0.0, 1.0),
            use="per-pixel class probabilities (sigmoid for one channel, softmax otherwise).",
            targets=f"- classes: {info.num_classes}"
            + (f" ({', '.join(info.class_names)})" if info.class_names else ""),
            inputs=f"- training patches: {training.get('patch', '?')} px, loss: {training.get('loss', '?')}",
            citations=(SEGNET_CITATION if segnet else UNET_CITATION,),
        )

    def package_sizes(self, info: ModelInfo) -> list[AxisSize]:
        """The smallest tile that holds the halo, growing by the network's size multiple."""
        sizes = self.io_spec(info).sizes
        return [
            AxisSize(smallest_tile(info.halo_of(a), sizes[a]), sizes[a].step) for a in SPACE[-info.dims :]
        ]

    def package_test(
        self, sample: np.ndarray, info: ModelInfo, onnx_path: Path
    ) -> tuple[np.ndarray, np.ndarray]:
        image = package_crop(sample, self.package_sizes(info))
        output, _ = predict_probabilities(
            OnnxRunner(onnx_path, "cpu"), image, self.io_spec(info), max(image.shape[:-1]), 0
        )
        return image, output[np.newaxis].astype(np.float32)

    def package_cover(self, image: np.ndarray, output: np.ndarray, info: ModelInfo, path: Path) -> Path:
        from idl.infer.evaluate.covers import probability_cover

        return probability_cover(image, output, path)

    def split(self, folder: Path) -> tuple[list[Path], dict[str, Any] | None]:
        pairs = pair_files(folder, require_groundtruth=False)
        files = [p.image for p in pairs]
        if any(p.groundtruth is None for p in pairs):
            return files, None
        return files, {image_stem(p.image): p.groundtruth for p in pairs}

    def check(self, request: Request) -> None:
        gt = request.groundtruth
        if isinstance(gt, Path) and not gt.is_dir():
            raise DataError(f"{gt} is a file; give the ground-truth folder.")
        if gt is not None:
            self._items(request, request.out_dir)  # raises for images without ground truth

    def predict(self, request: Request) -> Path:
        predict_files(
            request.model,
            list(request.files),
            request.out_dir,
            request.options,
            request.axes,
            request.save_probabilities,
            request.blocks,
        )
        return request.out_dir

    def evaluate(self, request: Request, predictions: Path) -> Summary:
        info = request.model.info
        assert info is not None
        items = self._items(request, predictions)
        o = request.options
        return self.score(
            Scoring(
                items,
                request.evaluation,
                info.num_classes,
                request.axes,
                o.progress,
                info.dims,
                o.threshold,
                o.on_nonfinite,
            )
        )

    def evaluate_folder(self, folders: Folders) -> Summary:
        """Every prediction with its ground truth (one without is an error); ground truth without a
        prediction is named in a warning and counted in the summary, or refused with ``strict``."""
        from idl.infer.core.project import files_by_stem
        from idl.infer.evaluate.checks import MISSING, missing_predictions
        from idl.infer.evaluate.semantic import match_items

        f = folders
        if not f.groundtruth.is_dir():
            raise DataError(f"{f.groundtruth} is a file; give the ground-truth folder.")
        items = match_items(f.predictions, f.groundtruth, f.images, f.predictions / UNCERTAINTY_DIR)
        missing = missing_predictions(
            [i.name for i in items], files_by_stem(f.groundtruth), str(f.groundtruth), f.strict
        )
        return self.score(
            Scoring(
                items,
                f.out_dir,
                f.num_classes,
                f.axes,
                f.progress,
                f.dims,
                f.threshold,
                f.on_nonfinite,
                {MISSING: len(missing)} if missing else {},
            )
        )
