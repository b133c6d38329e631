"""The Kaggle Data Science Bowl 2018 layout as an idl project: ``<id>/images/<id>.png`` with one mask
per object in ``<id>/masks/*.png``, written as ``PROJECT/<split>/image/<id>.png`` and
``PROJECT/<split>/groundtruth/<id>.tif`` (a label image)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from idl.infer.core.errors import DataError
from idl.infer.core.project import GT_DIR, IMAGE_DIR
from idl.infer.io.images import masks_to_labels, read_image, write_tiff

log = logging.getLogger("idl")


def import_dsb2018(source: Path, project: Path, split: str = "train") -> int:
    """Write every ``source/<id>`` sample into ``project/<split>``; returns how many. Samples without a
    ``masks`` folder (the DSB test sets) get no ground truth."""
    source, project = Path(source), Path(project)
    samples = sorted(p for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
    if not samples:
        raise DataError(
            f"{source}: no sample folders. The DSB2018 layout is <id>/images/<id>.png with one mask per "
            "object in <id>/masks/*.png."
        )
    for sample in samples:
        images = sorted((sample / "images").glob("*.png"))
        if len(images) != 1:
            raise DataError(f"{sample / 'images'}: expected one .png image, found {len(images)}.")
        (project / split / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images[0], project / split / IMAGE_DIR / f"{sample.name}.png")
        mask_files = sorted((sample / "masks").glob("*.png"))
        if mask_files:
            labels = masks_to_labels([read_image(m) for m in mask_files], str(sample / "masks"))
            write_tiff(project / split / GT_DIR / f"{sample.name}.tif", labels)
    log.info("imported %d DSB2018 sample(s) into %s", len(samples), project / split)
    return len(samples)
