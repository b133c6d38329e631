"""What the pixel tasks share: one output image per input, written by the tiled runner, evaluated
image by image against ground-truth images of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idl.infer.core.errors import DataError
from idl.infer.core.project import UNCERTAINTY_DIR, pair_files
from idl.infer.io.omezarr import image_stem
from idl.infer.tasks.base import Folders, Request, Summary, Task
from idl.infer.tiling.predict import predict_files

if TYPE_CHECKING:  # evaluation modules (pandas, matplotlib) load only when something is evaluated
    from idl.infer.evaluate.semantic import EvalItem


@dataclass(frozen=True)
class Scoring:
    """Prediction and ground-truth files matched by image name, and how to evaluate them."""

    items: list[EvalItem]
    out_dir: Path
    num_classes: int | None = None
    axes: str | None = None
    progress: bool = True
    dims: int = 2


class PixelTask(Task):
    """A task whose network outputs an image (segmentation, regression, a package's output)."""

    def score(self, scoring: Scoring) -> Summary:
        """The task's evaluation of matched prediction and ground-truth files."""
        raise NotImplementedError

    def _items(self, request: Request, predictions: Path) -> list[EvalItem]:
        from idl.infer.evaluate.semantic import items_for_predictions

        gt = request.groundtruth
        assert gt is not None
        uncertainty = request.options.mc_samples > 0
        return items_for_predictions(predictions, request.files, gt, uncertainty, request.options.suffix)

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
        )
        return request.out_dir

    def evaluate(self, request: Request, predictions: Path) -> Summary:
        info = request.model.info
        assert info is not None
        items = self._items(request, predictions)
        progress = request.options.progress
        return self.score(
            Scoring(items, request.evaluation, info.num_classes, request.axes, progress, info.dims)
        )

    def evaluate_folder(self, folders: Folders) -> Summary:
        from idl.infer.evaluate.semantic import match_items

        f = folders
        if not f.groundtruth.is_dir():
            raise DataError(f"{f.groundtruth} is a file; give the ground-truth folder.")
        items = match_items(f.predictions, f.groundtruth, f.images, f.predictions / UNCERTAINTY_DIR)
        return self.score(Scoring(items, f.out_dir, f.num_classes, f.axes, f.progress, f.dims))
