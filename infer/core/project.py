"""The project folder layout and pairing of images with their ground truth.

```
PROJECT/train/image/  PROJECT/train/groundtruth/   same file names (suffixes may differ)
PROJECT/test/image/   PROJECT/test/groundtruth/    ground truth optional at test time
```

Instance projects may also use InstantDL's (and the Kaggle DSB2018's) layout, one folder per sample:
``PROJECT/<split>/<id>/image/<id>.png`` with one binary mask per object in ``<id>/mask/*.png``; the
mask folder is read as a label image (:func:`idl.infer.io.images.read_mask_folder`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from idl.infer.core.errors import DataError

log = logging.getLogger("idl")

SPLITS = ("train", "test")  # PROJECT/train, PROJECT/test
IMAGE_DIR = "image"
GT_DIR = "groundtruth"
MODEL_DIR = "model"
RESULTS_DIR = "results"
EVALUATION_DIR = "evaluation"
UNCERTAINTY_DIR = "uncertainty"  # inside a predictions folder
PROBABILITY_DIR = "probabilities"  # inside a predictions folder
OBJECTS_DIR = "objects"  # instance segmentation: one <name>.csv per image, inside a predictions folder
SAMPLE_IMAGE_DIRS = ("image", "images")  # InstantDL's and DSB2018's per-sample layout
SAMPLE_MASK_DIRS = ("mask", "masks")


# What idl reads as an image, by name ending (lower case): the image formats registered in
# idl.infer.io.formats fill these (core imports nothing from io; importing idl.infer imports the
# registry first, so they are filled before any function here runs)
IMAGE_SUFFIXES: tuple[str, ...] = ()  # files, e.g. ".tif"
FOLDER_SUFFIXES: tuple[str, ...] = ()  # folders read as one image, e.g. ".ome.zarr", ".zarr"


def set_image_suffixes(files: tuple[str, ...], folders: tuple[str, ...]) -> None:
    """Called by the image format registry whenever a format is registered or removed."""
    global IMAGE_SUFFIXES, FOLDER_SUFFIXES
    IMAGE_SUFFIXES, FOLDER_SUFFIXES = tuple(files), tuple(folders)


def matched_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    """The longest of ``suffixes`` that ``path``'s name ends with (case-insensitive), or ``None``;
    a name that is nothing but the suffix (``.tif``) has none."""
    name = path.name.lower()
    found = [s for s in suffixes if name.endswith(s) and len(name) > len(s)]
    return max(found, key=len) if found else None


def image_stem(path: Path) -> str:
    """The image's name without its format's suffix (``cells.ome.zarr`` -> ``cells``, ``a.tif`` ->
    ``a``); ``path.stem`` for names no format claims."""
    suffix = matched_suffix(path, FOLDER_SUFFIXES + IMAGE_SUFFIXES)
    return path.name[: -len(suffix)] if suffix else path.stem


def is_image_folder(path: Path) -> bool:
    """True for a folder stored by a folder image format (an OME-Zarr image, ``*.zarr``)."""
    return path.is_dir() and matched_suffix(path, FOLDER_SUFFIXES) is not None


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix idl can read, or an image folder (OME-Zarr, ``*.zarr``)."""
    if path.name.startswith("."):
        return False
    if path.is_dir():
        return is_image_folder(path)
    return path.is_file() and matched_suffix(path, IMAGE_SUFFIXES) is not None


@dataclass(frozen=True)
class Pair:
    """An image and its ground truth (``None`` when there is none, e.g. unlabeled test data)."""

    name: str
    image: Path
    groundtruth: Path | None


def files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder keyed by name without their format's suffix (:func:`image_stem`:
    ``cells.ome.zarr`` and ``cells.tif`` are both ``cells``); duplicate names are an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found.")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image_file(path):
            continue
        stem = image_stem(path)
        if stem in found:
            raise DataError(
                f"{path} and {found[stem]} have the same name with different suffixes; keep only one of them."
            )
        found[stem] = path
    return found


_WARNED_ORPHANS: set[Path] = set()  # ground-truth folders whose files without an image were reported


def pair_files(split_dir: Path, require_groundtruth: bool = True) -> list[Pair]:
    """Pair ``split_dir/image/*`` with ``split_dir/groundtruth/*`` by file name.

    Raises :class:`DataError` for a missing or empty image folder and an image without ground truth
    (the message names the file and says what to do); ground truth without an image is skipped with a
    warning, once per folder (InstantDL's regression example has two such files).
    """
    image_dir, gt_dir = split_dir / IMAGE_DIR, split_dir / GT_DIR
    if not image_dir.is_dir() and sample_folders(split_dir):
        return _pair_sample_folders(split_dir, require_groundtruth)
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
        if orphans and gt_dir.resolve() not in _WARNED_ORPHANS:
            _WARNED_ORPHANS.add(gt_dir.resolve())  # the plan, the data and the test read a split again
            log.warning(
                "%s has no image (expected %s): %d ground-truth file(s) without an image are skipped",
                gts[orphans[0]],
                image_dir / gts[orphans[0]].name,
                len(orphans),
            )
    return [Pair(stem, path, gts.get(stem)) for stem, path in images.items()]


def _first_child(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def sample_folders(split_dir: Path) -> list[Path]:
    """The per-sample folders of InstantDL's instance layout (``<id>/image``, ``<id>/mask``) in
    ``split_dir``, or an empty list when the split uses the ``image``/``groundtruth`` layout."""
    if not split_dir.is_dir() or (split_dir / IMAGE_DIR).is_dir():
        return []
    return sorted(
        d
        for d in split_dir.iterdir()
        if d.is_dir() and (_first_child(d, SAMPLE_IMAGE_DIRS) or _first_child(d, SAMPLE_MASK_DIRS))
    )


def _pair_sample_folders(split_dir: Path, require_groundtruth: bool) -> list[Pair]:
    """Pairs of InstantDL's per-sample layout: ``<id>/image/<one image>`` with the ``<id>/mask`` folder
    as its ground truth. Samples without an image are skipped with one warning (InstantDL's own example
    has one); samples without masks are an error when ground truth is required."""
    pairs, imageless = [], []
    for folder in sample_folders(split_dir):
        image_dir = _first_child(folder, SAMPLE_IMAGE_DIRS)
        images = sorted(p for p in image_dir.iterdir() if is_image_file(p)) if image_dir else []
        masks = _first_child(folder, SAMPLE_MASK_DIRS)
        if not images:
            imageless.append(folder.name)
            continue
        if len(images) > 1:
            raise DataError(
                f"{image_dir}: holds {len(images)} images; a sample folder holds one image (its masks go "
                "to the mask folder)."
            )
        if masks is None and require_groundtruth:
            raise DataError(
                f"{folder}: has no mask folder. Put one binary mask per object into {folder / 'mask'}, or "
                "move the sample out of the split."
            )
        pairs.append(Pair(folder.name, images[0], masks))
    if imageless:
        log.warning(
            "%s: %d sample folder(s) have masks but no image and are skipped (e.g. %s)",
            split_dir,
            len(imageless),
            imageless[0],
        )
    if not pairs:
        raise DataError(f"{split_dir}: no sample folder holds an image.")
    return pairs
