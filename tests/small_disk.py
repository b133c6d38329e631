"""A small disk for the disk-full tests (idl-predict's and idl-train's): a 20 MB tmpfs where the
machine lets root mount one (a real ENOSPC from the kernel), else a byte budget that the tests'
fallback writers spend and that raises ENOSPC beyond it. No torch: the torch-free tests use it."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def mount_tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` on ``folder``; False where that is not permitted."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    return subprocess.run(command, capture_output=True).returncode == 0


class SmallDisk:
    """A small disk at ``folder``: :meth:`fill` leaves ``leave`` bytes free, :meth:`free` empties it.
    Without a tmpfs (``mounted`` False) ``room`` is the budget a fallback writer spends through
    :meth:`take` (``None``: not full)."""

    def __init__(self, folder: Path, mounted: bool) -> None:
        self.folder, self.mounted = folder, mounted
        self.room: int | None = None

    @property
    def full(self) -> bool:
        return self.room is not None

    def fill(self, leave: int = 0) -> None:
        if self.mounted:
            size = shutil.disk_usage(self.folder).free - leave
            with open(self.folder / "ballast", "wb") as ballast:
                os.posix_fallocate(ballast.fileno(), 0, size)
        self.room = leave

    def free(self) -> None:
        (self.folder / "ballast").unlink(missing_ok=True)
        self.room = None

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.folder).free

    def take(self, size: int) -> None:
        """Without a tmpfs: spend ``size`` bytes of the budget, or raise ENOSPC."""
        if self.mounted or self.room is None:
            return
        if size > self.room:
            self.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= size


@contextmanager
def small_disk(folder: Path, size: str = "20m") -> Iterator[SmallDisk]:
    """A :class:`SmallDisk` at ``folder`` (created), unmounted afterwards."""
    folder.mkdir(parents=True, exist_ok=True)
    disk = SmallDisk(folder, mount_tmpfs(folder, size))
    try:
        yield disk
    finally:
        if disk.mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)
