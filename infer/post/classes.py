"""Image-level class labels of a classification project: ``groundtruth.csv`` with ``filename,groundtruth``.

InstantDL keeps the CSV in ``PROJECT/<split>/groundtruth/``; ``PROJECT/<split>/groundtruth.csv`` works
too. Labels may be integers or names. Classes are the sorted distinct labels (numerically when all are
integers), and a model stores their names, so outputs speak the user's labels. Every problem is an
error that names the file and the row: missing files or rows, unknown columns, duplicate rows, empty
labels, and file names that point outside the image folder.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from idl.infer.core.errors import DataError
from idl.infer.core.project import GT_DIR, IMAGE_DIR, IMAGE_SUFFIXES, files_by_stem
from idl.infer.io.omezarr import image_stem

log = logging.getLogger("idl")

CSV_NAME = "groundtruth.csv"
COLUMNS = ("filename", "groundtruth")


def find_label_csv(split_dir: Path) -> Path:
    """``split_dir/groundtruth/groundtruth.csv`` (InstantDL's place), ``split_dir/groundtruth.csv``, or
    the only CSV in ``split_dir/groundtruth``."""
    candidates = [split_dir / GT_DIR / CSV_NAME, split_dir / CSV_NAME]
    for path in candidates:
        if path.is_file():
            return path
    others = sorted((split_dir / GT_DIR).glob("*.csv")) if (split_dir / GT_DIR).is_dir() else []
    if len(others) == 1:
        return others[0]
    if others:
        raise DataError(
            f"{split_dir / GT_DIR}: holds {len(others)} CSV files ({', '.join(p.name for p in others)}); "
            f"name the one with the labels {CSV_NAME} (or pass it with --gt)."
        )
    raise DataError(
        f"{candidates[0]}: not found. Classification needs a CSV file with the columns "
        f"{','.join(COLUMNS)} (one row per image: its file name and its class)."
    )


def label_csv_for(path: Path) -> Path:
    """The labels a user points to with ``--gt``: the CSV itself, its ``groundtruth`` folder, or the
    split folder above it."""
    if path.is_file():
        return path
    return find_label_csv(path.parent if path.name == GT_DIR else path)


def read_labels(path: Path) -> dict[str, str]:
    """Image name (without suffix) -> class, from ``--gt`` (see :func:`label_csv_for`)."""
    return {k: canonical(v) for k, v in read_label_csv(label_csv_for(path)).items()}


def _leaves_folder(name: str) -> bool:
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts or len(pure.parts) > 1:
            return True
    return False


def read_label_csv(path: Path) -> dict[str, str]:
    """Image stem -> label text, checked (columns, empty cells, duplicates, names leaving the folder).

    A leading unnamed index column (as pandas writes one) is ignored; file names may carry their
    suffix or not.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: not found.") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV text file ({exc}).") from exc
    if not rows:
        raise DataError(f"{path}: the file is empty; it needs a header row {','.join(COLUMNS)}.")
    header = [h.strip().lower() for h in rows[0]]
    skip_index = bool(header) and header[0] in ("", "unnamed: 0", "index")
    columns = header[1:] if skip_index else header
    missing = [c for c in COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in COLUMNS]
    if missing or unknown:
        found = ", ".join(repr(c) for c in rows[0])
        raise DataError(
            f"{path}: the header must be {','.join(COLUMNS)}; found {found}"
            + (f" (unknown column(s): {', '.join(unknown)})" if unknown else "")
            + ". Rename or remove the columns so the file has exactly these two."
        )
    at = {c: columns.index(c) + int(skip_index) for c in COLUMNS}
    labels: dict[str, str] = {}
    first_row: dict[str, int] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = [row[i].strip() if i < len(row) else "" for i in (at["filename"], at["groundtruth"])]
        name, label = cells
        if not name or not label:
            raise DataError(f"{path}, row {number}: {'the file name' if not name else 'the class'} is empty.")
        if _leaves_folder(name):
            raise DataError(
                f"{path}, row {number}: '{name}' is not a plain file name. Give names of files in the image "
                "folder (no folders, no '..', no absolute paths)."
            )
        stem = label_key(name)
        if stem in labels:
            raise DataError(
                f"{path}, rows {first_row[stem]} and {number}: '{name}' is listed twice; "
                "keep one row per image."
            )
        labels[stem], first_row[stem] = label, number
    if not labels:
        raise DataError(f"{path}: no rows below the header; add one row per image.")
    return labels


