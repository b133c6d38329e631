"""Where outputs go: checked before any work, and cleared of what a killed run left behind.

An output folder must exist or be creatable, be a folder (not a file, not under a file) and be
writable; this is checked by writing a probe file, since permission bits alone say nothing for root
or on network shares. Every output is written to a hidden temporary name and renamed when complete
(:func:`idl.infer.io.images.atomic_path`, the tile sinks); a run killed with SIGKILL leaves such
temporary files, which the next run in the same folder removes.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Collection
from pathlib import Path

from idl.infer.core.errors import DataError
from idl.infer.core.project import is_image_folder

log = logging.getLogger("idl")

# .<name>.<random>.tmp<suffix> (atomic_path) and .<name>.part (tile sinks, OME-Zarr folders)
LEFTOVER = re.compile(r"^\..+\.(tmp[^/]*|part)$")


def writable_folder(path: Path, role: str = "output") -> Path:
    """Make ``path`` a folder idl can write into, or raise :class:`DataError` saying why not and
    what to do; nothing is computed before this passes."""
    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == path else f"lies under the file {parent}"
            raise DataError(f"{path}: cannot be the {role} folder, it {where}. Choose another folder.")
        if parent.exists():
            break
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"{path}: cannot create the {role} folder ({exc.strerror}). Choose a folder you can write to."
        ) from exc
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix=".idl-probe-"):
            pass
    except OSError as exc:
        raise DataError(
            f"{path}: cannot write into the {role} folder ({exc.strerror}). Choose a folder you can write "
            "to, or ask for write permission."
        ) from exc
    return path


def leftover_of(name: str) -> str:
    """The output a leftover's name belongs to (``.a.tif.part``, ``.a.tif.x1y2.tmp.tif`` -> ``a.tif``)."""
    if name.endswith(".part"):
        return name[1:-5]
    base = name[1:].rpartition(".tmp")[0]  # <output>.<random>
    return base.rpartition(".")[0]


def remove_leftovers(folder: Path, outputs: Collection[str] | None = None) -> int:
    """Delete the temporary files and folders an interrupted run left directly in ``folder``;
    returns how many (logged). With ``outputs`` (file names), only the leftovers of those: the
    shards of a job array share a folder, and one must not remove another's files in progress."""
    if not folder.is_dir():
        return 0
    removed = 0
    for item in folder.iterdir():
        if not LEFTOVER.match(item.name):
            continue
        if outputs is not None and leftover_of(item.name) not in outputs:
            continue
        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("%s: removed %d unfinished file(s) of an interrupted run", folder, removed)
    return removed


def _inside(path: Path, folder: Path) -> bool:
    """True when ``path`` is ``folder`` or lies anywhere under it."""
    return path == folder or folder in path.parents


def check_apart(
    out: Path,
    inputs: list[Path] | tuple[Path, ...] = (),
    groundtruth: Path | None = None,
    role: str = "--out",
) -> None:
    """Refuse an output folder that would mix with what the user gave to be read, before any work:
    ``out`` must not be, hold or lie inside a folder given as input or as ground truth, nor be the
    folder of an input file. Otherwise a prediction can replace an input image of the same name, or
    an input or ground-truth file be taken for a prediction (symbolic links resolved)."""
    where = out.resolve()
    folders: list[tuple[Path, str]] = []
    given = [(Path(item), "the input") for item in inputs]
    if groundtruth is not None:
        given.append((Path(groundtruth), "the ground truth"))
    for item, what in given:
        if item.is_dir() and not is_image_folder(item):  # an OME-Zarr image is a file here
            folders.append((item, "an input folder" if what == "the input" else "the ground-truth folder"))
        elif where == item.resolve().parent:
            raise DataError(
                f"{role} {out} is the folder of {what} {item}: outputs written there could replace it or "
                "be read in its place. Choose another output folder."
            )
    for folder, what in folders:
        given = folder.resolve()
        if _inside(where, given) or _inside(given, where):
            relation = "is" if where == given else ("lies inside" if _inside(where, given) else "holds")
            raise DataError(
                f"{role} {out} {relation} {what} {folder}: outputs written there could replace the files "
                "given to be read, or be read as them. Choose an output folder apart from both."
            )
