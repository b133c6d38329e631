"""The training data's fingerprint: every file idl reads from ``PROJECT/train``, with its size and a
SHA-256 of its content, stored in ``last.pt`` so that ``--resume`` refuses to continue a run on data
that changed since it started (masks replaced, images deleted or added).

The hash reads each file once in 1 MiB chunks, at about 1 GB/s on one core of the reference machine,
a fraction of what reading and decoding the same images for training costs (docs/robustness.md has
the measured time). Only files idl reads count (images, ``groundtruth.csv``, OME-Zarr folders), so a
note or a hidden file (``.DS_Store``) next to them changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idl.infer.core.errors import DataError
from idl.infer.core.project import IMAGE_SUFFIXES

log = logging.getLogger("idl")

FORMAT = 1
CHUNK = 1 << 20  # bytes read at a time: memory stays flat whatever the file size
TABLE_SUFFIXES = (".csv",)  # classification's groundtruth.csv
SHOWN = 3  # file names shown per kind of change


def _visible(path: Path, root: Path) -> bool:
    return not any(part.startswith(".") for part in path.relative_to(root).parts)


def _in_zarr(path: Path, root: Path) -> bool:
    return any(part.lower().endswith(".zarr") for part in path.relative_to(root).parts[:-1])


def data_files(train_dir: Path) -> list[Path]:
    """The files of ``train_dir`` that training can read, in a fixed order: images, tables, and
    everything inside an OME-Zarr folder; hidden files and folders are left out."""
    if not train_dir.is_dir():
        return []
    suffixes = IMAGE_SUFFIXES + TABLE_SUFFIXES
    return sorted(
        p
        for p in train_dir.rglob("*")
        if p.is_file() and _visible(p, train_dir) and (p.suffix.lower() in suffixes or _in_zarr(p, train_dir))
    )


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (hex), read in :data:`CHUNK`-sized pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class DataFingerprint:
    """Every training file (relative to the project, as ``train/image/a.tif``) -> (size, SHA-256)."""

    files: dict[str, tuple[int, str]]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers, as checkpoints store them (``torch.load(weights_only=True)`` reads them)."""
        return {"format": FORMAT, "files": {k: [size, digest] for k, (size, digest) in self.files.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataFingerprint:
        return cls({k: (int(v[0]), str(v[1])) for k, v in data["files"].items()})


def fingerprint(project: Path) -> DataFingerprint:
    """The fingerprint of ``PROJECT/train`` now."""
    project = Path(project)
    files = data_files(project / "train")
    return DataFingerprint(
        {p.relative_to(project).as_posix(): (p.stat().st_size, file_digest(p)) for p in files}
    )


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def differences(before: DataFingerprint, now: DataFingerprint) -> list[str]:
    """What changed from ``before`` to ``now``, one phrase per kind (empty: the same data)."""
    old, new = before.files, now.files
    removed = sorted(set(old) - set(new))
    added = sorted(set(new) - set(old))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    phrases = []
    for names, what in ((removed, "removed"), (added, "added"), (changed, "changed")):
        if names:
            phrases.append(f"{len(names)} file(s) {what} ({_listed(names)})")
    return phrases


def check_unchanged(
    saved: dict[str, Any] | None, now: DataFingerprint, checkpoint: Path, project: Path
) -> None:
    """Refuse to resume the run of ``checkpoint`` when its training data (``saved``, the stored
    fingerprint) differs from the data ``now``; a checkpoint without a fingerprint (written by an
    earlier idl) resumes with a note."""
    if saved is None:
        log.warning(
            "%s was written before idl stored the training data's fingerprint with it, so the data cannot "
            "be checked against the run being resumed; the checkpoints written from now on store it",
            checkpoint,
        )
        return
    changes = differences(DataFingerprint.from_dict(saved), now)
    if changes:
        raise DataError(
            f"{project / 'train'}: the training data changed since {checkpoint} was written: "
            f"{'; '.join(changes)}. Resuming would continue the training on other data. Restore the data "
            f"as it was, or train a new model on the data as it is now: idl-train {project} --overwrite "
            "(instead of --resume)."
        )
