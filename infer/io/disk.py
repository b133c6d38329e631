"""Writing files safely: atomic replacement, and a full disk named with the file and the space it needs.

Writes go to a temporary file in the target folder that is renamed into place, so an interrupted run
never leaves a half-written file under the final name. Every image format's writer
(:mod:`idl.infer.io.formats`) and every other output of idl (tables, reports) uses :func:`atomic_path`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# what libraries say when they report a full disk in their own exception types (SQLite through MLflow)
NO_SPACE_TEXTS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def megabytes(size: float) -> str:
    """``size`` bytes in MB (2^20 bytes) for messages: two decimals below 1 MB, one below 10 MB."""
    value = size / 2**20
    return f"{value:.2f}" if value < 1 else f"{value:.1f}" if value < 10 else f"{value:.0f}"


def free_space(path: str | os.PathLike[str]) -> int:
    """Bytes free on the file system that holds ``path`` (or its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder).free


class DiskFull(OSError):
    """No space left where an output is written: the file, how much it needs and how much is free.

    An :class:`OSError` (``ENOSPC``), not an :class:`~idl.infer.core.errors.IdlError`: a batch must not
    go on to the next image, which would fail alike, but stop at once; the commands print the message
    and how to continue (:mod:`idl.cli.common`)."""

    def __init__(
        self, path: str | os.PathLike[str] | None, needed: int | None, at_least: bool = False
    ) -> None:
        self.needed = needed
        self.free = free_space(path) if path is not None else None
        figures = []
        if needed is not None:
            figures.append(f"needs {'more than' if at_least else 'about'} {megabytes(needed)} MB")
        if self.free is not None:
            figures.append(f"{megabytes(self.free)} MB free")
        where = path if path is not None else "the disk"
        text = f"No space left on {where}" + (f" ({', '.join(figures)})." if figures else ".")
        super().__init__(errno.ENOSPC, text, None if path is None else str(path))

    def __str__(self) -> str:
        return str(self.strerror)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its message and figures (the free space is not measured again)."""
        return _restored, (str(self), self.filename, self.needed, self.free)


def _restored(text: str, path: str | None, needed: int | None, free: int | None) -> DiskFull:
    """A :class:`DiskFull` unpickled."""
    full = DiskFull.__new__(DiskFull)
    OSError.__init__(full, errno.ENOSPC, text, path)
    full.needed, full.free = needed, free
    return full


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it was raised from or while handling."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        todo += [item.__cause__, item.__context__]


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a full disk (or quota): an ``ENOSPC`` or ``EDQUOT`` anywhere in its
    chain, or a library's own words for it (PyTorch's zip writer raises a ``RuntimeError`` whose
    context holds the ``OSError``; SQLite says "database or disk is full")."""
    for item in _chain(exc):
        if isinstance(item, OSError) and item.errno in NO_SPACE_ERRNOS:
            return True
        if any(text in str(item).lower() for text in NO_SPACE_TEXTS):
            return True
    return False


def disk_full(exc: BaseException, path: str | os.PathLike[str] | None = None) -> DiskFull | None:
    """``exc`` as a :class:`DiskFull` naming ``path`` (else the file the error names), or None when
    the disk is not full."""
    for item in _chain(exc):
        if isinstance(item, DiskFull):
            return item
    if not is_disk_full(exc):
        return None
    named = [i.filename for i in _chain(exc) if isinstance(i, OSError) and i.filename]
    return DiskFull(path if path is not None else (named[0] if named else None), None)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it to ``path``, on error delete it.

    A full disk becomes :class:`DiskFull` naming ``path`` and ``size`` (the bytes it needs, when the
    caller knows them; else more than what was written when the disk filled up)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    except Exception as exc:
        if not is_disk_full(exc) or isinstance(exc, DiskFull):
            raise
        written = tmp_path.stat().st_size if tmp_path.exists() else 0
        tmp_path.unlink(missing_ok=True)  # before the free space is measured
        raise DiskFull(path, size or written, at_least=size is None) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically and return the path."""
    path = Path(path)
    with atomic_path(path, len(text.encode("utf-8"))) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path