def class_names_of(labels: Sequence[str]) -> tuple[str, ...]:
    """The sorted distinct labels: numerically when all are integers (``"2"`` before ``"10"``)."""
    distinct = set(labels)
    try:
        return tuple(sorted(distinct, key=lambda v: (int(v), v)))
    except ValueError:
        return tuple(sorted(distinct))


def canonical(label: str) -> str:
    """Integers written differently (``"01"``, ``"1.0"``) are the same class; anything else is kept
    exactly as written."""
    match = re.fullmatch(r"([+-]?\d+)(\.0+)?", label)
    return str(int(match.group(1))) if match else label


def label_key(name: str) -> str:
    """How a CSV row's file name is matched to images: without its suffix when that is an image
    suffix (``a.tif`` and ``a`` both name ``a.tif``), else as written (``sample.01``)."""
    lower = name.lower()
    if lower.endswith((".zarr", *IMAGE_SUFFIXES)):
        return image_stem(Path(name))
    return name


@dataclass(frozen=True)
class LabelledImage:
    """An image file and its class label (``None`` when unknown)."""

    name: str
    image: Path
    label: str | None


def labelled_images(split_dir: Path, require_labels: bool = True) -> list[LabelledImage]:
    """Every image of ``split_dir/image`` with its label from the split's CSV; raises for images
    without a row and rows without an image."""
    image_dir = split_dir / IMAGE_DIR
    images = images_by_name(image_dir)
    if not images:
        raise DataError(f"{image_dir}: the folder holds no images.")
    try:
        csv_path = find_label_csv(split_dir)
    except DataError:
        if require_labels:
            raise
        return [LabelledImage(stem, path, None) for stem, path in images.items()]
    labels = {stem: canonical(label) for stem, label in read_label_csv(csv_path).items()}
    return match_labels(images, labels, csv_path)


def images_by_name(folder: Path) -> dict[str, Path]:
    """Image files keyed as CSV rows name them: without the image suffix (``a.ome.zarr`` -> ``a``)."""
    return {image_stem(path): path for path in files_by_stem(folder).values()}


def match_labels(images: dict[str, Path], labels: dict[str, str], csv_path: Path) -> list[LabelledImage]:
    """Pair image files (by stem) with CSV labels. Every image needs a row; rows naming no image are
    skipped with one warning that counts them (InstantDL's example lists thousands of removed files)."""
    unlabelled = sorted(set(images) - set(labels))
    if unlabelled:
        raise DataError(
            f"{csv_path}: no row for {images[unlabelled[0]].name} ({len(unlabelled)} image(s) without one). "
            "Add a row 'file name,class' for each image, or move the image out of the folder."
        )
    orphans = sorted(set(labels) - set(images))
    if orphans:
        folder = next(iter(images.values())).parent
        log.warning(
            "%s: %d of %d row(s) name no image in %s (e.g. '%s') and are skipped; the %d image(s) there "
            "all have a row",
            csv_path,
            len(orphans),
            len(labels),
            folder,
            orphans[0],
            len(images),
        )
    return [LabelledImage(stem, path, labels[stem]) for stem, path in images.items()]


def class_indices(labels: Sequence[str], class_names: Sequence[str], source: str) -> list[int]:
    """Each label's index in ``class_names``; an unknown label is an error naming the known ones."""
    index = {name: i for i, name in enumerate(class_names)}
    unknown = sorted({label for label in labels if label not in index})
    if unknown:
        raise DataError(
            f"{source}: class(es) {', '.join(map(repr, unknown))} are not among the model's classes "
            f"({', '.join(class_names)})."
        )
    return [index[label] for label in labels]
