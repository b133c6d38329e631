"""The project folder layout and pairing of images with their ground truth.

```
PROJECT/train/image/  PROJECT/train/groundtruth/   same file names (suffixes may differ)
PROJECT/test/image/   PROJECT/test/groundtruth/    ground truth optional at test time
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from idl.infer.errors import DataError
from idl.infer.io import IMAGE_SUFFIXES, is_image_file

IMAGE_DIR = "image"
GT_DIR = "groundtruth"
MODEL_DIR = "model"
RESULTS_DIR = "results"
EVALUATION_DIR = "evaluation"
UNCERTAINTY_DIR = "uncertainty"  # inside a predictions folder
PROBABILITY_DIR = "probabilities"  # inside a predictions folder
OBJECTS_DIR = "objects"  # instance segmentation: one <name>.csv per image, inside a predictions folder


@dataclass(frozen=True)
class Pair:
    """An image and its ground truth (``None`` when there is none, e.g. unlabeled test data)."""

    name: str
    image: Path
    groundtruth: Path | None


def files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by name without suffix (duplicate names are an error)."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found.")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path):
            continue
        if path.stem in found:
            raise DataError(
                f"{path} and {found[path.stem]} have the same name with different suffixes; "
                "keep only one of them."
            )
        found[path.stem] = path
    return found


def pair_files(split_dir: Path, require_groundtruth: bool = True) -> list[Pair]:
    """Pair ``split_dir/image/*`` with ``split_dir/groundtruth/*`` by file name.

    Raises :class:`DataError` for a missing or empty image folder, an image without ground truth and
    ground truth without an image; each message names the file and says what to do.
    """
    image_dir, gt_dir = split_dir / IMAGE_DIR, split_dir / GT_DIR
    if not image_dir.is_dir():
        raise DataError(f"{image_dir}: folder not found. Put the images of this split there.")
    images = files_by_stem(image_dir)
    if not images:
        raise DataError(f"{image_dir}: the folder is empty. Add images ({', '.join(IMAGE_SUFFIXES)}) to it.")
    if not gt_dir.is_dir():
        if require_groundtruth:
            raise DataError(
                f"{gt_dir}: folder not found. Put one ground-truth file per image there, with the "
                "image's file name."
            )
        return [Pair(stem, path, None) for stem, path in images.items()]
    gts = files_by_stem(gt_dir)
    if require_groundtruth or gts:
        lonely = sorted(set(images) - set(gts))
        if lonely:
            raise DataError(
                f"{images[lonely[0]]} has no ground truth: expected {gt_dir / images[lonely[0]].name} "
                f"({len(lonely)} image(s) without one). Add the mask with the same file name, or move "
                "the image out of the folder."
            )
        orphans = sorted(set(gts) - set(images))
        if orphans:
            raise DataError(
                f"{gts[orphans[0]]} has no image: expected {image_dir / gts[orphans[0]].name} "
                f"({len(orphans)} ground-truth file(s) without one). Add the image or remove the file."
            )
    return [Pair(stem, path, gts.get(stem)) for stem, path in images.items()]
